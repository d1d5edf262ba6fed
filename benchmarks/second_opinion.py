"""dlib as a second opinion for borderline SFace scores (issue 17), on held-out splits.

Reads caches of ``benchmarks/recog_cache.py --dlib`` (SFace and dlib vectors of every
face of the efficacy protocol, both sets, the cached transforms) and replays the engine's
identification with the default rules (``recognition.RECOMMENDED``). With a fusion, a
face's top-k candidate subjects whose SFace score (max or top-2 reading) falls inside the
band are rescored by ``gate.vision.fusion.ScoreFusion`` (impostor-normalised sum of SFace
and dlib, mapped back onto SFace's scale); only faces with such a candidate need dlib.

Held-out: the fusion's six numbers and the band are fitted on a calibration half and the
protocol is counted on probes of the other half only; both directions are summed so every
probe is counted once by a fusion that never saw its identity.

* ``identity`` split: the identities of both sets are halved at random (several seeds);
  the fit uses only pairs where probe and template are calibration identities; the replay
  keeps the full galleries and counts probes of held-out identities.
* ``set`` split: fit on glint24, count natural_small, and back.

    nice -n 10 .venv/bin/python benchmarks/second_opinion.py --tags dlib,dlibx
    nice -n 10 .venv/bin/python benchmarks/second_opinion.py --time 60   # dlib ms per face
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from recognition import (  # noqa: E402
    RECOMMENDED,
    Config,
    Counts,
    Gallery,
    face_scores,
    face_vector,
    gallery,
    load,
    probe_vector,
    read_face,
    simulate,
    subject_score,
    tally,
    unit,
    verdict_of,
)

from gate.vision.fusion import ScoreFusion  # noqa: E402

#: Transforms whose every face is the probe's own person (crowd adds other people).
SINGLE_PERSON_EXCLUDE = {"crowd"}


def merge(tags: list[str], cache: Path) -> list[dict[str, Any]]:
    """One dataset dict per set, images of every tag (transforms cached separately)."""
    by_set: dict[str, dict[str, Any]] = {}
    sets_of: dict[str, set[str]] = {}
    for tag in tags:
        for data in load(tag, cache):
            sets_of.setdefault(tag, set()).add(data["meta"]["name"])
            name = data["meta"]["name"]
            if name not in by_set:
                by_set[name] = {"meta": data["meta"], "images": dict(data["images"])}
            else:
                for t, recs in data["images"].items():
                    by_set[name]["images"].setdefault(t, recs)
    if len({frozenset(v) for v in sets_of.values()}) > 1:
        raise SystemExit(f"the tags do not cover the same sets: {sets_of}")
    return [by_set[k] for k in sorted(by_set)]


def dlib_template(face: Any) -> np.ndarray:
    """Enrolment side: chip and mirror averaged when both were cached."""
    d = face.dlib
    return unit(d[0] + d[1]) if len(d) > 1 else d[0]


def dlib_probe(face: Any) -> np.ndarray:
    return face.dlib[0]


def dlib_gallery(data: dict[str, Any], g: Gallery, enrol: int) -> list[np.ndarray]:
    """dlib templates per subject of ``g`` (same photos as ``recognition.gallery``)."""
    recs = {r.ref: r for r in data["images"]["enrol"]}
    return [np.stack([dlib_template(recs[ref].faces[0])
                      for ref in data["meta"]["enrolment"][i][:enrol]]) for i in g.ids]


# -- replay with the second opinion (mirrors recognition.classify / simulate) -------------
@dataclass(slots=True)
class Cost:
    faces: int = 0
    dlib: int = 0  # faces that needed dlib


def classify_fused(faces: list[Any], g: Gallery, gd: list[np.ndarray], cfg: Config,
                   fusion: ScoreFusion | None, cost: Cost
                   ) -> tuple[str, list[tuple[str, str | None]]]:
    """``recognition.classify`` with the band's candidates rescored by ``fusion``."""
    if not faces:
        return "deny", []
    out: list[tuple[str, str | None]] = []
    for face in faces:
        cost.faces += 1
        scores, permissive = face_scores(probe_vector(face, g, cfg), g, cfg)
        prule = "top2" if cfg.rule == "hybrid" else cfg.rule
        order = [int(i) for i in np.argsort(-scores, kind="stable")[: cfg.k]]
        if fusion is not None:
            scores, permissive = scores.copy(), permissive.copy()
            asked = False
            for i in order:
                hit_s, hit_p = fusion.in_band(scores[i]), fusion.in_band(permissive[i])
                if not (hit_s or hit_p):
                    continue
                asked = True
                sims = gd[i] @ dlib_probe(face)
                pr = "max" if cfg.rule == "hybrid" else cfg.rule
                if hit_s:
                    scores[i] = fusion.fuse(scores[i], subject_score(sims, pr))
                if hit_p:
                    permissive[i] = fusion.fuse(permissive[i], subject_score(sims, prule))
                if cfg.rule != "hybrid":
                    permissive[i] = scores[i]
            cost.dlib += int(asked)
            order.sort(key=lambda i: -scores[i])
        out.append(read_face(face, scores, permissive, order, g, cfg))
    return verdict_of(out), out


