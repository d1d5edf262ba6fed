"""Prompt screening: sexual / nudity intent, graphic violence and minors in prompts.

Sexual intent is read in English, Chinese, pinyin, Spanish, Portuguese, French, German,
Italian, Russian, Japanese and Korean; violence in English and Chinese; a prompt that
describes a child or someone under 18 in all of those but pinyin (``TextScreen.minor``).

The word lists live in ``data/*.txt`` (syntax in ``docs/content-screening.md``) and are
compiled once per process. Matching runs on :func:`normalize_text` output, in three tiers:

* single words: a dictionary keyed by the word with repeated letters squeezed, then checked
  run by run (``nuuude`` and ``sexx`` match, ``bob`` is not ``boob``, ``loose`` is not
  ``lose``); up to four adjacent words are also tried joined (``na ked``, ``tuo yi``);
* single-word wildcards: a ``*`` or ``_`` inside a word stands for at most one letter
  (``n*de``, ``p**n``); at least two letters must be real and at least half of the term;
* phrases, slots and substring patterns: one regular expression per rule section, run on
  a space-joined token line (languages written with spaces between words, in Latin
  letters after normalisation: Cyrillic is mapped to Latin look-alikes there, and the
  Russian list is mapped the same way) or on the normalised text (Chinese, Japanese,
  Korean).

A hit is dropped when it overlaps an exclusion of its own section (``naked eye``,
``chicken breasts``, ``透视图``). Only rule ids leave this module, never prompt text.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from gate.text.normalize import normalize_text

#: (file, rule-id prefix, shortest term that may be spelled across several words). A file
#: ``<topic>_<language>.txt`` uses the slots of ``slots_<language>.txt``; files of the
#: substring languages hold substring patterns, the others words and phrases.
_PROMPT_FILES = (
    ("sexual_en.txt", "sexual.en", 5),
    ("sexual_zh.txt", "sexual.zh", 5),
    ("sexual_pinyin.txt", "sexual.pinyin", 4),
    ("sexual_romaji.txt", "sexual.romaji", 4),
    ("sexual_es.txt", "sexual.es", 6),
    ("sexual_pt.txt", "sexual.pt", 6),
    ("sexual_fr.txt", "sexual.fr", 6),
    ("sexual_de.txt", "sexual.de", 6),
    ("sexual_it.txt", "sexual.it", 6),
    ("sexual_ru.txt", "sexual.ru", 6),
    ("sexual_ja.txt", "sexual.ja", 5),
    ("sexual_ko.txt", "sexual.ko", 5),
    ("violent_en.txt", "violent.en", 5),
    ("violent_zh.txt", "violent.zh", 5),
    ("minor_en.txt", "minor.en", 5),
    ("minor_zh.txt", "minor.zh", 5),
    ("minor_es.txt", "minor.es", 6),
    ("minor_pt.txt", "minor.pt", 6),
    ("minor_fr.txt", "minor.fr", 6),
    ("minor_de.txt", "minor.de", 6),
    ("minor_it.txt", "minor.it", 6),
    ("minor_ru.txt", "minor.ru", 6),
    ("minor_ja.txt", "minor.ja", 5),
    ("minor_ko.txt", "minor.ko", 5),
)
_NEGATIVE_FILES = (("negative_en.txt", "sexual", 5), ("negative_zh.txt", "sexual", 5))
#: Languages written without spaces between words (or, for Korean, with particles glued
#: to words): their lines are substring patterns on the normalised text.
_SUBSTRING_LANGUAGES = frozenset({"zh", "ja", "ko"})
#: Rule-id prefixes that are content categories (``ContentCategory`` values).
_CATEGORIES = frozenset({"sexual", "violent"})
#: Rule ids that describe a minor; ``sexual.en.minor`` (lolicon...) is sexual too.
_MINOR_RULES = ("minor.", "sexual.en.minor")
#: Rule ids whose words are not read through ``*`` / ``_`` wildcards: those exist to find
#: hidden sexual words, and short age words would otherwise read from "*do" or "_id".
_NO_WILDCARDS = ("minor.",)
_MAX_JOIN = 4
_MAX_L_VARIANTS = 3
_QUANTIFIERS = {"": "", "?": "?", "*": "{0,3}"}
_BREAK = "|"  # token standing for punctuation: phrases do not run across it

_LATIN_TOKEN = re.compile(r"[a-z0-9]+|[^a-z0-9\s\-'\"&+~#=^`@$%*_]+")
_WILD_TOKEN = re.compile(r"(?<![a-z0-9*_])[a-z0-9*_]*[*_][a-z0-9*_]*(?![a-z0-9*_])")
_RUN = re.compile(r"(.)\1*")
_REPEAT = re.compile(r"(.)\1+")
_TRIPLE = re.compile(r"([a-z])\1{2,}")
_LATIN_PART = re.compile(r"(\{\w+\}|[^\s?*]+)([?*]?)")
_CJK_PART = re.compile(r"\{(\w+)\}|~(\d+)|([^{~]+)")

_Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class TextScreen:
    """What the prompt screen found. ``rule_hits`` are rule ids, never prompt text.

    ``minor`` is true when the prompt (not the negative prompt) describes a child or
    someone under 18 ("a 12 year old", "schoolgirl", "未成年"); with sexual content the
    gate then denies (``core.minor_sexual``).
    """

    categories: frozenset[str]
    rule_hits: tuple[str, ...]
    minor: bool = False


def screen_prompt(prompt: str, negative_prompt: str = "") -> TextScreen:
    """Screen a prompt (and its negative prompt) for sexual and violent intent, and the
    prompt for a description of a minor."""
    hits = _prompt_rules().scan(prompt) | _negative_rules().scan(negative_prompt)
    categories = frozenset(c for hit in hits if (c := hit.split(".", 1)[0]) in _CATEGORIES)
    minor = any(hit.startswith(_MINOR_RULES) for hit in hits)
    return TextScreen(categories=categories, rule_hits=tuple(sorted(hits)), minor=minor)


# ---------------------------------------------------------------- word-list files


@functools.cache
def _read_sections(name: str) -> dict[str, tuple[str, ...]]:
    """A data file as ``{section: lines}``; lines before any ``[section]`` go under ``""``."""
    raw = (resources.files("gate.text") / "data" / name).read_text(encoding="utf-8")
    sections: dict[str, list[str]] = {}
    current = ""
    for line in raw.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif line:
            sections.setdefault(current, []).append(line)
    return {name: tuple(lines) for name, lines in sections.items()}


@functools.cache
def _slots(language: str) -> dict[str, tuple[str, ...]]:
    """The slot lists of a language: ``slots_<language>.txt``, and ``{clothing}`` from
    ``clothing_<language>.txt`` when that file exists (else a ``[clothing]`` section).
    A slot the language does not define comes from English (word languages) or Chinese
    (substring languages): the number lists of ages are shared that way."""
    data = resources.files("gate.text") / "data"
    base = "zh" if language in _SUBSTRING_LANGUAGES else "en"
    slots = dict(_slots(base)) if language != base else {}
    if (data / f"slots_{language}.txt").is_file():
        slots.update(_read_sections(f"slots_{language}.txt"))
    if (data / f"clothing_{language}.txt").is_file():
        slots["clothing"] = _read_sections(f"clothing_{language}.txt")[""]
    return slots


def _language(file_name: str) -> str:
    """``sexual_es.txt`` -> ``es``."""
    return file_name.removesuffix(".txt").rsplit("_", 1)[1]


# ---------------------------------------------------------------- token view


@dataclass(frozen=True, slots=True)
class _View:
    """Normalised text plus its Latin tokens.

    ``line`` is `` tok tok | tok `` ("|" = punctuation) with every run of three or more
    equal letters cut to one (``nuuude`` -> ``nude``); phrase patterns run on it, and
    ``starts`` are the token offsets in it.
    """

    text: str
    line: str
    tokens: tuple[str, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]


def _view(text: str) -> _View:
    tokens: list[str] = []
    for match in _LATIN_TOKEN.finditer(text):
        piece = match.group()
        if not (piece[0].isascii() and piece[0].isalnum()):
            piece = _BREAK
        if piece != _BREAK or (tokens and tokens[-1] != _BREAK):
            tokens.append(piece)
    short = [_TRIPLE.sub(r"\1", t) for t in tokens]
    ends = tuple(itertools.accumulate(len(t) + 1 for t in short))  # each token + 1 space
    starts = tuple(end - len(t) for end, t in zip(ends, short, strict=True))
    return _View(text, " " + " ".join(short) + " ", tuple(tokens), starts, ends)


def _squeeze(word: str) -> str:
    return _REPEAT.sub(r"\1", word)


def _counts(word: str) -> tuple[int, ...]:
    return tuple(len(run.group()) for run in _RUN.finditer(word))


# ---------------------------------------------------------------- compiling


@dataclass(frozen=True, slots=True)
class _Word:
    rule_id: str
    counts: tuple[int, ...]
    min_join: int
    size: int


@dataclass(frozen=True, slots=True)
class _Section:
    rule_id: str
    latin: re.Pattern[str] | None
    #: Token keys (``_token_key``) one of which every match of ``latin`` contains: when the
    #: prompt has none of them the pattern is not run. None: no such set (always run).
    latin_keys: frozenset[str] | None
    cjk: re.Pattern[str] | None
    latin_exclusions: re.Pattern[str] | None
    cjk_exclusions: re.Pattern[str] | None


def _single_word(line: str) -> str | None:
    """The normalised word when ``line`` is one plain English word, else None."""
    if line.startswith("!") or any(c in line for c in "{?*"):
        return None
    tokens = _view(normalize_text(line)).tokens
    return tokens[0] if len(tokens) == 1 and tokens[0] != _BREAK else None


def _l_variants(word: str) -> set[str]:
    """``word`` with each ``l`` optionally written as ``i`` (from a leetspeak ``1``)."""
    places = [i for i, char in enumerate(word) if char == "l"][:_MAX_L_VARIANTS]
    variants = set()
    for mask in itertools.product((False, True), repeat=len(places)):
        chars = list(word)
        for place, flip in zip(places, mask, strict=True):
            chars[place] = "i" if flip else "l"
        variants.add("".join(chars))
    return variants


def _run_fits(have: int, need: int, last: bool) -> bool:
    """A letter run in the text fits a run of the term: same length, tripled or more
    (``nuuude``), or longer at the end of the word (``sexx``) - but ``loose`` is not ``lose``."""
    return have == need or have >= max(3, need) or (last and have > need)


def _run_regex(token: str) -> str:
    """Regex for one term word on a ``_View.line`` (where ``nuuude`` reads ``nude``): a
    double letter may also appear single (``seeee`` reads ``se``), ``l`` may be ``i``."""
    parts = []
    for run in _RUN.finditer(token):
        letter = "[li]" if run.group()[0] == "l" else re.escape(run.group()[0])
        parts.append(letter if len(run.group()) == 1 else letter + letter + "?")
    return "".join(parts)


@functools.cache
def _latin_phrase(phrase: str) -> str:
    return " ".join(_run_regex(t) for t in _view(normalize_text(phrase)).tokens)


def _part_entries(word: str, language: str) -> tuple[str, ...]:
    """What one part of a word-language line may be: a slot's entries, or the word."""
    return _slots(language)[word[1:-1]] if word.startswith("{") else (word,)


