"""Scoring whole collections: lazy file walks, streamed writers, resume,
shards and their merge (the machinery behind `python -m musiq_jax.predict`).

    paths = collection.iter_paths(["photos/"], recursive=True)   # lazy
    paths = collection.shard(paths, num_shards=4, index=1)        # 1, 5, 9..
    writer = collection.make_writer("json", out)
    for results in scorer.score_batches(paths):
      writer.write(results)                                       # flushed

File lists are walked lazily (one directory's names in memory at a time,
sorted, so every process sees the same order); the results of a batch are
written in one `write` and flushed, so a killed run leaves whole lines in
input order, and `resume_rows` reads them back (dropping a torn last line)
so that a resumed run scores only the rest. Shards take every N-th file of
the sorted walk (round-robin), and `merge` interleaves the shards' files
back into the single-process order.
"""

from __future__ import annotations

import csv
import glob
import io
import itertools
import json
import os
import re
from typing import Any, Dict, IO, Iterable, Iterator, List, Optional, Sequence

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                    ".webp")
FORMATS = ("table", "json", "csv")
# Formats a run can be resumed from (a table's columns are padded text).
RESUMABLE = ("json", "csv")


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def _walk(root: str, recursive: bool) -> Iterator[str]:
  """Image files under `root`, sorted, one directory listed at a time."""
  names = sorted(os.listdir(root))
  for name in names:
    path = os.path.join(root, name)
    if os.path.isdir(path):
      continue
    if _is_image(name):
      yield path
  if recursive:
    for name in names:
      path = os.path.join(root, name)
      if os.path.isdir(path):
        yield from _walk(path, recursive)


def iter_paths(args: Sequence[str], recursive: bool = False) -> Iterator[str]:
  """Files named by paths, directories and globs, in the order given; lazy.

  A directory gives its image files (by extension, sorted; with `recursive`
  then its sub-directories', depth first, sorted); a glob its matches,
  sorted (`**` with `recursive`). A path that does not exist is kept, so
  that it is reported as missing.
  """
  for arg in args:
    if os.path.isdir(arg):
      yield from _walk(arg, recursive)
    elif glob.has_magic(arg):
      matches = sorted(glob.iglob(arg, recursive=recursive))
      yield from (matches if matches else [arg])
    else:
      yield arg


def shard(items: Iterable[Any], num_shards: int, index: int) -> Iterator[Any]:
  """Items index, index + N, index + 2N, ... of `items` (lazily).

  Round-robin shards of a sorted list are balanced whatever its order
  (photos of one folder are often alike) and are merged back in order by
  `merge`.
  """
  if num_shards < 1 or not 0 <= index < num_shards:
    raise ValueError(f"shard index {index} is not in [0, {num_shards}); "
                     "give --num_shards=N and --shard_index in 0..N-1")
  return itertools.islice(items, index, None, num_shards)


def shard_path(output: str, num_shards: int, index: int) -> str:
  """The output file of one shard: FILE-00001-of-00004 (TFDS's naming)."""
  return f"{output}-{index:05d}-of-{num_shards:05d}"


# -- Writers. ------------------------------------------------------------------
class Writer:
  """Writes results as they come: one `write` and a flush per batch."""

  def __init__(self, out: IO[str], extra: Sequence[str] = ()):
    self.out = out
    self.extra = tuple(extra)  # Extra columns, e.g. the dataset's "mos".

  def header(self) -> str:
    return ""

  def lines(self, rows: Sequence[Dict[str, Any]]) -> str:
    raise NotImplementedError

  def write_header(self) -> None:
    self._emit(self.header())

  def write(self, rows: Sequence[Dict[str, Any]]) -> None:
    """Rows: dicts with "image" and "score" or "error" (+ `extra` keys)."""
    if rows:
      self._emit(self.lines(rows))

  def _emit(self, text: str) -> None:
    if not text:
      return
    fileno = getattr(self.out, "fileno", None)
    try:
      fd = fileno() if fileno else None
    except (OSError, io.UnsupportedOperation):
      fd = None
    if fd is not None and not self.out.isatty():
      # One system call per batch: a SIGKILL leaves whole batches (a torn
      # line is possible only if the disk fills; `resume_rows` drops it).
      self.out.flush()
      data = text.encode("utf-8")
      while data:
        data = data[os.write(fd, data):]
    else:
      self.out.write(text)
      self.out.flush()