def simulate_fused(datasets: list[dict[str, Any]], cfg: Config, enrol: int,
                   fusion: ScoreFusion | None, counted: Callable[[str], bool] | None = None,
                   transforms: Iterable[str] | None = None
                   ) -> tuple[dict[str, Counts], dict[str, Cost]]:
    """``recognition.simulate`` with the fusion; only probes whose identity passes
    ``counted`` are counted (galleries stay whole). Also the dlib cost per transform."""
    wanted = set(transforms) if transforms is not None else None
    result: dict[str, Counts] = {}
    costs: dict[str, Cost] = {}
    for data in datasets:
        g = gallery(data, enrol)
        gd = dlib_gallery(data, g, enrol)
        enrolled = set(g.ids)
        for tname, recs in data["images"].items():
            if tname == "enrol" or (wanted is not None and tname not in wanted):
                continue
            c = result.setdefault(tname, Counts())
            cost = costs.setdefault(tname, Cost())
            for rec in recs:
                if rec.role != "stranger" and rec.identity not in enrolled:
                    continue
                if counted is not None and not counted(rec.identity):
                    continue
                tally(c, rec, lambda faces, g=g, gd=gd, cost=cost: classify_fused(
                    faces, g, gd, cfg, fusion, cost))
    return result, costs


# -- fitting the fusion on a calibration half -----------------------------------------------
@dataclass(slots=True)
class Pairs:
    s: np.ndarray  # SFace, probe (flip-averaged) x enrolment photo (flip-averaged)
    d: np.ndarray  # dlib, probe chip x enrolment photo (chip + mirror)
    genuine: np.ndarray


def pairs(datasets: list[dict[str, Any]], keep: Callable[[str], bool]) -> Pairs:
    """Largest face of every probe (every cached transform but crowd) x every enrolment
    photo, within a set, probe and photo identities both passing ``keep``."""
    ss, dd, gg = [], [], []
    for data in datasets:
        enrol = {r.ref: r for r in data["images"]["enrol"]}
        t_ids, t_s, t_d = [], [], []
        for identity, refs in sorted(data["meta"]["enrolment"].items()):
            if not keep(identity):
                continue
            for ref in refs:
                faces = enrol[ref].faces
                if len(faces) != 1:
                    continue
                t_ids.append(identity)
                t_s.append(face_vector(faces[0], True))
                t_d.append(dlib_template(faces[0]))
        if not t_ids:
            continue
        ts, td, tid = np.stack(t_s), np.stack(t_d), np.array(t_ids)
        for tname, recs in data["images"].items():
            if tname == "enrol" or tname in SINGLE_PERSON_EXCLUDE:
                continue
            for rec in recs:
                if not rec.faces or not keep(rec.identity):
                    continue
                f = max(rec.faces, key=lambda x: x.size_px)
                ss.append(ts @ face_vector(f, True))
                dd.append(td @ dlib_probe(f))
                gg.append(tid == rec.identity)
    return Pairs(np.concatenate(ss), np.concatenate(dd), np.concatenate(gg))


