r"""Pictures of MUSIQ: what the model looks at, its hash embedding, its scores.

    python -m musiq_jax.visualize --workdir=WORKDIR      # eval plots + HSE
    python -m musiq_jax.predict --ckpt_path=C --image_path=a.jpg \
        --save_attention=DIR                             # attention overlays

Four kinds of picture, each a function returning arrays (for tests and your
own plots) and one drawing them with matplotlib. Figures are built with
`matplotlib.figure.Figure` (Agg canvas), never through `pyplot`, so nothing
needs a display, no global backend is switched (notebooks keep theirs) and
nothing leaks between calls. Saved PNGs have exactly `figsize * dpi` pixels
(no tight bounding box), so their size is predictable.

(a) Attention from the CLS token, per scale (`attention_maps`,
`plot_attention`), for the last layer and for attention rollout (Abnar &
Zuidema, 2020):

* Last layer: the CLS query's row of the last block's attention, averaged
  over heads.
* Rollout: per layer, average the heads, add the identity and renormalise the
  rows (`0.5 * A + 0.5 * I` for row-stochastic A: the residual connection),
  then multiply through the layers, `R = A'_L ... A'_1`; the map is R's CLS
  row.
* Padding: the model gives padding keys zero weight already; to make the
  maps independent of that detail (and of what padded *query* rows hold),
  padding columns are zeroed and rows renormalised, and padding rows are
  replaced by the identity before the rollout. Padding therefore gets exactly
  zero, and the CLS token's attention to itself is dropped.
* Per-scale normalisation: the sequence is split into its scales with the
  preprocessing's own arithmetic (`scale_lengths`, ARP sizes, SAME padding).
  Each scale's map is the CLS attention on that scale's real tokens,
  rescaled to sum to 1 over that scale's patches (all zeros if the scale got
  no attention at all); `ScaleMap.mass` keeps the share of the CLS attention
  (over all real tokens) that went to the scale. Native-resolution patches
  cut by `max_seq_len_from_original_res` are not in the input and get 0.
* Drawing: each scale's map is shown on that scale's image (the ARP-resized
  image the model saw, or the full-size one) by giving every pixel the
  weight of the patch covering it, with the SAME padding offsets (TF centres
  the zero padding: `pad_top = pad_total // 2`). The colour scale of each
  panel runs from 0 to that panel's maximum.

(b) The hash-based spatial embedding's cosine-similarity grid, as the
paper's figure: for each of the G x G grid cells, a small G x G map of the
cosine similarity of its embedding to every cell's (`hse_similarity`,
`plot_hse_similarity`).

(c) Predicted score against MOS with SRCC / PLCC in the title and the
fitted 4-parameter logistic of `metrics.fit_logistic` (`plot_scatter`).

(d) Score histograms per split, predictions and MOS (`plot_histograms`).

`write_eval_plots(workdir, predictions_by_split)` writes (c) and (d) for an
evaluation; `read_predictions(workdir)` reads the `predictions_<split>.npz`
files that training writes.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# matplotlib is imported lazily in the drawing functions: the array
# functions (and the CLIs that do not draw) should not pay its import time.

ATTENTION_METHODS = ("last_layer", "rollout")


# ----------------------------------------------------------------------------
# (a) Attention: token layout of each scale.
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScaleLayout:
  """Where one scale's tokens sit in the sequence and on its image.

  Attributes:
    scale_id: the scale embedding index (resized ascending, native last).
    name: e.g. "224px" or "native".
    start: index of the scale's first token in the sequence (without CLS).
    length: tokens of the scale in the sequence, padding included.
    count_h, count_w: patch grid of the scale's image (SAME padding).
    num_real: real tokens (< count_h * count_w when the native scale is cut).
    image_size: (h, w) of the scale's image.
    offset: (top, left) zero padding before the first patch row/column.
    patch_size, stride: patch geometry in pixels.
  """
  scale_id: int
  name: str
  start: int
  length: int
  count_h: int
  count_w: int
  num_real: int
  image_size: Tuple[int, int]
  offset: Tuple[int, int]
  patch_size: int
  stride: int


def _same_padding_before(size: int, count: int, patch: int, stride: int) -> int:
  # TF's SAME padding: total = max((count - 1) * stride + patch - size, 0),
  # split with the smaller half first.
  return max((count - 1) * stride + patch - size, 0) // 2


def scale_layouts(h: int, w: int, pp_config) -> List[ScaleLayout]:
  """Token layout of an h x w image under a `PreprocessConfig`."""
  from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top
  cfg = pp_config
  lengths = preprocessing.scale_lengths(h, w, cfg)
  sizes = [(preprocessing.arp_size(h, w, l), f"{l}px")
           for l in cfg.sorted_lengths]
  if cfg.max_seq_len_from_original_res is not None:
    sizes.append(((h, w), "native"))
  out, start = [], 0
  for scale_id, (((sh, sw), name), length) in enumerate(zip(sizes, lengths)):
    ch = math.ceil(sh / cfg.patch_stride)
    cw = math.ceil(sw / cfg.patch_stride)
    out.append(ScaleLayout(
        scale_id=scale_id, name=name, start=start, length=length,
        count_h=ch, count_w=cw, num_real=min(ch * cw, length),
        image_size=(sh, sw),
        offset=(_same_padding_before(sh, ch, cfg.patch_size, cfg.patch_stride),
                _same_padding_before(sw, cw, cfg.patch_size, cfg.patch_stride)),
        patch_size=cfg.patch_size, stride=cfg.patch_stride))
    start += length
  return out


@dataclasses.dataclass
class ScaleMap:
  """The CLS attention on one scale, as a patch grid.

  Attributes:
    layout: the scale's `ScaleLayout`.
    grid: [count_h, count_w] weights summing to 1 over the scale's patches
      (all zeros if the scale got no attention); 0 for patches not in the
      input.
    mass: share of the CLS attention (over all real tokens) on this scale.
  """
  layout: ScaleLayout
  grid: np.ndarray
  mass: float

  def upsample(self) -> np.ndarray:
    """[h, w] map on the scale's image: each pixel gets the weight of the
    patch covering it (the mean over patches if strided patches overlap)."""
    lay = self.layout

    def cover(size, count, offset):
      # cover[y, i] = 1 if pixel y lies in patch i (shifted by the padding).
      y = np.arange(size)[:, None] + offset
      first = np.arange(count)[None, :] * lay.stride
      return ((y >= first) & (y < first + lay.patch_size)).astype(np.float64)

    rows = cover(lay.image_size[0], lay.count_h, lay.offset[0])
    cols = cover(lay.image_size[1], lay.count_w, lay.offset[1])
    total = rows @ self.grid @ cols.T
    counts = rows.sum(1)[:, None] * cols.sum(1)[None, :]
    return total / np.maximum(counts, 1.0)


def attention_rollout(weights: np.ndarray,
                      mask: Optional[np.ndarray] = None) -> np.ndarray:
  """Attention rollout of one example.

  Args:
    weights: [layers, heads, T, T] attention probabilities (query, key).
    mask: [T] 1 for real tokens (CLS included), 0 for padding; None = all.

  Returns:
    [T, T] rolled-out attention (rows of real tokens sum to 1).
  """
  weights = _clean_weights(weights, mask)
  a = weights.mean(axis=1)
  eye = np.eye(a.shape[-1])
  rollout = eye
  for layer in a:
    layer = layer + eye
    layer = layer / layer.sum(-1, keepdims=True)
    rollout = layer @ rollout
  return rollout


def _clean_weights(weights, mask) -> np.ndarray:
  """Zeroes padding keys, renormalises rows, makes padding rows identity."""
  weights = np.asarray(weights, np.float64)
  if weights.ndim != 4 or weights.shape[-1] != weights.shape[-2]:
    raise ValueError(f"Expected [layers, heads, T, T] attention weights, got "
                     f"{weights.shape}")
  t = weights.shape[-1]
  if mask is None:
    return weights
  mask = np.asarray(mask).reshape(-1).astype(bool)
  if mask.shape != (t,):
    raise ValueError(f"mask has {mask.size} entries for {t} tokens "
                     "(give the mask with the CLS token included)")
  weights = weights * mask[None, None, None, :]
  sums = weights.sum(-1, keepdims=True)
  weights = np.where(sums > 0, weights / np.where(sums > 0, sums, 1.0), 0.0)
  pad_rows = ~mask
  weights[:, :, pad_rows, :] = 0.0
  weights[:, :, pad_rows, pad_rows] = 1.0
  return weights


def cls_attention(weights: np.ndarray, mask: Optional[np.ndarray] = None,
                  method: str = "rollout") -> np.ndarray:
  """CLS attention on the tokens (CLS itself excluded): [T - 1].

  Args:
    weights: [layers, heads, T, T] attention of one example, CLS first.
    mask: [T] or [T - 1] real-token mask (without CLS: a 1 is prepended).
    method: "last_layer" (head mean of the last block) or "rollout".
  """
  weights = np.asarray(weights)
  if mask is not None:
    mask = np.asarray(mask).reshape(-1)
    if mask.size == weights.shape[-1] - 1:
      mask = np.concatenate([[1], mask])
  if method == "rollout":
    row = attention_rollout(weights, mask)[0]
  elif method == "last_layer":
    row = _clean_weights(weights[-1:], mask)[0].mean(0)[0]
  else:
    raise ValueError(f"Unknown attention method {method!r}; expected one of "
                     f"{ATTENTION_METHODS}")
  return row[1:]


def heat_maps(token_attention: np.ndarray, mask: np.ndarray, h: int, w: int,
              pp_config) -> List[ScaleMap]:
  """Splits per-token CLS attention into per-scale patch grids.

  Args:
    token_attention: [N] attention of the CLS token on the N tokens.
    mask: [N] real-token mask of the same tokens (1 real, 0 padding).
    h, w: size of the original image.
    pp_config: the `PreprocessConfig` that made the tokens.

  Returns:
    One `ScaleMap` per scale, in the sequence's order.
  """
  att = np.asarray(token_attention, np.float64).reshape(-1)
  mask = np.asarray(mask).reshape(-1).astype(bool)
  layouts = scale_layouts(h, w, pp_config)
  n = sum(l.length for l in layouts)
  if att.size < n or mask.size != att.size:
    raise ValueError(f"{att.size} attention values and {mask.size} mask "
                     f"entries for a {h}x{w} image that makes {n} tokens")
  att = np.where(mask, att, 0.0)  # Padding gets nothing.
  real_total = att.sum()
  out = []
  for lay in layouts:
    seg_mask = mask[lay.start:lay.start + lay.length]
    if (seg_mask[:lay.num_real].sum() != lay.num_real or
        seg_mask[lay.num_real:].any()):
      raise ValueError(f"Scale {lay.name}: the mask does not match the "
                       f"preprocessing ({lay.num_real} real tokens first); "
                       "is pp_config the one that made the tokens?")
    seg = att[lay.start:lay.start + lay.num_real]
    flat = np.zeros(lay.count_h * lay.count_w)
    flat[:lay.num_real] = seg
    total = flat.sum()
    grid = (flat / total if total > 0 else flat).reshape(lay.count_h,
                                                         lay.count_w)
    out.append(ScaleMap(layout=lay, grid=grid,
                        mass=float(total / real_total) if real_total > 0
                        else 0.0))
  return out


def scale_images(image: np.ndarray, pp_config) -> List[np.ndarray]:
  """The uint8 image of every scale, as the model sees it (ARP resizes)."""
  from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top
  image = np.asarray(image)
  x = preprocessing.normalize_value_range(image)
  out = []
  for length in pp_config.sorted_lengths:
    r = preprocessing.resize_preserve_aspect_ratio(x, length)
    out.append(np.clip(np.round((r + 1.0) * 127.5), 0, 255).astype(np.uint8))
  if pp_config.max_seq_len_from_original_res is not None:
    out.append(image.astype(np.uint8))
  return out


def _find_attention(intermediates) -> List[np.ndarray]:
  """The sown attention weights, ordered by encoder block."""
  found = []

  def walk(tree, path):
    for k, v in tree.items():
      if k == "attention_weights":
        found.append((path, v[0] if isinstance(v, (tuple, list)) else v))
      elif isinstance(v, Mapping):
        walk(v, path + (k,))

  walk(intermediates, ())

  def block_index(item):
    for part in item[0]:
      if part.startswith("encoderblock_"):
        return int(part.rsplit("_", 1)[1])
    return 0

  if not found:
    raise ValueError("The model sowed no attention weights: build it with "
                     "Model(sow_attention=True).")
  return [np.asarray(v) for _, v in sorted(found, key=block_index)]


def attention_weights(model, params, features) -> Tuple[np.ndarray, float]:
  """Attention of every block for one example.

  Args:
    model: a `musiq.Model` (re-built with `sow_attention=True` here).
    params: its params.
    features: token features of one image (unbatched, from preprocessing).

  Returns:
    ([layers, heads, T, T] float32 weights with CLS first, head output).
  """
  import jax  # pylint: disable=g-import-not-at-top
  model = model.clone(sow_attention=True)
  batch = {k: np.asarray(v)[None] for k, v in features.items()}

  @jax.jit
  def run(params, batch):
    return model.apply({"params": params}, batch, train=False,
                       mutable=["intermediates"])

  logits, state = run(params, batch)
  weights = np.stack([w[0] for w in _find_attention(state["intermediates"])])
  return weights.astype(np.float32), np.asarray(logits)[0]


def attention_maps(model, params, image: np.ndarray, pp_config,
                   methods: Sequence[str] = ATTENTION_METHODS
                   ) -> Dict[str, List[ScaleMap]]:
  """CLS attention heat maps of a uint8 [h, w, 3] image, per method and scale.

  Returns:
    {method: [ScaleMap per scale]} for each of `methods`.
  """
  from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top
  image = np.asarray(image)
  feats = preprocessing.preprocess_image(image, pp_config)
  weights, _ = attention_weights(model, params, feats)
  h, w = image.shape[:2]
  return {m: heat_maps(cls_attention(weights, feats["mask"], m), feats["mask"],
                       h, w, pp_config) for m in methods}


def _pixels(image, name: Optional[str] = None) -> np.ndarray:
  """Path, encoded bytes or uint8 array -> uint8 [h, w, 3] (as the scorer)."""
  from musiq_jax import image_io  # pylint: disable=g-import-not-at-top
  if isinstance(image, np.ndarray):
    if image.ndim == 2:
      image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
      raise image_io.ImageError(name or "<array>", "expected an [h, w, 3] "
                                f"uint8 array, got {image.dtype} {image.shape}")
    return image
  if isinstance(image, (bytes, bytearray)):
    return image_io.decode_image(bytes(image), name or "<bytes>")
  return image_io.read_image(image)


def scorer_attention(scorer, image, name: Optional[str] = None,
                     methods: Sequence[str] = ATTENTION_METHODS):
  """(pixels, maps) of one image under a `scorer.Scorer`'s model.

  Uses the scorer's model, params and preprocessing; raises `ImageError` for
  an image the scorer would refuse (unreadable, too many native tokens).
  """
  pixels = _pixels(image, name)
  scorer.check_size(pixels.shape[0], pixels.shape[1], name or str(image)
                    if isinstance(image, (str, os.PathLike)) else "<image>")
  return pixels, attention_maps(scorer.model, scorer.params, pixels,
                                scorer.pp_config, methods)


def save_attention_png(scorer, image, out_path: str,
                       name: Optional[str] = None,
                       score: Optional[float] = None, **kwargs) -> str:
  """Writes the attention overlays of one image to `out_path` (PNG)."""
  pixels, maps = scorer_attention(scorer, image, name)
  label = name or (os.path.basename(os.fspath(image))
                   if isinstance(image, (str, os.PathLike)) else "image")
  title = label if score is None else f"{label}: score {score:.3f}"
  plot_attention(pixels, maps, scorer.pp_config, out_path, title=title,
                 **kwargs)
  return out_path


# ----------------------------------------------------------------------------
# Drawing helpers.
# ----------------------------------------------------------------------------
def _figure(width_in: float, height_in: float):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  return Figure(figsize=(width_in, height_in))


def _finish(fig, path: Optional[str], dpi: int):
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
  return fig


def plot_attention(image: np.ndarray, maps: Mapping[str, Sequence[ScaleMap]],
                   pp_config, path: Optional[str] = None,
                   title: Optional[str] = None, panel_size: float = 2.6,
                   dpi: int = 100, alpha: float = 0.55, cmap: str = "jet"):
  """Draws CLS attention overlays: one row per method, one column per scale.

  Args:
    image: the uint8 [h, w, 3] image the maps were computed for.
    maps: `attention_maps(...)` output.
    pp_config: the `PreprocessConfig` used (to redo each scale's image).
    path: PNG file to write (None: only return the figure).
    title: figure title.
    panel_size: inches per panel; the figure is (scales x methods) panels.
    dpi: resolution of the PNG (its size is panel_size * dpi per panel).
    alpha, cmap: overlay opacity and colour map.

  Returns:
    The matplotlib `Figure`.
  """
  images = scale_images(image, pp_config)
  methods = list(maps)
  num_scales = len(images)
  fig = _figure(panel_size * num_scales, panel_size * len(methods))
  axes = fig.subplots(len(methods), num_scales, squeeze=False)
  for row, method in enumerate(methods):
    for col, (scale_map, scale_image) in enumerate(zip(maps[method], images)):
      ax = axes[row][col]
      heat = scale_map.upsample()
      ax.imshow(scale_image, interpolation="bilinear")
      ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0.0,
                vmax=max(float(heat.max()), 1e-12), interpolation="nearest")
      lay = scale_map.layout
      ax.set_title(f"{method.replace('_', ' ')}, {lay.name} "
                   f"{lay.image_size[1]}x{lay.image_size[0]}\n"
                   f"{lay.num_real} patches, mass {scale_map.mass:.2f}",
                   fontsize=7)
      ax.set_xticks([])
      ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return _finish(fig, path, dpi)


# ----------------------------------------------------------------------------
# (b) Hash-based spatial embedding.
# ----------------------------------------------------------------------------
POS_EMBEDDING_KEY = "Transformer/posembed_input/pos_embedding"


def _pos_table(params_or_table) -> np.ndarray:
  """[G*G, D] table from params (nested or '/'-flat) or the array itself."""
  x = params_or_table
  if isinstance(x, Mapping):
    if "params" in x:
      x = x["params"]
    if POS_EMBEDDING_KEY in x:
      x = x[POS_EMBEDDING_KEY]
    else:
      for part in POS_EMBEDDING_KEY.split("/"):
        if not isinstance(x, Mapping) or part not in x:
          raise ValueError(f"No {POS_EMBEDDING_KEY} in the params")
        x = x[part]
  table = np.asarray(x, np.float64)
  return table.reshape(-1, table.shape[-1])


def hse_similarity(params_or_table) -> np.ndarray:
  """Cosine similarity of the HSE rows: [G, G, G, G].

  `sim[i, j]` is the G x G map of the similarity of cell (i, j)'s
  embedding to every cell's; `sim[i, j, i, j] == 1`.
  """
  table = _pos_table(params_or_table)
  g = int(round(math.sqrt(table.shape[0])))
  if g * g != table.shape[0]:
    raise ValueError(f"{table.shape[0]} spatial embeddings is not a G x G "
                     "grid")
  unit = table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True),
                            1e-12)
  return (unit @ unit.T).reshape(g, g, g, g)


def plot_hse_similarity(similarity: np.ndarray, path: Optional[str] = None,
                        title: Optional[str] = None, size: float = 6.0,
                        dpi: int = 100, cmap: str = "viridis"):
  """The paper's figure: a G x G grid of G x G cosine-similarity maps.

  Drawn as one mosaic (one-pixel gaps between the small maps) rather than
  G^2 subplots, which would take seconds to lay out.
  """
  sim = np.asarray(similarity)
  g = sim.shape[0]
  cell = g + 1
  mosaic = np.full((g * cell - 1, g * cell - 1), np.nan)
  for i in range(g):
    for j in range(g):
      mosaic[i * cell:i * cell + g, j * cell:j * cell + g] = sim[i, j]
  fig = _figure(size, size)
  ax = fig.add_axes([0.09, 0.08, 0.72, 0.84])
  im = ax.imshow(mosaic, cmap=cmap, vmin=-1.0, vmax=1.0,
                 interpolation="nearest")
  centres = np.arange(g) * cell + (g - 1) / 2
  ax.set_xticks(centres, [str(j) for j in range(g)], fontsize=7)
  ax.set_yticks(centres, [str(i) for i in range(g)], fontsize=7)
  ax.set_xlabel("column t_j")
  ax.set_ylabel("row t_i")
  ax.set_title(title or f"HSE cosine similarity ({g}x{g} grid)", fontsize=9)
  cax = fig.add_axes([0.84, 0.2, 0.03, 0.6])
  fig.colorbar(im, cax=cax)
  return _finish(fig, path, dpi)


# ----------------------------------------------------------------------------
# (c) Scatter and (d) histograms.
# ----------------------------------------------------------------------------
def _pairs(prediction, label) -> Tuple[np.ndarray, np.ndarray]:
  x = np.asarray(prediction, np.float64).reshape(-1)
  y = np.asarray(label, np.float64).reshape(-1)
  if x.shape != y.shape:
    raise ValueError(f"{x.size} predictions for {y.size} labels")
  return x, y


def scatter_data(prediction, label) -> Dict[str, Any]:
  """Metrics and the fitted logistic curve (sampled at the sorted x)."""
  from musiq_jax import metrics  # pylint: disable=g-import-not-at-top
  x, y = _pairs(prediction, label)
  order = np.argsort(x, kind="stable")
  fitted = metrics.fit_logistic(x, y)
  return {"x": x, "y": y, "curve_x": x[order], "curve_y": fitted[order],
          "srcc": metrics.srcc(x, y), "plcc": metrics.plcc(x, y),
          "plcc_fitted": metrics.plcc_fitted(x, y)}


def plot_scatter(prediction, label, path: Optional[str] = None,
                 title: Optional[str] = None, size: Tuple[float, float] = (
                     4.5, 4.0), dpi: int = 100):
  """Predicted score against MOS, with the fitted 4-parameter logistic."""
  d = scatter_data(prediction, label)
  fig = _figure(*size)
  ax = fig.add_subplot(1, 1, 1)
  ax.scatter(d["x"], d["y"], s=10, alpha=0.6, edgecolors="none",
             label="images")
  if d["x"].size:
    ax.plot(d["curve_x"], d["curve_y"], color="C3", lw=1.5,
            label="4-parameter logistic fit")
    ax.legend(fontsize=7, loc="best")
  ax.set_xlabel("predicted score")
  ax.set_ylabel("MOS")
  head = f"{title}: " if title else ""
  ax.set_title(f"{head}SRCC {d['srcc']:.3f}  PLCC {d['plcc']:.3f} "
               f"(fitted {d['plcc_fitted']:.3f}), n={d['x'].size}",
               fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return _finish(fig, path, dpi)


def _split_arrays(value) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """(prediction, label or None) from a dict, a pair or a bare array."""
  if isinstance(value, Mapping):
    label = value.get("label")
    return (np.asarray(value["prediction"], np.float64).reshape(-1),
            None if label is None else np.asarray(label,
                                                  np.float64).reshape(-1))
  if isinstance(value, (tuple, list)) and len(value) == 2 and np.ndim(
      value[0]) == 1:
    return (np.asarray(value[0], np.float64).reshape(-1),
            np.asarray(value[1], np.float64).reshape(-1))
  return np.asarray(value, np.float64).reshape(-1), None


def plot_histograms(predictions_by_split: Mapping[str, Any],
                    path: Optional[str] = None, title: Optional[str] = None,
                    bins: int = 20, panel_size: Tuple[float, float] = (3.2, 2.6),
                    dpi: int = 100):
  """Histograms of predicted scores (and MOS where given), one panel a split.

  Args:
    predictions_by_split: {split: {"prediction": [n], "label": [n]}} (label
      optional), or {split: (prediction, label)}, or {split: prediction}.
  """
  splits = list(predictions_by_split)
  if not splits:
    raise ValueError("No split to plot")
  fig = _figure(panel_size[0] * len(splits), panel_size[1])
  axes = fig.subplots(1, len(splits), squeeze=False)[0]
  for ax, split in zip(axes, splits):
    pred, label = _split_arrays(predictions_by_split[split])
    values = [pred] + ([label] if label is not None else [])
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    ax.hist(pred[np.isfinite(pred)], bins=edges, alpha=0.6, label="predicted")
    if label is not None:
      ax.hist(label[np.isfinite(label)], bins=edges, histtype="step", lw=1.5,
              color="k", label="MOS")
    ax.set_title(f"{split} (n={pred.size})", fontsize=8)
    ax.set_xlabel("score", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return _finish(fig, path, dpi)


# ----------------------------------------------------------------------------
# Evaluation hooks and the CLI.
# ----------------------------------------------------------------------------
def read_predictions(workdir: str, splits: Optional[Sequence[str]] = None
                     ) -> Dict[str, Dict[str, np.ndarray]]:
  """{split: {"prediction", "label"}} from WORKDIR/predictions_<split>.npz."""
  if splits is None:
    files = sorted(glob.glob(os.path.join(workdir, "predictions_*.npz")))
    splits = [os.path.basename(f)[len("predictions_"):-len(".npz")]
              for f in files]
  out = {}
  for split in splits:
    path = os.path.join(workdir, f"predictions_{split}.npz")
    if os.path.exists(path):
      with np.load(path, allow_pickle=False) as z:
        out[split] = {"prediction": z["prediction"], "label": z["label"]}
  return out


def read_scalars(workdir: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps, values)} from the TensorBoard event files in `workdir`.

  Reads what clu's metric writer stores (TF2 tensor summaries, or legacy
  simple values), all event files in step order.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  points: Dict[str, Dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents*"))):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for v in event.summary.value:
        if v.HasField("tensor"):
          value = tf.make_ndarray(v.tensor)
          if value.size != 1:
            continue
          value = float(value.reshape(()))
        elif v.HasField("simple_value"):
          value = float(v.simple_value)
        else:
          continue
        points.setdefault(v.tag, {})[int(event.step)] = value
  return {tag: (np.array(sorted(p)), np.array([p[s] for s in sorted(p)]))
          for tag, p in points.items()}


def plot_curves(scalars: Mapping[str, Tuple[Sequence[float], Sequence[float]]],
                path: Optional[str] = None,
                tags: Sequence[str] = ("train_loss", "val_srcc", "val_plcc"),
                title: Optional[str] = None,
                panel_size: Tuple[float, float] = (3.2, 2.6), dpi: int = 100):
  """Training curves, one panel per tag (tags missing from `scalars` skipped)."""
  tags = [t for t in tags if t in scalars] or sorted(scalars)[:3]
  fig = _figure(panel_size[0] * max(len(tags), 1), panel_size[1])
  axes = fig.subplots(1, max(len(tags), 1), squeeze=False)[0]
  for ax, tag in zip(axes, tags):
    steps, values = scalars[tag]
    ax.plot(steps, values, marker="o", ms=3)
    ax.set_title(tag, fontsize=8)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return _finish(fig, path, dpi)


def write_eval_plots(workdir: str, predictions_by_split: Mapping[str, Any],
                     dpi: int = 100) -> List[str]:
  """Writes `scatter_<split>.png` per split and `histograms.png`.

  Args:
    workdir: output folder.
    predictions_by_split: {split: {"prediction": array, "label": array}}
      (or {split: (prediction, label)}); splits without labels get no
      scatter.

  Returns:
    The paths written.
  """
  paths = []
  usable = {}
  for split, value in predictions_by_split.items():
    pred, label = _split_arrays(value)
    if pred.size == 0:
      continue
    usable[split] = {"prediction": pred, "label": label}
    if label is not None:
      path = os.path.join(workdir, f"scatter_{split}.png")
      plot_scatter(pred, label, path, title=split, dpi=dpi)
      paths.append(path)
  if usable:
    path = os.path.join(workdir, "histograms.png")
    plot_histograms(usable, path, dpi=dpi)
    paths.append(path)
  return paths


def main(argv=None) -> int:
  """`python -m musiq_jax.visualize --workdir=W [--ckpt_path=C] [--out_dir=D]`."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      description="Eval plots (from WORKDIR/predictions_*.npz) and the hash "
      "spatial embedding's similarity grid (from a checkpoint).")
  parser.add_argument("--workdir", help="training workdir")
  parser.add_argument("--ckpt_path", help=".npz checkpoint (default: "
                      "WORKDIR/best.npz) for the HSE similarity grid")
  parser.add_argument("--out_dir", help="where to write (default: workdir)")
  args = parser.parse_args(argv)
  if not args.workdir and not args.ckpt_path:
    parser.error("give --workdir and/or --ckpt_path")
  out_dir = args.out_dir or args.workdir or "."
  written = []
  if args.workdir:
    written += write_eval_plots(out_dir, read_predictions(args.workdir))
  ckpt = args.ckpt_path or os.path.join(args.workdir, "best.npz")
  if os.path.exists(ckpt):
    from musiq_jax import checkpoint  # pylint: disable=g-import-not-at-top
    path = os.path.join(out_dir, "hse_similarity.png")
    plot_hse_similarity(hse_similarity(checkpoint.read_params(ckpt)), path)
    written.append(path)
  for p in written:
    print(p)
  return 0 if written else 1


if __name__ == "__main__":
  raise SystemExit(main())