@functools.cache
def _latin_part(word: str, quantifier: str, gap: str, language: str) -> str:
    body = "|".join(_latin_phrase(entry) for entry in _part_entries(word, language))
    return f"(?:(?:{body}) {gap}){_QUANTIFIERS[quantifier]}"


def _latin_pattern(line: str, exclusion: bool, language: str) -> str:
    """Regex for a word-language line; exclusions may also run across punctuation."""
    gap = r"(?:\| )?" if exclusion else ""
    return "".join(_latin_part(m[1], m[2], gap, language)
                   for m in _LATIN_PART.finditer(line))


def _token_key(token: str) -> str:
    """A token with ``l`` read as ``i`` and every letter run cut to one letter: a term
    token's ``_run_regex`` matches a prompt token only if their keys are equal."""
    return _squeeze(token.replace("l", "i"))


def _line_keys(line: str, language: str) -> frozenset[str] | None:
    """Keys of which every match of a phrase line contains one: the first tokens of the
    alternatives of its most selective mandatory part (None if it has no mandatory part)."""
    best: frozenset[str] | None = None
    for m in _LATIN_PART.finditer(line):
        if m[2]:  # optional part: a match may lack it
            continue
        firsts = [_view(normalize_text(entry)).tokens[:1]
                  for entry in _part_entries(m[1], language)]
        if not all(firsts):
            continue  # an entry without a token: no safe key for this part
        keys = frozenset(_token_key(first[0]) for first in firsts)
        if best is None or len(keys) < len(best):
            best = keys
    return best