def fit_fusion(p: Pairs, band: tuple[float, float], cfg: Config = RECOMMENDED
               ) -> ScoreFusion:
    """Impostor means/spreads of each model, then ``a``/``b`` so that the fused score's
    impostor upper tail lies on SFace's: least squares between the two impostor quantile
    functions at 24 levels from SFace's rate at 0.28 down to its rate at the allow
    threshold (never below 20 impostor pairs), so the match and allow thresholds keep
    their impostor rates without resting on a handful of extreme pairs."""
    imp_s, imp_d = p.s[~p.genuine], p.d[~p.genuine]
    mu_s, sd_s = float(imp_s.mean()), float(imp_s.std())
    mu_d, sd_d = float(imp_d.mean()), float(imp_d.std())
    z = ((imp_s - mu_s) / sd_s + (imp_d - mu_d) / sd_d) / 2
    top = float(np.mean(imp_s >= 0.28))
    low = max(float(np.mean(imp_s >= cfg.allow_threshold)), 20 / imp_s.size)
    levels = np.geomspace(max(top, 2 * low), low, 24)
    qs = np.quantile(imp_s, 1 - levels)
    qz = np.quantile(z, 1 - levels)
    b, a = np.polyfit(qz, qs, 1)
    return ScoreFusion(mu_s, sd_s, mu_d, sd_d, float(a), float(b), band)


def pair_tar(p: Pairs, fusion: ScoreFusion | None, far: float) -> float:
    """TAR at ``far`` (threshold on these pairs' impostors) of SFace, or fused everywhere."""
    s = p.s if fusion is None else fusion.rescore(p.s, p.d)
    imp = np.sort(s[~p.genuine])[::-1]
    thr = imp[min(int(far * imp.size), imp.size - 1)]
    return float(np.mean(s[p.genuine] > thr))


BANDS = [(lo, hi) for lo in (0.20, 0.25, 0.28, 0.30, 0.32) for hi in (0.42, 0.45, 0.50, 0.60)]


def badness(res: dict[int, dict[str, Counts]]) -> tuple[int, int]:
    """(safety errors, usability errors) summed over 1/3 photos and every transform."""
    safe = use = 0
    for by_t in res.values():
        for c in by_t.values():
            safe += c.false_allow + c.wrong_subject
            use += c.prot_not_recog + c.false_block
    return safe, use


def choose_band(datasets: list[dict[str, Any]], p: Pairs, keep: Callable[[str], bool],
                cfg: Config) -> tuple[ScoreFusion, list[str]]:
    """On the calibration half: the band with the fewest PNR + FB errors among those that
    add no false-allow or wrong-subject, the cheapest on ties. None if none helps."""
    base = {e: simulate_fused(datasets, cfg, e, None, keep)[0] for e in (1, 3)}
    b_safe, b_use = badness(base)
    log = [f"calibration half, SFace alone: safety {b_safe}, PNR+FB {b_use}"]
    best: tuple[int, int, ScoreFusion] | None = None
    fitted = fit_fusion(p, (2.0, 2.0), cfg)  # the band does not enter the fit
    for band in BANDS:
        fusion = replace(fitted, band=band)
        runs = {e: simulate_fused(datasets, cfg, e, fusion, keep) for e in (1, 3)}
        safe, use = badness({e: r[0] for e, r in runs.items()})
        need = sum(c.dlib for r in runs.values() for c in r[1].values())
        log.append(f"band {band}: safety {safe}, PNR+FB {use}, dlib faces {need}")
        if safe > b_safe:
            continue
        if best is None or (use, need) < (best[0], best[1]):
            best = (use, need, fusion)
    if best is None or best[0] >= b_use:
        log.append("no band helps on the calibration half")
        return fitted, log  # empty band (2, 2): SFace alone
    return best[2], log


# -- held-out evaluation ---------------------------------------------------------------------
@dataclass(slots=True)
class Tally:
    before: dict[int, dict[str, Counts]] = field(default_factory=dict)
    after: dict[int, dict[str, Counts]] = field(default_factory=dict)
    cost: dict[int, dict[str, Cost]] = field(default_factory=dict)
    fits: list[str] = field(default_factory=list)

    def add(self, enrol: int, before: dict[str, Counts], after: dict[str, Counts],
            cost: dict[str, Cost]) -> None:
        for store, new in ((self.before, before), (self.after, after)):
            into = store.setdefault(enrol, {})
            for t, c in new.items():
                into.setdefault(t, Counts()).add(c)
        into_c = self.cost.setdefault(enrol, {})
        for t, k in cost.items():
            acc = into_c.setdefault(t, Cost())
            acc.faces += k.faces
            acc.dlib += k.dlib


