"""Tests of musiq_jax.losses against explicit NumPy/SciPy computations."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from musiq_jax import losses


def _rng(seed=0):
  return np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# Regression.
# ---------------------------------------------------------------------------


def test_mse_and_l1_ignore_invalid_examples():
  rng = _rng(0)
  pred = rng.normal(size=(7, 1)).astype(np.float32)
  target = rng.normal(size=7).astype(np.float32)
  weight = np.array([1, 1, 0, 1, 0, 1, 1], np.float32)
  # Padded examples hold garbage that must not matter.
  target_garbage = target.copy()
  target_garbage[weight == 0] = 1e6
  keep = weight > 0
  np.testing.assert_allclose(
      losses.mse_loss(pred, target_garbage, weight),
      np.mean((pred[keep, 0] - target[keep]) ** 2), rtol=1e-6)
  np.testing.assert_allclose(
      losses.l1_loss(pred[:, 0], target_garbage, weight),
      np.mean(np.abs(pred[keep, 0] - target[keep])), rtol=1e-6)
  np.testing.assert_allclose(
      losses.mse_loss(pred, target), np.mean((pred[:, 0] - target) ** 2),
      rtol=1e-6)


def test_all_padding_batch_gives_zero_loss_and_finite_grad():
  pred = jnp.ones((4,))
  weight = jnp.zeros((4,))
  assert float(losses.mse_loss(pred, jnp.zeros(4), weight)) == 0.0
  g = jax.grad(lambda p: losses.mse_loss(p, jnp.zeros(4), weight))(pred)
  assert np.all(np.isfinite(g)) and np.all(g == 0)


# ---------------------------------------------------------------------------
# Correlation losses.
# ---------------------------------------------------------------------------


def test_plcc_loss_equals_one_minus_scipy_pearson():
  rng = _rng(1)
  pred = rng.normal(size=20)
  target = 2.0 * pred + rng.normal(size=20)
  expected = 1.0 - stats.pearsonr(pred, target)[0]
  np.testing.assert_allclose(losses.plcc_loss(pred, target), expected,
                             atol=1e-5)
  # With a mask: only the valid examples count.
  weight = (rng.random(20) > 0.3).astype(np.float32)
  keep = weight > 0
  expected = 1.0 - stats.pearsonr(pred[keep], target[keep])[0]
  np.testing.assert_allclose(losses.plcc_loss(pred, target, weight), expected,
                             atol=1e-5)
  # Differentiable, finite even for a constant prediction.
  g = jax.jit(jax.grad(losses.plcc_loss))(jnp.zeros(20), jnp.asarray(target))
  assert np.all(np.isfinite(g))


def test_srcc_loss_tends_to_one_minus_spearman():
  rng = _rng(2)
  pred = rng.normal(size=25)
  target = pred + rng.normal(size=25)
  target[3] = target[4]  # A tie in the MOS.
  expected = 1.0 - stats.spearmanr(pred, target)[0]
  loss = jax.jit(losses.srcc_loss, static_argnames="temperature")
  np.testing.assert_allclose(loss(pred, target, temperature=1e-4), expected,
                             atol=1e-5)
  g = jax.jit(jax.grad(losses.srcc_loss))(jnp.asarray(pred, jnp.float32),
                                          jnp.asarray(target))
  assert np.all(np.isfinite(g)) and np.any(g != 0)


# ---------------------------------------------------------------------------
# AVA distributions.
# ---------------------------------------------------------------------------


def _np_emd(logits, target, r=2.0):
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  q = target / target.sum(-1, keepdims=True)
  d = np.abs(np.cumsum(p, -1) - np.cumsum(q, -1))
  return np.mean(np.mean(d ** r, -1) ** (1.0 / r))


@pytest.mark.parametrize("r", [1.0, 2.0])
def test_emd_loss_matches_numpy(r):
  rng = _rng(3)
  logits = rng.normal(size=(6, 10))
  counts = rng.integers(0, 50, size=(6, 10)).astype(np.float64) + 1
  np.testing.assert_allclose(losses.emd_loss(logits, counts, r=r),
                             _np_emd(logits, counts, r), rtol=1e-5)
  weight = np.array([1, 0, 1, 1, 0, 1], np.float32)
  np.testing.assert_allclose(
      losses.emd_loss(logits, counts, weight, r=r),
      _np_emd(logits[weight > 0], counts[weight > 0], r), rtol=1e-5)


def test_emd_gradient_finite_at_perfect_prediction():
  logits = jnp.log(jnp.arange(1.0, 11.0))[None]
  target = jax.nn.softmax(logits)
  assert float(losses.emd_loss(logits, target)) < 1e-6
  g = jax.jit(jax.grad(losses.emd_loss))(logits, target)
  assert np.all(np.isfinite(g))


def test_distribution_score_is_softmax_weighted_mean_of_1_to_10():
  rng = _rng(4)
  logits = rng.normal(size=(5, 10))
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(losses.distribution_score(logits),
                             p @ np.arange(1, 11), rtol=1e-5)


# ---------------------------------------------------------------------------
# Q-Align levels.
# ---------------------------------------------------------------------------

RANGES = [(0.0, 100.0), (1.0, 5.0), (0.0, 9.0), (1.0, 10.0)]


@pytest.mark.parametrize("lo,hi", RANGES)
def test_level_boundaries_and_range_ends(lo, hi):
  bounds = [np.float32(lo + k * (hi - lo) / 5) for k in range(1, 5)]
  # Q-Align: (lo + k/5, lo + (k+1)/5], so a boundary takes the lower level.
  np.testing.assert_array_equal(losses.mos_to_level(bounds, lo, hi),
                                [0, 1, 2, 3])
  np.testing.assert_array_equal(
      losses.mos_to_level(bounds, lo, hi, closed="left"), [1, 2, 3, 4])
  # Just above each boundary: the upper level in both conventions.
  above = [np.nextafter(b, np.float32(np.inf)) for b in bounds]
  np.testing.assert_array_equal(losses.mos_to_level(above, lo, hi),
                                [1, 2, 3, 4])
  # Range ends and clipping.
  span = hi - lo
  for closed in ("right", "left"):
    np.testing.assert_array_equal(
        losses.mos_to_level([lo, hi, lo - span, hi + span], lo, hi,
                            closed=closed), [0, 4, 0, 4])


@pytest.mark.parametrize("lo,hi", RANGES)
def test_level_centres_round_trip(lo, hi):
  levels = np.arange(5)
  centres = losses.level_to_mos(levels, lo, hi)
  np.testing.assert_allclose(centres,
                             lo + (levels + 0.5) * (hi - lo) / 5, rtol=1e-6)
  for closed in ("right", "left"):
    np.testing.assert_array_equal(
        losses.mos_to_level(centres, lo, hi, closed=closed), levels)
  # The expectation of a one-hot level is its centre.
  np.testing.assert_allclose(
      losses.level_probs_to_mos(np.eye(5), lo, hi), centres, rtol=1e-6)
  # A confident prediction of the right level scores close to its centre.
  np.testing.assert_allclose(losses.levels_score(50.0 * np.eye(5), lo, hi),
                             centres, rtol=1e-5)


def test_level_weightings():
  np.testing.assert_allclose(losses.level_values(0, 100, weighting="ends"),
                             [0, 25, 50, 75, 100])
  np.testing.assert_allclose(losses.level_values(0, 100, weighting="qalign"),
                             [1, 2, 3, 4, 5])
  with pytest.raises(ValueError):
    losses.level_values(0, 1, weighting="nope")
  with pytest.raises(ValueError):
    losses.mos_to_level(1.0, 5.0, 1.0)


@pytest.mark.parametrize("weighting", ["centre", "ends", "qalign"])
def test_levels_score_is_monotone_in_each_level_logit(weighting):
  rng = _rng(5)
  lo, hi = 0.0, 100.0
  values = np.asarray(losses.level_values(lo, hi, weighting=weighting))

  @jax.jit
  def score(z):
    return losses.levels_score(z[None], lo, hi, weighting)[0]

  for logits in rng.normal(scale=2.0, size=(6, 5)).astype(np.float32):
    base = float(score(jnp.asarray(logits)))
    for k in range(5):
      for delta in (0.1, 1.0, 5.0):
        x = logits.copy()
        x[k] += delta
        # S moves towards level k's value as its logit grows: up for every
        # level above the current score, always up for the top level.
        change = float(score(jnp.asarray(x))) - base
        assert np.sign(change) == np.sign(values[k] - base), (k, delta)
    assert float(score(jnp.asarray(logits) + 3.0 * jnp.eye(5)[4])) > base
    # dS/dz_k = p_k (v_k - S): per unit of probability, a higher level's
    # logit raises the score more.
    g = np.asarray(jax.grad(score)(jnp.asarray(logits)))
    p = np.asarray(jax.nn.softmax(logits))
    np.testing.assert_allclose(g / p, values - base, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(g / p) > 0)


def test_soft_level_labels_interpolate_centres():
  lo, hi = 1.0, 5.0
  mos = np.linspace(1.4, 4.6, 33).astype(np.float32)  # Centres span 1.4..4.6.
  labels = losses.soft_level_labels(mos, lo, hi)
  np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-6)
  assert np.all(labels >= 0)
  # At most two adjacent levels are non-zero.
  nz = np.asarray(labels) > 1e-7
  assert np.all(nz.sum(-1) <= 2)
  np.testing.assert_allclose(losses.level_probs_to_mos(labels, lo, hi), mos,
                             atol=1e-5)
  # Beyond the outer centres: all mass on the end level.
  np.testing.assert_allclose(losses.soft_level_labels([1.0, 5.0], lo, hi),
                             np.eye(5)[[0, 4]])


def test_levels_loss_is_cross_entropy_on_levels():
  rng = _rng(6)
  lo, hi = 0.0, 100.0
  logits = rng.normal(size=(8, 5))
  mos = rng.uniform(lo, hi, size=8)
  weight = np.array([1, 1, 1, 0, 1, 1, 0, 1], np.float32)
  level = np.minimum(np.ceil(mos / 20.0) - 1, 4).astype(int)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -logp[np.arange(8), level]
  np.testing.assert_allclose(losses.levels_loss(logits, mos, lo, hi, weight),
                             ce[weight > 0].mean(), rtol=1e-5)
  soft = np.asarray(losses.soft_level_labels(mos, lo, hi))
  soft_ce = -(soft * logp).sum(-1)
  np.testing.assert_allclose(
      losses.levels_loss(logits, mos, lo, hi, weight, soft=True),
      soft_ce[weight > 0].mean(), rtol=1e-5)


# ---------------------------------------------------------------------------
# RankIQA efficient Siamese loss.
# ---------------------------------------------------------------------------


def _explicit_siamese(scores, level, group, weight, margin, normalize):
  """Pair-by-pair Siamese hinge loss and RankIQA's hand-written gradient."""
  n = len(scores)
  valid = weight > 0
  total, num_pairs = 0.0, 0
  grad = np.zeros(n)
  for i, j in itertools.permutations(range(n), 2):
    if not (valid[i] and valid[j] and group[i] == group[j]
            and level[i] < level[j]):
      continue
    num_pairs += 1
    h = max(0.0, scores[j] - scores[i] + margin)
    total += h
    if h > 0:
      grad[i] -= 1.0
      grad[j] += 1.0
  den = valid.sum() if normalize == "num_images" else num_pairs
  return total / den, grad / den