def _cjk_alternatives(entries: Iterable[str]) -> str:
    escaped = sorted((re.escape(normalize_text(e)) for e in entries), key=len, reverse=True)
    return "(?:" + "|".join(escaped) + ")"


def _cjk_pattern(line: str, language: str) -> str:
    parts = []
    for slot, gap, literal in _CJK_PART.findall(line):
        if slot:
            parts.append(_cjk_alternatives(_slots(language)[slot]))
        elif gap:
            parts.append(f".{{0,{gap}}}")
        else:  # a space at the edge of a literal is kept ("다섯 살": number, space, unit)
            lead = " " if literal[:1].isspace() else ""
            trail = " " if literal[-1:].isspace() and literal.strip() else ""
            parts.append(re.escape(lead + normalize_text(literal) + trail))
    return "".join(parts)


def _alternation(patterns: list[str], prefix: str) -> re.Pattern[str] | None:
    if not patterns:
        return None
    compiled = re.compile(prefix + "(?:" + "|".join(patterns) + ")")
    if compiled.match(""):
        raise ValueError("a screening pattern matches the empty string")
    return compiled


def _compile_section(rule_id: str, lines: Sequence[tuple[str, str]]) -> _Section:
    """Compile a section's ``(language, line)`` pairs into its four patterns."""
    groups: dict[tuple[bool, bool], list[str]] = {
        (exclusion, cjk): [] for exclusion in (False, True) for cjk in (False, True)
    }
    keys: set[str] | None = set()
    for language, line in lines:
        cjk = language in _SUBSTRING_LANGUAGES
        exclusion = line.startswith("!")
        body = line[1:].strip() if exclusion else line
        if not cjk and _single_word(body) is not None:
            continue  # handled by the word dictionary
        if not cjk and not exclusion and keys is not None:
            line_keys = _line_keys(body, language)
            keys = None if line_keys is None else keys | line_keys
        pattern = _cjk_pattern(body, language) if cjk else \
            _latin_pattern(body, exclusion, language)
        groups[(exclusion, cjk)].append(pattern)
    return _Section(
        rule_id,
        latin=_alternation(groups[(False, False)], "(?<= )"),
        latin_keys=None if keys is None else frozenset(keys),
        cjk=_alternation(groups[(False, True)], ""),
        latin_exclusions=_alternation(groups[(True, False)], "(?<= )"),
        cjk_exclusions=_alternation(groups[(True, True)], ""),
    )


