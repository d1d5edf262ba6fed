"""The efficacy protocol for two gate configurations in one run: before -> after.

``benchmarks/efficacy.py`` measures one configuration per run. To compare recognition
rules fairly on a shared machine, this script runs the same protocol
(``gate/evaluation/harness.py``: same plan, seed, roles, enrolment photos, probes,
transformed bytes) for two sets of settings side by side: every transformed probe is
checked by every gate before the next one is made, so both see identical inputs. The plan
is built with the *before* gate's detector, so the "before" column reproduces earlier
``efficacy.py`` runs of that configuration.

Defaults: *before* = the rules before issue 17 (``permissive_rule=max``,
``poor_quality_allow_threshold=2`` i.e. never, ``orientation_check=false``); *after* = the
gate's defaults.

    .venv/bin/python benchmarks/recog_compare.py --enrol 1,3 --json compare.json \\
        --markdown compare.md
    .venv/bin/python benchmarks/recog_compare.py --transforms clean,rot180 \\
        --after orientation_probe_px=320
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BEFORE = {"permissive_rule": "max", "poor_quality_allow_threshold": "2.0",
          "orientation_check": "false"}


def _pairs(items: Sequence[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def compare(roots: Sequence[Path], configs: dict[str, dict[str, str]], enrols: list[int],
            transforms: str, seed: int, limit: int | None,
            say: Callable[[str], None]) -> dict[str, Any]:
    """One ``EfficacyReport`` per configuration name, all from the same inputs."""
    from gate.engine import FaceGate
    from gate.evaluation.harness import (
        CaseCounts,
        CaseResult,
        EfficacyReport,
        FaceFinder,
        _seed_of,
        check_probe,
        discover_sets,
        enrol_plan,
        plan_dataset,
    )
    from gate.evaluation.transforms import (
        NEEDS_GEOMETRY,
        NEEDS_OTHERS,
        TRANSFORMS,
        TransformContext,
        resolve,
    )

    started = time.perf_counter()
    names = resolve(transforms)
    cases: dict[str, list[Any]] = {n: [] for n in configs}
    first_config = next(iter(configs))
    for set_root in [s for root in roots for s in discover_sets(root)]:
        with tempfile.TemporaryDirectory(prefix="gate-compare-") as tmp:
            gates = {(n, c): FaceGate.open(Path(tmp) / f"{n}-{c}", **overrides)
                     for n, overrides in configs.items() for c in enrols}
            try:
                planner = gates[(first_config, enrols[0])]
                plan = plan_dataset(set_root, FaceFinder(planner.parts.detector,
                                                         planner.settings.min_face_px),
                                    seed=seed, max_probes_per_identity=limit)
                say(f"{plan.name}: {len(plan.probes)} probes")
                subjects = {key: enrol_plan(g, plan, key[1], []) for key, g in gates.items()}
                roles = {key: {sid: plan.roles[i] for i, sid in subs.items()}
                         for key, subs in subjects.items()}
                strangers = [p for p in plan.probes if p.role == "stranger"]
                photo = {p.path: p.path.read_bytes() for p in plan.probes}
                for name in names:
                    t0 = time.perf_counter()
                    tallies = {key: CaseCounts() for key in gates}
                    for probe in plan.probes:
                        pool = tuple(photo[p.path] for p in strangers
                                     if p.identity != probe.identity) or \
                            tuple(photo[p.path] for p in strangers)
                        ctx = TransformContext(
                            seed=_seed_of(seed, probe.ref),
                            face=plan.finder.geometry(probe.path) if name in NEEDS_GEOMETRY
                            else None,
                            others=pool if name in NEEDS_OTHERS else ())
                        data = TRANSFORMS[name](photo[probe.path], ctx)
                        for key, gate in gates.items():
                            own = subjects[key].get(probe.identity)
                            if probe.role != "stranger" and own is None:
                                continue
                            decision, ms = check_probe(gate, data)
                            tallies[key].add(probe.role, own, roles[key], decision, ms)
                    for (n, c), tally in tallies.items():
                        cases[n].append(CaseResult(plan.name, c, name, tally))
                    say(f"{plan.name} {name}: {time.perf_counter() - t0:.0f}s")
            finally:
                for g in gates.values():
                    g.close()
    elapsed = time.perf_counter() - started
    return {n: EfficacyReport(settings={"overrides": configs[n], "seed": seed,
                                        "enrol_photos": enrols, "transforms": names},
                              datasets=[], cases=cases[n], enrolment_failures=[],
                              elapsed_s=elapsed)
            for n in configs}


def before_after(reports: dict[str, Any], enrol: int) -> str:
    """Markdown, transforms as rows, ``before -> after`` cells (one figure: unchanged)."""
    from gate.evaluation.harness import _pct

    before, after = (reports[n] for n in reports)

    def cells(counts: Any) -> list[str]:
        r = counts.rates()
        p, s = counts.probes["protected"], counts.probes["stranger"]
        return [f"{counts.false_allow_protected + counts.false_allow_stranger}/{p + s}",
                _pct(r["protected_not_recognised"]), _pct(r["false_block"]),
                str(counts.wrong_subject), _pct(r["detection_miss"])]

    def by_transform(report: Any) -> dict[str, Any]:
        cases = report.with_totals()
        wanted = "all" if any(c.dataset == "all" for c in cases) else cases[0].dataset
        return {c.transform: c.counts for c in cases
                if c.dataset == wanted and c.enrol == enrol}

    b, a = by_transform(before), by_transform(after)
    lines = ["| transform | false-allow | prot. not recog. | false-block | wrong subj. | "
             "det. miss |", "|---|---:|---:|---:|---:|---:|"]
    for t in b:
        pairs = zip(cells(b[t]), cells(a[t]), strict=True)
        lines.append(f"| {t} | " + " | ".join(x if x == y else f"{x} -> {y}"
                                               for x, y in pairs) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get(
        "GATE_TEST_FACES_DIR", REPO.parent / "shared" / "faces")))
    parser.add_argument("--sets", default="all")
    parser.add_argument("--enrol", default="1,3")
    parser.add_argument("--transforms", default="all")
    parser.add_argument("--limit", type=int, default=None, help="max probes per identity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--before", action="append", default=None, metavar="KEY=VALUE",
                        help="settings of the 'before' gate (default: the rules before "
                             "issue 17)")
    parser.add_argument("--after", action="append", default=[], metavar="KEY=VALUE",
                        help="settings of the 'after' gate (default: the defaults)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    from gate.evaluation.harness import discover_sets

    roots = discover_sets(args.dir)
    if args.sets != "all":
        roots = [r for r in roots if r.name in set(args.sets.split(","))]
    configs = {"before": BEFORE if args.before is None else _pairs(args.before),
               "after": _pairs(args.after)}
    enrols = sorted(int(e) for e in args.enrol.split(","))
    load = os.getloadavg()[0]
    reports = compare(roots, configs, enrols, args.transforms, args.seed, args.limit,
                      lambda msg: print(msg, file=sys.stderr, flush=True))
    out = [f"before: {configs['before']}; after: {configs['after'] or 'defaults'}; "
           f"{reports['before'].elapsed_s / 60:.0f} min, load average {load:.1f} -> "
           f"{os.getloadavg()[0]:.1f}\n"]
    for e in enrols:
        out.append(f"\n#### Enrolled from {e} photo{'s' if e > 1 else ''} (before -> after)\n")
        out.append(before_after(reports, e))
    text = "".join(out)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        import json

        args.json.write_text(json.dumps({n: r.to_dict() for n, r in reports.items()},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