def _random_ranking_batch(seed, n=30, margin=1.0):
  rng = _rng(seed)
  scores = rng.normal(scale=margin, size=n)
  level = rng.integers(0, 4, size=n)
  group = rng.integers(0, 3, size=n)
  weight = (rng.random(n) > 0.2).astype(np.float32)
  return scores, level, group, weight


@pytest.mark.parametrize("normalize", ["num_images", "num_pairs"])
@pytest.mark.parametrize("seed", [0, 1])
def test_all_pairs_hinge_and_grad_equal_explicit_pairs(normalize, seed):
  margin = 1.0  # Scores ~N(0, 1): a mix of active and inactive pairs.
  scores, level, group, weight = _random_ranking_batch(seed, margin=margin)
  expected_loss, expected_grad = _explicit_siamese(
      scores, level, group, weight, margin, normalize)

  fn = jax.jit(lambda s: losses.pairwise_hinge_loss(
      s, level, group, weight, margin=margin, normalize=normalize))
  s = jnp.asarray(scores, jnp.float32)
  np.testing.assert_allclose(fn(s), expected_loss, rtol=1e-5)
  np.testing.assert_allclose(jax.grad(fn)(s), expected_grad, atol=1e-6)
  # [N, 1] outputs, as from Dense(1), give the same.
  np.testing.assert_allclose(fn(s[:, None]), expected_loss, rtol=1e-5)