# ---------------------------------------------------------------- matching


def _spans(pattern: re.Pattern[str] | None, text: str) -> Iterator[_Span]:
    """Every match start (overlapping ones too), leftmost alternative at each start."""
    if pattern is None:
        return
    position = 0
    while (match := pattern.search(text, position)) is not None:
        yield match.start(), match.end()
        position = match.start() + 1


def _any_kept(spans: Iterable[_Span], exclusions: re.Pattern[str] | None, text: str) -> bool:
    blocked: list[_Span] | None = None
    for start, end in spans:
        if exclusions is None:
            return True
        if blocked is None:
            blocked = list(_spans(exclusions, text))
        if not any(b_start < end and start < b_end for b_start, b_end in blocked):
            return True
    return False


def _wild_regex(token: str) -> tuple[re.Pattern[str], int, int] | None:
    """(regex, real letters, wildcards) for a wildcard word, or None if too vague."""
    token = re.sub(r"([a-z0-9])\1+", r"\1", token)
    letters = sum(c not in "*_" for c in token)
    wildcards = len(token) - letters
    if letters < 2 or wildcards > letters:
        return None
    body = re.sub(r"[*_]+", lambda m: f"[a-z0-9]{{0,{len(m.group())}}}", token)
    return re.compile(body), letters, wildcards


