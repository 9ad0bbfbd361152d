"""Experiment configs (`get_config(arg)` functions) and the model-size registry.

Installed as `musiq_jax.configs`, so library code and config files alike can
`from musiq_jax.configs import models`.
"""
