"""The canonical form of prompt text that every matcher in :mod:`gate.text` sees.

``normalize_text`` undoes the cheap ways of hiding a word, in this order:

1. Unicode NFKC (full-width and mathematical letters become ASCII), casefold, then accents,
   combining marks, zero-width, bidi and other format characters are removed.
2. Look-alike letters (Cyrillic a U+0430, Greek nu U+03BD, small capitals...) and Han
   Traditional variants are mapped through ``data/homoglyphs.txt`` and
   ``data/hanzi_variants.txt``.
3. Whitespace collapses to one space; ``'s`` and in-word apostrophes are dropped.
4. Spaces and punctuation inserted between Han characters are removed (``脱 衣`` → ``脱衣``).
5. Runs of three or more single letters split by separators are joined
   (``n u d e``, ``n.u.d.e``, ``n-u-d-e`` → ``nude``; a wider gap is a word break:
   ``r e m o v e  h e r`` → ``remove her``), and so are runs of three or more
   single Hangul syllables (``벗 겨 줘`` → ``벗겨줘``); Hangul split by marks inside a word
   is joined whatever its length (``알-몸`` → ``알몸``).
6. Leetspeak is undone in words with at least two letters (``s3x`` → ``sex``, ``n@ked``).
7. A letter repeated four or more times is cut to three (``nuuuuude`` → ``nuuude``); the
   matchers accept any repetition of a term's letters, so ``nuuude`` still matches ``nude``.

A single ``*`` or ``_`` inside a word is kept: the screener treats it as a wildcard for one
letter (``n*de``) and, elsewhere, as a separator (``completely_nude``). The function is
idempotent, never raises on any ``str`` and is linear in the input length.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from importlib import resources

#: Han, kana and compatibility ideographs: scripts written without spaces between words.
CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
HAS_CJK = re.compile(f"[{CJK_CHARS}]")

_DROP_CATEGORIES = frozenset({"Mn", "Me", "Cf", "Cs", "Co"})
_INVISIBLE_LETTERS = frozenset({0x115F, 0x1160, 0x3164, 0xFFA0})  # Hangul fillers
_MAX_CACHED = 65_536
_MAX_PASSES = 8

_EDGE_WILDCARDS = re.compile(r"(?<![a-z0-9])[*_]{2,}|[*_]{2,}(?![a-z0-9])")
_SPACES = re.compile(r"\s+")
_POSSESSIVE = re.compile(r"(?<=[^\W\d_])'s\b")
_APOSTROPHE = re.compile(r"(?<=[^\W_])'(?=[^\W_])")
_CJK_GAP = re.compile(f"(?<=[{CJK_CHARS}])[\\W_]{{1,3}}(?=[{CJK_CHARS}])")
_PIECE = "a-z0-9@$"
_SEPARATORS = r"\s.\-_*~+|/\\,:·•"


def _spaced(chars: str) -> re.Pattern[str]:
    """Three or more single characters of ``chars`` split by one to three separators."""
    return re.compile(
        rf"(?<![{chars}])[{chars}](?:[{_SEPARATORS}]{{1,3}}[{chars}]){{2,}}(?![{chars}])")


_SPACED_LETTERS = _spaced(_PIECE)
_NOT_PIECE = re.compile(rf"[^{_PIECE}]+")
#: Hangul syllables spelled apart ("벗 겨 줘"): three or more single syllables split by
#: separators. Korean words are written apart, but a run of one-syllable words is rare.
_HANGUL = "\uac00-\ud7a3"
_SPACED_HANGUL = _spaced(_HANGUL)
_NOT_HANGUL = re.compile(rf"[^{_HANGUL}]+")
#: Hangul split by marks inside a word ("알-몸", "야.한"): joined whatever the count.
_MARKED_HANGUL = re.compile(rf"[{_HANGUL}](?:[.\-_*~+|/\\·•]{{1,3}}[{_HANGUL}])+")
_WORD = re.compile(rf"(?<![{_PIECE}])[{_PIECE}]+(?![{_PIECE}])")
_LETTER = re.compile(r"[a-z]")
_LEET = str.maketrans("013457@$", "oieastas")
_LONG_RUN = re.compile(r"([a-z])\1{3,}")


class _FoldTable(dict[int, str | None]):
    """``str.translate`` table: drop marks and invisible characters, controls to spaces."""

    def __missing__(self, codepoint: int) -> str | None:
        char = chr(codepoint)
        category = unicodedata.category(char)
        value: str | None = char
        if category in _DROP_CATEGORIES or codepoint in _INVISIBLE_LETTERS:
            value = None
        elif category == "Cc":
            value = " "
        if len(self) < _MAX_CACHED:
            self[codepoint] = value
        return value


_FOLD = _FoldTable()


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = unicodedata.normalize("NFKD", text).translate(_FOLD)
    return unicodedata.normalize("NFC", text)


def _table_lines(name: str) -> list[tuple[str, str]]:
    raw = (resources.files("gate.text") / "data" / name).read_text(encoding="utf-8")
    pairs = []
    for line in raw.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.startswith("#"):
            pairs.append((fields[0], fields[1]))
    return pairs


@functools.cache
def _char_table() -> dict[int, str]:
    """Look-alike and Traditional Han characters, keyed by their folded form."""
    table: dict[int, str] = {}
    for name in ("homoglyphs.txt", "hanzi_variants.txt"):
        for source, target in _table_lines(name):
            folded = _fold(source)
            if len(folded) == 1 and folded != target:
                table[ord(folded)] = target
    return table


def _join_runs(run: str, not_piece: re.Pattern[str]) -> str:
    """Join single characters split by separators. Where the separators change between
    spaces and marks ("a r.o.u.p.a", "n.u.d.e s e x y"), each stretch of one kind is a word of
    its own: a stretch of marks takes the characters it shares with a stretch of spaces
    (marks inside a word are the obfuscation, spaces are word breaks), then the longer
    stretch; only stretches of three or more characters are joined ("a roupa",
    "nude sexy")."""
    pieces = not_piece.split(run)
    separators = not_piece.findall(run)
    kinds = [_separator_kind(sep) for sep in separators]
    if len(set(kinds)) < 2:
        return "".join(pieces)
    stretches: list[tuple[int, int]] = []  # (first, last) piece of each same-kind stretch
    start = 0
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            stretches.append((start, i))
            start = i
    def claim(number: int) -> tuple[int, int]:  # marks, one space, wider gaps; then longest
        first, last = stretches[number]
        return kinds[first], first - last

    owner = [-1] * len(pieces)
    for number in sorted(range(len(stretches)), key=claim):
        first, last = stretches[number]
        for piece in range(first, last + 1):
            if owner[piece] < 0:
                owner[piece] = number
    size = Counter(owner)  # characters each stretch kept
    out = pieces[0]
    for i, sep in enumerate(separators):
        same = owner[i] == owner[i + 1] and size[owner[i]] >= 3
        out += ("" if same else sep) + pieces[i + 1]
    return out


def _separator_kind(separator: str) -> int:
    """0: marks only ("."), 1: one space (". "), 2: a wider gap ("  "), the word break
    of "r e m o v e  h e r"."""
    spaces = sum(c.isspace() for c in separator)
    return min(spaces, 2)


def _join_spaced(match: re.Match[str]) -> str:
    return _join_runs(match.group(), _NOT_PIECE)


def _join_hangul(match: re.Match[str]) -> str:
    return _join_runs(match.group(), _NOT_HANGUL)


def _undo_leet(match: re.Match[str]) -> str:
    word = match.group()
    if len(_LETTER.findall(word)) < 2:
        return word
    return word.translate(_LEET)


def _rewrite(text: str) -> str:
    text = _EDGE_WILDCARDS.sub(" ", text)
    # Spaced letters are joined before whitespace collapses: a wider gap is a word break.
    text = _SPACED_LETTERS.sub(_join_spaced, text)
    text = _SPACED_HANGUL.sub(_join_hangul, text)
    text = _MARKED_HANGUL.sub(_join_hangul, text)
    text = _SPACES.sub(" ", text).strip()
    text = _APOSTROPHE.sub("", _POSSESSIVE.sub("", text))
    text = _CJK_GAP.sub("", text)
    return _LONG_RUN.sub(r"\1\1\1", _WORD.sub(_undo_leet, text))


def normalize_text(text: str) -> str:
    """Return the canonical matching form of ``text`` (see the module docstring)."""
    text = _fold(text).translate(_char_table())
    # Steps 3-7 only shorten the text or turn digits into letters, and one step can enable
    # another ("0'@a": leetspeak makes the apostrophe in-word), so repeat to a fixed point.
    for _ in range(_MAX_PASSES):
        rewritten = _rewrite(text)
        if rewritten == text:
            break
        text = rewritten
    return text
