"""Scoring images with a MUSIQ checkpoint: the Python API behind `predict`.

    scorer = musiq_jax.load_scorer("koniq_ckpt.npz")
    scorer.score(["a.jpg", "b.png", uint8_array])   # -> list of ScoreResult
    musiq = scorer.as_loss()                          # differentiable metric
    scores = musiq(images)                            # [N, H, W, 3] in [0, 1]

The host only decodes: a worker thread decodes images ahead (JPEGs with
libjpeg-turbo's fast integer DCT, TF's default, see `image_io`), and places
each on a zero canvas. Everything after decoding (the [-1, 1] scaling, the
Gaussian ARP resizes, SAME patches, token layout) runs on the device inside
the same jitted program as the model (`preprocessing.tokens_from_canvas`
with jax.numpy), from a small per-image plan of resize weights and indices
that depends only on the image size (`preprocessing.make_plan`, cached).

Images of different sizes are batched by zero-padding their token sequences
(padding tokens are masked out of attention, so a batch gives the scores of
one-at-a-time scoring). Token lengths are rounded up to a small set of
buckets (`length_bucket`) and canvases to one per (bucket, aspect class)
(`preprocessing.class_grid`); batches are filled to `batch_size`, so a
stream of mixed-size images compiles a handful of programs, not one per
image. No TensorFlow is imported.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import itertools
import json
import os
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional,
                    Sequence, Union)

from absl import logging
import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from musiq_jax import checkpoint
from musiq_jax import compilation_cache
from musiq_jax import image_io
from musiq_jax import losses
from musiq_jax import preprocessing
from musiq_jax.models import musiq

ImageLike = Union[str, os.PathLike, bytes, np.ndarray]

# Native-resolution tokens above which an image is refused rather than risk
# running out of memory. From 4096 tokens attention runs in key blocks and
# the patch ResNet embeds in chunks (`musiq.Model`), so memory grows about
# linearly: 24576 tokens is a 24-megapixel photo (6000x4000 at 32x32 patches).
DEFAULT_MAX_NATIVE_TOKENS = 24576

# The original's scales: two ARP resizes plus the full-size image.
MULTI_SCALE_PP = preprocessing.PreprocessConfig()
SINGLE_SCALE_PP = preprocessing.PreprocessConfig(longer_side_lengths=())

# Images whose native patch grid is within this many patches on both sides
# share one square canvas (so small images do not multiply programs).
SMALL_CANVAS_PATCHES = 8

# XLA options for the scoring programs on CPU: no YNNPACK fusions, so dots
# and convolutions run as XLA:CPU's own (Eigen) kernels and elementwise work
# as XLA's fusions. On a 2-core CPU YNNPACK's convolutions in the patch
# ResNet ran on one core, and the forward pass was, per round of an A/B in
# one process (median of 12), 1.15x faster without it at 512x384, 1.05x at
# 1024x768, 1.06x portrait, 1.23x at 1600x1200 and 1.08x for a 2048x512
# panorama; scores within 2.5e-6 (docs/performance.md).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _try_cpu_options() -> bool:
  try:
    jax.jit(lambda: 0, compiler_options=CPU_COMPILER_OPTIONS).lower(
        ).compile()
    return True
  except Exception as e:  # pylint: disable=broad-except
    logging.info("XLA's defaults for scoring: this jaxlib rejects %s (%s).",
                 CPU_COMPILER_OPTIONS, e)
    return False


@functools.lru_cache(maxsize=None)
def _cpu_options_supported() -> bool:
  """Whether this jaxlib's XLA:CPU knows `CPU_COMPILER_OPTIONS` (older ones
  have no YNNPACK and reject the option): one trivial compile (~30 ms), its
  answer kept in the program store when there is one, so that a process
  whose programs are all stored traces nothing."""
  store = compilation_cache.program_store()
  if store is None:
    return _try_cpu_options()
  return store.value("cpu_compiler_options_supported" +
                     json.dumps(CPU_COMPILER_OPTIONS, sort_keys=True),
                     _try_cpu_options)


def default_compiler_options(devices: Sequence[Any]
                             ) -> Optional[Dict[str, Any]]:
  """The scoring programs' XLA options on these devices: on CPU
  `CPU_COMPILER_OPTIONS` where this jaxlib supports them, else None
  (XLA's defaults)."""
  if devices and devices[0].platform == "cpu" and _cpu_options_supported():
    return dict(CPU_COMPILER_OPTIONS)
  return None


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
  values = jnp.arange(1, logits.shape[-1] + 1, dtype=logits.dtype)
  return jnp.sum(jax.nn.softmax(logits, axis=-1) * values, axis=-1)


@dataclasses.dataclass
class _Decoded:
  """A decoded image waiting for its batch (host side)."""
  index: int
  pixels: np.ndarray
  length: int  # Exact token count.
  group: Any   # Images of one group can share a canvas.


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
               score_fn: Optional[Any] = None,
               devices: Optional[Sequence[Any]] = None,
               program_key: Optional[str] = None,
               compiler_options: Union[str, None, Dict[str, Any]] = "default"):
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
      devices: devices to split each batch over (default: this process's
        local devices); batches are sharded on a 'data' mesh axis as the
        trainer's (`musiq_jax.trainer`: batch `P('data')`, params
        replicated), when there are several and `batch_size` is at least
        their number (the batch is then padded to a multiple of it).
      program_key: names everything that decides the scoring program besides
        the argument shapes (model, preprocessing and `score_fn`; see
        `load_scorer`). With it, and once `compilation_cache.enable()` ran
        (as in `predict`), compiled programs are kept on disk and a later
        process loads them without tracing (`compilation_cache.
        ProgramStore`); without it, or on several devices, programs are
        compiled by `jax.jit` (and JAX's own persistent cache).
      compiler_options: XLA options of the scoring programs: "default"
        (`default_compiler_options`: on CPU, `CPU_COMPILER_OPTIONS`), None
        for XLA's defaults, or a dict for `jax.jit(compiler_options=...)`.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pp_config.check()
    self.model = model
    devices = list(jax.local_devices() if devices is None else devices)
    self.mesh = None
    if len(devices) > 1 and batch_size >= len(devices):
      self.mesh = Mesh(np.asarray(devices), ("data",))
      self._batch_sharding = NamedSharding(self.mesh, P("data"))
      params = jax.device_put(params, NamedSharding(self.mesh, P()))
    elif len(devices) > 1:
      logging.info("batch_size %d < %d devices: scoring on one device.",
                   batch_size, len(devices))
    self.params = params
    self.pp_config = pp_config
    self.batch_size = batch_size
    self.max_native_tokens = max_native_tokens
    self.source = source
    self.score_fn = score_fn or scores_from_logits
    if compiler_options == "default":
      compiler_options = default_compiler_options(devices)
    elif isinstance(compiler_options, str):
      raise ValueError(f"compiler_options must be 'default', None or a dict, "
                       f"got {compiler_options!r}")
    self.compiler_options = compiler_options
    # Tokens -> scores (`score_features`).
    self._predict = jax.jit(self._predict_impl,
                            compiler_options=compiler_options)
    # uint8 canvases + plans -> scores: preprocessing and model, one program.
    self._score_canvas = jax.jit(self._score_canvas_impl,
                                 static_argnames=("grid",),
                                 compiler_options=compiler_options)
    self._metric = jax.jit(self._metric_impl)
    self._store = (compilation_cache.program_store()
                   if program_key is not None and self.mesh is None else None)
    # The params' shapes are in the args; the XLA options decide the program.
    self._program_key = (None if program_key is None else program_key +
                         json.dumps(compiler_options, sort_keys=True))
    self._programs = {}  # Canvas and plan shapes, grid -> stored program.

  def _run_canvas(self, canvas, plans, grid):
    """`_score_canvas`, through the program store when there is one."""
    if self._store is None:
      return self._score_canvas(self.params, canvas, plans, grid=grid)
    sig = (compilation_cache.signature((canvas, plans)), grid)
    program = self._programs.get(sig)
    if program is None:
      program = self._store.compiled(self._score_canvas, self._program_key,
                                     (self.params, canvas, plans),
                                     {"grid": grid})
      self._programs[sig] = program
    return program(self.params, canvas, plans)

  def _predict_impl(self, params, batch):
    logits = self.model.apply({"params": params}, batch, train=False)
    return self.score_fn(logits)

  def device_tokens(self, canvas, plan, grid):
    """Batched uint8 canvases [B, Hc, Wc, 3] and plans -> token features
    (jax.numpy, jittable): what the scorer's program runs before the model."""
    cfg = self.pp_config

    def one(c, p):
      return preprocessing.tokens_from_canvas(c, p, cfg, grid, jnp)

    return jax.vmap(one)(canvas, plan)

  def _score_canvas_impl(self, params, canvas, plan, grid):
    feats = self.device_tokens(canvas, plan, grid)
    if "order" in plan:  # Padding tokens dropped (`canvas_batch`).
      feats = jax.vmap(preprocessing.take_tokens)(feats, plan["order"])
    return self._predict_impl(params, feats)

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  def num_compilations(self) -> int:
    """Programs compiled (or loaded from the program store) so far: one per
    distinct batch, canvas and length."""
    return len(self._programs) + sum(
        f._cache_size() for f in (self._predict, self._score_canvas))  # pylint: disable=protected-access

  def check_size(self, h: int, w: int, name: str) -> None:
    cfg = self.pp_config
    native = cfg.max_seq_len_from_original_res
    if native is not None and native < 0:
      n = preprocessing.num_patches(h, w, cfg.patch_stride)
      if n > self.max_native_tokens:
        raise image_io.ImageError(
            name, f"{w}x{h} image needs {n} full-resolution tokens, above "
            f"the limit of {self.max_native_tokens} (the default, 24576, is a "
            "24-megapixel photo; memory grows with the tokens); pass "
            "--max_seq_len_from_original_res=N to cut the full-size scale "
            "to N tokens (the original's option), or raise "
            "--max_native_tokens if you have the memory")

  def decode(self, image: ImageLike, name: Optional[str] = None) -> np.ndarray:
    """Path, encoded bytes or uint8 [h, w, 3] array -> checked uint8 pixels."""
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
      name = name or "<bytes>"
      pixels = image_io.decode_image(bytes(image), name)
    else:
      name = name or os.fspath(image)
      pixels = image_io.read_image(image)
    self.check_size(pixels.shape[0], pixels.shape[1], name)
    return pixels

  def preprocess(self, image: ImageLike,
                 name: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Path, encoded bytes or uint8 [h, w, 3] array -> token features.

    Computed on the host with NumPy (the same ops as the device program);
    for looking at tokens and for `score_features`.
    """
    return preprocessing.preprocess_image(self.decode(image, name),
                                          self.pp_config)

  def score_features(self, examples: Sequence[Dict[str, np.ndarray]]
                    ) -> np.ndarray:
    """Scores preprocessed examples, `batch_size` at a time."""
    out = []
    for start in range(0, len(examples), self.batch_size):
      # Padding tokens do not change a score (`preprocessing.
      # real_token_order`): the model runs on the real ones only.
      chunk = [preprocessing.drop_padding_tokens(e)
               for e in examples[start:start + self.batch_size]]
      length = length_bucket(max(e["mask"].shape[0] for e in chunk))
      n_real = len(chunk)
      # Fill the batch with all-padding examples: one program per length.
      filler = {k: v[:0] for k, v in chunk[0].items()}
      chunk += [filler] * (self.batch_size - n_real)
      batch = preprocessing.pad_batch(chunk, length)
      out.append(np.asarray(self._predict(self.params, batch))[:n_real])
    return np.concatenate(out) if out else np.zeros([0], np.float32)

  # -- Canvases: host side of the device path. --------------------------------
  def _fixed_tokens(self) -> int:
    return sum(g * g for g in self.pp_config.resized_grids)

  def _group(self, h: int, w: int) -> Any:
    """Which images may share a canvas: same aspect class, and (when the
    token length does not bound the native grid) the same patch budget."""
    cfg = self.pp_config
    s = cfg.patch_stride
    ch, cw = preprocessing.grid_count(h, s), preprocessing.grid_count(w, s)
    aspect = preprocessing.canvas_class(ch, cw, SMALL_CANVAS_PATCHES)
    native = cfg.max_seq_len_from_original_res
    if aspect is None:
      return (aspect,)
    if native is not None and native < 0:
      # Every native patch is kept, so the longest member sets the canvas:
      # members within a quarter octave of patches of each other, or a batch
      # of 300x200 and 1600x1200 photos runs at the larger size for all.
      n = ch * cw
      step = 1 << max(n.bit_length() - 3, 0)
      return (aspect, None, -(-n // step))
    return (aspect, length_bucket(ch * cw, minimum=64))

  def _canvas_grid(self, group, length: int):
    """The canvas of a batch of a group whose longest member has `length`
    tokens: for the native scale in full, the bucket's native tokens bound
    every member's patches; else the group's own budget does."""
    budget = (length - self._fixed_tokens() if len(group) == 1 or
              group[1] is None else group[1])
    return preprocessing.class_grid(group[0], max(budget, 1),
                                    SMALL_CANVAS_PATCHES)

  def _drops_padding(self, group) -> bool:
    """Whether a group's model runs on the real tokens only (`canvas_batch`):
    when every native patch is kept, except for the small images sharing
    one canvas (group (None,)), where the real tokens of different sizes
    would spread one program over several buckets."""
    native = self.pp_config.max_seq_len_from_original_res
    return native is not None and native < 0 and group[0] is not None

  def _native_bound(self, real: int) -> int:
    """Native patches at most of an image with at most `real` real tokens:
    each resized scale has at least a row of patches along its longer side
    (L_k - 1 pixels, allowing for the ARP size's rounding)."""
    cfg = self.pp_config
    least = sum(preprocessing.grid_count(max(l - 1, 1), cfg.patch_stride)
                for l in cfg.sorted_lengths)
    return max(real - least, 1)

  def canvas_batch(self, pixels: Sequence[np.ndarray], group=None):
    """Host: uint8 images of one group -> (canvas [B, Hc, Wc, 3], plans,
    grid) for `device_tokens`, filled with empty examples to batch_size.

    When every native patch is kept (the default; not for the small images
    of the shared square canvas), the plans also hold
    `order`: the model runs on the real tokens only, the resized scales'
    padding dropped on the device (`preprocessing.real_token_order`; a
    512x384 photo has 385 tokens of which 342 are real: 352 with the
    bucket instead of 400). Then the bucket of the real tokens sets the
    canvas and the program, so a stream still compiles one program per
    (bucket, aspect class).
    """
    cfg = self.pp_config
    if group is None:
      group = self._group(*pixels[0].shape[:2])
    real = None
    if self._drops_padding(group):
      real = length_bucket(max(preprocessing.real_seq_len(
          p.shape[0], p.shape[1], cfg) for p in pixels))
      native = self._native_bound(real)
      grid = preprocessing.class_grid(group[0], native, SMALL_CANVAS_PATCHES)
      length = self._fixed_tokens() + native
    else:
      length = length_bucket(max(preprocessing.seq_len(
          p.shape[0], p.shape[1], cfg) for p in pixels))
      grid = self._canvas_grid(group, length)
    size = preprocessing.canvas_size(grid, cfg)
    rows = max(self.batch_size, len(pixels))
    if self.mesh is not None:  # Every device gets the same number of rows.
      rows = -(-rows // self.mesh.size) * self.mesh.size
    canvas = np.zeros((rows,) + size + (3,), np.uint8)
    plans = []
    for i, p in enumerate(pixels):
      plan = preprocessing.make_plan(p.shape[0], p.shape[1], cfg, grid, length)
      preprocessing.place_on_canvas(p, plan["box"], size, out=canvas[i])
      if real is not None:
        plan = dict(plan, order=preprocessing.real_token_order(plan["mask"],
                                                               real))
      plans.append(plan)
    plans += [preprocessing.empty_plan(plans[0])] * (len(canvas) - len(plans))
    return canvas, preprocessing.stack_plans(plans), grid

  @property
  def num_devices(self) -> int:
    """Devices each batch is split over."""
    return 1 if self.mesh is None else self.mesh.size

  def _dispatch(self, members: List[_Decoded]):
    canvas, plans, grid = self.canvas_batch([m.pixels for m in members],
                                            members[0].group)
    if self.mesh is not None:
      canvas, plans = jax.device_put((canvas, plans), self._batch_sharding)
    return members, self._run_canvas(canvas, plans, grid)

  def score_batches(self, images: Iterable[ImageLike],
                    names: Optional[Iterable[str]] = None,
                    *, prefetch: int = 2, window: Optional[int] = None
                    ) -> Iterator[List[ScoreResult]]:
    """Scores a stream of images lazily; yields results as batches finish.

    Each yielded list holds the results that became ready together (those
    of a batch just read back, and errors), in input order: concatenated,
    the lists are the input order, one result per image. `images` (and
    `names`) are consumed lazily, so a generator over a million files is
    scored in constant memory: at most `batch_size + prefetch` images are
    decoded ahead, and at most `window` decoded images wait for a batch of
    their canvas group. When that many results wait behind an image whose
    group has not filled a batch (a rare size in a stream), that group is
    sent as a partial batch, so no result waits forever.

    Args:
      images: paths, encoded bytes or uint8 [h, w, 3] arrays.
      names: one name per image (default: the path, or `<image i>`).
      prefetch: images decoded ahead beyond one batch (a worker thread).
      window: results held back at most (default 8 batches, at least 32).

    Yields:
      Lists of `ScoreResult`, in input order.
    """
    window = window or max(8 * self.batch_size, 32)
    names = iter(names) if names is not None else None
    pending = collections.OrderedDict()  # index -> ScoreResult, unreleased.
    done = set()
    in_flight = collections.deque()
    groups = collections.OrderedDict()  # group -> [_Decoded]
    where = {}  # index -> group, for decoded images not yet dispatched.

    def collect(limit):
      while len(in_flight) > limit:
        members, scores = in_flight.popleft()
        for m, s in zip(members, np.asarray(scores)):
          pending[m.index].score = float(s)
          done.add(m.index)

    def release():
      out = []
      while pending:
        i = next(iter(pending))
        if i not in done:
          break
        out.append(pending.pop(i))
        done.discard(i)
      return out

    def dispatch(group):
      members = groups.pop(group)
      for m in members:
        del where[m.index]
      in_flight.append(self._dispatch(members))

    def unblock():
      # The oldest unreleased result holds the others back: score it now.
      out = []
      while len(pending) > window:
        i = next(iter(pending))
        if i in where:
          dispatch(where[i])
        collect(0)
        released = release()
        if not released:
          break
        out += released
      return out

    def decode(i, image, name):
      pixels = self.decode(image, name)
      h, w = pixels.shape[:2]
      return _Decoded(i, pixels, preprocessing.seq_len(h, w, self.pp_config),
                      self._group(h, w))

    def default_name(i, image):
      return (os.fspath(image) if isinstance(image, (str, os.PathLike))
              else f"<image {i}>")

    ready: List[ScoreResult] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
      jobs = enumerate(images)
      queue = collections.deque()

      def submit_next():
        for i, image in jobs:
          name = next(names) if names is not None else default_name(i, image)
          queue.append((i, name, pool.submit(decode, i, image, name)))
          return

      for _ in range(self.batch_size + max(prefetch, 0)):
        submit_next()
      while queue:
        i, name, future = queue.popleft()
        submit_next()
        pending[i] = result = ScoreResult(image=name)
        try:
          item = future.result()
        except image_io.ImageError as e:
          result.error = e.problem
          done.add(i)
        else:
          result.num_tokens = item.length
          where[i] = item.group
          members = groups.setdefault(item.group, [])
          members.append(item)
          if len(members) == self.batch_size:
            dispatch(item.group)
            collect(1)
        ready += release()
        ready += unblock()
        if ready:
          yield ready
          ready = []
    while groups:
      dispatch(next(iter(groups)))
      collect(1)
      ready.extend(release())
      if ready:
        yield ready
        ready = []
    collect(0)
    ready.extend(release())
    if ready:
      yield ready

  def score_iter(self, images: Iterable[ImageLike],
                 names: Optional[Iterable[str]] = None,
                 **kwargs) -> Iterator[ScoreResult]:
    """`score_batches`, one result at a time (input order, lazily)."""
    return itertools.chain.from_iterable(
        self.score_batches(images, names, **kwargs))

  def score(self, images: Iterable[ImageLike],
            names: Optional[Sequence[str]] = None,
            *, prefetch: int = 2) -> List[ScoreResult]:
    """Scores images; a bad image yields an error result, not an exception.

    A worker thread decodes up to `batch_size + prefetch` images ahead, and
    a batch is sent to the device before the previous one's scores are read,
    so decoding overlaps the device's work instead of adding to it. Images
    are batched with others of their canvas group (`batch_size` > 1), so
    they may be scored out of order; results come back in input order.
    For a large collection use `score_iter`/`score_batches` (lazy, results
    as they finish).
    """
    images = list(images)
    return list(self.score_iter(images, names, prefetch=prefetch,
                                window=max(len(images), 1)))

  # -- The differentiable metric. ---------------------------------------------
  def _metric_impl(self, params, images):
    cfg = self.pp_config
    _, h, w, _ = images.shape
    plan = preprocessing.make_plan(h, w, cfg)
    s = cfg.patch_stride
    grid = (preprocessing.grid_count(h, s), preprocessing.grid_count(w, s))
    hc, wc = preprocessing.canvas_size(grid, cfg)
    top, left = int(plan["box"][0]), int(plan["box"][1])
    x = jnp.pad(images, ((0, 0), (top, hc - top - h), (left, wc - left - w),
                         (0, 0)))
    # [0, 1] -> [-1, 1] as the original's u8 / 255 * 2 - 1.
    feats = jax.vmap(lambda xi: preprocessing.tokens_from_canvas(
        xi, plan, cfg, grid, jnp, preprocessing.unit_range_to_model))(x)
    return self._predict_impl(params, feats)

  def as_loss(self) -> Callable[..., jnp.ndarray]:
    """MUSIQ as a differentiable function of the pixels.

    Returns `musiq(images, params=None) -> scores [N]`, for float images
    [N, H, W, 3] with values in [0, 1] (RGB; the same H, W for the whole
    call; a new size traces anew). It is the scorer's computation with the
    decode left out: `musiq(u8 / 255)` equals `score(u8)` up to float
    rounding, and its gradient with respect to `images` is exact (the
    preprocessing is linear in the pixels). Higher is better (for the AVA
    head: the mean of the predicted 1..10 distribution), so a restoration or
    generation loss is `-musiq(x).mean()`. It is jitted; inside your own
    `jax.jit` pass `params` (e.g. `scorer.params`) so that the weights are
    an argument of your program, not a constant baked into it.
    """

    def musiq_score(images, params=None):
      self._check_float_images(images)
      h, w = images.shape[1:3]
      self.check_size(h, w, "images")
      return self._metric(self.params if params is None else params, images)

    return musiq_score

  @staticmethod
  def _check_float_images(images) -> None:
    shape = getattr(images, "shape", None)
    dtype = getattr(images, "dtype", None)
    if shape is None or dtype is None:
      raise TypeError(f"expected a float array [N, H, W, 3], got "
                      f"{type(images).__name__}")
    if len(shape) != 4 or shape[-1] != 3 or min(shape) < 1:
      raise ValueError(f"expected float images [N, H, W, 3] (RGB, N >= 1), "
                       f"got shape {tuple(shape)}")
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"expected float pixels in [0, 1], got {dtype} (divide "
                      "uint8 images by 255)")
    if not isinstance(images, jax.core.Tracer):
      lo, hi = float(jnp.min(images)), float(jnp.max(images))
      if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("images contain NaN or infinite values")
      if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"expected pixels in [0, 1], got values in "
                         f"[{lo:.3g}, {hi:.3g}] (uint8 images: divide by 255)")


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
  export of `musiq_jax.trainer`), its model and preprocessing config and the
  read-out of its `head` (`losses.readout_for`: regression output, AVA-style
  distribution mean, or rating levels over its `mos_range`); without one, as
  the original `run_predict_image.py` (the logit, or the softmax mean of
  1..10 for a 10-output head).

  Args:
    ckpt_path: the `.npz` file (e.g. `koniq_ckpt.npz`, `WORKDIR/best.npz`).
    workdir: a training workdir; uses `WORKDIR/best.npz` when no ckpt_path.
      A crop baseline's workdir (`best.json` task "crops" or "rank") gives a
      `tasks.CropScorer` scoring with that baseline's eval crops and
      pooling (the other options are MUSIQ's and ignored there).
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
    A `Scorer` (or a `tasks.CropScorer` for a crop baseline).
  """
  if ckpt_path is None:
    if workdir is None:
      raise ValueError("Give a checkpoint path or a workdir.")
    ckpt_path = os.path.join(workdir, "best.npz")
  sidecar = checkpoint.read_sidecar(ckpt_path) or {}
  if sidecar.get("task") in ("crops", "rank"):
    # A crop baseline: scored with its own evaluation protocol.
    from musiq_jax import tasks  # pylint: disable=g-import-not-at-top
    return tasks.load_crop_scorer(ckpt_path, sidecar,
                                  batch_size if batch_size > 1 else None)
  flat = checkpoint.read_params(ckpt_path)
  model_cfg, pp, score_fn, readout = _resolve_configs(
      flat, ckpt_path, num_classes, single_scale,
      max_seq_len_from_original_res)
  model = musiq.Model(dtype=dtype, **model_cfg)
  # Everything the scoring program depends on besides argument shapes (the
  # program store's key): the model, its preprocessing and its read-out.
  program_key = json.dumps({
      "model": model_cfg, "dtype": jnp.dtype(dtype).name,
      "preprocessing": dataclasses.asdict(pp), "readout": readout,
      "num_classes": model_cfg["num_classes"]}, sort_keys=True, default=str)

  def param_shapes():
    dummy = preprocessing.pad_batch([{
        "patches": np.zeros([1, pp.token_dim], np.float32),
        "spatial": np.zeros([1], np.int32),
        "scale": np.zeros([1], np.int32),
        "mask": np.ones([1], np.int32)}])
    init = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy))
    return {k: (tuple(v.shape), v.dtype.name) for k, v in
            flax.traverse_util.flatten_dict(init["params"], sep="/").items()}

  store = compilation_cache.program_store()
  # The shapes of the params cost a trace of the model's init (about a
  # second); the store keeps them beside the programs.
  shapes = (store.value("param_shapes" + program_key, param_shapes)
            if store is not None else param_shapes())
  init = flax.traverse_util.unflatten_dict(
      {k: np.zeros(s, d) for k, (s, d) in shapes.items()}, sep="/")
  params = checkpoint.merge_params(flat, init, source=ckpt_path)
  logging.info("Loaded %s: %s; scores by the %s.", ckpt_path, model_cfg,
               readout)
  return Scorer(model, jax.device_put(params), pp, batch_size=batch_size,
                max_native_tokens=max_native_tokens, source=ckpt_path,
                score_fn=score_fn, program_key=program_key)
