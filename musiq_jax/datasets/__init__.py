"""IQA datasets: TFDS builders and reusable synthetic distortions.

`import musiq_jax.datasets` registers the builders (koniq10k, spaq, paq2piq,
ava, live_challenge, kadid10k, synthetic_iqa), so that
`tfds.builder("koniq10k", data_dir=...)` works.
`musiq_jax.datasets.distortions` needs only numpy/scipy/Pillow: without
TensorFlow Datasets the builders are not registered and the distortions stay
importable.
"""

try:
  import tensorflow_datasets as _tfds  # pylint: disable=unused-import
except ImportError:  # pragma: no cover - TFDS is a declared dependency.
  _tfds = None

if _tfds is not None:
  # pylint: disable=g-import-not-at-top,unused-import
  from musiq_jax.datasets.ava import Ava
  from musiq_jax.datasets.kadid10k import Kadid10k
  from musiq_jax.datasets.koniq10k import Koniq10k
  from musiq_jax.datasets.live_challenge import LiveChallenge
  from musiq_jax.datasets.paq2piq import Paq2piq
  from musiq_jax.datasets.spaq import Spaq
  from musiq_jax.datasets.synthetic_iqa import SyntheticIqa
  # pylint: enable=g-import-not-at-top,unused-import

BUILDERS = ("koniq10k", "spaq", "paq2piq", "ava", "live_challenge", "kadid10k",
            "synthetic_iqa")
