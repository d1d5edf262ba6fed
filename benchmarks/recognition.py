"""Recognition studies on cached embeddings: the efficacy protocol replayed in numpy.

``benchmarks/recog_cache.py`` runs every enrolment photo and every probe of the efficacy
protocol (both sets, every transform) through the product's decode, detector, alignment
and SFace once. This script replays the engine's identification and the default policy
on those arrays (``simulate``), so matching rules, thresholds, template counts and flip
test-time augmentation can be compared in seconds. The replay reproduces the engine's
identification (``gate.identity.classify``: thresholds, margins, most restrictive reading,
quality gate, ``permissive_rule``, ``poor_quality_allow_threshold``) and the default
policy for face swaps: with the same detections it gives the false-allow, "protected not
recognised", false-block and wrong-subject counts of ``benchmarks/efficacy.py``
(docs/accuracy.md compares them). ``Config()`` is the engine before issue 17 (best
template, no poor-quality reading); ``RECOMMENDED`` the rules of issue 17's first two
rounds (crop + mirror); ``DEFAULT`` today's engine default (zoomed views, band 0.12),
which needs a cache made with ``recog_cache.py --zooms 0.9,1.1``.

    .venv/bin/python benchmarks/recognition.py --tag zoom --study all

(The dlib second-opinion study of the research branch ``recog-research`` needs dlib
descriptors in the cache and is not ported; dlib is not installed here, and
docs/accuracy.md says why the second opinion stays out of the engine.)
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESTRICTIVENESS = {"consented": 1, "unknown": 2, "protected": 4}


@dataclass(frozen=True, slots=True)
class Config:
    """What the replay decides with (the engine before issue 17 unless changed)."""

    flip: bool = True  # test-time flip at check time (templates are always flip-averaged)
    #: Zoomed views averaged into enrolment templates; the cache must hold them
    #: (``recog_cache.py --zooms``).
    zooms: bool = False
    #: With ``zooms``: also into a check's vector wherever the mirror is, with the
    #: zoomed crops' mirrors or without.
    probe_zooms: bool = True
    probe_zoom_mirrors: bool = True
    #: A stricter-protecting match threshold for opted-out subjects (None: ``match``).
    protected_match: float | None = None
    rule: str = "max"  # per-subject score over its templates: max | top2 | mean
    match_threshold: float = 0.36
    allow_threshold: float = 0.40
    protected_margin: float = 0.15
    ambiguity_margin: float = 0.05
    min_quality: float = 0.30
    min_face_px: float = 24.0
    k: int = 3  # subjects returned by the index
    #: A poor-quality face may still be read as consented at this similarity (2: never).
    poor_allow_threshold: float = 2.0
    #: The engine's ``flip_margin``: the mirror only where ``mirror_can_matter`` says it
    #: could change a reading (2.0: always).
    flip_margin: float = 2.0
    #: Cohort rule (research, not in the engine): a consenting best subject whose
    #: permissive score is in [match, allow) still reads consented when that score minus
    #: the mean of the face's best-template scores to the ``cohort_k`` nearest other
    #: enrolled subjects (0: all of them) reaches this (None: off).
    cohort_allow: float | None = None
    cohort_k: int = 0
    name: str = ""


#: The recognition rules recommended in docs/accuracy.md (issue 17) and now the
#: defaults: ``permissive_rule="top2"``, ``poor_quality_allow_threshold=0.45``.
RECOMMENDED = Config(rule="hybrid", poor_allow_threshold=0.45, name="recommended")
#: The engine's defaults today: ``RECOMMENDED`` with zoomed test-time views
#: (``zoom_views`` 0.9 / 1.1) and their band (``flip_margin`` 0.12); issue 17, third round.
DEFAULT = replace(RECOMMENDED, zooms=True, flip_margin=0.12, name="default")


@dataclass(slots=True)
class Counts:
    probes: Counter[str] = field(default_factory=Counter)
    false_allow: int = 0
    prot_not_recog: int = 0
    false_block: int = 0
    wrong_subject: int = 0
    det_miss: int = 0

    def add(self, other: Counts) -> None:
        self.probes.update(other.probes)
        self.false_allow += other.false_allow
        self.prot_not_recog += other.prot_not_recog
        self.false_block += other.false_block
        self.wrong_subject += other.wrong_subject
        self.det_miss += other.det_miss

    def row(self) -> dict[str, Any]:
        p, c, s = (self.probes[r] for r in ("protected", "consenting", "stranger"))
        total = p + c + s
        return {"fa": f"{self.false_allow}/{p + s}",
                "pnr": round(100 * self.prot_not_recog / max(p, 1), 1),
                "fb": round(100 * self.false_block / max(c, 1), 1),
                "wrong": self.wrong_subject,
                "miss": round(100 * self.det_miss / max(total, 1), 1)}


class _Unpickler(pickle.Unpickler):
    """The cache was pickled by ``recog_cache.py`` run as ``__main__``."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("__main__", "recog_cache"):
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            import recog_cache

            return getattr(recog_cache, name)
        return super().find_class(module, name)


