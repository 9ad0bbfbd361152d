"""The weight-standardised GroupNorm ResNet (BiT-style) that embeds patches.

Semantics follow the original MUSIQ release (`flax.nn` era): StdConv
standardises its kernel over (H, W, I) with `(w - mean) / (std + 1e-5)`; the
root GroupNorm keeps flax's default epsilon (1e-6) while the units use 1e-4;
32 groups everywhere; the last GroupNorm of each unit starts at zero scale.
"""

import functools
from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Number of ResNet layers -> (blocks per stage, bottleneck), as the original.
_BLOCK_DESC = {
    5: ((1,), True),  # Only strided blocks. Total stride 4.
    8: ((1, 1), True),
    11: ((1, 1, 1), True),
    14: ((1, 1, 1, 1), True),
    9: ((1, 1, 1, 1), False),
    18: ((2, 2, 2, 2), False),
    26: ((2, 2, 2, 2), True),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
    200: ((3, 24, 36, 3), True),
}
SUPPORTED_DEPTHS = tuple(sorted(_BLOCK_DESC))


def get_block_desc(num_layers: int) -> Tuple[Tuple[int, ...], bool]:
  """(blocks per stage, bottleneck) for a ResNet depth; 0 means no stage."""
  if num_layers == 0:
    return (), True
  if num_layers not in _BLOCK_DESC:
    raise ValueError(f"Unsupported resnet num_layers={num_layers}; choose one "
                     f"of {sorted(_BLOCK_DESC)} or 0.")
  return _BLOCK_DESC[num_layers]


def weight_standardize(w: jnp.ndarray, axis: Sequence[int],
                       eps: float) -> jnp.ndarray:
  w = w - jnp.mean(w, axis=axis)
  return w / (jnp.std(w, axis=axis) + eps)