def evaluate(datasets: list[dict[str, Any]], halves: list[tuple[Callable[[str], bool],
             Callable[[str], bool]]], cfg: Config, tally: Tally) -> None:
    """For each (calibration, held-out) pair of identity predicates: fit, choose, count."""
    for cal, held in halves:
        p = pairs(datasets, cal)
        fusion, log = choose_band(datasets, p, cal, cfg)
        everywhere = replace(fusion, band=(-2.0, 2.0))
        hp = pairs(datasets, held)
        tally.fits.append(
            f"fit: mu_s {fusion.mu_s:.4f} sd_s {fusion.sd_s:.4f} mu_d {fusion.mu_d:.4f} "
            f"sd_d {fusion.sd_d:.4f} a {fusion.a:.4f} b {fusion.b:.4f} band {fusion.band}; "
            f"held-out pair TAR@1e-3 SFace {pair_tar(hp, None, 1e-3):.3f} fused "
            f"{pair_tar(hp, everywhere, 1e-3):.3f}, @1e-4 {pair_tar(hp, None, 1e-4):.3f} -> "
            f"{pair_tar(hp, everywhere, 1e-4):.3f}")
        tally.fits.extend("    " + line for line in log)
        for e in (1, 3):
            before = simulate_fused(datasets, cfg, e, None, held)[0]
            after, cost = simulate_fused(datasets, cfg, e, fusion, held)
            tally.add(e, before, after, cost)