def load(tag: str, cache: Path = Path("/tmp/recog-cache")) -> list[dict[str, Any]]:
    out = []
    for path in sorted(cache.glob(f"{tag}-*.pkl")):
        with path.open("rb") as fh:
            out.append(_Unpickler(fh).load())
    if not out:
        raise SystemExit(f"no cache for tag {tag!r} in {cache}")
    return out


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def face_vector(face: Any, flip: bool, zooms: bool = False, zoom_mirrors: bool = True
                ) -> np.ndarray:
    """The crop's own vector; with ``flip``, averaged with its mirror's and, with
    ``zooms``, with every zoomed view the cache holds and their mirrors (the engine's
    ``zoom_views``; ``recog_cache.py --zooms``)."""
    if not flip:
        return face.sface[0]
    total = face.sface[0] + face.sface[1]
    if zooms:
        if face.zooms is None:
            raise SystemExit("this cache has no zoomed views: recog_cache.py --zooms")
        total = total + (face.zooms.sum(axis=(0, 1)) if zoom_mirrors
                         else face.zooms[:, 0].sum(axis=0))
    return unit(total)


@dataclass(slots=True)
class Gallery:
    """Enrolled subjects of one set for one enrolment count."""

    ids: list[str]  # identities, one per subject
    status: list[str]  # "protected" | "consenting"
    templates: list[np.ndarray]  # (K_s, 128) flip-averaged SFace

    def scores(self, q: np.ndarray, rule: str) -> np.ndarray:
        if rule == "centroid":  # cosine to the normalised mean of the subject's templates
            return np.array([float(unit(t.mean(axis=0)) @ q) for t in self.templates])
        return np.array([subject_score(t @ q, rule) for t in self.templates])


def subject_score(sims: np.ndarray, rule: str) -> float:
    s = np.sort(sims)[::-1]
    if rule == "max" or len(s) == 1:
        return float(s[0])
    if rule == "top2":
        return float(s[:2].mean())
    if rule == "mean":
        return float(s.mean())
    if rule.startswith("softmax"):  # softmax-weighted mean, temperature in the name
        t = float(rule[7:] or 0.05)
        w = np.exp((s - s[0]) / t)
        return float((w * s).sum() / w.sum())
    raise ValueError(rule)


def gallery(data: dict[str, Any], enrol: int, select: Callable[..., list[int]] | None = None,
            zooms: bool = False) -> Gallery:
    meta = data["meta"]
    enrol_recs = {r.ref: r for r in data["images"]["enrol"]}
    ids, status, temps = [], [], []
    for identity, refs in sorted(meta["enrolment"].items()):
        recs = [enrol_recs[r] for r in refs]
        chosen = select(recs, enrol) if select else list(range(min(enrol, len(recs))))
        faces = []
        for i in chosen:
            if len(recs[i].faces) != 1 or recs[i].faces[0].size_px < 24:
                faces = []
                break  # the engine refuses the whole enrolment
            faces.append(recs[i].faces[0])
        if not faces:
            continue
        ids.append(identity)
        status.append("protected" if meta["roles"][identity] == "protected" else "consenting")
        temps.append(np.stack([face_vector(f, True, zooms) for f in faces]))
    return Gallery(ids, status, temps)


def classify(faces: list[Any], g: Gallery, cfg: Config) -> tuple[str, list[tuple[str, str | None]]]:
    """(verdict, [(identity class, named identity)]) as the engine + default policy."""
    if not faces:
        return "deny", []
    out: list[tuple[str, str | None]] = []
    for face in faces:
        scores, permissive = face_scores(probe_vector(face, g, cfg), g, cfg)
        order = [int(i) for i in np.argsort(-scores, kind="stable")[: cfg.k]]
        out.append(read_face(face, scores, permissive, order, g, cfg))
    return verdict_of(out), out


def probe_vector(face: Any, g: Gallery, cfg: Config) -> np.ndarray:
    """The vector the engine searches with: flip-averaged, or the crop's own where the
    engine does not embed the mirror."""
    q = face_vector(face, cfg.flip, cfg.zooms and cfg.probe_zooms, cfg.probe_zoom_mirrors)
    if cfg.flip and cfg.flip_margin < 2.0 and not mirror_matters(face.sface[0], g, cfg):
        q = face.sface[0]  # the engine does not embed the mirror of this face
    return q


def face_scores(q: np.ndarray, g: Gallery, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(protective, permissive) score per subject: ``hybrid`` reads protective on the
    best template and permissive on the top-2 mean."""
    if cfg.rule == "hybrid":
        return g.scores(q, "max"), g.scores(q, "top2")
    scores = g.scores(q, cfg.rule)
    return scores, scores


def read_face(face: Any, scores: np.ndarray, permissive: np.ndarray, order: list[int],
              g: Gallery, cfg: Config) -> tuple[str, str | None]:
    """One face's (identity class, named identity) from its scores to the ``order``ed
    best subjects: thresholds, margins, most restrictive reading, quality gate."""
    def threshold(i: int) -> float:
        if cfg.protected_match is not None and g.status[i] == "protected":
            return cfg.protected_match
        return cfg.match_threshold

    cands = [i for i in order if scores[i] >= threshold(i)]
    identity, named = "unknown", None
    if cands:
        top = scores[cands[0]]
        close = [i for i in cands if i == cands[0] or scores[i] >= top - cfg.ambiguity_margin
                 or (g.status[i] == "protected" and scores[i] >= top - cfg.protected_margin)]
        best: tuple[int, str, str | None] = (-1, "unknown", None)
        for i in close:
            if g.status[i] == "protected":
                reading = "protected"
            else:
                reading = "consented" if permissive[i] >= cfg.allow_threshold else "unknown"
            r = RESTRICTIVENESS[reading]
            if r > best[0]:
                best = (r, reading, g.ids[i] if reading != "unknown" else None)
        identity, named = best[1], best[2]
        if identity == "unknown" and cfg.cohort_allow is not None:
            identity, named = cohort_reading(scores, permissive, cands[0], g, cfg)
    poor = face.size_px < cfg.min_face_px or face.quality < cfg.min_quality
    confident = identity == "consented" and face.size_px >= cfg.min_face_px and \
        named is not None and float(permissive[g.ids.index(named)]) >= cfg.poor_allow_threshold
    if poor and identity in ("unknown", "consented") and not confident:
        identity = "unidentifiable"
    return identity, named


def cohort_reading(scores: np.ndarray, permissive: np.ndarray, top: int, g: Gallery,
                   cfg: Config) -> tuple[str, str | None]:
    """``Config.cohort_allow``: the face's best subject (consenting, permissive score in
    [match, allow)) read as consented when the score stands out from the face's scores to
    the other enrolled subjects (the cohort) by ``cohort_allow``; else unknown."""
    p = float(permissive[top])
    if g.status[top] != "consenting" or not cfg.match_threshold <= p < cfg.allow_threshold:
        return "unknown", None
    others = np.sort(np.delete(scores, top))[::-1]
    if others.size == 0:
        return "unknown", None
    cohort = others[: cfg.cohort_k or others.size]
    assert cfg.cohort_allow is not None
    if p - float(cohort.mean()) < cfg.cohort_allow:
        return "unknown", None
    return "consented", g.ids[top]


def verdict_of(readings: list[tuple[str, str | None]]) -> str:
    """The default policy for face swaps over a request's readings."""
    kinds = {i for i, _ in readings}
    if "protected" in kinds:
        return "deny"
    if kinds & {"unknown", "unidentifiable"}:
        return "needs_consent"
    return "allow"


