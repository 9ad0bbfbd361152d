"""End to end: random original-layout checkpoints scored through the CLI."""

import contextlib
import io
import json
import os
import subprocess
import sys

from absl import flags
import numpy as np
from PIL import Image
import pytest

from musiq_jax import predict
from musiq_jax import preprocessing
from musiq_jax import scorer as scorer_lib
import musiq_fixtures as mf
import numpy_reference
import tf_reference

PHOTOS = ("chelsea", "coffee", "rocket")
VARIANTS = {
    "multiscale": dict(num_classes=1, num_scales=3),
    "single_scale": dict(num_classes=1, num_scales=1),
    "ava": dict(num_classes=10, num_scales=3),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("predict")
  images = root / "images"
  images.mkdir()
  for name in PHOTOS:
    mf.write_jpeg(images / f"{name}.jpg", mf.photo(name))
  Image.fromarray(mf.photo("astronaut")[::2, ::2]).save(images / "astro.png")
  (images / "notes.txt").write_text("not an image")  # Not picked from dirs.
  bad = root / "bad"
  bad.mkdir()
  (bad / "text.jpg").write_text("hello")
  (bad / "empty.jpg").write_bytes(b"")
  ckpts = {}
  for name, kw in VARIANTS.items():
    path = root / f"{name}.npz"
    mf.write_original_npz(path, mf.original_musiq_shapes(**kw, **mf.TINY),
                          seed=len(name))
    ckpts[name] = str(path)
  return root, images, bad, ckpts


def _subprocess(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "musiq_jax.predict", *args],
                        capture_output=True, text=True, env=env, timeout=300)


def _run(*args):
  """Runs the CLI's main in-process (no interpreter start-up per call)."""
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["predict", *args])
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = predict.main(["predict"])
  return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cli_json_and_table(files, variant):
  root, images, bad, ckpts = files
  extra = ["--single_scale"] if variant == "single_scale" else []
  extra += ["--num_classes=10"] if variant == "ava" else []
  args = [f"--ckpt_path={ckpts[variant]}", f"--image_path={images}",
          f"--image_path={bad}/text.jpg", f"--image_path={root}/missing.jpg",
          *extra]
  out = _run(*args, "--format=json", "--batch_size=3")
  assert out.returncode == 1, out.stderr  # Some inputs failed.
  rows = [json.loads(line) for line in out.stdout.splitlines()]
  by_image = {os.path.basename(r["image"]): r for r in rows}
  assert set(by_image) == {"astro.png", "chelsea.jpg", "coffee.jpg",
                           "rocket.jpg", "text.jpg", "missing.jpg"}
  assert "not an image" in by_image["text.jpg"]["error"]
  assert "not found" in by_image["missing.jpg"]["error"]
  scores = {k: r["score"] for k, r in by_image.items() if "score" in r}
  assert len(scores) == 4 and len(set(scores.values())) == 4
  if variant == "ava":
    assert all(1.0 <= s <= 10.0 for s in scores.values())
  # One at a time, as a table: the same scores.
  table = _run(*args, "--format=table", "--batch_size=1")
  assert table.returncode == 1
  lines = table.stdout.splitlines()
  assert lines[0].split() == ["image", "score"]
  for line in lines[1:]:
    path, value = line.split(maxsplit=1)
    name = os.path.basename(path)
    if name in scores:
      assert float(value) == pytest.approx(scores[name], abs=2e-4)
    else:
      assert value.startswith("ERROR:")


def test_cli_scores_equal_numpy_reference_of_original(files):
  _, images, _, ckpts = files
  out = _run(f"--ckpt_path={ckpts['multiscale']}",
             f"--image_path={images}/chelsea.jpg", "--format=json")
  assert out.returncode == 0, out.stderr
  score = json.loads(out.stdout)["score"]
  with np.load(ckpts["multiscale"]) as z:
    flat = {k[len("opt/target/"):]: z[k] for k in z.files
            if k.startswith("opt/target/")}
  # The original's path end to end: TF's JPEG decoder, TF's resize and
  # patch ops (tests/tf_reference.py), a float64 forward pass.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  pixels = tf.io.decode_jpeg((images / "chelsea.jpg").read_bytes()).numpy()
  f = {k: v[None] for k, v in tf_reference.preprocess_image(
      pixels, preprocessing.PreprocessConfig()).items()}
  ref = numpy_reference.forward(flat, f["patches"], f["spatial"], f["scale"],
                                f["mask"], num_heads=2)
  assert score == pytest.approx(float(ref[0, 0]), rel=1e-3, abs=1e-4)