@dataclass(frozen=True, slots=True)
class _Rules:
    sections: tuple[_Section, ...]
    words: Mapping[str, tuple[_Word, ...]]
    wild: Mapping[int, tuple[tuple[str, str], ...]]

    def scan(self, raw: str) -> set[str]:
        text = normalize_text(raw)
        if not text:
            return set()
        view = _view(text)
        found = set(self._wild_hits(text))
        by_rule: dict[str, list[_Span]] = {}
        for rule_id, span in self._word_hits(view):
            by_rule.setdefault(rule_id, []).append(span)
        cjk = not text.isascii()  # substring patterns need a non-ASCII letter
        keys = frozenset(_token_key(token) for token in view.tokens)
        for section in self.sections:
            if section.rule_id in found:
                continue
            words = by_rule.get(section.rule_id, [])
            latin = section.latin
            if latin is not None and section.latin_keys is not None and \
                    section.latin_keys.isdisjoint(keys):
                latin = None  # no token a match needs is in the prompt
            if not words and latin is None and (not cjk or section.cjk is None):
                continue
            if _section_hit(section, latin, view, words, cjk):
                found.add(section.rule_id)
        return found

    def _word_hits(self, view: _View) -> Iterator[tuple[str, _Span]]:
        tokens = view.tokens
        squeezed = [_squeeze(token) for token in tokens]
        for first in range(len(tokens)):
            joined = key = ""
            for last in range(first, min(first + _MAX_JOIN, len(tokens))):
                if tokens[last] == _BREAK:
                    break
                joined += tokens[last]
                piece = squeezed[last]
                key += piece[1:] if key and key[-1] == piece[0] else piece
                span = (view.starts[first], view.ends[last])
                for word in self._lookup(joined, key, joined_parts=last - first + 1):
                    yield word.rule_id, span

    def _lookup(self, candidate: str, key: str, joined_parts: int) -> Iterator[_Word]:
        entries = self.words.get(key)
        if not entries:
            return
        counts = _counts(candidate)
        last = len(counts) - 1
        for word in entries:
            if joined_parts > 1 and word.size < word.min_join:
                continue
            pairs = enumerate(zip(counts, word.counts, strict=True))
            if all(_run_fits(have, need, i == last) for i, (have, need) in pairs):
                yield word

    def _wild_hits(self, text: str) -> Iterator[str]:
        for match in _WILD_TOKEN.finditer(text):
            compiled = _wild_regex(match.group())
            if compiled is None:
                continue
            regex, letters, wildcards = compiled
            for size in range(letters, min(letters + wildcards, 2 * letters) + 1):
                for key, rule_id in self.wild.get(size, ()):
                    if regex.fullmatch(key):
                        yield rule_id


def _section_hit(section: _Section, pattern: re.Pattern[str] | None, view: _View,
                 words: list[_Span], cjk: bool) -> bool:
    """Whether the section fires: a word or phrase (``pattern``, the section's own or None
    when the prompt lacks its tokens) or a substring pattern, not under an exclusion."""
    latin = itertools.chain(words, _spans(pattern, view.line))
    if _any_kept(latin, section.latin_exclusions, view.line):
        return True
    return cjk and _any_kept(_spans(section.cjk, view.text), section.cjk_exclusions, view.text)


def _build(files: Sequence[tuple[str, str, int]]) -> _Rules:
    lines: dict[str, list[tuple[str, str]]] = {}
    words: dict[str, list[_Word]] = {}
    wild: dict[int, set[tuple[str, str]]] = {}
    for name, prefix, min_join in files:
        language = _language(name)
        cjk = language in _SUBSTRING_LANGUAGES
        for section, section_lines in _read_sections(name).items():
            rule_id = f"{prefix}.{section}"
            lines.setdefault(rule_id, []).extend((language, line) for line in section_lines)
            for line in () if cjk else section_lines:
                _add_word(line, rule_id, min_join, words, wild)
    sections = tuple(_compile_section(rule_id, body) for rule_id, body in lines.items())
    return _Rules(
        sections,
        {key: tuple(entries) for key, entries in words.items()},
        {size: tuple(sorted(keys)) for size, keys in wild.items()},
    )


def _add_word(
    line: str,
    rule_id: str,
    min_join: int,
    words: dict[str, list[_Word]],
    wild: dict[int, set[tuple[str, str]]],
) -> None:
    word = _single_word(line)
    if word is None:
        return
    for variant in _l_variants(word):
        key = _squeeze(variant)
        words.setdefault(key, []).append(_Word(rule_id, _counts(variant), min_join, len(word)))
        if not rule_id.startswith(_NO_WILDCARDS):
            wild.setdefault(len(key), set()).add((key, rule_id))


@functools.cache
def _prompt_rules() -> _Rules:
    return _build(_PROMPT_FILES)


@functools.cache
def _negative_rules() -> _Rules:
    return _build(_NEGATIVE_FILES)