def mirror_matters(single: np.ndarray, g: Gallery, cfg: Config) -> bool:
    """The engine's decision (``classify.mirror_can_matter``) on the replay's scores: the
    3 best subjects by best template, template similarities of those at ``allow``."""
    from gate.identity.classify import Thresholds, mirror_can_matter
    from gate.identity.index import IndexHit

    best = g.scores(single, "max")
    order = np.argsort(-best, kind="stable")[: cfg.k]
    hits = [IndexHit(g.ids[i], float(best[i])) for i in order]
    top2 = cfg.rule in ("top2", "hybrid")
    sims = {g.ids[i]: [float(v) for v in g.templates[i] @ single] for i in order
            if best[i] >= cfg.allow_threshold} if top2 else None
    th = Thresholds(match=cfg.match_threshold, allow=cfg.allow_threshold,
                    protected_margin=cfg.protected_margin, min_quality=cfg.min_quality,
                    min_face_px=int(cfg.min_face_px), permissive_rule="top2" if top2 else "max",
                    poor_quality_allow=cfg.poor_allow_threshold)
    return mirror_can_matter(hits, sims, th, cfg.flip_margin)


def simulate(datasets: list[dict[str, Any]], cfg: Config, enrol: int,
             transforms: list[str] | None = None,
             select: Callable[..., list[int]] | None = None,
             only: set[str] | None = None) -> dict[str, Counts]:
    """Counts per transform (over all datasets) for ``enrol`` enrolment photos; with
    ``only``, only the probes of those identities are counted (everyone stays enrolled)."""
    result: dict[str, Counts] = {}
    for data in datasets:
        g = gallery(data, enrol, select, cfg.zooms)
        enrolled = set(g.ids)
        for tname, recs in data["images"].items():
            if tname == "enrol" or (transforms and tname not in transforms):
                continue
            c = result.setdefault(tname, Counts())
            for rec in recs:
                if only is not None and rec.identity not in only:
                    continue
                if rec.role != "stranger" and rec.identity not in enrolled:
                    continue
                tally(c, rec, lambda faces, g=g: classify(faces, g, cfg))
    return result


def tally(c: Counts, rec: Any,
          judge: Callable[[list[Any]], tuple[str, list[tuple[str, str | None]]]]) -> None:
    """Count one probe: its role, and what ``judge`` (verdict, readings) made of its faces."""
    c.probes[rec.role] += 1
    if rec.error is not None:
        if rec.role == "protected":
            c.prot_not_recog += 1
        elif rec.role == "consenting":
            c.false_block += 1
        return
    verdict, faces = judge(rec.faces)
    own = rec.identity if rec.role != "stranger" else None
    if not rec.faces:
        c.det_miss += 1
    named = {n for _, n in faces if n is not None}
    if named - {own}:
        c.wrong_subject += 1
    if rec.role in ("protected", "stranger") and verdict == "allow":
        c.false_allow += 1
    if rec.role == "protected" and own not in named:
        c.prot_not_recog += 1
    if rec.role == "consenting" and not any(k == "consented" and n == own for k, n in faces):
        c.false_block += 1


