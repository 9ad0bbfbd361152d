"""musiq-jax: MUSIQ (multi-scale image quality transformer) in JAX/Flax."""

__version__ = "0.1.0"


def load_scorer(*args, **kwargs):
  """Loads a MUSIQ checkpoint for scoring; see `musiq_jax.scorer.load_scorer`."""
  from musiq_jax import scorer  # pylint: disable=g-import-not-at-top
  return scorer.load_scorer(*args, **kwargs)
