"""Recognition efficacy under evasion, over ../shared/faces (or $GATE_TEST_FACES_DIR).

    .venv/bin/python benchmarks/efficacy.py                    # everything, 1 and 3 photos
    .venv/bin/python benchmarks/efficacy.py --quick            # 2 probes per identity
    .venv/bin/python benchmarks/efficacy.py --sets natural_small --transforms clean,rot90 \
        --enrol 1 --json out.json --markdown out.md
    .venv/bin/python benchmarks/efficacy.py --setting flip_tta=false   # a settings override

Same harness as ``gate eval DIR`` (gate/evaluation/harness.py); prints the rich tables.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from gate.evaluation.cli import print_report
    from gate.evaluation.harness import (
        QUICK_PROBES_PER_IDENTITY,
        default_gate_factory,
        discover_sets,
        run_efficacy,
    )
    from gate.evaluation.transforms import resolve

    default_dir = Path(os.environ.get("GATE_TEST_FACES_DIR", REPO.parent / "shared" / "faces"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=default_dir, help="labelled photos")
    parser.add_argument("--sets", default="all", help="'all' or comma-separated set names")
    parser.add_argument("--enrol", default="1,3", help="enrolment photo counts, e.g. 1,3")
    parser.add_argument("--transforms", default="all", help="'all' or comma-separated names")
    parser.add_argument("--limit", type=int, default=None, help="max probes per identity")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_PROBES_PER_IDENTITY} probes per identity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                        help="Settings override for the gate under test (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="write the Markdown table here")
    args = parser.parse_args(argv)

    if not args.dir.is_dir():
        print(f"no labelled photos at {args.dir} (set GATE_TEST_FACES_DIR)", file=sys.stderr)
        return 2
    roots = discover_sets(args.dir)
    if args.sets != "all":
        wanted = {s.strip() for s in args.sets.split(",")}
        roots = [r for r in roots if r.name in wanted]
    overrides = dict(s.split("=", 1) for s in args.setting)
    limit = args.limit if args.limit is not None else (
        QUICK_PROBES_PER_IDENTITY if args.quick else None)
    report = run_efficacy(
        default_gate_factory(**overrides), roots,
        enrol_photos=[int(e) for e in args.enrol.split(",")],
        transforms=resolve(args.transforms), seed=args.seed, max_probes_per_identity=limit,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    report.settings["gate_overrides"] = overrides
    print_report(report)
    if args.json is not None:
        report.write_json(args.json)
    if args.markdown is not None:
        names = list(dict.fromkeys(c.dataset for c in report.with_totals()))
        parts = [f"### {name}\n\n{report.summary_markdown(name)}" for name in
                 sorted(names, key=lambda n: n != "all")]
        args.markdown.write_text("\n".join(parts) + "\n### Full table\n\n" +
                                 report.markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
