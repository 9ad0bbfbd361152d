"""musiq-jax: MUSIQ (multi-scale image quality transformer) in JAX/Flax."""

__version__ = "0.1.0"


def load_scorer(*args, **kwargs):
  """Loads a MUSIQ checkpoint for scoring; see `musiq_jax.scorer.load_scorer`."""
  from musiq_jax import scorer  # pylint: disable=g-import-not-at-top
  return scorer.load_scorer(*args, **kwargs)


def create_metric(*args, **kwargs):
  """A MUSIQ metric by name (pyiqa-style); see `musiq_jax.metric`."""
  from musiq_jax import metric  # pylint: disable=g-import-not-at-top
  return metric.create_metric(*args, **kwargs)


def list_models():
  """The metric names `create_metric` knows; see `musiq_jax.metric`."""
  from musiq_jax import metric  # pylint: disable=g-import-not-at-top
  return metric.list_models()
