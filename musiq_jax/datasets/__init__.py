"""IQA datasets: TFDS builders and reusable synthetic distortions.

`import musiq_jax.datasets` registers the builders, so that
`tfds.builder("koniq10k", data_dir=...)` works. `musiq_jax.datasets.distortions`
needs only numpy/scipy/Pillow: when TensorFlow Datasets is not installed the
builders are simply not registered and the distortions stay importable.
"""

try:
  import tensorflow_datasets as _tfds  # pylint: disable=unused-import
except ImportError:  # pragma: no cover - TFDS is a declared dependency.
  _tfds = None

if _tfds is not None:
  # pylint: disable=g-import-not-at-top
  from musiq_jax.datasets.synthetic_iqa import SyntheticIqa
  # pylint: enable=g-import-not-at-top
