r"""One comparison table over several trained workdirs, with bootstrap CIs.

    python -m musiq_jax.compare --workdir=W_A --workdir=W_B [--split=test] \
        [--names=A,B] [--out=table.md] [--csv=table.csv] [--bootstrap=1000] \
        [--seed=0]

Each workdir must hold `results.json` (for the model name and parameter
count) and `predictions_<split>.npz` (prediction, label, image_id), as
written by `musiq_jax.trainer` for every task. Metrics are
recomputed from the per-image predictions so every row is computed the same
way; the workdirs must have been evaluated on the same images (the same
image_id multiset), otherwise the rows would not be comparable.

Confidence intervals: percentile bootstrap over images (resampled with
replacement). The same resampled index sets are used for every model (the
images are aligned by image_id first), so the intervals are paired: a model
is not favoured by a lucky resample the others did not get.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np
import scipy.stats

from musiq_jax import metrics as metrics_lib

COLUMNS = ("model", "params", "SRCC", "PLCC", "KRCC", "RMSE")


@dataclasses.dataclass
class Run:
  """One workdir's predictions on one split, sorted by image_id."""
  workdir: str
  name: str
  num_params: Optional[int]
  prediction: np.ndarray
  label: np.ndarray
  image_id: np.ndarray


def load_run(workdir: str, split: str, name: Optional[str] = None) -> Run:
  """Reads results.json and predictions_<split>.npz of one workdir."""
  results_path = os.path.join(workdir, "results.json")
  preds_path = os.path.join(workdir, f"predictions_{split}.npz")
  for path in (results_path, preds_path):
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} not found: is {workdir!r} a finished "
                              f"run evaluated on split {split!r}?")
  with open(results_path) as f:
    results = json.load(f)
  with np.load(preds_path) as d:
    prediction = np.asarray(d["prediction"], np.float64).reshape(-1)
    label = np.asarray(d["label"], np.float64).reshape(-1)
    image_id = np.asarray(d["image_id"]).astype(str).reshape(-1)
  if not prediction.size == label.size == image_id.size:
    raise ValueError(f"{preds_path}: prediction/label/image_id lengths "
                     f"differ ({prediction.size}, {label.size}, "
                     f"{image_id.size}).")
  # Sorting by id aligns the images of different workdirs (eval order can
  # differ between trainers); a stable sort keeps duplicate ids in order.
  order = np.argsort(image_id, kind="stable")
  return Run(workdir=workdir,
             name=name or results.get("model") or os.path.basename(
                 os.path.normpath(workdir)),
             num_params=results.get("num_params"),
             prediction=prediction[order], label=label[order],
             image_id=image_id[order])