def test_errors_for_bad_checkpoint_and_flags(files, tmp_path):
  _, images, _, ckpts = files
  bogus = tmp_path / "bogus.npz"
  bogus.write_text("not a checkpoint")
  out = _subprocess(f"--ckpt_path={bogus}", f"--image_path={images}/chelsea.jpg")
  assert out.returncode == 2 and str(bogus) in out.stderr
  assert "Traceback" not in out.stderr
  out = _run(f"--ckpt_path={ckpts['multiscale']}", "--num_classes=10",
             f"--image_path={images}/chelsea.jpg")
  assert out.returncode == 2 and "num_classes" in out.stderr
  out = _run(f"--ckpt_path={ckpts['multiscale']}", "--single_scale",
             f"--image_path={images}/chelsea.jpg")
  assert out.returncode == 2 and "single_scale" in out.stderr


def test_api_policies_for_huge_and_tiny_images(files):
  _, _, _, ckpts = files
  scorer = scorer_lib.load_scorer(ckpts["multiscale"], max_native_tokens=100,
                                  batch_size=2)
  big = np.zeros((800, 800, 3), np.uint8)  # 625 native tokens > 100.
  tiny = np.full((1, 1, 3), 128, np.uint8)
  tall = np.full((2000, 3, 3), 200, np.uint8)  # ARP width rounds to 0 -> 1.
  res = scorer.score([big, tiny, tall], names=["big", "tiny", "tall"])
  assert "max_seq_len_from_original_res" in res[0].error
  assert res[1].error is None and np.isfinite(res[1].score)
  assert res[2].error is None and np.isfinite(res[2].score)
  cut = scorer_lib.load_scorer(ckpts["multiscale"], max_native_tokens=100,
                               max_seq_len_from_original_res=64)
  assert cut.score([big])[0].error is None


def test_mixed_sizes_compile_few_programs(files):
  _, _, _, ckpts = files
  scorer = scorer_lib.load_scorer(ckpts["multiscale"], batch_size=2)
  rng = np.random.default_rng(0)
  sizes = [(40, 60), (64, 64), (100, 30), (33, 90), (120, 80), (64, 70),
           (90, 90), (20, 20)]
  images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
  batched = [r.score for r in scorer.score(images)]
  assert scorer.num_compilations() <= 2
  single = scorer_lib.load_scorer(ckpts["multiscale"], batch_size=1)
  np.testing.assert_allclose([r.score for r in single.score(images)], batched,
                             rtol=1e-5, atol=1e-5)


def test_rgb_mscn_checkpoint_scores_without_a_sidecar(tmp_path):
  # A best.npz of a patch_input="rgb_mscn" model (6-channel ResNet root)
  # loads from its shapes alone and scores as the model it came from.
  import jax
  from musiq_jax import checkpoint
  from musiq_jax.configs import models as model_sizes
  from musiq_jax.models import musiq
  cfg = model_sizes.get_model_config("tiny")
  cfg.patch_input = "rgb_mscn"
  model = musiq.Model(num_scales=3, **cfg)
  x = {"patches": np.zeros((1, 2, 3072), np.float32),
       "spatial": np.zeros((1, 2), np.int32),
       "scale": np.zeros((1, 2), np.int32), "mask": np.ones((1, 2), np.int32)}
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
  flat = mf.random_params({k: v.shape for k, v in
                           checkpoint.flatten(shapes).items()}, seed=5)
  path = str(tmp_path / "best.npz")
  checkpoint.export_npz(checkpoint.unflatten(flat), path)
  loaded = scorer_lib.load_scorer(path)
  assert loaded.model.patch_input == "rgb_mscn"
  direct = scorer_lib.Scorer(model, checkpoint.unflatten(flat),
                             loaded.pp_config)
  images = [mf.photo("chelsea")[:96, :128], mf.photo("coffee")[:64, :64]]
  got = [r.score for r in loaded.score(images)]
  np.testing.assert_allclose(got, [r.score for r in direct.score(images)],
                             rtol=1e-5)
  assert abs(got[0] - got[1]) > 1e-4