def test_all_pairs_grad_equals_grad_of_pair_loop():
  # jax.grad of a loop over pairs, one Siamese hinge per pair.
  margin = 1.0
  scores, level, group, weight = _random_ranking_batch(3, n=12, margin=margin)
  pairs = [(i, j) for i, j in itertools.permutations(range(12), 2)
           if weight[i] > 0 and weight[j] > 0 and group[i] == group[j]
           and level[i] < level[j]]

  def loop_loss(s):
    return sum(jax.nn.relu(s[j] - s[i] + margin)
               for i, j in pairs) / (weight > 0).sum()

  s = jnp.asarray(scores, jnp.float32)
  fn = lambda s: losses.pairwise_hinge_loss(s, level, group, weight, margin)
  np.testing.assert_allclose(fn(s), jax.jit(loop_loss)(s), rtol=1e-5)
  np.testing.assert_allclose(jax.jit(jax.grad(fn))(s),
                             jax.jit(jax.grad(loop_loss))(s), atol=1e-6)


def test_equal_level_and_other_group_pairs_are_excluded():
  # Two contents (groups), levels 0..2 each, plus a second level-1 image in
  # group 0. Margin large enough that every candidate pair would be active,
  # so including any excluded pair would change the loss.
  scores = np.array([0.3, -0.2, 0.5, 0.1, 0.0, -0.4, 0.7])
  level = np.array([0, 1, 2, 0, 1, 2, 1])
  group = np.array([0, 0, 0, 1, 1, 1, 0])
  weight = np.ones(7)
  margin = 10.0
  got = float(losses.pairwise_hinge_loss(scores, level, group, margin=margin))
  expected, _ = _explicit_siamese(scores, level, group, weight, margin,
                                  "num_images")
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # The valid ordered pairs: group 0 has levels {0, 1, 2, 1} -> (0<1) x2,
  # (0<2), (1<2) x2 = 5; group 1 -> 3. 8 pairs in all.
  mask = losses.ranking_pair_mask(level, group)
  assert float(mask.sum()) == 8
  assert mask[1, 6] == 0 and mask[6, 1] == 0  # Equal level.
  assert mask[0, 4] == 0 and mask[3, 1] == 0  # Different content.

  def total(pairs):
    return sum(max(0, scores[j] - scores[i] + margin) for i, j in pairs) / 7

  ok = [(i, j) for i, j in itertools.permutations(range(7), 2)
        if group[i] == group[j] and level[i] < level[j]]
  same_level = [(1, 6), (6, 1)]
  cross = [(i, j) for i, j in itertools.permutations(range(7), 2)
           if group[i] != group[j] and level[i] < level[j]]
  assert abs(total(ok + same_level) - got) > 1.0
  assert abs(total(ok + cross) - got) > 1.0
  # A zero-weight image leaves no pair behind.
  weight[2] = 0
  got_masked = float(losses.pairwise_hinge_loss(
      scores, level, group, weight, margin=margin))
  expected_masked, _ = _explicit_siamese(scores, level, group, weight, margin,
                                         "num_images")
  np.testing.assert_allclose(got_masked, expected_masked, rtol=1e-6)


