"""Real photos and prompt strings for the CLIP tests (all offline)."""

from __future__ import annotations

import functools
import itertools

import numpy as np
from skimage import data as skdata

from musiq_jax.clip import preprocess
from musiq_jax.clip import prompts

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
  """A uint8 RGB photo shipped with scikit-image."""
  return getattr(skdata, name)()


def clip_batch(names=PHOTOS) -> np.ndarray:
  """[N, 224, 224, 3] CLIP-preprocessed photos (OpenAI's exact PIL path)."""
  return np.stack([preprocess.clip_preprocess_pil(photo(n)) for n in names])


def tokenizer_strings() -> list[str]:
  """A few hundred strings: all prompts of the heads plus awkward text."""
  awkward = [
      "Good photo.", "Bad photo.", "  Hello,   World!!  ", "I'm here; it's 10:30pm",
      "don't won't they'll we've I'd you're", "naïve café RÉSUMÉ", "emoji 😀 test",
      "&amp; &lt;b&gt; html", "tabs\tand\nnewlines", "3.14159 and 2024-11-23",
      "UPPER lower MiXeD", "a" * 300, "word " * 90, "中文 字符 テスト", "x", "",
      "hyphen-ated, comma,separated;semi", "(brackets) [square] {curly}",
  ]
  words = ["photo", "blurry", "sharp", "noise", "overexposed", "a", "of", "the",
           "jpeg", "compression", "beautiful", "landscape", "night", "cat", "quality"]
  combos = [" ".join(c) for c in itertools.islice(itertools.permutations(words, 4), 120)]
  coop = prompts.coop_prompts(list(prompts.CLIPIQA_PROMPTS), 16)
  attrs = [p for pair in prompts.CLIPIQA_ATTRIBUTE_PROMPTS.values() for p in pair]
  return prompts.liqe_prompts() + coop + attrs + awkward + combos
