"""Scoring images with a MUSIQ checkpoint: the Python API behind `predict`.

    scorer = musiq_jax.load_scorer("koniq_ckpt.npz")
    scorer.score(["a.jpg", "b.png", uint8_array])   # -> list of ScoreResult

Images of different sizes are batched by zero-padding their token sequences
(padding tokens are masked out of attention, so a batch gives the scores of
one-at-a-time scoring). Token lengths are rounded up to a small set of
buckets and batches are filled to `batch_size`, so a stream of mixed-size
images compiles a handful of programs, not one per image.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from musiq_jax import checkpoint
from musiq_jax import image_io
from musiq_jax import losses
from musiq_jax import preprocessing
from musiq_jax.models import musiq

ImageLike = Union[str, os.PathLike, bytes, np.ndarray]

# Native-resolution tokens above which an image is refused rather than risk
# running out of memory: attention over L tokens holds 6 * L^2 floats per
# layer (8192 tokens ~ 1.6 GB), and the patch ResNet ~64 KB per token.
DEFAULT_MAX_NATIVE_TOKENS = 8192

# The original's scales: two ARP resizes plus the full-size image.
MULTI_SCALE_PP = preprocessing.PreprocessConfig()
SINGLE_SCALE_PP = preprocessing.PreprocessConfig(longer_side_lengths=())


@dataclasses.dataclass
class ScoreResult:
  """The outcome for one image: a score, or an error saying what is wrong."""
  image: str
  score: Optional[float] = None
  error: Optional[str] = None
  num_tokens: Optional[int] = None

  def to_dict(self) -> Dict[str, Any]:
    if self.error is not None:
      return {"image": self.image, "error": self.error}
    return {"image": self.image, "score": self.score}


def length_bucket(n: int, minimum: int = 128) -> int:
  """Rounds a token count up to a multiple of 1/16 of its power of two.

  Buckets are 128, 144, ..., 256, 272, ..., 512, 544, ..., 1024, 1088, ...:
  padding wastes at most 6.25% of the compute (a 1024x768 photo, 961 tokens,
  runs as 992, where power-of-two-ish buckets padded it to 1024), while a
  stream of mixed sizes still compiles at most 16 programs per octave.
  """
  n = max(n, minimum)
  step = max(16, 1 << max(n.bit_length() - 5, 0))
  return -(-n // step) * step


def scores_from_logits(logits: jnp.ndarray) -> jnp.ndarray:
  """[..., K] head outputs -> scores: the logit for K=1, else the softmax-
  weighted mean of 1..K (AVA's 10-bin distribution), as the original."""
  if logits.shape[-1] == 1:
    return logits[..., 0]
  values = jnp.arange(1, logits.shape[-1] + 1, dtype=jnp.float32)
  return jnp.sum(jax.nn.softmax(logits, axis=-1) * values, axis=-1)


class Scorer:
  """A MUSIQ model with its params and preprocessing, ready to score images."""

  def __init__(self,
               model: musiq.Model,
               params: Any,
               pp_config: preprocessing.PreprocessConfig,
               *,
               batch_size: int = 1,
               max_native_tokens: int = DEFAULT_MAX_NATIVE_TOKENS,
               source: str = "<params>",
               score_fn: Optional[Any] = None):
    """Builds a scorer.

    Args:
      model: the MUSIQ model.
      params: its params.
      pp_config: the preprocessing that makes its tokens.
      batch_size: images per forward pass.
      max_native_tokens: images needing more native tokens are refused.
      source: where the params come from, for messages.
      score_fn: head outputs [N, K] -> scores [N]; default the released
        checkpoints' read-out (`scores_from_logits`); `load_scorer` passes
        the one the model trained with (`losses.readout_for`).
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.model = model
    self.params = params
    self.pp_config = pp_config
    self.batch_size = batch_size
    self.max_native_tokens = max_native_tokens
    self.source = source
    self.score_fn = score_fn or scores_from_logits
    self._predict = jax.jit(self._predict_impl)

  def _predict_impl(self, params, batch):
    logits = self.model.apply({"params": params}, batch, train=False)
    return self.score_fn(logits)

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  def num_compilations(self) -> int:
    """Programs compiled so far (one per distinct padded batch shape)."""
    return self._predict._cache_size()  # pylint: disable=protected-access

  def check_size(self, h: int, w: int, name: str) -> None:
    cfg = self.pp_config
    native = cfg.max_seq_len_from_original_res
    if native is not None and native < 0:
      n = preprocessing.num_patches(h, w, cfg.patch_stride)
      if n > self.max_native_tokens:
        raise image_io.ImageError(
            name, f"{w}x{h} image needs {n} full-resolution tokens, above "
            f"the limit of {self.max_native_tokens} (memory grows with the "
            "square of the tokens); pass --max_seq_len_from_original_res=N "
            "to cut the full-size scale to N tokens (the original's option), "
            "or raise --max_native_tokens if you have the memory")

  def preprocess(self, image: ImageLike,
                 name: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Path, encoded bytes or uint8 [h, w, 3] array -> token features."""
    if isinstance(image, np.ndarray):
      name = name or "<array>"
      if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
      if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise image_io.ImageError(
            name, f"expected an [h, w, 3] uint8 array, got shape "
            f"{image.shape}")
      if image.dtype != np.uint8:
        raise image_io.ImageError(
            name, f"expected uint8 pixels in [0, 255], got {image.dtype}")
      pixels = image
    elif isinstance(image, (bytes, bytearray)):
      pixels = image_io.decode_image(bytes(image), name or "<bytes>")
    else:
      pixels = image_io.read_image(image)
    self.check_size(pixels.shape[0], pixels.shape[1],
                    name or os.fspath(image) if isinstance(
                        image, (str, os.PathLike)) else name or "<image>")
    feats = preprocessing.preprocess_image(pixels, self.pp_config)
    return {k: v.numpy() for k, v in feats.items()}

  def score_features(self, examples: Sequence[Dict[str, np.ndarray]]
                    ) -> np.ndarray:
    """Scores preprocessed examples, `batch_size` at a time."""
    out = []
    for start in range(0, len(examples), self.batch_size):
      chunk = list(examples[start:start + self.batch_size])
      length = length_bucket(max(e["mask"].shape[0] for e in chunk))
      n_real = len(chunk)
      # Fill the batch with all-padding examples: one program per length.
      filler = {k: v[:0] for k, v in chunk[0].items()}
      chunk += [filler] * (self.batch_size - n_real)
      batch = preprocessing.pad_batch(chunk, length)
      out.append(np.asarray(self._predict(self.params, batch))[:n_real])
    return np.concatenate(out) if out else np.zeros([0], np.float32)

  def score(self, images: Iterable[ImageLike],
            names: Optional[Sequence[str]] = None,
            *, prefetch: int = 2) -> List[ScoreResult]:
    """Scores images; a bad image yields an error result, not an exception.

    A worker thread decodes and preprocesses up to `batch_size + prefetch`
    images ahead, so that this work (TF ops that release the GIL) overlaps
    the forward pass of the previous batch instead of adding to it.
    """
    images = list(images)
    names = list(names) if names is not None else [
        str(im) if isinstance(im, (str, os.PathLike)) else f"<image {i}>"
        for i, im in enumerate(images)]
    results = [ScoreResult(image=n) for n in names]
    pending = []  # (index, features) of images that preprocessed fine.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
      jobs = iter(enumerate(zip(images, names)))
      queue = collections.deque()

      def submit_next():
        for i, (image, name) in jobs:
          queue.append((i, pool.submit(self.preprocess, image, name)))
          return

      for _ in range(self.batch_size + max(prefetch, 0)):
        submit_next()
      while queue:
        i, future = queue.popleft()
        submit_next()
        try:
          feats = future.result()
        except image_io.ImageError as e:
          results[i].error = e.problem
          continue
        results[i].num_tokens = int(feats["mask"].shape[0])
        pending.append((i, feats))
        if len(pending) == self.batch_size:
          self._flush(pending, results)
          pending = []
    self._flush(pending, results)
    return results

  def _flush(self, pending, results):
    if not pending:
      return
    scores = self.score_features([f for _, f in pending])
    for (i, _), s in zip(pending, scores):
      results[i].score = float(s)


def _resolve_configs(flat: Dict[str, np.ndarray], source: str,
                     num_classes: Optional[int], single_scale: Optional[bool],
                     max_seq_len_from_original_res: Optional[int]):
  """Model config, preprocessing and read-out of a checkpoint.

  From the `best.json` beside it when there is one (the model, preprocessing,
  `head` and `mos_range` it trained with), else from the shapes and the
  released models' settings. The native scale keeps every patch (-1) unless
  `max_seq_len_from_original_res` asks for a cut: a cap in `best.json` (the
  training or evaluation setting of older exports) is not a scoring default.

  Returns:
    (model config, PreprocessConfig, score_fn, read-out description).
  """
  sidecar = checkpoint.read_sidecar(source)
  model_cfg = checkpoint.infer_model_config(flat)
  if sidecar and "model" in sidecar:
    model_cfg.update({k: v for k, v in sidecar["model"].items()
                      if k in model_cfg})
  if sidecar and "preprocessing" in sidecar:
    pp = preprocessing.PreprocessConfig.from_dict(sidecar["preprocessing"])
  else:
    pp = SINGLE_SCALE_PP if model_cfg["num_scales"] == 1 else MULTI_SCALE_PP
  if single_scale is not None:
    wanted = 1 if single_scale else MULTI_SCALE_PP.num_scales
    if model_cfg["num_scales"] != wanted:
      raise checkpoint.CheckpointError(
          f"{source}: the checkpoint has {model_cfg['num_scales']} scale "
          f"embedding(s) but --single_scale={single_scale} needs {wanted}; "
          "the full_size_single_scale checkpoints need --single_scale, the "
          "others must not have it")
    pp = SINGLE_SCALE_PP if single_scale else pp
  if max_seq_len_from_original_res is not None:
    pp = dataclasses.replace(
        pp, max_seq_len_from_original_res=max_seq_len_from_original_res)
  elif (pp.max_seq_len_from_original_res is not None and
        pp.max_seq_len_from_original_res >= 0):
    logging.info(
        "%s: its config cuts the full-size scale to %d tokens (a training or "
        "evaluation setting); scoring uses every native patch (pass "
        "--max_seq_len_from_original_res=%d for that cut).", source,
        pp.max_seq_len_from_original_res, pp.max_seq_len_from_original_res)
    pp = dataclasses.replace(pp, max_seq_len_from_original_res=-1)
  if pp.num_scales != model_cfg["num_scales"] and model_cfg["use_scale_emb"]:
    raise checkpoint.CheckpointError(
        f"{source}: preprocessing makes {pp.num_scales} scales but the model "
        f"has {model_cfg['num_scales']} scale embeddings")
  if num_classes is not None and num_classes != model_cfg["num_classes"]:
    raise checkpoint.CheckpointError(
        f"{source}: --num_classes={num_classes} but the checkpoint's head has "
        f"{model_cfg['num_classes']} outputs (10 = AVA, 1 = MOS datasets)")
  head = sidecar.get("head") if sidecar else None
  mos_range = sidecar.get("mos_range") if sidecar else None
  try:
    score_fn = losses.readout_for(head, model_cfg["num_classes"], mos_range)
  except ValueError as e:
    raise checkpoint.CheckpointError(
        f"{checkpoint.sidecar_path(source)}: {e}") from None
  readout = (f"{head} head" if head else "released read-out") + (
      f" over {tuple(mos_range)}" if head == "levels" else "")
  return model_cfg, pp, score_fn, readout


def load_scorer(ckpt_path: Optional[str] = None,
                *,
                workdir: Optional[str] = None,
                num_classes: Optional[int] = None,
                single_scale: Optional[bool] = None,
                batch_size: int = 1,
                max_seq_len_from_original_res: Optional[int] = None,
                max_native_tokens: int = DEFAULT_MAX_NATIVE_TOKENS,
                dtype: Any = jnp.float32) -> Scorer:
  """Loads an original-layout `.npz` (released or exported by training).

  Scores as the model was trained to: with `best.json` beside the file (an
  export of `musiq_jax.train`), its model and preprocessing config and the
  read-out of its `head` (`losses.readout_for`: regression output, AVA-style
  distribution mean, or rating levels over its `mos_range`); without one, as
  the original `run_predict_image.py` (the logit, or the softmax mean of
  1..10 for a 10-output head).

  Args:
    ckpt_path: the `.npz` file (e.g. `koniq_ckpt.npz`, `WORKDIR/best.npz`).
    workdir: a training workdir; uses `WORKDIR/best.npz` when no ckpt_path.
    num_classes: expected head size (checked against the checkpoint); None
      reads it from the checkpoint (1 = MOS, 10 = AVA distribution).
    single_scale: True for the full_size_single_scale checkpoints; None
      decides from the checkpoint's number of scale embeddings.
    batch_size: images per forward pass.
    max_seq_len_from_original_res: tokens of the native scale: None or -1
      every patch (the default, whatever the training used), N cuts or
      pads to N in raster order, as the original's preprocessing option.
    max_native_tokens: refuse images needing more native tokens than this.
    dtype: computation dtype (float32 reproduces the original).

  Returns:
    A `Scorer`.
  """
  if ckpt_path is None:
    if workdir is None:
      raise ValueError("Give a checkpoint path or a workdir.")
    ckpt_path = os.path.join(workdir, "best.npz")
  flat = checkpoint.read_params(ckpt_path)
  model_cfg, pp, score_fn, readout = _resolve_configs(
      flat, ckpt_path, num_classes, single_scale,
      max_seq_len_from_original_res)
  model = musiq.Model(dtype=dtype, **model_cfg)
  dummy = preprocessing.pad_batch([{
      "patches": np.zeros([1, pp.token_dim], np.float32),
      "spatial": np.zeros([1], np.int32),
      "scale": np.zeros([1], np.int32),
      "mask": np.ones([1], np.int32)}])
  init = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy))
  init = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), init["params"])
  params = checkpoint.merge_params(flat, init, source=ckpt_path)
  logging.info("Loaded %s: %s; scores by the %s.", ckpt_path, model_cfg,
               readout)
  return Scorer(model, jax.device_put(params), pp, batch_size=batch_size,
                max_native_tokens=max_native_tokens, source=ckpt_path,
                score_fn=score_fn)