def test_mscn_patch_input_comes_from_the_sidecar(tmp_path):
  # "mscn" has RGB's shapes: the exported config beside best.npz says which.
  from musiq_jax import checkpoint
  path = str(tmp_path / "best.npz")
  mf.write_original_npz(path, mf.original_musiq_shapes(**mf.TINY), seed=3)
  image = mf.photo("rocket")[:64, :96]
  rgb = scorer_lib.load_scorer(path)
  assert rgb.model.patch_input == "rgb"
  checkpoint.write_sidecar(path, {"model": {"patch_input": "mscn"}})
  mscn = scorer_lib.load_scorer(path)
  assert mscn.model.patch_input == "mscn"
  assert abs(rgb.score([image])[0].score - mscn.score([image])[0].score) > 1e-4


# The released models (musiq/run_predict_image.py `_MODEL_CONFIG`): 3-scale,
# single-scale (full_size_single_scale/) and AVA (10 outputs).
RELEASED_VARIANTS = {
    "multiscale": dict(num_classes=1, num_scales=3),
    "single_scale": dict(num_classes=1, num_scales=1),
    "ava": dict(num_classes=10, num_scales=3),
}


@pytest.mark.parametrize("variant", sorted(RELEASED_VARIANTS))
def test_full_size_original_layout_checkpoints(variant, tmp_path,
                                               fast_compile):
  """A file laid out as the released ones (248 keys, GroupNorm (1,1,1,C),
  optimizer state beside the params) scores real photos through the CLI,
  and exporting what was loaded rewrites the file's params bit for bit."""
  del fast_compile
  shapes = mf.original_musiq_shapes(**RELEASED_VARIANTS[variant])
  assert len(shapes) == mf.NUM_RELEASED_KEYS
  assert shapes["block1/unit1/gn3/scale"] == (1, 1, 1, 256)
  ckpt = str(tmp_path / f"{variant}_ckpt.npz")
  written = mf.write_original_npz(ckpt, shapes, seed=7)
  images = tmp_path / "photos"
  images.mkdir()
  for name in ("chelsea", "coffee"):  # Small copies: ~200 tokens each.
    mf.write_jpeg(images / f"{name}.jpg", mf.photo(name)[::4, ::4])
  extra = {"single_scale": ["--single_scale"],
           "ava": ["--num_classes=10"]}.get(variant, [])
  out = _run(f"--ckpt_path={ckpt}", f"--image_path={images}",
             "--format=json", *extra)
  assert out.returncode == 0, out.stderr
  scores = {os.path.basename(r["image"]): r["score"]
            for r in map(json.loads, out.stdout.splitlines())}
  assert sorted(scores) == ["chelsea.jpg", "coffee.jpg"]
  assert abs(scores["chelsea.jpg"] - scores["coffee.jpg"]) > 1e-4
  if variant == "ava":
    assert all(1.0 <= s <= 10.0 for s in scores.values())
  if variant == "multiscale":
    # The float64 NumPy forward of the original's semantics, straight from
    # the file's arrays (GroupNorm (1, 1, 1, C) broadcasts over NHWC).
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    pixels = tf.io.decode_jpeg((images / "chelsea.jpg").read_bytes()).numpy()
    f = {k: v[None] for k, v in preprocessing.preprocess_image(
        pixels, preprocessing.PreprocessConfig()).items()}
    ref = numpy_reference.forward(written, f["patches"], f["spatial"],
                                  f["scale"], f["mask"], num_heads=6)
    assert scores["chelsea.jpg"] == pytest.approx(float(ref[0, 0]), rel=1e-4,
                                                  abs=1e-4)
  # Export of what was loaded: the same keys, shapes, dtypes and values.
  from musiq_jax import checkpoint  # pylint: disable=g-import-not-at-top
  scorer = scorer_lib.load_scorer(ckpt)
  out_path = str(tmp_path / "exported.npz")
  checkpoint.export_npz(scorer.params, out_path)
  with np.load(ckpt) as a, np.load(out_path) as b:
    original = {k: a[k] for k in a.files if k.startswith("opt/target/")}
    exported = {k: b[k] for k in b.files}
  assert exported.keys() == original.keys()
  for k, v in original.items():
    assert (exported[k].shape, exported[k].dtype) == (v.shape, v.dtype), k
    np.testing.assert_array_equal(exported[k], v)


