"""The prompt sets in ``tests/data``: one reader for the screening tests and
``benchmarks/screening.py``.

Files hold one prompt per line; ``# [xx]`` switches the language the following lines are
counted under (English until the first switch); other ``#`` lines are comments.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def _lines(name: str) -> Iterator[tuple[str, str]]:
    """(language, line) for each prompt line of a set file."""
    language = "en"
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line.startswith("# ["):
            language = line[3:5]
        elif line.strip() and not line.startswith("#"):
            yield language, line


def load_prompts(name: str) -> list[tuple[str, str, str]]:
    """(language, prompt, negative prompt) rows; ``prompt ||| negative`` gives the latter."""
    return [(language, *_split_negative(line)) for language, line in _lines(name)]


def load_minor() -> list[tuple[str, str, str]]:
    """(language, label, prompt) rows of ``prompts_minor.txt``; label "minor" or "adult"."""
    rows = []
    for language, line in _lines("prompts_minor.txt"):
        if "\t" in line:
            label, prompt = line.split("\t", 1)
            rows.append((language, label, prompt))
    return rows


def _split_negative(line: str) -> tuple[str, str]:
    prompt, _, negative = line.partition(" ||| ")
    return prompt, negative
