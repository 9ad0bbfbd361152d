"""Registry of MUSIQ model sizes.

`MUSIQ` is the original release's backbone (run_predict_image.py); `tiny` is
for tests; `small` is a CPU-sized model for the offline synthetic demo.
Exact parameter counts per size are asserted in tests/test_models.py.
"""

import copy

import ml_collections

_SIZES = {
    # The released MUSIQ: hidden 384, 14 layers, 6 heads, MLP 1152, patch
    # ResNet with 5 layers (root + one bottleneck unit), HSE grid 10.
    "musiq": dict(
        hidden_size=384,
        num_layers=14,
        num_heads=6,
        mlp_dim=1152,
        spatial_pos_grid_size=10,
        resnet_num_layers=5,
        resnet_width=64,
        representation_size=None,
        use_scale_emb=True,
    ),
    # A CPU-sized model for the synthetic demo (minutes on 2 cores).
    "small": dict(
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        mlp_dim=384,
        spatial_pos_grid_size=10,
        resnet_num_layers=5,
        resnet_width=32,
        representation_size=None,
        use_scale_emb=True,
    ),
    # For tests: every piece present, as small as GroupNorm(32) allows.
    "tiny": dict(
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        mlp_dim=64,
        spatial_pos_grid_size=10,
        resnet_num_layers=5,
        resnet_width=32,
        representation_size=None,
        use_scale_emb=True,
    ),
}

NAMES = tuple(_SIZES)


def get_model_config(name: str) -> ml_collections.ConfigDict:
  """The backbone hyperparameters of a registered size (a fresh copy)."""
  if name not in _SIZES:
    raise ValueError(f"Unknown model size {name!r}; known: {sorted(_SIZES)}.")
  cfg = ml_collections.ConfigDict(copy.deepcopy(_SIZES[name]))
  # What each patch shows the ResNet: "rgb" as the original, "mscn" (its
  # MSCN coefficients, musiq_jax.models.musiq.mscn) or "rgb_mscn" (both).
  cfg.patch_input = "rgb"
  return cfg