class JsonWriter(Writer):
  """One JSON object per line: {"image": ..., "score": ...} or "error"."""

  def lines(self, rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


class CsvWriter(Writer):
  """CSV with a header: image,score,error[,extra...] (RFC 4180 quoting)."""

  def _fields(self):
    return ("image", "score", "error") + self.extra

  def header(self):
    return self.lines([dict(zip(self._fields(), self._fields()))])

  def lines(self, rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=self._fields(), lineterminator="\n",
                       extrasaction="ignore")
    for r in rows:
      w.writerow({k: ("" if r.get(k) is None else r[k])
                  for k in self._fields()})
    return buf.getvalue()


class TableWriter(Writer):
  """Aligned text: `image  score` (ERROR: ... for a failed image)."""

  def __init__(self, out, extra=(), width: int = 0):
    super().__init__(out, extra)
    self.width = max(width, len("image"))

  def header(self):
    cols = "  ".join(("score",) + self.extra)
    return f"{'image':<{self.width}}  {cols}\n"

  def lines(self, rows):
    out = []
    for r in rows:
      if r.get("error") is not None:
        value = f"ERROR: {r['error']}"
      else:
        value = "  ".join([f"{r['score']:.4f}"] +
                          [f"{r[k]:.4f}" for k in self.extra])
      out.append(f"{r['image']:<{self.width}}  {value}\n")
    return "".join(out)


def make_writer(fmt: str, out: IO[str], extra: Sequence[str] = (),
                width: int = 0) -> Writer:
  if fmt == "json":
    return JsonWriter(out, extra)
  if fmt == "csv":
    return CsvWriter(out, extra)
  if fmt == "table":
    return TableWriter(out, extra, width)
  raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")


# -- Reading results back (resume, merge). -----------------------------------
def _parse_csv_value(key: str, value: str) -> Any:
  if value == "":
    return None
  if key == "image" or key == "error":
    return value
  try:
    return float(value)
  except ValueError:
    return value


def _iter_rows(f: IO[str], fmt: str, path: str) -> Iterator[Dict[str, Any]]:
  """Rows of a json-lines or csv results file."""
  if fmt == "json":
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n}: not a JSON line ({e.msg}); is it a "
                         "--format=json output?") from None
      if not isinstance(row, dict) or "image" not in row:
        raise ValueError(f"{path}:{n}: a JSON line without an \"image\"")
      yield row
  elif fmt == "csv":
    reader = csv.DictReader(f)
    if reader.fieldnames is None:
      return
    if "image" not in reader.fieldnames:
      raise ValueError(f"{path}: the CSV header {reader.fieldnames} has no "
                       "image column; is it a --format=csv output?")
    for row in reader:
      yield {k: _parse_csv_value(k, v) for k, v in row.items()
             if not (k != "image" and v == "")}
  else:
    raise ValueError(f"--format={fmt} output cannot be read back; use "
                     f"one of {RESUMABLE}")


def drop_torn_line(path: str) -> int:
  """Cuts a last line without its newline (a run killed mid-write).

  Returns the number of bytes cut.
  """
  with open(path, "rb+") as f:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size == 0:
      return 0
    # Read back from the end to the last newline.
    pos, block = size, 1 << 16
    while pos > 0:
      start = max(0, pos - block)
      f.seek(start)
      chunk = f.read(pos - start)
      nl = chunk.rfind(b"\n")
      if nl >= 0:
        keep = start + nl + 1
        break
      pos = start
    else:
      keep = 0
    if keep < size:
      f.truncate(keep)
    return size - keep


def resume_rows(path: str, fmt: str) -> List[Dict[str, Any]]:
  """The rows already in `path` (after dropping a torn last line).

  The file must be a json-lines or csv output of `predict` (csv: with its
  header; a file cut inside the header is started anew).
  """
  if fmt not in RESUMABLE:
    raise ValueError(f"--resume needs --format=json or csv (a table's "
                     f"columns cannot be read back), got --format={fmt}")
  if not os.path.exists(path):
    return []
  drop_torn_line(path)
  with open(path, newline="", encoding="utf-8") as f:
    return list(_iter_rows(f, fmt, path))


def _shard_files(output: str) -> List[str]:
  pattern = re.compile(re.escape(output) + r"-(\d{5})-of-(\d{5})$")
  found = {}
  for p in glob.glob(glob.escape(output) + "-*-of-*"):
    m = pattern.match(p)
    if m:
      found[p] = (int(m.group(1)), int(m.group(2)))
  if not found:
    raise ValueError(f"no shard files {output}-NNNNN-of-NNNNN found")
  counts = {n for _, n in found.values()}
  if len(counts) != 1:
    raise ValueError(f"shard files of {output} have different shard counts "
                     f"{sorted(counts)}; remove the stale ones")
  (n,) = counts
  files = {i: p for p, (i, _) in found.items()}
  missing = [shard_path(output, n, i) for i in range(n) if i not in files]
  if missing:
    raise ValueError(f"missing shard files: {missing}")
  return [files[i] for i in range(n)]


def merge(output: str, fmt: str, extra: Sequence[str] = ()) -> int:
  """Joins OUTPUT-?????-of-N (json or csv) into OUTPUT, in the
  single-process order (round-robin, as `shard` split it).

  Reads the shards a line at a time (constant memory). Raises ValueError if
  a shard is shorter than the round-robin split allows (an unfinished
  shard: resume it first). Returns the number of rows written.
  """
  files = _shard_files(output)
  handles = [open(p, newline="", encoding="utf-8") for p in files]
  try:
    readers = [_iter_rows(h, fmt, p) for h, p in zip(handles, files)]
    rows_extra = list(extra)
    with open(output, "w", newline="", encoding="utf-8") as out:
      writer = None
      count = 0
      while True:
        got = [next(r, None) for r in readers]
        n = sum(g is not None for g in got)
        if any(g is None for g in got[:n]) or n < len(got) and any(
            g is not None for g in got[n:]):
          short = files[got.index(None)]
          raise ValueError(f"{short} ends before the other shards: that "
                           "shard did not finish; run it again with --resume")
        if writer is None:
          if fmt == "csv" and n:
            rows_extra = list(dict.fromkeys(
                k for g in got[:n] for k in g
                if k not in ("image", "score", "error")))
          writer = make_writer(fmt, out, rows_extra)
          writer.write_header()
        if n == 0:
          break
        writer.write(got[:n])
        count += n
        if n < len(got):  # The last, partial round.
          if any(next(r, None) is not None for r in readers):
            raise ValueError(f"{files[n]} ends before the other shards: "
                             "that shard did not finish; run it again with "
                             "--resume")
          break
      return count
  finally:
    for h in handles:
      h.close()
