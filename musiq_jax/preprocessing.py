"""Multi-scale MUSIQ preprocessing: one definition for NumPy, JAX and TF.

The semantics follow the original MUSIQ release exactly, because every detail
moves a score:

* pixels are scaled to [-1, 1] *before* resizing;
* the aspect-ratio-preserving (ARP) resize is TF2's
  `tf.image.resize(method="gaussian", antialias=False)` to
  `round(h * L / max(h, w))` computed in float32 with round-half-to-even;
* patches are those of `tf.image.extract_patches(padding="SAME")`, which pads
  with zeros split between the two sides (the smaller half first), not only
  at the right/bottom edge;
* the hashed spatial index of patch (i, j) in a `count_h x count_w` grid is
  `t(i) * G + t(j)` where `t` is the table that the TF1 nearest-neighbour
  resize of `range(G)` produces: `min(floor(float32(i) * float32(G / count)),
  G - 1)`;
* each resized scale is padded (or cut) to `ceil(L / stride)**2` tokens; the
  native scale keeps all its patches when `max_seq_len_from_original_res < 0`,
  is cut or padded to that many tokens when >= 0, and is left out when None.
  Padding tokens are all zero (patches, spatial, scale and mask).

How it is computed. Everything that depends only on the image *size* is a
small NumPy "plan" built on the host and cached (`make_plan`): the Gaussian
resize weights, the sample positions, the SAME-padding offsets, which patch
goes to which token, the hash indices, scale ids and mask. What depends on
the *pixels* is a handful of array ops written once against an array
namespace `xp` (`tokens_from_canvas`), and run with NumPy (host), with
`jax.numpy` (on the device, inside the scorer's jitted program, and
differentiably in `Scorer.as_loss`) and with TensorFlow ops (`tf.data`,
`tf_preprocess_image`). TensorFlow's own resize and patch ops are only the
tests' oracle.

The resize is TF's `ScaleAndTranslate` kernel (tensorflow/core/kernels/image/
scale_and_translate_op.cc, sampling_kernels.h), separable, rows first then
columns as TF's `GatherSpans`: output pixel x samples the input at
`(x + 0.5) / scale` (scale = out/in in float32, translation 0); the taps are
the input pixels whose centres lie within the kernel radius 1.5 (Gaussian of
sigma 0.5; antialias=False leaves the kernel unscaled when downsampling, so a
downscale aliases as in the original); the taps' weights are renormalised to
sum to 1, which is what changes the weights at the image borders. Each output
row is at most 4 taps, so a pass is 4 gathers and multiply-adds (the arrays
in `gaussian_resize_spans`), in the order and float32 arithmetic of TF's.

The result is a dict of per-token features instead of the original's one
concatenated `[..., P*P*3 + 3]` tensor (`to_concatenated` converts):
`patches` float32 [N, P*P*3], `spatial` int32 [N], `scale` int32 [N],
`mask` int32 [N] (1 = real token, 0 = padding).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

Features = Dict[str, Any]
Plan = Dict[str, Any]
FEATURE_KEYS = ("patches", "spatial", "scale", "mask")

# TF's Gaussian kernel: radius 1.5, sigma = radius / 3 (sampling_kernels.h).
GAUSSIAN_RADIUS = 1.5
# Taps per output pixel. Without antialiasing TF's span is at most 4 input
# pixels (it allocates 5), of which at most 3 have a nonzero weight: a
# sample position between pixel centres has 3 centres within the radius
# 1.5, one on a centre has 2 (its outer two are at exactly 1.5, weight 0).
# Zero-weight taps add exact zeros in TF, so dropping them changes nothing.
SPAN = 3
_TF_SPAN = 4


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """The preprocessing settings of a MUSIQ model (names as in the original).

  Attributes:
    patch_size: side of a square patch in pixels.
    patch_stride: stride between patches (the original uses patch_size).
    hse_grid_size: G, the side of the hash-based spatial embedding grid.
    longer_side_lengths: longer side of each ARP-resized scale; sorted
      ascending before use, so the scale ids do not depend on the order given.
    max_seq_len_from_original_res: tokens kept from the native resolution:
      < 0 all of them, >= 0 cut/pad to that many, None: no native scale.
  """
  patch_size: int = 32
  patch_stride: int = 32
  hse_grid_size: int = 10
  longer_side_lengths: Tuple[int, ...] = (224, 384)
  max_seq_len_from_original_res: Optional[int] = -1

  @classmethod
  def from_dict(cls, d) -> "PreprocessConfig":
    d = dict(d)
    d["longer_side_lengths"] = tuple(d.get("longer_side_lengths", ()))
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"Unknown preprocessing keys {sorted(unknown)}; "
                       f"expected a subset of {sorted(known)}.")
    return cls(**d)

  def to_dict(self):
    d = dataclasses.asdict(self)
    d["longer_side_lengths"] = list(self.longer_side_lengths)
    return d

  @property
  def sorted_lengths(self) -> Tuple[int, ...]:
    return tuple(sorted(self.longer_side_lengths))

  @property
  def num_scales(self) -> int:
    """Number of scale embeddings the model needs (resized + native)."""
    return len(self.longer_side_lengths) + (
        0 if self.max_seq_len_from_original_res is None else 1)

  @property
  def token_dim(self) -> int:
    return self.patch_size * self.patch_size * 3

  @property
  def resized_grids(self) -> Tuple[int, ...]:
    """Side of the (padded) patch grid of each resized scale."""
    return tuple(math.ceil(l / self.patch_stride) for l in self.sorted_lengths)

  def check(self) -> None:
    if not self.sorted_lengths and self.max_seq_len_from_original_res is None:
      raise ValueError("PreprocessConfig has no scale: give "
                       "longer_side_lengths or max_seq_len_from_original_res.")
    if self.patch_size < 1 or self.patch_stride < 1:
      raise ValueError(f"patch_size and patch_stride must be >= 1, got "
                       f"{self.patch_size}, {self.patch_stride}.")


# ----------------------------------------------------------------------------
# Shape arithmetic (host, float32 as the original's TF ops).
# ----------------------------------------------------------------------------
def arp_size(h: int, w: int, longer_side_length: int) -> Tuple[int, int]:
  """(rh, rw) of the original's ARP resize, each at least 1 pixel.

  The original fails on images whose shorter side rounds to 0 pixels (e.g.
  20000x40 at L=224); we clamp to 1 instead, which changes nothing for any
  image the original can score.
  """
  ratio = np.float32(longer_side_length) / np.float32(max(h, w))
  rh = int(np.round(np.float32(h) * ratio))
  rw = int(np.round(np.float32(w) * ratio))
  return max(rh, 1), max(rw, 1)


def hash_table(grid_size: int, count: int) -> np.ndarray:
  """Row (or column) hash table t[0..count) of the original, as int32."""
  scale = np.float32(grid_size) / np.float32(count)
  t = np.floor(np.arange(count, dtype=np.float32) * scale).astype(np.int32)
  return np.minimum(t, grid_size - 1)


def hashed_spatial_index(grid_size: int, count_h: int,
                         count_w: int) -> np.ndarray:
  """Hashed spatial index of every patch in raster order, int32 [ch * cw].

  Equal to the original's tables from `tf.compat.v1.image.resize(range(G),
  NEAREST_NEIGHBOR)`: the paper's `t_i = i * G / (H / P)` rounded down, in
  float32.
  """
  t_h, t_w = hash_table(grid_size, count_h), hash_table(grid_size, count_w)
  return (t_h[:, None] * grid_size + t_w[None, :]).reshape(-1)


def grid_count(size: int, stride: int) -> int:
  """Patches along a side of `size` pixels (SAME padding: ceil)."""
  return -(-size // stride)


def num_patches(h: int, w: int, stride: int) -> int:
  return grid_count(h, stride) * grid_count(w, stride)


def same_padding_before(size: int, count: int, patch: int, stride: int) -> int:
  """Zero rows TF's SAME padding puts before the image (the smaller half)."""
  return max((count - 1) * stride + patch - size, 0) // 2


def padded_extent(count: int, patch: int, stride: int) -> int:
  """Rows a `count`-patch grid covers: the SAME-padded image, at least
  `count * stride` so that it holds every pixel when stride > patch."""
  return max((count - 1) * stride + patch, count * stride)


def scale_lengths(h: int, w: int, cfg: PreprocessConfig) -> Tuple[int, ...]:
  """Tokens each scale contributes (after pad/cut), native scale last."""
  lengths = [g * g for g in cfg.resized_grids]
  native = cfg.max_seq_len_from_original_res
  if native is not None:
    lengths.append(num_patches(h, w, cfg.patch_stride) if native < 0 else
                   native)
  return tuple(lengths)


def seq_len(h: int, w: int, cfg: PreprocessConfig) -> int:
  """Total number of tokens of an h x w image (before batch padding)."""
  return sum(scale_lengths(h, w, cfg))


def real_seq_len(h: int, w: int, cfg: PreprocessConfig) -> int:
  """Real tokens (mask 1) of an h x w image: `seq_len` less the padding of
  each resized scale to its ceil(L/P)^2 grid (and of a cut native scale)."""
  s = cfg.patch_stride
  n = sum(num_patches(*arp_size(h, w, l), s) for l in cfg.sorted_lengths)
  native = cfg.max_seq_len_from_original_res
  if native is not None:
    full = num_patches(h, w, s)
    n += full if native < 0 else min(full, native)
  return n


# ----------------------------------------------------------------------------
# The Gaussian resize weights (host, NumPy, cached per size).
# ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=8192)
def gaussian_resize_spans(in_size: int, out_size: int
                         ) -> Tuple[np.ndarray, np.ndarray]:
  """Taps of TF's Gaussian `scale_and_translate` along one axis.

  Output pixel x = sum_t weights[x, t] * input[index[x, t]], exactly as
  `ComputeSpansCore` (antialias=False, translation 0) computes them, in
  float32 (the kernel value itself in double, as sampling_kernels.h).

  Args:
    in_size: input pixels along the axis.
    out_size: output pixels along the axis.

  Returns:
    (index int32 [out_size, SPAN], weights float32 [out_size, SPAN]); taps
    past a span have weight 0 and a clamped (valid) index. Read-only.
  """
  f32 = np.float32
  radius = f32(GAUSSIAN_RADIUS)
  scale = f32(out_size) / f32(in_size)
  inv_scale = f32(1.0 / np.float64(scale))
  sample = (np.arange(out_size).astype(f32) + f32(0.5)) * inv_scale
  start = np.ceil(sample - radius - f32(0.5)).astype(np.int64)
  end = np.floor(sample + radius - f32(0.5)).astype(np.int64)
  start = np.clip(start, 0, in_size - 1)
  end = np.clip(end, 0, in_size - 1) + 1
  if (end - start).max() > _TF_SPAN:
    raise AssertionError(f"Gaussian span wider than {_TF_SPAN} taps "
                         f"({in_size} -> {out_size})")
  taps = start[:, None] + np.arange(_TF_SPAN)
  dist = np.abs((taps.astype(f32) + f32(0.5)) - sample[:, None])
  # exp(-x*x / (2 sigma^2)) with sigma = 0.5: float x*x, double exp.
  weights = np.exp((-dist * dist).astype(np.float64) / 0.5).astype(f32)
  weights[(dist >= radius) | (taps >= end[:, None])] = 0
  total = np.zeros(out_size, f32)
  for t in range(_TF_SPAN):  # TF sums the taps one after the other.
    total = total + weights[:, t]
  ok = np.abs(total) >= 1000.0 * np.finfo(f32).tiny
  inv_total = np.where(ok, f32(1.0) / np.where(ok, total, f32(1.0)), f32(0))
  weights = (weights * inv_total[:, None]).astype(f32)
  # Drop the zero-weight taps before the first nonzero one, keep SPAN.
  first = np.argmax(weights > 0, axis=1)
  cols = first[:, None] + np.arange(SPAN)
  inside = cols < _TF_SPAN
  rows = np.arange(out_size)[:, None]
  kept = np.where(inside, weights[rows, np.minimum(cols, _TF_SPAN - 1)], 0)
  if np.count_nonzero(weights) != np.count_nonzero(kept):
    raise AssertionError(f"more than {SPAN} nonzero Gaussian taps "
                         f"({in_size} -> {out_size})")
  weights = kept.astype(f32)
  index = np.minimum(start[:, None] + cols, in_size - 1).astype(np.int32)
  index.setflags(write=False)
  weights.setflags(write=False)
  return index, weights


# ----------------------------------------------------------------------------
# The plan: everything that depends only on the image size.
# ----------------------------------------------------------------------------
def _axis_spans(in_size: int, out_size: int, count: int, extent: int,
                offset: int, cfg: PreprocessConfig):
  """Spans producing the SAME-padded resized axis (extent rows) from the
  image sitting at `offset` on the canvas; padding rows get weight 0."""
  index, weights = gaussian_resize_spans(in_size, out_size)
  pad = same_padding_before(out_size, count, cfg.patch_size, cfg.patch_stride)
  n = max(min(out_size, extent - pad), 0)
  full_index = np.full((extent, SPAN), offset, np.int32)
  full_weights = np.zeros((extent, SPAN), np.float32)
  full_index[pad:pad + n] = index[:n] + offset
  full_weights[pad:pad + n] = weights[:n]
  return full_index, full_weights


@functools.lru_cache(maxsize=4096)
def _cached_plan(h: int, w: int, cfg: PreprocessConfig,
                 grid: Optional[Tuple[int, int]],
                 length: Optional[int]) -> Plan:
  cfg.check()
  p, s = cfg.patch_size, cfg.patch_stride
  ch, cw = grid_count(h, s), grid_count(w, s)
  gh, gw = grid if grid is not None else (ch, cw)
  if gh < ch or gw < cw:
    raise ValueError(f"canvas grid {gh}x{gw} cannot hold a {h}x{w} image "
                     f"({ch}x{cw} patches)")
  top = same_padding_before(h, ch, p, s)
  left = same_padding_before(w, cw, p, s)
  plan = {"box": np.array([top, left, h, w], np.int32),
          "rows_index": [], "rows_weight": [],
          "cols_index": [], "cols_weight": []}
  resized_index, spatial, scale, mask = [], [], [], []
  base = 0
  g_hash = cfg.hse_grid_size
  for scale_id, (length_k, g) in enumerate(zip(cfg.sorted_lengths,
                                               cfg.resized_grids)):
    rh, rw = arp_size(h, w, length_k)
    kh, kw = grid_count(rh, s), grid_count(rw, s)
    extent = (g - 1) * s + p
    for name, (size, out, k, off) in (("rows", (h, rh, kh, top)),
                                      ("cols", (w, rw, kw, left))):
      i, wt = _axis_spans(size, out, k, extent, off, cfg)
      plan[name + "_index"].append(i)
      plan[name + "_weight"].append(wt)
    cells = (np.arange(kh)[:, None] * g + np.arange(kw)[None, :]).reshape(-1)
    n, real = g * g, cells.size
    resized_index.append(base + cells)
    resized_index.append(np.full(n - real, -1))  # Padding: the zero row.
    spatial.append(_padded(hashed_spatial_index(g_hash, kh, kw), n))
    scale.append(_padded(np.full(real, scale_id), n))
    mask.append(_padded(np.ones(real), n))
    base += n
  native = cfg.max_seq_len_from_original_res
  cells = np.zeros(0, np.int64)
  if native is not None:
    cells = (np.arange(ch)[:, None] * gw + np.arange(cw)[None, :]).reshape(-1)
    ids = hashed_spatial_index(g_hash, ch, cw)
    n = cells.size if native < 0 else native
    cells, ids = cells[:n], ids[:n]
    spatial.append(_padded(ids, n))
    scale.append(_padded(np.full(cells.size, len(cfg.sorted_lengths)), n))
    mask.append(_padded(np.ones(cells.size), n))
  spatial, scale, mask = (np.concatenate(a) if a else np.zeros(0, np.int32)
                          for a in (spatial, scale, mask))
  total = spatial.size
  length = total if length is None else length
  if length < total:
    raise ValueError(f"{h}x{w} image has {total} tokens, more than the "
                     f"length {length} asked for")
  num_resized = base
  index = np.concatenate(resized_index) if resized_index else np.zeros(0)
  plan["resized_index"] = _padded(np.where(index < 0, base, index),
                                  num_resized)
  plan["native_cell"] = _padded(cells, length - num_resized)
  plan["spatial"] = _padded(spatial, length)
  plan["scale"] = _padded(scale, length)
  plan["mask"] = _padded(mask, length)
  for leaf in _leaves(plan):
    leaf.setflags(write=False)
  return plan


def _padded(a, n: int) -> np.ndarray:
  """int32 copy of `a` zero-padded (or cut) to n entries."""
  a = np.asarray(a)
  out = np.zeros(n, np.int32)
  out[:min(n, a.size)] = a[:n]
  return out


def _leaves(plan: Plan) -> List[np.ndarray]:
  out = []
  for v in plan.values():
    out += list(v) if isinstance(v, list) else [v]
  return out


def make_plan(h: int, w: int, cfg: PreprocessConfig,
              grid: Optional[Tuple[int, int]] = None,
              length: Optional[int] = None) -> Plan:
  """Everything about an h x w image's tokens that does not need its pixels.

  Args:
    h, w: image size.
    cfg: the preprocessing.
    grid: (gh, gw) patch grid of the canvas holding the image (default: the
      image's own SAME-padded grid); see `canvas_size`.
    length: pad the token arrays to this many tokens (default: exact).

  Returns:
    A dict of read-only NumPy arrays (cached; copy before changing):
    `box` int32 [4]: (top, left, h, w) of the image on the canvas (its SAME
    padding offsets); per resized scale k (lists): `rows_index`,
    `rows_weight`, `cols_index`, `cols_weight` [E_k, SPAN] with
    E_k = (g_k - 1) * stride + patch; `resized_index` [sum_k g_k^2]: the
    resized scales' tokens as indices into their concatenated patch grids
    (padding tokens: the row after them, a zero row);
    `native_cell` [length - sum_k g_k^2]: the native tokens (and the
    padding after them) as cells i * gw + j of the canvas's patch grid; per
    token: `spatial`, `scale`, `mask` [length].
  """
  return _cached_plan(int(h), int(w), cfg,
                      None if grid is None else (int(grid[0]), int(grid[1])),
                      None if length is None else int(length))


def canvas_size(grid: Tuple[int, int], cfg: PreprocessConfig
                ) -> Tuple[int, int]:
  """(Hc, Wc) pixels of a canvas whose native patch grid is grid."""
  p, s = cfg.patch_size, cfg.patch_stride
  return padded_extent(grid[0], p, s), padded_extent(grid[1], p, s)


def _isqrt_frac(num: int, den: int) -> int:
  """floor(sqrt(num / den)) for positive integers."""
  return math.isqrt(num // den)


def aspect_class(ch: int, cw: int) -> int:
  """floor(log2(cw / ch)), exactly, for patch counts >= 1."""
  if cw >= ch:
    return (cw // ch).bit_length() - 1
  return -(-(-ch // cw) - 1).bit_length()


def canvas_class(ch: int, cw: int, min_side: int = 8) -> Optional[int]:
  """The aspect class that picks an image's canvas (None: a small image)."""
  return None if max(ch, cw) <= min_side else aspect_class(ch, cw)


def class_grid(aspect: Optional[int], budget: int,
               min_side: int = 8) -> Tuple[int, int]:
  """The canvas patch grid of an aspect class and a patch budget.

  Every image of aspect class c = floor(log2(cw / ch)) with at most `budget`
  patches (ch * cw <= budget) fits the grid (gh, gw) =
  (floor(sqrt(budget / 2^c)), floor(sqrt(budget * 2^(c+1)))), whose area is
  at most sqrt(2) * budget: ch^2 * 2^c <= ch * cw <= budget, and
  cw^2 < 2^(c+1) * ch * cw. So canvases depend on an image only through its
  class and budget (e.g. the native tokens its length bucket allows), and a
  stream of mixed sizes needs one canvas per (bucket, class) present, not
  one per size. Small images (class None: both sides within `min_side`
  patches) share the square `min_side` grid.
  """
  if aspect is None:
    return min_side, min_side
  c = aspect
  if c >= 0:
    gh = _isqrt_frac(budget, 1 << c)
    gw = math.isqrt(budget << (c + 1))
  else:
    gh = math.isqrt(budget << -c)
    gw = (math.isqrt(budget << (1 + c)) if c >= -1 else
          _isqrt_frac(budget, 1 << -(c + 1)))
  return max(gh, 1), max(gw, 1)


def canvas_grid(ch: int, cw: int, budget: int,
                min_side: int = 8) -> Tuple[int, int]:
  """`class_grid` of a ch x cw patch image (checked to hold it)."""
  if ch * cw > budget:
    raise ValueError(f"{ch}x{cw} patches exceed the budget {budget}")
  gh, gw = class_grid(canvas_class(ch, cw, min_side), budget, min_side)
  if ch > gh or cw > gw:  # Cannot happen (see class_grid); never crop.
    raise AssertionError(f"canvas {gh}x{gw} < image {ch}x{cw}")
  return gh, gw


def stack_plans(plans: Sequence[Plan]) -> Plan:
  """Stacks plans of the same shapes along a new leading (batch) axis."""
  out = {}
  for k, v in plans[0].items():
    if isinstance(v, list):
      out[k] = [np.stack([p[k][i] for p in plans]) for i in range(len(v))]
    else:
      out[k] = np.stack([p[k] for p in plans])
  return out


def real_token_order(mask: np.ndarray, length: int) -> np.ndarray:
  """Where an image's real tokens (mask > 0) are, in order, padded to
  `length` with `mask.size` (one past the end: `take_tokens` reads a
  padding token there). For scoring with the padding tokens dropped.

  The original pads each resized scale to ceil(L/32)^2 tokens (a 512x384
  photo: 42 of 49 and 108 of 144 real); padding tokens are masked out of
  attention and only the CLS output is read, so a sequence holding the real
  tokens alone, in any order, gives the same score (self-attention is
  permutation-equivariant; every token carries its own spatial and scale
  ids) with less work.
  """
  where = np.flatnonzero(np.asarray(mask) > 0)
  if where.size > length:
    raise ValueError(f"{where.size} real tokens do not fit in {length}")
  out = np.full(length, np.asarray(mask).size, np.int32)
  out[:where.size] = where
  return out


def take_tokens(features: Features, order) -> Features:
  """Token features [T, ...] of one image at `order` [L] (jittable; an index
  >= T gives a padding token: zeros, mask 0)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return {k: jnp.take(v, order, axis=0, mode="fill", fill_value=0)
          for k, v in features.items()}


def drop_padding_tokens(features: Features) -> Features:
  """Host: an example's features without its padding tokens (mask 0); see
  `real_token_order`."""
  keep = np.asarray(features["mask"]) > 0
  return {k: np.asarray(v)[keep] for k, v in features.items()}


def empty_plan(like: Plan) -> Plan:
  """An all-zero plan shaped like `like`: no pixels, all tokens padding."""
  return {k: ([np.zeros_like(a) for a in v] if isinstance(v, list) else
              np.zeros_like(v)) for k, v in like.items()}


# ----------------------------------------------------------------------------
# The pixel ops, written once for NumPy, jax.numpy and TF (`xp`).
# They only use: take(mode="clip"), reshape, transpose, concatenate, where,
# arange, asarray, pad, and broadcasting arithmetic.
# ----------------------------------------------------------------------------
def normalize_value_range(image, xp=np):
  """uint8-range [0, 255] image -> float32 in [-1, 1], as the original."""
  x = xp.asarray(image, dtype=np.float32)
  return x / 255.0 * 2.0 - 1.0


def unit_range_to_model(image, xp=np):
  """Float image in [0, 1] -> [-1, 1] (`x / 255 * 2 - 1` for x = u8 / 255)."""
  del xp
  return image * 2.0 - 1.0


def _weighted_taps(x, index, weights, axis: int, xp, to_float=None):
  """sum_t weights[:, t] * take(x, index[:, t], axis), taps in TF's order."""
  if isinstance(xp, _TFOps) and to_float is None:
    return xp.weighted_taps(x, index, weights, axis)
  shape = [1] * 3
  shape[axis] = -1
  out = None
  for t in range(SPAN):
    w = xp.reshape(weights[:, t], shape)
    tap = xp.take(x, index[:, t], axis=axis, mode="clip")
    term = w * (tap if to_float is None else to_float(tap, xp))
    out = term if out is None else out + term
  return out


def resize_with_spans(x, rows_index, rows_weight, cols_index, cols_weight,
                      xp=np, to_float=None):
  """Separable resize of an [H, W, C] image: rows first, then columns (as
  TF's GatherSpans), each output pixel a weighted sum of SPAN taps.
  `to_float(values, xp)` converts gathered input pixels (e.g. uint8) first."""
  x = _weighted_taps(x, rows_index, rows_weight, 0, xp, to_float)
  return _weighted_taps(x, cols_index, cols_weight, 1, xp)


def patch_grid(x, patch: int, stride: int, gh, gw, xp=np):
  """[H, W, C] image -> [gh * gw, patch * patch * C] patches of the grid at
  (i * stride, j * stride), in raster order, each flattened (row, col, C) as
  `tf.image.extract_patches`."""
  c = x.shape[-1]
  if patch == stride:
    g = xp.reshape(x[:gh * patch, :gw * patch], (gh, patch, gw, patch, c))
  else:
    rows = xp.reshape(xp.arange(gh)[:, None] * stride +
                      xp.arange(patch)[None, :], (-1,))
    cols = xp.reshape(xp.arange(gw)[:, None] * stride +
                      xp.arange(patch)[None, :], (-1,))
    g = xp.take(xp.take(x, rows, axis=0, mode="clip"), cols, axis=1,
                mode="clip")
    g = xp.reshape(g, (gh, patch, gw, patch, c))
  g = xp.transpose(g, (0, 2, 1, 3, 4))
  return xp.reshape(g, (gh * gw, patch * patch * c))


def take_cells(x, cells, patch: int, stride: int, gw, xp=np):
  """The [patch, patch, C] windows of an [H, W, C] canvas at cells
  i * gw + j (window origin (i * stride, j * stride)) -> [n, P, P, C]."""
  i, j = cells // gw, cells % gw
  if isinstance(xp, _TFOps):
    return xp.take_windows(x, i, j, patch, stride, gw)
  c = x.shape[-1]
  if patch == stride:
    gh = x.shape[0] // patch
    x5 = xp.reshape(x[:gh * patch, :gw * patch], (gh, patch, gw, patch, c))
    return x5[i, :, j]  # Advanced indices apart: [n, P, P, C].
  a = xp.arange(patch)
  rows = (i * stride)[:, None, None] + a[None, :, None]
  cols = (j * stride)[:, None, None] + a[None, None, :]
  return x[rows, cols]


def _zero_unless(keep, x, xp):
  """x where keep (broadcast), else 0."""
  if isinstance(xp, _TFOps):  # TF's broadcasting select is ~5x a multiply.
    return x * xp.asarray(keep, dtype=x.dtype)
  return xp.where(keep, x, xp.asarray(0.0, dtype=x.dtype))


def tokens_from_canvas(canvas, plan: Plan, cfg: PreprocessConfig, grid,
                       xp=np, to_float=normalize_value_range,
                       exact: bool = False) -> Features:
  """The token features of one image from its canvas and plan.

  Args:
    canvas: [Hc, Wc, 3] pixels holding the image at `plan["box"]`. What
      lies around it is never read as pixels (masked to the original's zero
      padding), so it may hold anything, except with `to_float=None`, where
      it must be 0.
    plan: the image's `make_plan(..., grid=grid)`.
    cfg: the preprocessing.
    grid: (gh, gw), the canvas's native patch grid (`canvas_size(grid)` is
      its pixel size).
    xp: array namespace: numpy, jax.numpy or `tf_ops()`.
    to_float: `f(values, xp)`, canvas values -> [-1, 1] floats:
      `normalize_value_range` for uint8 pixels, `unit_range_to_model` for
      floats in [0, 1], None for a canvas already in [-1, 1]. Applied to
      the pixels each op reads, so no float copy of the canvas is made (in
      a fused program such as XLA's).
    exact: the caller promises that the canvas is the image's own
      SAME-padded extent with zeros around it (`to_float=None`), the plan
      is `make_plan(h, w, cfg)` (no canvas grid, no length) and the native
      scale is kept whole: then the native tokens are the canvas's patch
      grid as it is (no gather, no masking).

  Returns:
    {"patches": [T, P*P*3], "spatial", "scale", "mask": [T]}.
  """
  p, s = cfg.patch_size, cfg.patch_stride
  d = p * p * canvas.shape[-1]
  parts = []
  grids = []
  for k, g in enumerate(cfg.resized_grids):
    r = resize_with_spans(canvas, plan["rows_index"][k],
                          plan["rows_weight"][k], plan["cols_index"][k],
                          plan["cols_weight"][k], xp, to_float)
    grids.append(patch_grid(r, p, s, g, g, xp))
  if grids:
    zero = xp.reshape(grids[0][0] * 0.0, (1, d))  # Padding tokens read it.
    allp = xp.concatenate(grids + [zero], axis=0)
    parts.append(xp.take(allp, plan["resized_index"], axis=0, mode="clip"))
  if exact and cfg.max_seq_len_from_original_res is not None and (
      cfg.max_seq_len_from_original_res < 0):
    if to_float is not None:
      raise ValueError("exact=True needs a canvas in [-1, 1] (to_float=None)")
    parts.append(patch_grid(canvas, p, s, grid[0], grid[1], xp))
    patches = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)
    return {"patches": patches, "spatial": plan["spatial"],
            "scale": plan["scale"], "mask": plan["mask"]}
  # Native tokens (and the length padding after them): windows of the
  # canvas; pixels outside the image and padding tokens set to zero.
  cells = plan["native_cell"]
  box = plan["box"]
  win = take_cells(canvas, cells, p, s, grid[1], xp)
  real = plan["mask"][sum(g * g for g in cfg.resized_grids):] > 0
  if to_float is None:  # Zeros around the image already: mask padding only.
    keep = xp.reshape(real, (-1, 1, 1, 1))
  else:
    win = to_float(win, xp)
    a = xp.arange(p)
    rows = (cells // grid[1] * s)[:, None] + a[None, :]
    cols = (cells % grid[1] * s)[:, None] + a[None, :]
    keep = (((rows >= box[0]) & (rows < box[0] + box[2]) &
             real[:, None])[:, :, None, None] &
            ((cols >= box[1]) & (cols < box[1] + box[3]))[:, None, :, None])
  win = _zero_unless(keep, win, xp)
  parts.append(xp.reshape(win, (-1, d)))
  patches = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)
  return {"patches": patches, "spatial": plan["spatial"],
          "scale": plan["scale"], "mask": plan["mask"]}


def place_on_canvas(image: np.ndarray, box, canvas_hw,
                    out: Optional[np.ndarray] = None) -> np.ndarray:
  """Host: the image at box's offsets on a zero canvas (any dtype)."""
  top, left, h, w = (int(v) for v in box)
  if out is None:
    out = np.zeros(tuple(canvas_hw) + image.shape[2:], image.dtype)
  else:
    out[...] = 0
  out[top:top + h, left:left + w] = image
  return out


# ----------------------------------------------------------------------------
# Host (NumPy) entry points.
# ----------------------------------------------------------------------------
def _host_tokens(image: np.ndarray, cfg: PreprocessConfig, to_float
                ) -> Features:
  h, w = image.shape[:2]
  plan = make_plan(h, w, cfg)
  grid = (grid_count(h, cfg.patch_stride), grid_count(w, cfg.patch_stride))
  x = place_on_canvas(image, plan["box"], canvas_size(grid, cfg))
  return tokens_from_canvas(x, plan, cfg, grid, np, to_float)


def get_multiscale_patches(image: np.ndarray, cfg: PreprocessConfig
                          ) -> Features:
  """[h, w, 3] float image in [-1, 1] -> per-token features of all scales.

  Scales are the ARP-resized ones in ascending order of longer side (ids
  0..K-1), then the native resolution (id K) if configured.
  """
  return _host_tokens(np.asarray(image, np.float32), cfg, None)


def preprocess_image(image_uint8: np.ndarray, cfg: PreprocessConfig
                    ) -> Features:
  """Decoded [h, w, 3] uint8 image -> multi-scale token features (NumPy)."""
  return _host_tokens(np.asarray(image_uint8), cfg, normalize_value_range)


def resize_preserve_aspect_ratio(image: np.ndarray,
                                 longer_side_length: int) -> np.ndarray:
  """ARP Gaussian resize of an [h, w, c] float image (original semantics)."""
  image = np.asarray(image, np.float32)
  h, w = image.shape[:2]
  rh, rw = arp_size(h, w, longer_side_length)
  ri, rwt = gaussian_resize_spans(h, rh)
  ci, cwt = gaussian_resize_spans(w, rw)
  return resize_with_spans(image, ri, rwt, ci, cwt, np)


def extract_patches(image: np.ndarray, patch_size: int, patch_stride: int
                   ) -> Tuple[np.ndarray, int, int]:
  """[h, w, c] image -> (patches [n, P*P*c], count_h, count_w); SAME padding."""
  image = np.asarray(image)
  h, w = image.shape[:2]
  ch, cw = grid_count(h, patch_stride), grid_count(w, patch_stride)
  top = same_padding_before(h, ch, patch_size, patch_stride)
  left = same_padding_before(w, cw, patch_size, patch_stride)
  canvas = place_on_canvas(image, (top, left, h, w),
                           (padded_extent(ch, patch_size, patch_stride),
                            padded_extent(cw, patch_size, patch_stride)))
  return patch_grid(canvas, patch_size, patch_stride, ch, cw, np), ch, cw


# ----------------------------------------------------------------------------
# TensorFlow (tf.data) entry point: the same ops, TF kernels.
# ----------------------------------------------------------------------------
class _TFOps:
  """The few NumPy-style functions `tokens_from_canvas` uses, as TF ops."""

  def __init__(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self.tf = tf

  def take(self, a, indices, axis=0, mode="clip"):
    del mode  # Indices are in range by construction; tf.gather checks.
    return self.tf.gather(a, indices, axis=axis)

  def reshape(self, a, shape):
    return self.tf.reshape(a, shape)

  def transpose(self, a, axes):
    return self.tf.transpose(a, axes)

  def concatenate(self, arrays, axis=0):
    return self.tf.concat(arrays, axis=axis)

  def where(self, cond, a, b):
    return self.tf.where(cond, a, b)

  def arange(self, n):
    return self.tf.range(n)

  def asarray(self, a, dtype=None):
    a = self.tf.convert_to_tensor(a)
    return a if dtype is None else self.tf.cast(a, dtype)

  def weighted_taps(self, x, index, weights, axis):
    """`_weighted_taps` as one gather and one contraction: TF runs each op
    as a kernel over full tensors, so 3 gathers, multiplies and adds cost
    ~2x more memory traffic. Sums the taps in another order: within float
    rounding of the sequential sum (1e-7)."""
    tf = self.tf
    if axis == 1:  # Gather whole rows (TF gathers a non-leading axis in
      # C-element pieces, ~10x slower): transpose, resize rows, transpose.
      x = tf.transpose(x, (1, 0, 2))
    out = tf.einsum("et,etwc->ewc", weights, tf.gather(x, index, axis=0))
    return out if axis == 0 else tf.transpose(out, (1, 0, 2))

  def take_windows(self, x, i, j, patch, stride, gw):
    """take_cells' [n, P, P, C] windows at (i * stride, j * stride)."""
    tf = self.tf
    if patch == stride:  # Whole cells: a grid of windows, one gather.
      c = x.shape[-1]
      gh = tf.shape(x)[0] // patch
      g = tf.reshape(x[:gh * patch, :gw * patch], (gh, patch, gw, patch, c))
      g = tf.reshape(tf.transpose(g, (0, 2, 1, 3, 4)),
                     (gh * gw, patch, patch, c))
      return tf.gather(g, i * gw + j)
    a = tf.range(patch)
    rows = (i * stride)[:, None, None] + a[None, :, None]
    cols = (j * stride)[:, None, None] + a[None, None, :]
    rows = tf.broadcast_to(rows, tf.shape(rows + cols))
    cols = tf.broadcast_to(cols, tf.shape(rows))
    return tf.gather_nd(x, tf.stack([rows, cols], axis=-1))


@functools.lru_cache(maxsize=None)
def tf_ops() -> _TFOps:
  return _TFOps()


def _flat_plan(h, w, cfg: PreprocessConfig) -> List[np.ndarray]:
  plan = make_plan(int(h), int(w), cfg)
  s = cfg.patch_stride
  grid = np.array([grid_count(int(h), s), grid_count(int(w), s)], np.int32)
  return [grid] + _leaves(plan)


def _unflatten_plan(flat, cfg: PreprocessConfig):
  k = len(cfg.sorted_lengths)
  grid, box, rest = flat[0], flat[1], list(flat[2:])
  plan = {"box": box}
  for name in ("rows_index", "rows_weight", "cols_index", "cols_weight"):
    plan[name], rest = rest[:k], rest[k:]
  for name in ("resized_index", "native_cell", "spatial", "scale", "mask"):
    plan[name] = rest.pop(0)
  return grid, plan


def tf_preprocess_image(image_uint8, cfg: PreprocessConfig) -> Features:
  """`preprocess_image` for tf.data: a decoded [h, w, 3] uint8 tf.Tensor ->
  token features (tf.Tensors), computed by `tokens_from_canvas` with TF ops.

  The size-only plan comes from `make_plan` through `tf.numpy_function`
  (cached per size: microseconds per call once seen).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cfg.check()
  ops = tf_ops()
  shape = tf.shape(image_uint8)
  dtypes = [tf.int32, tf.int32]
  k = len(cfg.sorted_lengths)
  dtypes += [tf.int32] * k + [tf.float32] * k + [tf.int32] * k
  dtypes += [tf.float32] * k + [tf.int32] * 5
  flat = tf.numpy_function(functools.partial(_flat_plan, cfg=cfg),
                           [shape[0], shape[1]], dtypes, stateful=False)
  grid, plan = _unflatten_plan(flat, cfg)
  grid.set_shape([2])
  plan["box"].set_shape([4])
  p, s = cfg.patch_size, cfg.patch_stride
  for i, g in enumerate(cfg.resized_grids):
    for name in ("rows_index", "rows_weight", "cols_index", "cols_weight"):
      plan[name][i].set_shape([(g - 1) * s + p, SPAN])
  for name in ("resized_index", "native_cell", "spatial", "scale", "mask"):
    plan[name].set_shape([None])
  box = plan["box"]
  hc = tf.maximum((grid[0] - 1) * s + p, grid[0] * s)
  wc = tf.maximum((grid[1] - 1) * s + p, grid[1] * s)
  # As the original: to [-1, 1] first (once: TF does not fuse), then the
  # zero padding.
  x = tf.pad(normalize_value_range(image_uint8, ops),
             [[box[0], hc - box[0] - box[2]], [box[1], wc - box[1] - box[3]],
              [0, 0]])
  feats = tokens_from_canvas(x, plan, cfg, (grid[0], grid[1]), ops, None,
                             exact=True)
  feats["patches"] = tf.ensure_shape(feats["patches"], [None, cfg.token_dim])
  return feats


# ----------------------------------------------------------------------------
# Layout helpers.
# ----------------------------------------------------------------------------
def to_concatenated(features) -> np.ndarray:
  """Features -> the original's `[..., P*P*3 + 3]` float32 layout."""
  extra = [np.asarray(features[k], np.float32)[..., None]
           for k in ("spatial", "scale", "mask")]
  return np.concatenate([np.asarray(features["patches"], np.float32)] + extra,
                        axis=-1)


def from_concatenated(x) -> Dict[str, np.ndarray]:
  """The original's `[..., P*P*3 + 3]` layout -> features."""
  x = np.asarray(x)
  return {
      "patches": x[..., :-3].astype(np.float32),
      "spatial": x[..., -3].astype(np.int32),
      "scale": x[..., -2].astype(np.int32),
      "mask": x[..., -1].astype(np.int32),
  }


def pad_batch(examples: Sequence[Dict[str, np.ndarray]],
              length: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Stacks token features of different lengths, zero-padding (mask 0)."""
  length = length or max(e["mask"].shape[0] for e in examples)
  out = {}
  for k in FEATURE_KEYS:
    first = np.asarray(examples[0][k])
    arr = np.zeros((len(examples), length) + first.shape[1:], first.dtype)
    for i, e in enumerate(examples):
      v = np.asarray(e[k])[:length]
      arr[i, :v.shape[0]] = v
    out[k] = arr
  return out
