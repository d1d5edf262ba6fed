"""Find enrolled people's names in a prompt.

Names and prompts go through the same :func:`normalize_text`, so case, full-width forms,
accents ("Zoë" ~ "Zoe"), look-alike letters, leetspeak and extra spaces do not matter
(Traditional / Simplified Han only for the characters in ``data/hanzi_variants.txt``). Then:

* Latin (and other space-separated) names match as whole-word sequences: "Ada" never
  matches "Canada" or "adapter", "Ada Lovelace" matches "ada   LOVELACE", "AdaLovelace" and
  "Ada's". Repeated letters are squeezed on both sides ("Taaaylor" ~ "Taylor", so "Anna"
  and "Ana" also meet). A name shorter than two characters never matches.
* Han / kana names of two or more characters match as substrings (Chinese is written
  without spaces): "周杰伦" is found in "我想和周杰伦合影".

Matching is a dictionary lookup per prompt token (and per CJK substring of a bounded
length), so thousands of subjects cost no more per prompt than a few.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gate.text.normalize import CJK_CHARS, normalize_text

_TOKEN = re.compile(f"[{CJK_CHARS}]+|(?:(?![{CJK_CHARS}])[^\\W_])+")
_CJK_ONLY = re.compile(f"[{CJK_CHARS}]+")
_REPEAT = re.compile(r"(.)\1+")
_MIN_LENGTH = 2


@dataclass(frozen=True, slots=True)
class NameHit:
    """An enrolled subject named in a prompt; ``alias_index`` 0 is the display name."""

    subject_id: str
    alias_index: int


@dataclass(frozen=True, slots=True)
class _Entry:
    tokens: tuple[str, ...]
    hit: NameHit


def _tokens(text: str) -> list[str]:
    """Normalised word tokens; CJK runs are tokens of their own, others are squeezed."""
    tokens = _TOKEN.findall(normalize_text(text))
    return [t if _CJK_ONLY.fullmatch(t) else _REPEAT.sub(r"\1", t) for t in tokens]


class NameMatcher:
    """Built from ``{subject_id: [display_name, *aliases]}``; finds those names in text."""

    def __init__(self, names: Mapping[str, Sequence[str]]) -> None:
        self._sequences: dict[str, list[_Entry]] = {}
        self._cjk: dict[str, list[NameHit]] = {}
        for subject_id, aliases in names.items():
            for index, alias in enumerate(aliases):
                self._add(alias, NameHit(subject_id, index))
        self._cjk_lengths = sorted({len(key) for key in self._cjk}, reverse=True)

    def _add(self, alias: str, hit: NameHit) -> None:
        tokens = _tokens(alias)
        joined = "".join(tokens)
        if len(joined) < _MIN_LENGTH:
            return
        if _CJK_ONLY.fullmatch(joined):
            self._cjk.setdefault(joined, []).append(hit)
            return
        self._sequences.setdefault(tokens[0], []).append(_Entry(tuple(tokens), hit))
        if len(tokens) > 1 and not any(_CJK_ONLY.fullmatch(t) for t in tokens):
            squeezed = _REPEAT.sub(r"\1", joined)
            self._sequences.setdefault(squeezed, []).append(_Entry((squeezed,), hit))

    def find(self, text: str) -> list[NameHit]:
        """Every (subject, alias) named in ``text``, in order of first appearance."""
        found: dict[NameHit, None] = {}
        tokens = _tokens(text)
        for position, token in enumerate(tokens):
            for entry in self._sequences.get(token, ()):
                end = position + len(entry.tokens)
                if tuple(tokens[position:end]) == entry.tokens:
                    found.setdefault(entry.hit)
            if self._cjk and _CJK_ONLY.fullmatch(token):
                for hit in self._cjk_hits(token):
                    found.setdefault(hit)
        return list(found)

    def _cjk_hits(self, run: str) -> list[NameHit]:
        hits: list[NameHit] = []
        for start in range(len(run)):
            for length in self._cjk_lengths:
                hits.extend(self._cjk.get(run[start : start + length], ()))
        return hits