def _same_pads(size: int, kernel: int, stride: int) -> Tuple[int, int, int]:
  """(output size, low pad, high pad) of TF SAME padding along one axis."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return out, total // 2, total - total // 2


def _same_windows(x: jnp.ndarray, kh: int, kw: int, stride: int,
                  pad_value: float = 0.0):
  """The kh * kw strided slices [n, oh, ow, c] of a TF SAME window op, in
  (i, j) order: a conv's im2col columns, or a max pool's candidates."""
  oh, top, bottom = _same_pads(x.shape[1], kh, stride)
  ow, left, right = _same_pads(x.shape[2], kw, stride)
  x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)),
              constant_values=pad_value)
  return [x[:, i:i + (oh - 1) * stride + 1:stride,
            j:j + (ow - 1) * stride + 1:stride]
          for i in range(kh) for j in range(kw)]


def _max_pool_slices(x: jnp.ndarray, window: int, stride: int) -> jnp.ndarray:
  """TF SAME max pooling as an elementwise max of strided slices."""
  return functools.reduce(jnp.maximum,
                          _same_windows(x, window, window, stride, -np.inf))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool_same(x: jnp.ndarray, window: int = 3,
                  stride: int = 2) -> jnp.ndarray:
  """`nn.max_pool(x, (window,) * 2, (stride,) * 2, "SAME")` with a fast VJP.

  The forward pass is XLA's reduce-window (TF SAME padding, the smaller half
  top/left). The backward pass differentiates the same pooling written as a
  max of strided slices: a chain of elementwise selects instead of XLA's
  select-and-scatter, which on CPU took 0.54 s for the 2144 patches of one
  demo batch vs 0.17 s (the forward pass is 0.03 s). At exact ties the
  gradient is shared among the tied inputs instead of going to the first;
  after the ReLU the only common ties are zeros, whose gradient the ReLU
  stops anyway.
  """
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding="SAME")


def _max_pool_fwd(x, window, stride):
  return max_pool_same(x, window, stride), x


def _max_pool_bwd(window, stride, x, g):
  _, vjp = jax.vjp(lambda v: _max_pool_slices(v, window, stride), x)
  return vjp(g)


max_pool_same.defvjp(_max_pool_fwd, _max_pool_bwd)


def _xla_conv(x, kernel, stride):
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _kernel_grad(x, dy, kh: int, kw: int, stride: int) -> jnp.ndarray:
  """The SAME conv's kernel gradient, `im2col(x)^T @ dy`, as [kh, kw, c, o].

  The windows are gathered channel-major, [kh, kw, c, n * oh * ow], in two
  passes (the kw column offsets, then the kh row offsets of those), so every
  piece is copied as one long block and the matmul reads both operands in
  their natural layout. Gathering the kh * kw windows along the minor axis
  of an NHWC array (the first version) copied 3 floats at a time for the
  7x7 root conv: 705 patches, the kernel gradient alone 264 -> 153 ms for
  the root and 196 -> 146 ms for the 3x3 conv (min of 8, in turn, 2-core
  CPU; XLA's own kernel-gradient convolution: 346 and 207 ms).
  """
  _, h, w, c = x.shape
  oh, top, bottom = _same_pads(h, kh, stride)
  ow, left, right = _same_pads(w, kw, stride)
  x = jnp.pad(jnp.transpose(x, (3, 0, 1, 2)),
              ((0, 0), (0, 0), (top, bottom), (left, right)))
  cols = jnp.stack([x[..., j:j + (ow - 1) * stride + 1:stride]
                    for j in range(kw)])  # [kw, c, n, H, ow]
  cols = jnp.stack([cols[..., i:i + (oh - 1) * stride + 1:stride, :]
                    for i in range(kh)])  # [kh, kw, c, n, oh, ow]
  dk = jnp.matmul(cols.reshape(kh * kw * c, -1),
                  dy.reshape(-1, dy.shape[-1]).astype(cols.dtype))
  return dk.reshape(kh, kw, c, dy.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_same(x: jnp.ndarray, kernel: jnp.ndarray,
               stride: int) -> jnp.ndarray:
  """TF SAME convolution (NHWC, HWIO); the kernel gradient by one matmul.

  Forward pass and input gradient are XLA's convolutions. The kernel
  gradient is `im2col(x)^T @ dy` (`_kernel_grad`, where the timings are):
  on CPU, XLA's own kernel-gradient convolution is the slower of the two.
  """
  return _xla_conv(x, kernel, stride)


def _conv_same_fwd(x, kernel, stride):
  return _xla_conv(x, kernel, stride), (x, kernel)


def _conv_same_bwd(stride, res, dy):
  x, kernel = res
  kh, kw = kernel.shape[:2]
  _, vjp_x = jax.vjp(lambda v: _xla_conv(v, kernel, stride), x)
  dx, = vjp_x(dy)  # Dropped by XLA when x needs no gradient (the root).
  dk = _kernel_grad(x, dy, kh, kw, stride)
  return dx, dk.astype(kernel.dtype)


_conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


def conv_same(x: jnp.ndarray, kernel: jnp.ndarray, stride: int = 1):
  """TF SAME convolution of [n, h, w, c] by an HWIO kernel, fast on CPU.

  1x1 kernels are a strided slice and a matmul (forward 2-5x faster than
  XLA's CPU convolution for the 64 <-> 256 channel convs of the MUSIQ
  ResNet, gradients 3-8x); larger kernels use `_conv_same`.
  """
  kh, kw = kernel.shape[:2]
  if kh == kw == 1:
    if stride > 1:  # SAME with a 1x1 window: rows/columns 0, s, 2s, ...
      x = x[:, ::stride, ::stride]
    return jnp.einsum("nhwc,co->nhwo", x, kernel[0, 0])
  return _conv_same(x, kernel, stride)


class GroupNorm(nn.Module):
  """`nn.GroupNorm` on [n, h, w, c] (same params, init and math), faster on CPU.

  flax reshapes to [n, h, w, G, c/G] and reduces over (h, w, c/G), strided
  axes that XLA:CPU reduces slowly. Here the sums of x and x^2 first run
  over the contiguous spatial axes ([n, c]), then over each group's c/G
  channels; mean and variance per group are E[x] and E[x^2] - E[x]^2
  (clipped at 0), in float32 at least, as flax's `use_fast_variance`. The
  output is x * a + b with per-channel a = scale / sqrt(var + eps) and
  b = bias - mean * a: one elementwise pass.
  """
  num_groups: int = 32
  epsilon: float = 1e-6
  dtype: Any = jnp.float32
  scale_init: Any = nn.initializers.ones
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    n, c = x.shape[0], x.shape[-1]
    if c % self.num_groups:
      raise ValueError(f"{c} channels do not split into {self.num_groups} "
                       "groups.")
    scale = self.param("scale", self.scale_init, (c,), jnp.float32)
    bias = self.param("bias", self.bias_init, (c,), jnp.float32)
    stats = jnp.promote_types(x.dtype, jnp.float32)
    xs = x.astype(stats)
    axes = tuple(range(1, x.ndim - 1))
    group = lambda a: jnp.sum(  # pylint: disable=g-long-lambda
        jnp.reshape(a, (n, self.num_groups, c // self.num_groups)), -1)
    count = np.prod(x.shape[1:]) // self.num_groups
    mean = group(jnp.sum(xs, axes)) / count  # [n, G]
    var = jnp.maximum(group(jnp.sum(xs * xs, axes)) / count - mean * mean,
                      0.0)
    per_channel = lambda a: jnp.repeat(a, c // self.num_groups, axis=-1)
    a = scale * jax.lax.rsqrt(per_channel(var) + self.epsilon)  # [n, c]
    b = bias - per_channel(mean) * a
    expand = lambda v: jnp.reshape(v, (n,) + (1,) * len(axes) + (c,))
    return (xs * expand(a) + expand(b)).astype(self.dtype)


class StdConv(nn.Module):
  """Bias-free SAME conv, kernel weight-standardised over (H, W, I) per call.

  The parameter is `kernel` [kh, kw, in, out] with `nn.Conv`'s default
  initialiser, as the original checkpoints store it.
  """
  features: int
  kernel_size: Tuple[int, int]
  strides: Tuple[int, int] = (1, 1)
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.use_bias:
      raise ValueError("StdConv has no bias (the ResNet's GroupNorm follows).")
    if self.strides[0] != self.strides[1]:
      raise ValueError(f"StdConv needs equal strides, got {self.strides}.")
    kernel = self.param(
        "kernel", nn.initializers.lecun_normal(),
        tuple(self.kernel_size) + (x.shape[-1], self.features), jnp.float32)
    kernel = weight_standardize(kernel, axis=(0, 1, 2), eps=1e-5)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    return conv_same(x, kernel, int(self.strides[0]))


class ResidualUnit(nn.Module):
  """Bottleneck (or basic) residual unit with GroupNorm."""
  features: int
  strides: Tuple[int, int] = (1, 1)
  bottleneck: bool = True
  dtype: Any = jnp.float32
  num_groups: int = 32

  @nn.compact
  def __call__(self, x):
    nout = self.features * 4 if self.bottleneck else self.features
    conv = lambda f, k, s=(1, 1), name=None: StdConv(  # pylint: disable=g-long-lambda
        f, k, s, use_bias=False, dtype=self.dtype, name=name)
    gn = lambda name, **kw: GroupNorm(  # pylint: disable=g-long-lambda
        num_groups=self.num_groups, epsilon=1e-4, dtype=self.dtype,
        name=name, **kw)
    residual = x
    if x.shape[-1] != nout or self.strides != (1, 1):
      residual = conv(nout, (1, 1), self.strides, name="conv_proj")(residual)
      residual = gn("gn_proj")(residual)
    if self.bottleneck:
      x = nn.relu(gn("gn1")(conv(self.features, (1, 1), name="conv1")(x)))
    x = conv(self.features, (3, 3), self.strides, name="conv2")(x)
    x = nn.relu(gn("gn2")(x))
    last_kernel = (1, 1) if self.bottleneck else (3, 3)
    x = conv(nout, last_kernel, name="conv3")(x)
    x = gn("gn3", scale_init=nn.initializers.zeros)(x)
    return nn.relu(residual + x)


class ResNetStage(nn.Module):
  """A stage of `block_size` residual units; the first one may stride."""
  block_size: int
  features: int
  first_stride: Tuple[int, int]
  bottleneck: bool = True
  dtype: Any = jnp.float32
  num_groups: int = 32

  @nn.compact
  def __call__(self, x):
    for i in range(self.block_size):
      x = ResidualUnit(
          self.features,
          strides=self.first_stride if i == 0 else (1, 1),
          bottleneck=self.bottleneck,
          dtype=self.dtype,
          num_groups=self.num_groups,
          name=f"unit{i + 1}")(x)
    return x


def resnet_patch_features(x: jnp.ndarray, *, num_layers: int, width: int,
                          dtype: Any, num_groups: int = 32) -> jnp.ndarray:
  """Root block + stages on [n, P, P, 3] patches -> [n, h', w', c'].

  `num_groups` of every GroupNorm: 32 in the original (at width 32 that is
  one channel per group, which normalises away each channel's energy in the
  patch; fewer groups keep the ratios between channels).

  Must be called inside a `@nn.compact` method: the submodules it creates
  (`conv_root`, `gn_root`, `block1`, ...) attach to the caller, so the
  parameter tree has the original checkpoint's flat layout.
  """
  x = StdConv(width, (7, 7), (2, 2), use_bias=False, dtype=dtype,
              name="conv_root")(x)
  # flax's default epsilon (1e-6), as the original.
  x = GroupNorm(num_groups=num_groups, dtype=dtype, name="gn_root")(x)
  x = nn.relu(x)
  x = max_pool_same(x, 3, 2)
  blocks, bottleneck = get_block_desc(num_layers)
  for i, block_size in enumerate(blocks):
    x = ResNetStage(
        block_size,
        width * 2**i,
        first_stride=(1, 1) if i == 0 else (2, 2),
        bottleneck=bottleneck,
        dtype=dtype,
        num_groups=num_groups,
        name=f"block{i + 1}")(x)
  return x