def table(results: dict[str, dict[str, Counts]], transforms: list[str]) -> str:
    """Markdown: a row per transform, a column group per configuration."""
    names = list(results)
    head = "| transform | " + " | ".join(f"{n}: FA / PNR / FB / wrong" for n in names) + " |"
    lines = [head, "|---|" + "---:|" * len(names)]
    for t in transforms:
        cells = []
        for n in names:
            r = results[n][t].row()
            cells.append(f"{r['fa']} / {r['pnr']} % / {r['fb']} % / {r['wrong']}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def transforms_of(datasets: list[dict[str, Any]]) -> list[str]:
    return [t for t in datasets[0]["images"] if t != "enrol"]




# -- calibration on held-out identity splits -------------------------------------------------
def clean_probe_faces(data: dict[str, Any], flip: bool = True) -> list[tuple[str, Any]]:
    """(identity, largest face) of every clean probe with a face."""
    out = []
    for rec in data["images"]["clean"]:
        if rec.faces:
            out.append((rec.identity, max(rec.faces, key=lambda f: f.size_px)))
    return out


def score_matrix(datasets: list[dict[str, Any]], enrol: int, rule: str, flip: bool = True,
                 cohort: bool = False, zooms: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per set: probe x subject scores. Returns (scores, probe identity, subject identity,
    set index per probe) stacked over sets (cross-set pairs are not scored: NaN). With
    ``cohort``, each score minus the probe's mean score over the set's other subjects."""
    rows, pids, sids_all, set_of = [], [], [], []
    blocks = []
    for n, data in enumerate(datasets):
        g = gallery(data, enrol, zooms=zooms)
        faces = clean_probe_faces(data, flip)
        m = np.full((len(faces), len(g.ids)), np.nan)
        for r, (_ident, face) in enumerate(faces):
            m[r] = g.scores(face_vector(face, flip, zooms), rule)
        if cohort:
            n_s = m.shape[1]
            m = m - (m.sum(axis=1, keepdims=True) - m) / (n_s - 1)
        blocks.append((m, [i for i, _ in faces], g.ids, n))
    total_s = sum(len(b[2]) for b in blocks)
    col = 0
    for m, p, s, n in blocks:
        full = np.full((len(p), total_s), np.nan)
        full[:, col:col + len(s)] = m
        rows.append(full)
        pids += p
        set_of += [n] * len(p)
        sids_all += s
        col += len(s)
    return np.vstack(rows), np.array(pids), np.array(sids_all), np.array(set_of)


def split_identities(ids: np.ndarray, seed: int) -> set[str]:
    u = sorted(set(ids.tolist()))
    rng = np.random.default_rng(seed)
    rng.shuffle(u)
    return set(u[: len(u) // 2])


def threshold_for(impostor: np.ndarray, far: float) -> float:
    s = np.sort(impostor)[::-1]
    k = int(np.floor(far * s.size))
    return float(s[min(k, s.size - 1)]) + 1e-6


def held_out(scores: np.ndarray, pid: np.ndarray, sid: np.ndarray, far: float,
             seeds: range = range(10)) -> dict[str, float]:
    """Threshold at ``far`` (per probe-subject pair) chosen on one half of the identities,
    TAR/FAR measured on the other half; mean over seeds. Also the all-data threshold."""
    same = pid[:, None] == sid[None, :]
    valid = ~np.isnan(scores)
    thr_all = threshold_for(scores[valid & ~same], far)
    tars, fars, thrs = [], [], []
    for seed in seeds:
        cal = split_identities(np.concatenate([pid, sid]), seed)
        pc = np.array([p in cal for p in pid])
        sc = np.array([s in cal for s in sid])
        cal_mask = valid & pc[:, None] & sc[None, :]
        held_mask = valid & ~pc[:, None] & ~sc[None, :]
        thr = threshold_for(scores[cal_mask & ~same], far)
        gen = scores[held_mask & same]
        imp = scores[held_mask & ~same]
        thrs.append(thr)
        tars.append(float(np.mean(gen >= thr)))
        fars.append(float(np.mean(imp >= thr)))
    gen_all = scores[valid & same]
    return {"thr_all": round(thr_all, 4), "tar_all": round(float(np.mean(gen_all >= thr_all)), 4),
            "thr_cal": round(float(np.mean(thrs)), 4), "tar_held": round(float(np.mean(tars)), 4),
            "far_held": round(float(np.mean(fars)), 6)}


# -- flip test-time augmentation only where it can matter -------------------------------------
def _probe_faces(datasets: list[dict[str, Any]], enrol: int, zooms: bool = False
                 ) -> Iterator[tuple[Any, Any]]:
    """(gallery, face) for every face of every probe, every transform (not the enrolment)."""
    for data in datasets:
        g = gallery(data, enrol, zooms=zooms)
        for tname, recs in data["images"].items():
            if tname == "enrol":
                continue
            for rec in recs:
                for f in rec.faces:
                    yield g, f


def flip_deltas(datasets: list[dict[str, Any]], enrol: int, zooms: bool = False) -> np.ndarray:
    """|averaged score - single-crop score| over every face, subject, transform."""
    return np.concatenate([np.abs(g.scores(face_vector(f, True, zooms), "max") -
                                  g.scores(f.sface[0], "max"))
                           for g, f in _probe_faces(datasets, enrol, zooms)])


# -- studies ------------------------------------------------------------------------------
KEY_TRANSFORMS = ["clean", "hflip", "rot90", "rot180", "rot30", "shrink32", "eyes_band",
                  "tight_crop", "crowd"]


def study_engine(data: list[dict[str, Any]], ts: list[str]) -> None:
    cfg = DEFAULT if data[0].get("zooms") else RECOMMENDED  # a cache without zooms: before
    res = {f"engine, {e} photo{'s' if e > 1 else ''}": simulate(data, cfg, e)
           for e in (1, 3)}
    print("\n### Replay of the engine (default settings)\n")
    print(table(res, ts))


def baseline_rates(data: list[dict[str, Any]]) -> tuple[float, float]:
    """The per probe-subject impostor rates of 0.36 and 0.40 with one template (best
    template, crop + mirror, clean probes): the rates other rules are judged at."""
    base = score_matrix(data, 1, "max")
    same = base[1][:, None] == base[2][None, :]
    impostor = base[0][~np.isnan(base[0]) & ~same]
    return float(np.mean(impostor >= 0.36)), float(np.mean(impostor >= 0.40))


def study_rules(data: list[dict[str, Any]]) -> None:
    """Per-subject score rules over K templates, thresholds at the engine's own impostor
    rates (those of 0.36 / 0.40 with one template), chosen on held-out identity splits."""
    print("\n### Matching rule over K templates (clean probes, held-out splits)\n")
    far_m, far_a = baseline_rates(data)
    print(f"per probe-subject impostor rate with 1 template: at 0.36 {far_m:.2e}, "
          f"at 0.40 {far_a:.2e}\n")
    print("| K | rule | thr for FAR(0.36) all / held-out cal | TAR held | FAR held "
          "| thr for FAR(0.40) | TAR held | FAR held |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for k in (1, 2, 3):
        for rule in (("max",) if k == 1 else ("max", "top2", "mean")):
            m = score_matrix(data, k, rule)
            lo = held_out(m[0], m[1], m[2], far_m)
            hi = held_out(m[0], m[1], m[2], far_a)
            print(f"| {k} | {rule} | {lo['thr_all']} / {lo['thr_cal']} | {lo['tar_held']} | "
                  f"{lo['far_held']:.2e} | {hi['thr_all']} / {hi['thr_cal']} | "
                  f"{hi['tar_held']} | {hi['far_held']:.2e} |")


def study_scoring(data: list[dict[str, Any]]) -> None:
    """Scores over K templates: best template, top-2 mean, the subject's centroid; each
    raw and cohort-normalised (minus the probe's mean over the set's other enrolled
    subjects). Held-out TAR at the impostor rates of 0.36 / 0.40 (1 template, raw)."""
    print("\n### Subject scores: best, top-2, centroid; raw and cohort-normalised\n")
    far_m, far_a = baseline_rates(data)
    print("| K | score | cohort | TAR held @FAR(0.36) | FAR held | TAR held @FAR(0.40) "
          "| FAR held |")
    print("|---|---|---|---:|---:|---:|---:|")
    for k in (1, 3):
        for rule in (("max",) if k == 1 else ("max", "top2", "centroid")):
            for cohort in (False, True):
                m = score_matrix(data, k, rule, cohort=cohort)
                lo = held_out(m[0], m[1], m[2], far_m)
                hi = held_out(m[0], m[1], m[2], far_a)
                print(f"| {k} | {rule} | {'yes' if cohort else 'no'} | {lo['tar_held']} | "
                      f"{lo['far_held']:.2e} | {hi['tar_held']} | {hi['far_held']:.2e} |")


def calibrated(data: list[dict[str, Any]], k: int, rule: str) -> tuple[float, float]:
    """(match, allow) thresholds for K templates and ``rule`` at the impostor rates that
    0.36 / 0.40 have with one template; chosen on calibration halves (mean over seeds)."""
    far_m, far_a = baseline_rates(data)
    m = score_matrix(data, k, rule)
    return (held_out(m[0], m[1], m[2], far_m)["thr_cal"],
            held_out(m[0], m[1], m[2], far_a)["thr_cal"])


def study_thresholds(data: list[dict[str, Any]], ts: list[str]) -> None:
    print("\n### K templates: rule and calibrated thresholds, full protocol replay\n")
    res: dict[str, dict[str, Counts]] = {}
    res["1 photo (before)"] = simulate(data, Config(), 1)
    res["3, max, 0.36/0.40 (before)"] = simulate(data, Config(), 3)
    for rule in ("max", "top2"):
        lo, hi = calibrated(data, 3, rule)
        lo, hi = round(lo, 3), round(hi, 3)
        res[f"3, {rule}, {lo}/{hi}"] = simulate(
            data, replace(Config(), rule=rule, match_threshold=lo, allow_threshold=hi), 3)
        res[f"3, {rule}, 0.36/{hi}"] = simulate(
            data, replace(Config(), rule=rule, allow_threshold=hi), 3)
    for allow in (0.40, 0.407, 0.42):
        res[f"3, hybrid, 0.36/{allow}, poor>=0.45"] = simulate(data, replace(
            Config(), rule="hybrid", allow_threshold=allow, poor_allow_threshold=0.45), 3)
    for poor in (0.45, 0.50):
        res[f"1, poor>={poor}"] = simulate(data, replace(Config(), poor_allow_threshold=poor), 1)
        res[f"3, max, poor>={poor}"] = simulate(
            data, replace(Config(), poor_allow_threshold=poor), 3)
    print(table(res, ts))


def verdicts(datasets: list[dict[str, Any]], cfg: Config, enrol: int) -> list[Any]:
    """Every probe's (verdict, readings) in a fixed order, every transform."""
    out = []
    for data in datasets:
        g = gallery(data, enrol, zooms=cfg.zooms)
        for tname, recs in data["images"].items():
            if tname != "enrol":
                out += [classify(rec.faces, g, cfg) for rec in recs if rec.error is None]
    return out


def _print_deltas(data: list[dict[str, Any]], zooms: bool, what: str) -> None:
    """How far the averaged similarity strays from the single crop's (every face, subject,
    transform; 1 and 3 enrolment photos)."""
    for e in (1, 3):
        d = flip_deltas(data, e, zooms)
        print(f"enrol {e}: |{what} - single| over {d.size} face-subject scores: "
              f"p99 {np.percentile(d, 99):.4f}, p99.9 {np.percentile(d, 99.9):.4f}, "
              f"max {d.max():.4f}")


def _band(data: list[dict[str, Any]], full: Config, e: int, margins: tuple[float, ...],
          what: str) -> dict[str, Counts]:
    """The band (``flip_margin``) against ``full`` (every face averaged): per margin, the
    share of faces that get ``what`` and the readings that differ; counts per margin."""
    always = verdicts(data, full, e)
    out = {}
    for margin in margins:
        cfg = replace(full, flip_margin=margin)
        asked = total = 0
        for g, f in _probe_faces(data, e, full.zooms):
            total += 1
            asked += int(mirror_matters(f.sface[0], g, cfg))
        changed = sum(a != b for a, b in zip(always, verdicts(data, cfg, e), strict=True))
        print(f"enrol {e}, margin {margin}: {asked}/{total} faces "
              f"({100 * asked / total:.1f} %) get {what}; {changed}/{len(always)} "
              "probes read differently from averaging every face")
        out[f"margin {margin}"] = simulate(data, cfg, e)
    return out


def study_flipband(data: list[dict[str, Any]], ts: list[str]) -> None:
    """The engine's test-time flip band (``flip_margin``) against flipping every face."""
    print("\n### Test-time flip only where it can change a reading (flip_margin)\n")
    _print_deltas(data, False, "flip-averaged")
    res: dict[str, dict[str, Counts]] = {}
    for e in (1, 3):
        res[f"{e}: always"] = simulate(data, RECOMMENDED, e)
        res[f"{e}: never"] = simulate(data, replace(RECOMMENDED, flip=False), e)
        for name, counts in _band(data, RECOMMENDED, e, (0.08, 0.05, 0.0),
                                  "the mirror").items():
            res[f"{e}: {name}"] = counts
    print(table(res, ts))


def study_heldout(data: list[dict[str, Any]], ts: list[str], seeds: range = range(5),
                  base: Config = RECOMMENDED) -> None:
    """The default rules with every threshold chosen on the other half of the identities.

    The rule that gives today's thresholds on all the data: each threshold sits at the
    impostor rate (probe-subject pairs, one template, best-template score) that it has on
    all of it (0.36, 0.40, 0.45). Per seed, identities are split in two halves; the three
    thresholds are chosen at those impostor rates on pairs within one half, and the
    protocol is replayed counting only the other half's probes (everyone stays enrolled:
    none of those probes' pairs was seen by the calibration), then the other way round.
    Both folds of every seed are summed: each probe is judged once per seed. With zoomed
    views (``base.zooms``) the impostor rates stay those of the crop and its mirror, so
    that both are judged at the same rates.
    """
    views = " with zoomed views" if base.zooms else ""
    print(f"\n### Held-out thresholds (identity halves, both folds summed){views}\n")
    scores, pid, sid, _ = score_matrix(data, 1, "max")
    same = pid[:, None] == sid[None, :]
    valid = ~np.isnan(scores)
    imp_all = scores[valid & ~same]
    fars = {t: float(np.mean(imp_all >= t)) for t in (0.36, 0.40, 0.45)}
    if base.zooms:
        scores = score_matrix(data, 1, "max", zooms=True)[0]
    print("impostor rate per pair on all data: " +
          ", ".join(f"{t}: {f:.2e}" for t, f in fars.items()))
    ids = np.concatenate([pid, sid])
    res: dict[str, dict[str, Counts]] = {}
    for e in (1, 3):
        res[f"{e}: all-data thresholds"] = simulate(data, base, e)
        held: dict[str, Counts] = {}
        chosen = []
        for seed in seeds:
            half = split_identities(ids, seed)
            other = set(ids.tolist()) - half
            for cal, test in ((half, other), (other, half)):
                pc = np.array([p in cal for p in pid])
                sc = np.array([s in cal for s in sid])
                imp = scores[valid & pc[:, None] & sc[None, :] & ~same]
                m, a, q = (threshold_for(imp, fars[t]) for t in (0.36, 0.40, 0.45))
                chosen.append((m, a, q))
                cfg = replace(base, match_threshold=m, allow_threshold=max(a, m),
                              poor_allow_threshold=max(q, a, m))
                for t, c in simulate(data, cfg, e, only=test).items():
                    held.setdefault(t, Counts()).add(c)
        res[f"{e}: held out ({len(seeds)} seeds, summed)"] = held
        arr = np.array(chosen)
        print(f"enrol {e}: chosen match {arr[:, 0].mean():.3f} ({arr[:, 0].min():.3f}-"
              f"{arr[:, 0].max():.3f}), allow {arr[:, 1].mean():.3f} ({arr[:, 1].min():.3f}-"
              f"{arr[:, 1].max():.3f}), poor {arr[:, 2].mean():.3f} ({arr[:, 2].min():.3f}-"
              f"{arr[:, 2].max():.3f})")
    print(table(res, ts))


def study_zooms(data: list[dict[str, Any]], ts: list[str]) -> None:
    """Zoomed test-time views (the engine's ``zoom_views``) against the crop and its
    mirror only, same thresholds; and their band (``flip_margin``) against averaging
    every face's views."""
    print("\n### Zoomed test-time views (zoom_views), same thresholds\n")
    zoomed = replace(RECOMMENDED, zooms=True)
    _print_deltas(data, True, "averaged")
    res: dict[str, dict[str, Counts]] = {}
    for e in (1, 3):
        res[f"{e}: flip only (before)"] = simulate(data, replace(RECOMMENDED, flip_margin=0.08),
                                                   e)
        res[f"{e}: zooms, every face"] = simulate(data, zoomed, e)
        for name, counts in _band(data, zoomed, e, (0.08, 0.10, 0.12),
                                  "the other views").items():
            res[f"{e}: zooms, {name}"] = counts
    print(table(res, ts))


def study_protect(data: list[dict[str, Any]], ts: list[str]) -> None:
    """A lower match threshold for opted-out ("protect me") subjects only: what it does
    to protected-not-recognised, and what it costs (false-block, wrong subject)."""
    print("\n### A lower match threshold for opted-out subjects (zoomed views)\n")
    res: dict[str, dict[str, Counts]] = {}
    for e in (1, 3):
        for t in (None, 0.34, 0.32):
            res[f"{e}: protected at {t or 0.36}"] = simulate(
                data, replace(DEFAULT, protected_match=t), e)
    print(table(res, ts))


def _summary(name: str, per: dict[str, Counts]) -> str:
    """One line: counts summed over the transforms, the worst false-allow, clean."""
    tot = Counts()
    for c in per.values():
        tot.add(c)
    worst = max(c.false_allow for c in per.values())
    clean = per["clean"].row()
    return (f"| {name} | {tot.false_allow} | {worst} | {tot.prot_not_recog} | "
            f"{tot.false_block} | {tot.wrong_subject} | {clean['fa']} | {clean['pnr']} % | "
            f"{clean['fb']} % | {clean['wrong']} |")


SUMMARY_HEAD = ("| rule | FA summed | worst FA | PNR summed | FB summed | wrong summed | "
                "clean FA | clean PNR | clean FB | clean wrong |\n"
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def study_cohort(data: list[dict[str, Any]], ts: list[str]) -> None:
    """Cohort rule (``Config.cohort_allow``): a consenting best match between match and
    allow reads consented when it stands out from the face's other subjects; the cohort
    is every other enrolled subject or the 5 nearest (what an index could return)."""
    print("\n### Cohort rule between match and allow (zoomed views, every transform)\n")
    print(SUMMARY_HEAD)
    for e in (1, 3):
        print(_summary(f"{e}: default", simulate(data, DEFAULT, e)))
        for k, ds in ((0, (0.25, 0.30, 0.35)), (5, (0.15, 0.20, 0.25))):
            for d in ds:
                cfg = replace(DEFAULT, cohort_allow=d, cohort_k=k)
                print(_summary(f"{e}: cohort {'all' if k == 0 else k}, {d}",
                               simulate(data, cfg, e)))


def study_margin(data: list[dict[str, Any]], ts: list[str]) -> None:
    """``protected_margin``: how far below the best match a protected subject still
    makes the reading protected (the most restrictive reading)."""
    print("\n### protected_margin (zoomed views, every transform)\n")
    print(SUMMARY_HEAD)
    for e in (1, 3):
        for pm in (0.15, 0.12, 0.10, 0.05):
            print(_summary(f"{e}: {pm}", simulate(data, replace(DEFAULT, protected_margin=pm),
                                                  e)))


#: ``recog_cache.py --tag zmany --transforms clean --zooms`` with these, for ``zoomsets``.
ZMANY = (0.8, 0.85, 0.9, 0.95, 1.05, 1.1, 1.15, 1.2)


def _zoom_subset(data: list[dict[str, Any]], keep: tuple[float, ...]) -> list[dict[str, Any]]:
    """The cache with only the zoomed views ``keep`` (of ``ZMANY``) on every face."""
    sel = [ZMANY.index(z) for z in keep]
    out = []
    for d in data:
        images = {t: [replace(rec, faces=[replace(f, zooms=f.zooms[sel]) for f in rec.faces])
                      for rec in recs] for t, recs in d["images"].items()}
        out.append({**d, "images": images})
    return out


def study_zoomsets(data: list[dict[str, Any]], ts: list[str]) -> None:
    """Which zoomed views: held-out TAR (clean probes, pairs) at the impostor rates
    0.36 / 0.40 have for crop + mirror with 1 template. Needs ``--tag zmany``."""
    if tuple(data[0].get("zooms", ())) != ZMANY:
        raise SystemExit("zoomsets needs recog_cache.py --tag zmany --transforms clean "
                         "--zooms " + ",".join(map(str, ZMANY)))
    print("\n### Zoomed views: which zooms (held-out TAR at the crop + mirror rates)\n")
    rates = baseline_rates(data)
    print("| views | K=1 @0.36 rate | K=1 @0.40 rate | K=3 @0.36 rate | K=3 @0.40 rate |")
    print("|---|---:|---:|---:|---:|")
    sets: list[tuple[float, ...]] = [(), (0.9, 1.1), (0.85, 1.15), (0.8, 1.2),
                                     (0.8, 0.9, 1.1), (0.8, 0.9, 1.1, 1.2),
                                     (0.9, 0.95, 1.05, 1.1), (0.85, 0.9, 1.1, 1.15), ZMANY]
    for keep in sets:
        sub = _zoom_subset(data, keep) if keep else data
        cells = []
        for k in (1, 3):
            m = score_matrix(sub, k, "max", zooms=bool(keep))
            for far in rates:
                h = held_out(m[0], m[1], m[2], far)
                cells.append(f"{100 * h['tar_held']:.1f} % ({h['far_held']:.1e})")
        name = "crop + mirror" if not keep else " / ".join(map(str, keep))
        print(f"| {name} | " + " | ".join(cells) + " |")


def study_kmore(data: list[dict[str, Any]], ts: list[str], seed: int = 0) -> None:
    """More than 3 templates per person. The protocol enrols 3 photos, so the extra
    templates are other clean probes of the same person (leave-one-out: never the probe
    itself). Pair level, today's thresholds and rules (``DEFAULT`` vectors): a genuine
    pair reads permissive when its best template reaches ``match`` and its top-2 mean
    ``allow``; impostor rates are over every other person's clean probes."""
    print("\n### More templates per person (leave-one-out, clean probes, pairs)\n")
    print("| templates | genuine not read permissive | impostor best >= match "
          "| impostor permissive >= allow |")
    print("|---:|---:|---:|---:|")
    cfg = DEFAULT
    rng = np.random.default_rng(seed)
    for k in (1, 2, 3, 4, 5, 6):
        gen_ok = gen_n = imp_best = imp_perm = imp_n = 0
        for d in data:
            enrol = {r.ref: r for r in d["images"]["enrol"]}
            probes: dict[str, list[np.ndarray]] = {}
            for rec in d["images"]["clean"]:
                if rec.role != "stranger" and len(rec.faces) == 1 \
                        and rec.faces[0].size_px >= cfg.min_face_px:
                    probes.setdefault(rec.identity, []).append(face_vector(rec.faces[0], True,
                                                                           True))
            base = {i: [face_vector(enrol[r].faces[0], True, True) for r in refs
                        if len(enrol[r].faces) == 1]
                    for i, refs in d["meta"]["enrolment"].items()}
            for i, own in probes.items():
                if len(own) < 4 or len(base.get(i, [])) < 3:
                    continue

                def read(temps: list[np.ndarray], q: np.ndarray) -> tuple[bool, bool]:
                    sims = np.sort(np.stack(temps) @ q)[::-1]
                    return (bool(sims[0] >= cfg.match_threshold),
                            bool(sims[:2].mean() >= cfg.allow_threshold))

                for j, q in enumerate(own):
                    rest = [own[n] for n in rng.permutation(len(own)) if n != j]
                    best, perm = read(base[i][:k] + rest[: max(0, k - 3)], q)
                    gen_n += 1
                    gen_ok += int(best and perm)
                temps = base[i][:k] + own[: max(0, k - 3)]
                for o, theirs in probes.items():
                    if o == i:
                        continue
                    for q in theirs:
                        best, perm = read(temps, q)
                        imp_n += 1
                        imp_best += int(best)
                        imp_perm += int(perm)
        print(f"| {k} | {100 * (1 - gen_ok / gen_n):.1f} % of {gen_n} | "
              f"{imp_best / imp_n:.1e} | {imp_perm / imp_n:.1e} of {imp_n} |")


def study_compare(data: list[dict[str, Any]], other: list[dict[str, Any]], name: str,
                  other_name: str) -> None:
    """Today's rules (``DEFAULT``) on two caches made with different pipeline settings
    (``recog_cache.py --setting``), on the transforms both hold."""
    print(f"\n### {name} against {other_name} (DEFAULT rules)\n")
    ts = [t for t in transforms_of(other) if t in transforms_of(data)]
    res: dict[str, dict[str, Counts]] = {}
    for e in (1, 3):
        res[f"{e}: {name}"] = simulate(data, DEFAULT, e, ts)
        res[f"{e}: {other_name}"] = simulate(other, DEFAULT, e, ts)
    print(table(res, ts))


def study_recommended(data: list[dict[str, Any]], ts: list[str]) -> None:
    """Engine today vs the recommended rules, 1 and 3 enrolment photos, every transform."""
    print("\n### Recommended (default) rules vs the rules before (replay, same detections)\n")
    res: dict[str, dict[str, Counts]] = {}
    for e in (1, 3):
        res[f"{e} photo{'s' if e > 1 else ''}: before"] = simulate(data, Config(), e)
        res[f"{e} photo{'s' if e > 1 else ''}: recommended"] = simulate(data, RECOMMENDED, e)
        res[f"{e} photo{'s' if e > 1 else ''}: + flip_margin 0.08"] = simulate(
            data, replace(RECOMMENDED, flip_margin=0.08), e)
    print(table(res, ts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="base")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/recog-cache"),
                        help="where benchmarks/recog_cache.py wrote its arrays (--out)")
    parser.add_argument("--study", default="engine",
                        help="engine,rules,scoring,thresholds,flipband,heldout,recommended,zooms,"
                        "heldout_zooms,protect,cohort,margin,kmore, zoomsets (--tag zmany), "
                        "compare (--against TAG) or all")
    parser.add_argument("--transforms", default="key", help="'key', 'all' or names")
    parser.add_argument("--against", metavar="TAG",
                        help="study compare: the other cache (made with other settings)")
    args = parser.parse_args()
    data = load(args.tag, args.cache)
    ts = transforms_of(data) if args.transforms == "all" else (
        KEY_TRANSFORMS if args.transforms == "key" else args.transforms.split(","))
    studies = args.study.split(",") if args.study != "all" else [
        "engine", "rules", "scoring", "thresholds", "flipband", "heldout", "recommended",
        "zooms", "heldout_zooms", "protect", "cohort", "margin", "kmore"]
    for name in studies:
        if name == "rules":
            study_rules(data)
        elif name == "scoring":
            study_scoring(data)
        elif name == "compare":
            if not args.against:
                raise SystemExit("study compare needs --against TAG")
            study_compare(data, load(args.against, args.cache), args.tag, args.against)
        elif name == "heldout_zooms":
            study_heldout(data, ts, base=replace(RECOMMENDED, zooms=True))
        elif name in ("engine", "thresholds", "flipband", "heldout", "recommended", "zooms",
                      "protect", "cohort", "margin", "zoomsets", "kmore"):
            globals()[f"study_{name}"](data, ts)
        else:
            raise SystemExit(f"unknown study {name!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