def test_sidecar_head_sets_the_readout(tmp_path):
  # best.json's head and mos_range decide the score, as in training; a
  # broken one is an error naming it.
  import jax  # pylint: disable=g-import-not-at-top
  from musiq_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from musiq_jax import losses  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "best.npz")
  mf.write_original_npz(path, mf.original_musiq_shapes(num_classes=5,
                                                       **mf.TINY), seed=4)
  image = mf.photo("coffee")[::8, ::8]
  released = scorer_lib.load_scorer(path)
  feats = released.preprocess(image)
  batch = preprocessing.pad_batch([feats])
  logits = jax.jit(released.model.apply)({"params": released.params}, batch)
  assert released.score([image])[0].score == pytest.approx(
      float(losses.distribution_score(logits)[0]), abs=1e-5)  # 1..5 mean.
  checkpoint.write_sidecar(path, {"head": "levels", "mos_range": [0, 100]})
  levels = scorer_lib.load_scorer(path)
  want = float(losses.levels_score(logits, 0.0, 100.0)[0])
  assert levels.score([image])[0].score == pytest.approx(want, abs=1e-4)
  assert 10 <= want <= 90
  checkpoint.write_sidecar(path, {"head": "levels"})
  with pytest.raises(checkpoint.CheckpointError, match=r"best\.json.*MOS range"):
    scorer_lib.load_scorer(path)


def test_scores_equal_the_tf_preprocessing_path(files):
  # Today's scores: TF-decoded pixels, TF preprocessing, the model on
  # tokens. The device path (decode with simplejpeg, tokens in the jitted
  # program, bucketed canvases, batches of 3) gives the same scores.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _, images, _, ckpts = files
  scorer = scorer_lib.load_scorer(ckpts["multiscale"], batch_size=3)
  paths = sorted(str(p) for p in images.iterdir() if p.suffix != ".txt")
  got = [r.score for r in scorer.score(paths)]
  feats = [tf_reference.preprocess_image(
      tf.io.decode_image(open(p, "rb").read(), channels=3).numpy(),
      scorer.pp_config) for p in paths]
  np.testing.assert_allclose(got, scorer.score_features(feats), rtol=1e-5,
                             atol=1e-5)


NO_TF = """
import importlib.abc, json, sys
class _Block(importlib.abc.MetaPathFinder):
  # Any import of these fails, as in an environment without them.
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "clu",
                              "keras", "tensorboard"):
      raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, _Block())
sys.modules["tensorflow"] = None
import musiq_jax
from musiq_jax import predict
ckpt, png, jpg = sys.argv[1:4]
scorer = musiq_jax.load_scorer(ckpt, batch_size=2)
scores = [r.score for r in scorer.score([png, jpg])]
sys.argv = ["predict", "--ckpt_path=" + ckpt, "--image_path=" + png,
            "--image_path=" + jpg, "--format=json"]
try:
  predict.run()
except SystemExit as e:
  assert e.code == 0, e.code
print("SCORES", json.dumps(scores))
print("LOADED", sorted(m for m, v in sys.modules.items() if v is not None
                       and m.split(".")[0] in ("tensorflow", "tensorboard",
                                               "tensorflow_datasets")))
"""


def test_scoring_imports_no_tensorflow(files):
  # A subprocess in which importing TF fails scores a PNG and a JPEG through
  # `load_scorer` and `predict`; scores equal this process's (which has TF).
  _, images, _, ckpts = files
  png, jpg = str(images / "astro.png"), str(images / "chelsea.jpg")
  out = subprocess.run(
      [sys.executable, "-c", NO_TF, ckpts["multiscale"], png, jpg],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  rows = [json.loads(line) for line in lines if line.startswith("{")]
  scores = json.loads([l for l in lines if l.startswith("SCORES")][0][7:])
  assert [r["image"] for r in rows] == [png, jpg]
  np.testing.assert_allclose([r["score"] for r in rows], scores, rtol=1e-6)
  assert [l for l in lines if l.startswith("LOADED")] == ["LOADED []"]
  here = scorer_lib.load_scorer(ckpts["multiscale"]).score([png, jpg])
  np.testing.assert_allclose(scores, [r.score for r in here], rtol=1e-5,
                             atol=1e-5)