def check_same_images(runs: Sequence[Run]) -> None:
  """Raises ValueError naming the first workdir whose image set differs."""
  ref = runs[0]
  ref_ids = collections.Counter(ref.image_id.tolist())
  for run in runs[1:]:
    ids = collections.Counter(run.image_id.tolist())
    if ids != ref_ids:
      missing = sorted((ref_ids - ids).keys())[:5]
      extra = sorted((ids - ref_ids).keys())[:5]
      raise ValueError(
          f"Workdir {run.workdir!r} was evaluated on different images than "
          f"{ref.workdir!r} ({run.image_id.size} vs {ref.image_id.size} "
          f"images; missing e.g. {missing}, extra e.g. {extra}). Compare "
          "runs evaluated on the same dataset and split.")
    if not np.allclose(run.label, ref.label):
      raise ValueError(f"Workdir {run.workdir!r} has different labels than "
                       f"{ref.workdir!r} for the same image ids.")


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Pearson correlation of each row pair of [B, n] arrays (nan if flat)."""
  x = x - x.mean(axis=1, keepdims=True)
  y = y - y.mean(axis=1, keepdims=True)
  den = np.sqrt(np.sum(x * x, axis=1) * np.sum(y * y, axis=1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, np.sum(x * y, axis=1) / den, np.nan)


def bootstrap_indices(n: int, num_samples: int, seed: int) -> np.ndarray:
  """[num_samples, n] image indices drawn with replacement."""
  return np.random.default_rng(seed).integers(0, n, size=(num_samples, n))


def bootstrap_ci(prediction: np.ndarray, label: np.ndarray,
                 indices: np.ndarray, alpha: float = 0.05
                 ) -> Dict[str, Tuple[float, float]]:
  """Percentile (1-alpha) intervals of SRCC and PLCC over resampled images."""
  x, y = prediction[indices], label[indices]
  plcc = _rowwise_pearson(x, y)
  # Spearman = Pearson of average ranks (ties as scipy.stats.spearmanr).
  srcc = _rowwise_pearson(scipy.stats.rankdata(x, axis=1),
                          scipy.stats.rankdata(y, axis=1))
  q = (100 * alpha / 2, 100 * (1 - alpha / 2))
  out = {}
  for key, values in (("srcc", srcc), ("plcc", plcc)):
    values = values[np.isfinite(values)]
    out[key] = (tuple(float(v) for v in np.percentile(values, q))
                if values.size else (float("nan"), float("nan")))
  return out


def compare(workdirs: Sequence[str], split: str = "test",
            names: Optional[Sequence[str]] = None, bootstrap: int = 1000,
            seed: int = 0) -> List[Dict]:
  """One row per workdir: metrics and bootstrap CIs on shared images."""
  if not workdirs:
    raise ValueError("Pass at least one --workdir.")
  if names and len(names) != len(workdirs):
    raise ValueError(f"{len(names)} names for {len(workdirs)} workdirs.")
  runs = [load_run(w, split, names[i] if names else None)
          for i, w in enumerate(workdirs)]
  check_same_images(runs)
  n = runs[0].image_id.size
  indices = bootstrap_indices(n, bootstrap, seed) if bootstrap > 0 else None
  rows = []
  for run in runs:
    m = metrics_lib.all_metrics(run.prediction, run.label)
    row = {"model": run.name, "workdir": run.workdir,
           "params": run.num_params, "num_images": n,
           "srcc": m["srcc"], "plcc": m["plcc"], "krcc": m["krcc"],
           "rmse": m["rmse"]}
    if indices is not None:
      ci = bootstrap_ci(run.prediction, run.label, indices)
      row["srcc_ci"], row["plcc_ci"] = ci["srcc"], ci["plcc"]
    rows.append(row)
  return rows


def _fmt_params(p: Optional[int]) -> str:
  if p is None:
    return "?"
  return f"{p / 1e6:.2f}M" if p >= 1e5 else f"{p / 1e3:.1f}K"


def _fmt_ci(row: Dict, key: str) -> str:
  if f"{key}_ci" not in row:
    return f"{row[key]:.4f}"
  lo, hi = row[f"{key}_ci"]
  return f"{row[key]:.4f} [{lo:.4f}, {hi:.4f}]"


def to_markdown(rows: Sequence[Dict], split: str, bootstrap: int) -> str:
  """A Markdown table (CIs in brackets after SRCC and PLCC)."""
  lines = ["| " + " | ".join(COLUMNS) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
  for r in rows:
    lines.append(f"| {r['model']} | {_fmt_params(r['params'])} | "
                 f"{_fmt_ci(r, 'srcc')} | {_fmt_ci(r, 'plcc')} | "
                 f"{r['krcc']:.4f} | {r['rmse']:.4f} |")
  n = rows[0]["num_images"] if rows else 0
  note = (f"Split `{split}`, {n} images; brackets: 95% percentile bootstrap "
          f"CI ({bootstrap} resamples of the images, paired across models)."
          if bootstrap > 0 else f"Split `{split}`, {n} images.")
  return "\n".join(lines) + "\n\n" + note + "\n"


def write_csv(rows: Sequence[Dict], path: str) -> None:
  """Machine-readable table: one column per number, CI bounds included."""
  fields = ["model", "params", "num_images", "srcc", "srcc_lo", "srcc_hi",
            "plcc", "plcc_lo", "plcc_hi", "krcc", "rmse", "workdir"]
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in rows:
      out = {k: r.get(k) for k in fields if k in r}
      for key in ("srcc", "plcc"):
        lo, hi = r.get(f"{key}_ci", (None, None))
        out[f"{key}_lo"], out[f"{key}_hi"] = lo, hi
      w.writerow(out)


FLAGS = flags.FLAGS


def define_flags():
  """Defines the CLI's flags; only when run as a program.

  Library users import `compare` next to `predict` and `main` (whose
  `--workdir` is one directory, where ours repeats), so the flags must not
  enter the process-wide registry on import.
  """
  flags.DEFINE_multi_string("workdir", None, "A finished run's workdir "
                            "(repeat the flag for each model).")
  flags.DEFINE_string("split", "test", "Which predictions_<split>.npz to use.")
  flags.DEFINE_list("names", None, "Row names, one per --workdir (default: "
                    "results.json's model field).")
  flags.DEFINE_string("out", None, "Write the Markdown table here.")
  flags.DEFINE_string("csv", None, "Write the table as CSV here.")
  flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples (0: no CIs).")
  flags.DEFINE_integer("seed", 0, "Bootstrap seed.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  rows = compare(FLAGS.workdir or [], FLAGS.split, FLAGS.names,
                 FLAGS.bootstrap, FLAGS.seed)
  table = to_markdown(rows, FLAGS.split, FLAGS.bootstrap)
  print(table, flush=True)
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(table)
  if FLAGS.csv:
    write_csv(rows, FLAGS.csv)


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("workdir")
  app.run(main)
