"""Realistic dictation typos with an old -> new character offset map.

Research software, NOT for diagnostic use.
"""

from __future__ import annotations

import re

import numpy as np

from lungfuse.pipelines.lab.reportgen.phrases import chance

_WORD_RE = re.compile(r"[A-Za-z]+")
_NO_TYPO = frozenset({"series", "image", "images", "slice", "slices", "thickness", "lung", "rads", "category",
                      "sections", "with", "without"})
_PROTECTED_RE = re.compile(r"\bLung-RADS[^.)]*|\((?:series|se|image)[^)]*\)", re.IGNORECASE)


def _typo(word: str, rng: np.random.Generator) -> tuple[str, list[int]]:
    """One realistic typo (first letter kept); returns the new word and, for each old
    character, its new index."""
    n = len(word)
    op = int(rng.integers(3))
    if op == 0:  # transposition of two adjacent, different letters
        cands = [i for i in range(1, n - 1) if word[i] != word[i + 1]]
        if cands:
            i = cands[int(rng.integers(len(cands)))]
            new = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
            idx = list(range(n))
            idx[i], idx[i + 1] = i + 1, i
            return new, idx
        op = 2
    if op == 1:  # dropped letter
        i = int(rng.integers(1, n))
        return word[:i] + word[i + 1 :], [k if k <= i else k - 1 for k in range(n)]
    i = int(rng.integers(1, n))  # doubled letter
    return word[: i + 1] + word[i] + word[i + 1 :], [k if k <= i else k + 1 for k in range(n)]


def apply_typos(text: str, rate: float, rng: np.random.Generator,
                 protected: list[tuple[int, int]]) -> tuple[str, list[int]]:
    """Text with typos and the old->new offset map (length ``len(text) + 1``).  Only
    alphabetic words of >= 4 letters are eligible, never all-caps words (acronyms,
    headers), units, image-reference or Lung-RADS words, so digits and units are
    untouched."""
    spans = list(protected) + [(m.start(), m.end()) for m in _PROTECTED_RE.finditer(text)]
    out: list[str] = []
    mapping = [0] * (len(text) + 1)
    pos = 0
    for m in _WORD_RE.finditer(text):
        word = m.group()
        eligible = (
            len(word) >= 4 and not word.isupper() and word.lower() not in _NO_TYPO
            and not any(s <= m.start() < e for s, e in spans)
        )
        if not eligible or not chance(rng, rate):
            continue
        for i in range(pos, m.start()):
            mapping[i] = len(out)
            out.append(text[i])
        new, idx = _typo(word, rng)
        base = len(out)
        for k, j in enumerate(idx):
            mapping[m.start() + k] = base + j
        out.extend(new)
        pos = m.end()
    for i in range(pos, len(text)):
        mapping[i] = len(out)
        out.append(text[i])
    mapping[len(text)] = len(out)
    return "".join(out), mapping