def identity_halves(datasets: list[dict[str, Any]], seed: int
                    ) -> list[tuple[Callable[[str], bool], Callable[[str], bool]]]:
    ids = sorted({i for d in datasets for i in d["meta"]["roles"]})
    rng = np.random.default_rng(seed)
    rng.shuffle(ids)
    a = frozenset(ids[: len(ids) // 2])

    def in_a(i: str) -> bool:
        return i in a

    def in_b(i: str) -> bool:
        return i not in a

    return [(in_a, in_b), (in_b, in_a)]


def set_halves(datasets: list[dict[str, Any]]
               ) -> list[tuple[Callable[[str], bool], Callable[[str], bool]]]:
    names = [frozenset(d["meta"]["roles"]) for d in datasets]
    out = []
    for k in range(len(names)):
        cal = names[k]
        held = frozenset().union(*(n for j, n in enumerate(names) if j != k)) - cal
        out.append((cal.__contains__, held.__contains__))
    return out


def rates(c: Counts) -> str:
    p, k, s = (c.probes[r] for r in ("protected", "consenting", "stranger"))
    return (f"{c.false_allow}/{p + s} ({100 * c.false_allow / max(p + s, 1):.2f} %) / "
            f"{100 * c.prot_not_recog / max(p, 1):.2f} % / "
            f"{100 * c.false_block / max(k, 1):.2f} % / "
            f"{c.wrong_subject} ({100 * c.wrong_subject / max(p + k + s, 1):.2f} %)")


def report(tally: Tally, title: str) -> None:
    print(f"\n### {title}\n")
    for line in tally.fits:
        print(line)
    for e in (1, 3):
        print(f"\n{e} enrolment photo{'s' if e > 1 else ''} (FA / PNR / FB / wrong subject; "
              "dlib share)\n")
        print("| transform | SFace alone (default rules) | + dlib in band | faces asking dlib |")
        print("|---|---:|---:|---:|")
        tot_b, tot_a, tot_c = Counts(), Counts(), Cost()
        for t in tally.before[e]:
            b, a, k = tally.before[e][t], tally.after[e][t], tally.cost[e][t]
            tot_b.add(b)
            tot_a.add(a)
            tot_c.faces += k.faces
            tot_c.dlib += k.dlib
            print(f"| {t} | {rates(b)} | {rates(a)} | {k.dlib}/{k.faces} "
                  f"({100 * k.dlib / max(k.faces, 1):.1f} %) |")
        print(f"| **all** | {rates(tot_b)} | {rates(tot_a)} | {tot_c.dlib}/{tot_c.faces} "
              f"({100 * tot_c.dlib / max(tot_c.faces, 1):.1f} %) |")


def time_dlib(faces_dir: Path, n: int) -> None:
    """dlib ms per face (chip + descriptor; chip + mirror) on the first ``n`` photos."""
    import tempfile

    from recog_cache import open_gate

    from gate.vision.dlib_face import DlibEmbedder

    photos = sorted(p for p in faces_dir.glob("*/*/*") if p.suffix.lower() in
                    (".jpg", ".jpeg", ".png", ".webp"))[:: max(1, 854 // n)][:n]
    emb = DlibEmbedder()
    with tempfile.TemporaryDirectory() as tmp:
        gate = open_gate(Path(tmp))
        items = []
        for path in photos:
            dec = gate.faces.decode(path.read_bytes())
            found = gate.faces.detect(dec, first_only=True)
            if found:
                f = found[0]
                items.append((dec.frames[f.frame_pos].pixels, f.det.landmarks_array()))
        gate.close()
    emb.embed_faces(items[0][0], [items[0][1]])  # warm-up
    wall: dict[str, list[float]] = {"chip": [], "one": [], "two": []}
    cpu: dict[str, list[float]] = {"chip": [], "one": [], "two": []}

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        w, c = time.perf_counter(), time.thread_time()
        out = fn()
        wall[key].append(time.perf_counter() - w)
        cpu[key].append(time.thread_time() - c)
        return out

    for pixels, lm in items:
        chip = timed("chip", lambda: emb.chip(pixels, lm))  # noqa: B023
        timed("one", lambda: emb.embed([chip]))  # noqa: B023
        timed("two", lambda: emb.embed([chip, np.ascontiguousarray(chip[:, ::-1])]))  # noqa: B023

    def ms(key: str) -> str:
        return (f"wall p50 {1000 * np.median(wall[key]):.1f} ms "
                f"(p90 {1000 * np.percentile(wall[key], 90):.1f}), "
                f"CPU p50 {1000 * np.median(cpu[key]):.1f} ms")

    print(f"dlib on {len(items)} faces, one thread, load average {os.getloadavg()[0]:.1f}:")
    print(f"  chip (upright warp + 5-point fit + get_face_chip): {ms('chip')}")
    print(f"  descriptor of the chip: {ms('one')}")
    print(f"  descriptor of chip + mirror: {ms('two')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", default="dlib", help="cache tags, comma-separated")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/recog-cache"))
    parser.add_argument("--split", default="identity,set")
    parser.add_argument("--seeds", type=int, default=3, help="identity splits")
    parser.add_argument("--time", type=int, default=0, metavar="N",
                        help="only time dlib on N shared photos")
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--flip-margin", type=float, default=0.08,
                        help="the engine's flip_margin (default 0.08, 2.0: always flip)")
    parser.add_argument("--check", action="store_true",
                        help="check the replay without fusion equals recognition.simulate")
    args = parser.parse_args()
    if args.time:
        time_dlib(args.faces, args.time)
        return 0
    data = merge(args.tags.split(","), args.cache)
    cfg = RECOMMENDED
    if hasattr(cfg, "flip_margin"):
        cfg = replace(cfg, flip_margin=args.flip_margin)
    print(f"rules: {cfg}")
    if args.check:
        for e in (1, 3):
            ours = simulate_fused(data, cfg, e, None)[0]
            theirs = simulate(data, cfg, e)
            assert {t: c.row() for t, c in ours.items()} == \
                {t: c.row() for t, c in theirs.items()}, e
        print("replay without fusion == recognition.simulate (1 and 3 photos)")
    all_pairs = pairs(data, lambda _i: True)
    full = replace(fit_fusion(all_pairs, (2.0, 2.0), cfg), band=(-2.0, 2.0))
    print(f"all pairs (in-sample), fused everywhere: TAR@1e-3 SFace "
          f"{pair_tar(all_pairs, None, 1e-3):.3f} dlib "
          f"{pair_tar(Pairs(all_pairs.d, all_pairs.d, all_pairs.genuine), None, 1e-3):.3f} "
          f"fused {pair_tar(all_pairs, full, 1e-3):.3f}; TAR@1e-4 "
          f"{pair_tar(all_pairs, None, 1e-4):.3f} -> {pair_tar(all_pairs, full, 1e-4):.3f} "
          f"({int(all_pairs.genuine.sum())} genuine, {int((~all_pairs.genuine).sum())} "
          "impostor pairs)")
    for split in args.split.split(","):
        tally = Tally()
        if split == "identity":
            for seed in range(args.seeds):
                evaluate(data, identity_halves(data, seed), cfg, tally)
            title = (f"Identity split, {args.seeds} seeds x 2 directions (each probe counted "
                     f"once per seed: counts are summed over {args.seeds} seeds)")
        elif split == "set":
            evaluate(data, set_halves(data), cfg, tally)
            title = "Set split: fit on glint24, count natural_small, and back"
        else:
            raise SystemExit(f"unknown split {split!r}")
        report(tally, title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