def test_hinge_matches_rankiqa_live_batch_layout():
  # RankIQA's LIVE batch: 4 types x 6 levels x 2 images, type-major, then
  # level, then image; pairs run over both images of a type (group = type).
  n_types, n_levels, n_img = 4, 6, 2
  rng = _rng(7)
  scores = rng.normal(scale=10.0, size=n_types * n_levels * n_img)
  t, l, _ = np.meshgrid(np.arange(n_types), np.arange(n_levels),
                        np.arange(n_img), indexing="ij")
  level, group = l.reshape(-1), t.reshape(-1)
  # RankIQA's own enumeration: image i pairs with every image of its type at
  # a later level position.
  sep = n_levels * n_img
  total = 0.0
  for k in range(n_types):
    for i in range(sep * k, sep * (k + 1) - n_img):
      first_j = sep * k + ((i - sep * k) // n_img + 1) * n_img
      for j in range(first_j, sep * (k + 1)):
        total += max(0.0, 10.0 - (scores[i] - scores[j]))
  expected = total / len(scores)
  np.testing.assert_allclose(
      losses.pairwise_hinge_loss(scores, level, group, margin=10.0), expected,
      rtol=1e-5)


# ---------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------


def test_registry_losses_and_score_fns():
  rng = _rng(8)
  n = 6
  batch = {
      "mos": rng.uniform(0, 100, size=n).astype(np.float32),
      "dist": rng.random((n, 10)).astype(np.float32),
      "level": np.array([0, 1, 2, 0, 1, 2]),
      "group": np.array([0, 0, 0, 1, 1, 1]),
      "weight": np.array([1, 1, 1, 1, 1, 0], np.float32),
  }
  scalar = rng.normal(size=(n, 1)).astype(np.float32)
  hist = rng.normal(size=(n, 10)).astype(np.float32)
  lev = rng.normal(size=(n, 5)).astype(np.float32)
  w = batch["weight"]
  np.testing.assert_allclose(
      losses.get_loss("regression")(scalar, batch),
      losses.mse_loss(scalar, batch["mos"], w))
  np.testing.assert_allclose(
      losses.get_loss("regression", kind="l1", plcc_weight=0.5)(scalar, batch),
      losses.l1_loss(scalar, batch["mos"], w)
      + 0.5 * losses.plcc_loss(scalar, batch["mos"], w), rtol=1e-6)
  np.testing.assert_allclose(
      losses.get_loss("distribution")(hist, batch),
      losses.emd_loss(hist, batch["dist"], w))
  np.testing.assert_allclose(
      losses.get_loss("levels", lo=0.0, hi=100.0, soft=True)(lev, batch),
      losses.levels_loss(lev, batch["mos"], 0.0, 100.0, w, soft=True))
  np.testing.assert_allclose(
      losses.get_loss("ranking", margin=1.0)(scalar, batch),
      losses.pairwise_hinge_loss(scalar, batch["level"], batch["group"], w,
                                 margin=1.0))
  # Usable under jit as a closure of (outputs, batch).
  fn = jax.jit(losses.get_loss("levels", lo=0.0, hi=100.0))
  assert np.isfinite(float(fn(lev, batch)))

  assert losses.get_score_fn("regression")(scalar).shape == (n,)
  assert losses.get_score_fn("ranking")(scalar).shape == (n,)
  np.testing.assert_allclose(losses.get_score_fn("distribution")(hist),
                             losses.distribution_score(hist))
  np.testing.assert_allclose(
      losses.get_score_fn("levels", lo=1.0, hi=5.0)(lev),
      losses.levels_score(lev, 1.0, 5.0))
  with pytest.raises(ValueError):
    losses.get_loss("nope")
  with pytest.raises(ValueError):
    losses.get_loss("levels")
  with pytest.raises(KeyError):
    losses.get_loss("ranking")(scalar, {"mos": batch["mos"]})
  assert set(losses.loss_names()) == {"regression", "distribution", "levels",
                                      "ranking"}


def test_readout_for_each_head_and_the_released_default():
  rng = np.random.default_rng(0)
  one, ten, five = (rng.normal(size=(4, k)).astype(np.float32)
                    for k in (1, 10, 5))
  # Released checkpoints (no head known): the original run_predict_image.py,
  # `sum(softmax(logits) * arange(1, K + 1))`, which is the logit for K = 1.
  np.testing.assert_allclose(losses.readout_for(None, 1)(one), one[:, 0])
  p = np.exp(ten) / np.exp(ten).sum(-1, keepdims=True)
  np.testing.assert_allclose(losses.readout_for(None, 10)(ten),
                             (p * np.arange(1, 11)).sum(-1), rtol=1e-6)
  # A trained head: the trainer's own `get_score_fn` closure.
  np.testing.assert_allclose(losses.readout_for("regression", 1)(one),
                             losses.get_score_fn("regression")(one))
  np.testing.assert_allclose(
      losses.readout_for("levels", 5, (0, 100))(five),
      losses.get_score_fn("levels", lo=0.0, hi=100.0)(five))
  q = np.exp(five) / np.exp(five).sum(-1, keepdims=True)
  np.testing.assert_allclose(losses.readout_for("levels", 5, [0, 100])(five),
                             (q * np.array([10, 30, 50, 70, 90])).sum(-1),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="MOS range"):
    losses.readout_for("levels", 5)
  with pytest.raises(ValueError, match="1 output"):
    losses.readout_for("regression", 10)
  with pytest.raises(ValueError, match="Unknown head"):
    losses.readout_for("median", 1)


def test_every_head_module_gives_a_loss_and_the_registry_read_out():
  # One module per head (musiq_jax/losses/); the registry's closures are
  # those modules' functions, so trainer and scorer share one read-out.
  assert set(losses.HEADS) == {"regression", "correlation", "distribution",
                               "levels", "ranking", "fidelity"}
  rng = np.random.default_rng(0)
  out = jnp.asarray(rng.normal(size=(6, 1)), jnp.float32)
  batch = {"mos": jnp.asarray(rng.uniform(1, 5, 6), jnp.float32),
           "level": jnp.arange(6) % 3, "group": jnp.zeros(6, jnp.int32)}
  for name in ("regression", "correlation", "ranking", "fidelity"):
    mod = losses.HEADS[name]
    assert np.isfinite(float(mod.loss(out, batch))), name
    np.testing.assert_array_equal(mod.readout(out), out[:, 0])
  # Fidelity on scores that order the images as their MOS is below chance.
  ordered = batch["mos"][:, None]
  assert float(losses.HEADS["fidelity"].loss(ordered, batch)) < float(
      losses.HEADS["fidelity"].loss(-ordered, batch))
  assert losses.get_score_fn("levels", lo=1.0, hi=5.0).func is (
      losses.HEADS["levels"].readout)
