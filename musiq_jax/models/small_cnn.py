"""A small CNN backbone for RankIQA-style ranking and MOS fine-tuning.

RankIQA's "shallow" network (Liu et al., ICCV 2017) is a few convolutions and
one fully connected layer on fixed-size crops; this module is that family:
`len(features)` blocks of [conv 3x3 + ReLU] x `convs_per_block` followed by a
2x2 max-pool, global average pooling, an optional hidden Dense layer
(`pre_logits`) and a Dense `head` with `num_outputs` units. Global pooling
makes it run on any crop size (224 as in RankIQA, smaller for tests).

Input: images [N, H, W, 3] scaled to [-1, 1] (the MUSIQ convention, so the
same preprocessing serves every backbone). Output: [N, num_outputs].

Sizes are named in `VARIANTS` so configs can pick one by name
(``model.variant = "shallow"``); "tiny" is for tests.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

# Named sizes: every field not listed keeps its dataclass default.
VARIANTS: Dict[str, Dict[str, Any]] = {
    "tiny": dict(features=(8, 16), convs_per_block=1, hidden_size=None),
    # Four conv layers and one hidden FC layer, as RankIQA's shallow net.
    "shallow": dict(features=(32, 64, 128, 256), convs_per_block=1,
                    hidden_size=512),
    "vgg_like": dict(features=(64, 128, 256, 512, 512), convs_per_block=2,
                     hidden_size=1024),
}


class SmallCNN(nn.Module):
  """Conv/ReLU/max-pool blocks -> global average pool -> Dense head.

  Attributes:
    num_outputs: units of the head (1 for MOS or ranking scores, 5 for
      rating levels, 10 for AVA bins).
    features: output channels of each block.
    convs_per_block: 3x3 convolutions (each followed by ReLU) per block.
    hidden_size: units of the `pre_logits` Dense + ReLU layer; None: none.
    dropout_rate: dropout before the head, active only with train=True.
    zero_init_head: zero-initialise the head (as MUSIQ/ViT do when
      fine-tuning), so a fresh head predicts a constant.
    dtype: computation dtype (parameters stay float32).
  """
  num_outputs: int = 1
  features: Tuple[int, ...] = (32, 64, 128, 256)
  convs_per_block: int = 1
  hidden_size: Optional[int] = 512
  dropout_rate: float = 0.0
  zero_init_head: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    """Scores a batch of images.

    Args:
      images: [N, H, W, C] float images in [-1, 1].
      train: enables dropout (needs a "dropout" RNG when dropout_rate > 0).

    Returns:
      [N, num_outputs] float32 outputs.
    """
    if images.ndim != 4:
      raise ValueError(f"SmallCNN expects [N, H, W, C] images, got shape "
                       f"{images.shape}.")
    x = jnp.asarray(images, self.dtype)
    for i, feat in enumerate(self.features):
      for j in range(self.convs_per_block):
        x = nn.Conv(feat, (3, 3), padding="SAME", dtype=self.dtype,
                    name=f"conv{i}_{j}")(x)
        x = nn.relu(x)
      # Pool only while there is something left to pool, so tiny test crops
      # survive deep variants.
      if min(x.shape[1:3]) >= 2:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    if self.hidden_size is not None:
      x = nn.Dense(self.hidden_size, dtype=self.dtype, name="pre_logits")(x)
      x = nn.relu(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    kernel_init = (nn.initializers.zeros if self.zero_init_head
                   else nn.linear.default_kernel_init)
    x = nn.Dense(self.num_outputs, dtype=self.dtype, kernel_init=kernel_init,
                 name="head")(x)
    # Losses are computed in float32 whatever the compute dtype.
    return x.astype(jnp.float32)


def get_model(variant: str = "shallow", **kwargs) -> SmallCNN:
  """A SmallCNN of a named size, with any field overridden by `kwargs`.

  Args:
    variant: a key of `VARIANTS`.
    **kwargs: SmallCNN fields (num_outputs, dtype, ...), applied last.

  Returns:
    The module.
  """
  if variant not in VARIANTS:
    raise ValueError(f"Unknown SmallCNN variant {variant!r}; known: "
                     f"{sorted(VARIANTS)}.")
  return SmallCNN(**{**VARIANTS[variant], **kwargs})
