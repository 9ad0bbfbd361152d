"""CLIP's BPE tokenizer, built with the `tokenizers` library from user files.

The user's checkpoint folder holds either `tokenizer.json` (a Hugging Face fast
tokenizer) or `vocab.json` + `merges.txt` (the files of a Hugging Face CLIP
repository). From the latter we assemble CLIP's tokenizer: normalisation
(whitespace collapsed, lower case), CLIP's word-splitting regex, byte-level
mapping and BPE with the `</w>` end-of-word suffix. `ids()` then adds
`<|startoftext|>` / `<|endoftext|>`, truncates to the context length (keeping
the end-of-text token last, as open_clip does) and zero-pads.

Difference from OpenAI's/open_clip's Python tokenizer: they also run `ftfy.fix_text`
(repairing mojibake). We do not; ordinary text tokenizes identically (tested on
hundreds of strings against open_clip).

`write_vocab_files()` makes `vocab.json` + `merges.txt` from OpenAI's
`bpe_simple_vocab_16e6.txt.gz` (shipped inside the open_clip and clip packages).
"""

from __future__ import annotations

import gzip
import html
import json
import os
from typing import Dict, List, Sequence

import numpy as np

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
# CLIP's word splitter: contractions, runs of letters, single digits, runs of
# other non-space characters.
_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# OpenAI's vocabulary keeps the first 49152 - 256 - 2 merges of the file.
_NUM_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> Dict[int, str]:
  """GPT-2's reversible map from bytes to printable unicode characters."""
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
               + list(range(ord("®"), ord("ÿ") + 1)))
  chars = list(printable)
  extra = 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      chars.append(256 + extra)
      extra += 1
  return dict(zip(printable, [chr(c) for c in chars]))


def write_vocab_files(bpe_gz_path: str, out_dir: str) -> None:
  """Writes `vocab.json` and `merges.txt` from OpenAI's `bpe_simple_vocab_16e6.txt.gz`.

  The ids follow OpenAI's order: 256 byte symbols, the same with `</w>`, one
  token per merge, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407).
  """
  with gzip.open(bpe_gz_path, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES + 1]]
  symbols = list(_bytes_to_unicode().values())
  tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
  tokens += [SOT, EOT]
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
    json.dump({t: i for i, t in enumerate(tokens)}, f, ensure_ascii=False)
  with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n")
    f.writelines(f"{a} {b}\n" for a, b in merges)


def _build_from_vocab_merges(vocab_path: str, merges_path: str):
  """A `tokenizers.Tokenizer` doing CLIP's BPE from vocab.json + merges.txt."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import models, normalizers, pre_tokenizers, decoders  # pylint: disable=g-import-not-at-top
  with open(vocab_path, encoding="utf-8") as f:
    vocab = json.load(f)
  with open(merges_path, encoding="utf-8") as f:
    merges = [tuple(line.split()) for line in f.read().split("\n")
              if line and not line.startswith("#version")]
  bpe = models.BPE(vocab=vocab, merges=merges, unk_token=EOT,
                   continuing_subword_prefix="", end_of_word_suffix="</w>",
                   fuse_unk=False)
  tok = tokenizers.Tokenizer(bpe)
  tok.normalizer = normalizers.Sequence([
      normalizers.NFC(),
      normalizers.Replace(tokenizers.Regex(r"\s+"), " "),
      normalizers.Lowercase(),
  ])
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      # Keep the regex matches, drop what lies between them (whitespace).
      pre_tokenizers.Split(tokenizers.Regex(_SPLIT_PATTERN), behavior="removed",
                           invert=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False),
  ])
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens([SOT, EOT])
  return tok


class ClipTokenizer:
  """Turns strings into CLIP token ids [N, context_length] (int32, zero padded)."""

  def __init__(self, tokenizer, context_length: int = 77):
    self._tok = tokenizer
    self._tok.no_padding()
    self._tok.no_truncation()
    self.context_length = context_length
    self.sot_id = self._special_id(SOT)
    self.eot_id = self._special_id(EOT)

  def _special_id(self, token: str) -> int:
    token_id = self._tok.token_to_id(token)
    if token_id is None:
      raise ValueError(f"Tokenizer vocabulary has no {token!r} token: not a CLIP vocabulary?")
    return token_id

  @classmethod
  def from_dir(cls, directory: str, context_length: int = 77) -> "ClipTokenizer":
    """Loads `tokenizer.json`, or else `vocab.json` + `merges.txt`, from `directory`.

    Raises:
      FileNotFoundError: naming the folder and the files looked for.
    """
    import tokenizers  # pylint: disable=g-import-not-at-top
    tok_json = os.path.join(directory, "tokenizer.json")
    vocab = os.path.join(directory, "vocab.json")
    merges = os.path.join(directory, "merges.txt")
    if os.path.exists(tok_json):
      return cls(tokenizers.Tokenizer.from_file(tok_json), context_length)
    if os.path.exists(vocab) and os.path.exists(merges):
      return cls(_build_from_vocab_merges(vocab, merges), context_length)
    raise FileNotFoundError(
        f"No CLIP tokenizer files in {directory!r}: expected tokenizer.json, or "
        "vocab.json and merges.txt (see docs/clip.md).")

  def encode(self, text: str) -> List[int]:
    """BPE ids of `text`, without start/end tokens."""
    # open_clip un-escapes HTML entities twice before tokenizing.
    text = html.unescape(html.unescape(text)).strip()
    return self._tok.encode(text, add_special_tokens=False).ids

  def __call__(self, texts: Sequence[str] | str) -> np.ndarray:
    """Token ids [N, context_length] with start/end tokens, truncated and padded."""
    if isinstance(texts, str):
      texts = [texts]
    out = np.zeros((len(texts), self.context_length), np.int32)
    for i, text in enumerate(texts):
      ids = [self.sot_id] + self.encode(text) + [self.eot_id]
      if len(ids) > self.context_length:
        ids = ids[:self.context_length]
        ids[-1] = self.eot_id
      out[i, :len(ids)] = ids
    return out
