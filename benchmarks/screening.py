"""Prompt-screening quality and throughput, against a naive keyword baseline.

    .venv/bin/python benchmarks/screening.py [--rounds 20] [--show]

Quality: precision, recall and false-positive rate of the "sexual" category on
tests/data/prompts_benign.txt and tests/data/prompts_sexual.txt, per language.
Throughput: prompts per second over both sets, for gate.text.screen_prompt and for a naive
baseline - one ``re`` alternation of the same literal English and Chinese terms over the
raw lower-cased prompt, without normalisation, context rules or negative-prompt rules. The
baseline's own recall and false positives are printed too, so the speed ratio means
something. Rule compilation happens once per process and is timed separately.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gate.text import screen_prompt  # noqa: E402
from tests.prompt_sets import load_minor, load_prompts  # noqa: E402

LANGUAGES = ("en", "zh", "es", "pt", "fr", "de", "it", "ru", "ja", "ko")
SEXUAL_FILES = ("sexual_en.txt", "sexual_zh.txt", "sexual_pinyin.txt",
                *(f"sexual_{lang}.txt" for lang in LANGUAGES[2:]))
VIOLENT_FILES = ("violent_en.txt", "violent_zh.txt")
#: Scripts written without spaces: no ``\b`` around their terms (Han, kana, Hangul).
HAN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


@dataclass(frozen=True)
class Row:
    language: str
    prompt: str
    negative: str
    sexual: bool


def load(name: str, sexual: bool) -> list[Row]:
    return [Row(language, prompt, negative, sexual)
            for language, prompt, negative in load_prompts(name)]


def literal_terms(files: tuple[str, ...]) -> list[str]:
    """Plain terms of the word lists: no slots, gaps, optional words or exclusions."""
    terms = []
    for name in files:
        text = (resources.files("gate.text") / "data" / name).read_text(encoding="utf-8")
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith(("[", "!")) and not re.search(r"[{}~?*]", line):
                terms.append(line.lower())
    return terms


def naive_pattern(files: tuple[str, ...]) -> re.Pattern[str]:
    terms = literal_terms(files)
    latin = [re.escape(t) for t in terms if not HAN.search(t)]
    han = [re.escape(t) for t in terms if HAN.search(t)]
    return re.compile(r"\b(?:" + "|".join(latin) + r")\b|" + "|".join(han))


MINOR_FILES = tuple(f"minor_{lang}.txt" for lang in LANGUAGES)
NAIVE_SEXUAL = naive_pattern(SEXUAL_FILES)
NAIVE_MINOR = naive_pattern(MINOR_FILES)
NAIVE_VIOLENT = naive_pattern(VIOLENT_FILES)


def naive_screen(prompt: str) -> frozenset[str]:
    lowered = prompt.lower()
    found = set()
    if NAIVE_SEXUAL.search(lowered):
        found.add("sexual")
    if NAIVE_VIOLENT.search(lowered):
        found.add("violent")
    return frozenset(found)


def gate_screen(row: Row) -> bool:
    return "sexual" in screen_prompt(row.prompt, row.negative).categories


def naive_flags(row: Row) -> bool:
    return "sexual" in naive_screen(row.prompt)


def report_quality(label: str, rows: list[Row], flag: Callable[[Row], bool]) -> list[Row]:
    wrong = []
    print(f"\n{label}")
    print(
        f"  {'lang':<5} {'benign':>6} {'sexual':>6} {'FP':>4} {'FN':>4}"
        f" {'precision':>9} {'recall':>7} {'FPR':>6}"
    )
    for language in (*LANGUAGES, "all"):
        subset = [r for r in rows if language in ("all", r.language)]
        flagged = {id(r): flag(r) for r in subset}
        tp = sum(r.sexual and flagged[id(r)] for r in subset)
        fp = sum(not r.sexual and flagged[id(r)] for r in subset)
        positives = sum(r.sexual for r in subset)
        negatives = len(subset) - positives
        precision = tp / (tp + fp) if tp + fp else 0.0
        print(
            f"  {language:<5} {negatives:>6} {positives:>6} {fp:>4} {positives - tp:>4}"
            f" {precision:>9.1%} {tp / positives:>7.1%} {fp / negatives:>6.1%}"
        )
        if language == "all":
            wrong = [r for r in subset if flagged[id(r)] != r.sexual]
    return wrong


def report_minor(rows: list[tuple[str, str, str]]) -> None:
    """TextScreen.minor against the literal minor terms, per language."""
    print("\nminor described in the prompt (TextScreen.minor | naive literal terms)")
    print(f"  {'lang':<5} {'minors read':>13} {'adults read':>13} | {'naive':>6} {'naive':>6}")
    for language in (*LANGUAGES, "all"):
        subset = [r for r in rows if language in ("all", r[0])]
        minors = [p for _, label, p in subset if label == "minor"]
        adults = [p for _, label, p in subset if label == "adult"]
        ours = (sum(screen_prompt(p).minor for p in minors),
                sum(screen_prompt(p).minor for p in adults))
        naive = (sum(bool(NAIVE_MINOR.search(p.lower())) for p in minors),
                 sum(bool(NAIVE_MINOR.search(p.lower())) for p in adults))
        print(f"  {language:<5} {ours[0]:>6}/{len(minors):<6} {ours[1]:>6}/{len(adults):<6} |"
              f" {naive[0]:>6} {naive[1]:>6}")


def cost_per_prompt() -> None:
    """Median time of one screen (prompt and negative prompt) for a typical prompt and for
    20,000-character prompts, the request limit, against the naive baseline. Every call
    gets new text (a counter replaces the prompt's last characters); no cache holds
    prompts, so none can answer."""
    typical = "a photo of my friend at the park, golden hour, 85mm, bokeh"
    ascii_20k = ("a photo of a woman in a red dress on the beach, golden hour, 85mm, " * 300)
    mixed_20k = ("naked eye 透视图 \u200f🍑 a b c n*de 脱 衣 " * 700)
    spaced_20k = ("a b.c d.e f." * 2000)  # single letters, separators alternating
    cases = (("typical prompt", typical, ""), ("20k ASCII prompt", ascii_20k[:20_000], ""),
             ("20k mixed prompt + negative", mixed_20k[:20_000], mixed_20k[:20_000]),
             ("20k spaced letters", spaced_20k[:20_000], ""))
    print("\ncost per prompt (median of 7, ms)")
    for label, prompt, negative in cases:
        ours, naive = [], []
        for call in range(7):
            text = f"{prompt[:-2]}{call:02d}"
            start = time.perf_counter()
            screen_prompt(text, negative)
            ours.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            naive_screen(text)
            naive.append((time.perf_counter() - start) * 1000)
        ours_ms, naive_ms = statistics.median(ours), statistics.median(naive)
        print(f"  {label:<28} gate.text {ours_ms:>8.3f}   naive {naive_ms:>8.3f}"
              f"   ({ours_ms / naive_ms:.1f}x)")


def throughput(rows: list[Row], rounds: int, work: Callable[[Row], object]) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        for row in rows:
            work(row)
    return rounds * len(rows) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="passes over both sets")
    parser.add_argument("--show", action="store_true", help="list misclassified prompts")
    args = parser.parse_args()
    rows = load("prompts_benign.txt", False) + load("prompts_sexual.txt", True)

    start = time.perf_counter()
    screen_prompt("warm-up", "warm-up")
    print(f"rule compilation (once per process): {time.perf_counter() - start:.3f} s")
    wrong = report_quality("gate.text.screen_prompt (prompt + negative prompt)", rows, gate_screen)
    report_quality("naive baseline (raw lower-case prompt, literal terms)", rows, naive_flags)
    report_minor(load_minor())

    cost_per_prompt()
    ours = throughput(rows, args.rounds, lambda r: screen_prompt(r.prompt, r.negative))
    naive = throughput(rows, args.rounds, lambda r: naive_screen(r.prompt))
    print(f"\nthroughput over {len(rows)} prompts x {args.rounds} rounds")
    print(f"  gate.text.screen_prompt : {ours:>9,.0f} prompts/s")
    print(f"  naive baseline          : {naive:>9,.0f} prompts/s  ({naive / ours:.1f}x faster)")
    if args.show:
        print("\nmisclassified by gate.text (expected -> got):")
        for row in wrong:
            print(f"  [{row.language}] {row.sexual} -> {not row.sexual}: {row.prompt!r}")


if __name__ == "__main__":
    main()
