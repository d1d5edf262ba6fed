"""Match recall of the 1:N index at 1M on realistic data: usearch HNSW and Milvus.

    .venv/bin/python benchmarks/match_recall.py                    # 1M; usearch + Milvus Lite
    .venv/bin/python benchmarks/match_recall.py --fit-only         # the distractor model only
    .venv/bin/python benchmarks/match_recall.py --n 100000 --backends milvus \\
        --milvus-index HNSW --milvus-build '{"M":32,"efConstruction":128}'
    .venv/bin/python benchmarks/match_recall.py --milvus-uri http://127.0.0.1:19530  # a server

**Match recall** is the metric the gate needs: of the queries whose *exact* best match
(over everything enrolled) is at or above the match threshold (``Settings.match_threshold``,
0.36), the share for which the index returns that same subject first. A miss there is a
protected face the gate would not recognise.

Data. Genuine queries are real: every photo of ../shared/faces (or $GATE_TEST_FACES_DIR)
goes through the gate's own pipeline (YuNet + SFace, ``FaceGate.largest_face_vector``).
In each round one photo per identity is enrolled (a different photo each round) and every
other photo of that identity is a query (near-duplicates of the enrolled photo, listed in
near_duplicates.csv, are left out). They are planted among N synthetic *distractors*
(one template per distractor subject) drawn from a model fitted so that the cosine
similarity of a real query to a distractor follows the real impostor distribution
(a real query against photos of the *other* identities): unit(a*mean + Z*diag(s*sqrt(l))*U'
+ e*noise), with ``mean``, ``U``, ``l`` the mean and the leading principal axes of the real
embeddings and (a, s, e) fitted on quantiles of the impostor distribution. An isotropic
Gaussian on the 128-d sphere would give impostor cosines ~N(0, 0.088), far from the real
distribution, and an easy search problem.

Per backend it reports match recall (and how many queries it rests on), recall of the
genuine subject, and single-query k=3 search latency p50/p99 (wall clock; the machine may
be shared: the load average is printed), and the latency of the per-subject calls of the
decision path (``template_similarities``, ``remove``) on a few subjects per round. The
Milvus backend stores *protected* templates (gate/identity/protection.py); the script
also checks that protection changes no similarity and no decision on the real embeddings.

Everything expensive is cached under --cache-dir (default /tmp/gate-match-recall): the
real embeddings (derived biometric data: keep them out of the repository), the
distractors, the usearch index file and the Milvus Lite database. A second run reuses
them; delete the directory to start over.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gate.identity.index import IdentityIndex, IndexHit  # noqa: E402
from gate.identity.protection import TemplateProtector  # noqa: E402
from gate.settings import Settings  # noqa: E402

K = 3  # what FaceGate.check asks the index for
BENCH_KEY = bytes(range(32))  # a fixed template key: the benchmark's own frame
FIT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999, 0.9999)
PCA_RANK = 64
NEAR_TIE = 1e-3  # a miss whose subject is this close to the exact best is a rounding tie
SUBJECT_CALLS = 8  # template_similarities and remove calls timed per round
#: Milvus Lite 3 (pure Python + faiss) builds FLAT, HNSW, HNSW_SQ, IVF_FLAT, IVF_SQ8.
LITE3_CONFIGS = [
    {"index": "HNSW", "build": {"M": 32, "efConstruction": 128},
     "search": [{"ef": 64}, {"ef": 128}, {"ef": 256}]},
    {"index": "FLAT", "build": {}, "search": [{}]},
]
#: Milvus Lite 2.5 (the C++ engine) builds FLAT, IVF_FLAT and AUTOINDEX only.
LITE25_CONFIGS = [
    {"index": "FLAT", "build": {}, "search": [{}]},
    {"index": "IVF_FLAT", "build": {"nlist": 1024},
     "search": [{"nprobe": 16}, {"nprobe": 64}, {"nprobe": 128}]},
]
SERVER_CONFIGS = [
    {"index": "HNSW", "build": {"M": 32, "efConstruction": 128},
     "search": [{"ef": 64}, {"ef": 128}, {"ef": 256}]},
]


# -- real embeddings ------------------------------------------------------------------------


@dataclass
class Real:
    vectors: np.ndarray  # (n, 128) unit
    identities: list[str]
    paths: list[str]  # "<set>/<identity>/<file>"


def real_embeddings(faces: Path, cache: Path) -> Real:
    """Every photo through the gate's pipeline; the largest face of each (cached)."""
    target = cache / "real_embeddings.npz"
    if target.is_file():
        with np.load(target, allow_pickle=False) as data:
            return Real(np.array(data["vectors"]), [str(s) for s in data["identities"]],
                        [str(s) for s in data["paths"]])
    from gate.engine import FaceGate
    from gate.evaluation.calibrate import list_photos

    sets = sorted(p for p in faces.iterdir() if p.is_dir())
    photos = list_photos(sets)
    print(f"embedding {len(photos)} photos with the gate's pipeline...", file=sys.stderr,
          flush=True)
    kept: list[tuple[str, str, np.ndarray]] = []
    with tempfile.TemporaryDirectory(prefix="gate-mr-") as tmp, FaceGate.open(Path(tmp)) as gate:
        for photo in photos:
            vector = _largest_face_vector(gate, photo.path.read_bytes())
            if vector is not None:
                kept.append((photo.identity, str(photo.path.relative_to(faces)), vector))
    vectors = np.stack([np.asarray(v, dtype=np.float32) for _, _, v in kept])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    real = Real(vectors, [i for i, _, _ in kept], [p for _, p, _ in kept])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(target, vectors=real.vectors, identities=np.array(real.identities),
             paths=np.array(real.paths))
    os.chmod(target, 0o600)
    print(f"{len(kept)} of {len(photos)} photos gave a face", file=sys.stderr, flush=True)
    return real


def _largest_face_vector(gate: Any, data: bytes) -> np.ndarray | None:
    """The template of the largest face (``gate.pipeline``; older engines had
    ``FaceGate.largest_face_vector``)."""
    faces = getattr(gate, "faces", None)
    if faces is not None and hasattr(faces, "largest_face"):
        face = faces.largest_face(data)
        return None if face is None else np.asarray(face.vector)
    found = gate.largest_face_vector(data)
    return None if found is None else np.asarray(found[0])


def near_duplicate_pairs(faces: Path) -> set[frozenset[str]]:
    listed = faces / "near_duplicates.csv"
    if not listed.is_file():
        return set()
    with listed.open(newline="") as handle:
        return {frozenset((row["path_a"], row["path_b"])) for row in csv.DictReader(handle)}


@dataclass
class Round:
    enrolled: dict[str, int]  # identity -> row of real.vectors
    queries: list[int]  # rows of real.vectors


def plan_rounds(real: Real, rounds: int, duplicates: set[frozenset[str]],
                seed: int) -> list[Round]:
    """One enrolment photo per identity per round (a different one each round)."""
    rng = np.random.default_rng(seed)
    by_identity: dict[str, list[int]] = {}
    for row, identity in enumerate(real.identities):
        by_identity.setdefault(identity, []).append(row)
    order = {ident: [int(r) for r in rng.permutation(rows)]
             for ident, rows in sorted(by_identity.items()) if len(rows) >= 2}
    plans = []
    for r in range(rounds):
        enrolled = {ident: rows[r % len(rows)] for ident, rows in order.items()}
        queries = [row for ident, rows in order.items() for row in rows
                   if row != enrolled[ident] and frozenset(
                       (real.paths[row], real.paths[enrolled[ident]])) not in duplicates]
        plans.append(Round(enrolled, queries))
    return plans


def impostor_and_genuine(real: Real) -> tuple[np.ndarray, np.ndarray]:
    sims = real.vectors @ real.vectors.T
    ids = np.array(real.identities)
    same = ids[:, None] == ids[None, :]
    upper = np.triu(np.ones_like(same, dtype=bool), k=1)
    return sims[upper & ~same], sims[upper & same]


# -- the distractor model -------------------------------------------------------------------


@dataclass
class Model:
    mean: np.ndarray  # (dim,) unit
    axes: np.ndarray  # (rank, dim)
    scales: np.ndarray  # (rank,) sqrt of the eigenvalues
    a: float = 1.0
    s: float = 1.0
    e: float = 0.1

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        dim = self.mean.shape[0]
        out = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, 100_000):
            n = min(count, start + 100_000) - start
            z = rng.standard_normal((n, len(self.scales))) * (self.s * self.scales)
            noise = rng.standard_normal((n, dim)) * (self.e / np.sqrt(dim))
            block = self.a * self.mean + z @ self.axes + noise
            out[start : start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out

    def params(self) -> dict[str, float]:
        return {"a": self.a, "s": self.s, "e": self.e, "rank": float(len(self.scales))}


def fit_model(real: Real, impostor: np.ndarray, seed: int) -> tuple[Model, dict[str, Any]]:
    """Fit (a, s, e) so that cos(real photo, distractor) matches the impostor quantiles."""
    from scipy.optimize import minimize

    centre = real.vectors.mean(axis=0)
    centred = real.vectors - centre
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    eigen = singular**2 / (len(centred) - 1)
    rank = min(PCA_RANK, len(eigen))
    model = Model(centre / np.linalg.norm(centre), vt[:rank], np.sqrt(eigen[:rank]))
    target = np.quantile(impostor, FIT_QUANTILES)
    probe = real.vectors

    def loss(x: np.ndarray) -> float:
        model.a, model.s, model.e = (float(v) for v in np.abs(x))
        sample = model.sample(4000, np.random.default_rng(seed))
        got = np.quantile(probe @ sample.T, FIT_QUANTILES)
        return float(np.sum((got - target) ** 2))

    start = np.array([np.linalg.norm(centre), 1.0, 0.3])
    best = minimize(loss, start, method="Nelder-Mead",
                    options={"xatol": 1e-3, "fatol": 1e-7, "maxiter": 300})
    model.a, model.s, model.e = (float(v) for v in np.abs(best.x))
    check = model.sample(20_000, np.random.default_rng(seed + 1))
    model_sims = (probe @ check.T).ravel()
    among = check[:4000] @ check[:4000].T
    report = {
        "quantiles": list(FIT_QUANTILES),
        "real_impostor": np.quantile(impostor, FIT_QUANTILES).tolist(),
        "real_vs_distractor": np.quantile(model_sims, FIT_QUANTILES).tolist(),
        "distractor_vs_distractor": np.quantile(
            among[np.triu_indices(len(among), k=1)], FIT_QUANTILES).tolist(),
        "isotropic": np.quantile(
            (probe @ _isotropic(20_000, probe.shape[1], seed).T).ravel(),
            FIT_QUANTILES).tolist(),
        "real_impostor_mean_std": [float(impostor.mean()), float(impostor.std())],
        "model_mean_std": [float(model_sims.mean()), float(model_sims.std())],
        "params": model.params(),
    }
    return model, report


def _isotropic(count: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def distractors(model: Model, n: int, seed: int, cache: Path) -> np.ndarray:
    target = cache / f"distractors-{n}-{seed}.npy"
    if target.is_file():
        return np.load(target, mmap_mode="r")
    data = model.sample(n, np.random.default_rng(seed + 7))
    np.save(target, data)
    return np.load(target, mmap_mode="r")


def distractor_ids(n: int) -> list[str]:
    return [f"dx{i:07d}" for i in range(n)]


# -- exact truth ----------------------------------------------------------------------------


def best_over(gallery: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(best similarity, best row) of each query over ``gallery``, exact, in chunks."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    arg = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(gallery), 200_000):
        block = np.asarray(gallery[start : start + 200_000], dtype=np.float32)
        sims = queries @ block.T
        row_best = sims.argmax(axis=1)
        values = sims[np.arange(len(queries)), row_best]
        better = values > best
        best[better] = values[better]
        arg[better] = row_best[better] + start
    return best, arg


# -- backends -------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    index: IdentityIndex
    settings: list[tuple[str, Callable[[], None]]]  # (label, apply) search-time settings
    build_s: float | None
    info: dict[str, Any] = field(default_factory=dict)
    #: wall-clock ms of the per-subject calls (template_similarities, remove)
    subject_ms: dict[str, list[float]] = field(
        default_factory=lambda: {"template_similarities": [], "remove": []})


def usearch_backend(data: np.ndarray, ids: list[str], cache: Path, args: argparse.Namespace,
                    stale: list[str]) -> Backend:
    from gate.identity.ann import HnswIndex

    path = cache / f"usearch-{len(ids)}-{args.seed}.usearch"
    build_s = None
    index = None
    if path.is_file():
        try:
            index = HnswIndex.load(path, view=False)
        except Exception as exc:
            print(f"cached usearch index unusable ({exc}); rebuilding", file=sys.stderr)
    for subject in stale if index is not None else []:
        index.remove(subject)
    if index is None or len(index) != len(ids):
        print(f"building usearch HNSW over {len(ids):,} distractors...", file=sys.stderr,
              flush=True)
        index = HnswIndex(data.shape[1])
        start = time.perf_counter()
        index.add_many(ids, np.asarray(data))
        build_s = time.perf_counter() - start
        index.save(path)
        print(f"built in {build_s:.0f}s", file=sys.stderr, flush=True)
    hnsw = index

    def ef(value: int) -> Callable[[], None]:
        def apply() -> None:
            hnsw.expansion_search = value
        return apply

    settings = [(f"ef={v}", ef(v)) for v in args.usearch_ef]
    return Backend(f"usearch HNSW {hnsw.dtype} M={hnsw.connectivity} "
                   f"ef_add={hnsw.expansion_add}", hnsw, settings, build_s)


def milvus_backend(data: np.ndarray, ids: list[str], cache: Path, args: argparse.Namespace,
                   config: dict[str, Any], stale: list[str]) -> Backend:
    from gate.identity.milvus import MilvusIndex, MilvusParams

    index_type = str(config["index"])
    build = dict(config.get("build", {}))
    searches = [dict(s) for s in config.get("search", [{}])]
    params = MilvusParams(index_type=index_type, build_params=build, search_params=searches[0])
    # Milvus Lite 2.5 keeps a .db file, Lite 3 a .db directory: one cache per engine line.
    lite = "milvus-lite" + _lite_version().split(".")[0]
    uri = args.milvus_uri or str(cache / f"{lite}-{len(ids)}-{args.seed}.db")
    prefix = "bench_" + "".join(c for c in index_type.lower() if c.isalnum())
    protector = TemplateProtector(BENCH_KEY, data.shape[1])
    index = MilvusIndex(uri, data.shape[1], protector, pack_id=json.dumps(build, sort_keys=True),
                        prefix=prefix, params=params, timeout_s=3600.0)
    for subject in stale:  # left over by an interrupted run
        index.remove(subject)
    build_s = None
    if len(index) != len(ids):
        print(f"loading {len(ids):,} distractors into Milvus ({index_type} {build})...",
              file=sys.stderr, flush=True)
        index.clear()
        start = time.perf_counter()
        for begin in range(0, len(ids), 50_000):
            index.add_many(ids[begin : begin + 50_000], np.asarray(data[begin : begin + 50_000]))
            if (begin // 50_000) % 4 == 3:
                print(f"  {begin + 50_000:,} rows written in {time.perf_counter() - start:.0f}s",
                      file=sys.stderr, flush=True)
        print(f"  all rows written in {time.perf_counter() - start:.0f}s; waiting for the "
              "segment indexes...", file=sys.stderr, flush=True)
        _milvus_settle(index)
        build_s = time.perf_counter() - start
        print(f"loaded and indexed in {build_s:.0f}s", file=sys.stderr, flush=True)
    else:
        _milvus_settle(index)
    milvus = index

    def use(search: dict[str, Any]) -> Callable[[], None]:
        def apply() -> None:
            milvus.params = MilvusParams(index_type=index_type, build_params=build,
                                         search_params=search)
        return apply

    settings = [(json.dumps(search, separators=(",", ":")), use(search)) for search in searches]
    where = "Milvus Lite " + _lite_version() if index.is_lite else "Milvus server"
    return Backend(f"{where} {index_type} {json.dumps(build, separators=(',', ':'))}",
                   index, settings, build_s, {"collection": index.collection})


def _milvus_settle(index: Any) -> None:
    """Flush, and wait until every segment has its vector index before any query is timed
    (Milvus builds segment indexes in the background). Benchmark-only reach-ins, per
    engine line; each raises rather than time searches on half-indexed data.

    - Milvus Lite 3 (pure Python + faiss, in this process): ``describe_index`` reports
      every row indexed at once, so it cannot be polled. Drain the collection's background
      worker (releasing and loading while it writes an index file reads a torn file), then
      build, in this thread, any segment index the worker left out (it only logs a failed
      build).
    - Milvus Lite 2.5 (the C++ engine in a subprocess): releasing and loading builds what
      is missing, synchronously.
    - A server: poll ``describe_index`` until no row is pending, then release and load.
    """
    client = index._client
    client.flush(index.collection)
    if index.is_lite and _lite_version().startswith("3."):
        collection = _lite3_collection(index)
        collection._wait_for_bg()
        built = collection._ensure_loaded_segments_indexed()
        if built:
            print(f"  settle: built {built} segment index(es) the background worker left out",
                  file=sys.stderr, flush=True)
        return
    if not index.is_lite:
        _wait_for_server_index(client, index.collection, index.timeout_s)
    client.release_collection(index.collection)  # a load builds what is missing
    client.load_collection(index.collection)


def _lite3_collection(index: Any) -> Any:
    """The engine-side collection object behind ``index`` in this process (Milvus Lite 3)."""
    manager = __import__("milvus_lite.server_manager", fromlist=["x"]).server_manager_instance
    servers = getattr(manager, "_servers", None)
    if not isinstance(servers, dict):
        raise RuntimeError(f"milvus-lite {_lite_version()}: no server table to settle through; "
                           "update _milvus_settle for this version")
    wanted = os.path.realpath(index.uri)
    entry = next((value for key, value in servers.items()
                  if os.path.realpath(key) == wanted), None)
    if entry is None:
        raise RuntimeError(f"no Milvus Lite server runs for {index.uri} in this process")
    db = entry[1]
    collection = db.get_collection(index.collection)
    for needed in ("_wait_for_bg", "_ensure_loaded_segments_indexed"):
        if not hasattr(collection, needed):
            raise RuntimeError(f"milvus-lite {_lite_version()}: Collection.{needed} is gone; "
                               "update _milvus_settle for this version")
    return collection


def _wait_for_server_index(client: Any, collection: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        pending = 0
        for name in client.list_indexes(collection):
            info = client.describe_index(collection, name)
            pending += int(info.get("pending_index_rows", 0) or 0)
            pending += max(0, int(info.get("total_rows", 0) or 0)
                           - int(info.get("indexed_rows", 0) or 0))
        if pending == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{collection}: {pending} rows still unindexed after "
                               f"{timeout_s:.0f}s")
        time.sleep(2.0)


def _lite_version() -> str:
    from importlib.metadata import version

    return version("milvus-lite")


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Outcome:
    label: str
    eligible: int = 0
    same: int = 0
    genuine_eligible: int = 0
    genuine_found: int = 0
    decided: int = 0  # eligible queries whose index top-1 is also at/above the threshold
    shortfalls: list[float] = field(default_factory=list)  # per miss: exact best - exact(top-1)
    per_round: list[float] = field(default_factory=list)  # match recall of each round
    latencies_ms: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms)
        return {
            "setting": self.label,
            "match_recall": self.same / self.eligible if self.eligible else float("nan"),
            "eligible_queries": self.eligible,
            "misses": self.eligible - self.same,
            "decision_recall": self.decided / self.eligible if self.eligible else float("nan"),
            "near_tie_misses": int(sum(x <= NEAR_TIE for x in self.shortfalls)),
            "max_shortfall": max(self.shortfalls, default=0.0),
            "per_round": self.per_round,
            "genuine_recall": self.genuine_found / self.genuine_eligible
            if self.genuine_eligible else float("nan"),
            "genuine_eligible": self.genuine_eligible,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "timed_queries": len(lat),
        }


def run_backend(backend: Backend, real: Real, rounds: list[Round], data: np.ndarray,
                ids: list[str], dist_best: np.ndarray, dist_arg: np.ndarray, threshold: float,
                latency_queries: int) -> list[dict[str, Any]]:
    outcomes = {label: Outcome(label) for label, _ in backend.settings}
    row_of = {subject: i for i, subject in enumerate(ids)}
    for number, plan in enumerate(rounds):
        enrolled = {ident: f"rl_{number}_{i}" for i, ident in enumerate(sorted(plan.enrolled))}
        for ident, subject in enrolled.items():
            backend.index.add(subject, real.vectors[plan.enrolled[ident]][None, :])
        gallery_rows = [plan.enrolled[ident] for ident in sorted(plan.enrolled)]
        gallery_subjects = [enrolled[ident] for ident in sorted(plan.enrolled)]
        queries = real.vectors[plan.queries]
        real_best, real_arg = best_over(real.vectors[gallery_rows], queries)
        q_dist_best, q_dist_arg = dist_best[plan.queries], dist_arg[plan.queries]
        truth = [gallery_subjects[int(real_arg[i])] if real_best[i] >= q_dist_best[i]
                 else ids[int(q_dist_arg[i])] for i in range(len(queries))]
        truth_sim = np.maximum(real_best, q_dist_best)
        own = [enrolled[real.identities[row]] for row in plan.queries]
        real_row = {enrolled[ident]: plan.enrolled[ident] for ident in enrolled}

        def exact_sim(query: np.ndarray, subject: str | None,
                      real_row: dict[str, int] = real_row) -> float:
            if subject is None:
                return -1.0
            vector = real.vectors[real_row[subject]] if subject in real_row else \
                np.asarray(data[row_of[subject]], dtype=np.float32)
            return float(query @ vector)
        for label, apply in backend.settings:
            apply()
            out = outcomes[label]
            hits: list[list[IndexHit]] = []
            for start in range(0, len(queries), 64):
                hits.extend(backend.index.search(queries[start : start + 64], K))
            top = [h[0].subject_id if h else None for h in hits]
            top_sim = [h[0].similarity if h else -1.0 for h in hits]
            round_eligible, round_same = out.eligible, out.same
            for i in range(len(queries)):
                if truth_sim[i] >= threshold:
                    out.eligible += 1
                    out.same += top[i] == truth[i]
                    out.decided += top_sim[i] >= threshold
                    if top[i] != truth[i]:
                        out.shortfalls.append(float(truth_sim[i])
                                              - exact_sim(queries[i], top[i]))
                    if truth[i] == own[i]:
                        out.genuine_eligible += 1
                        out.genuine_found += top[i] == own[i]
            out.per_round.append((out.same - round_same) / max(1, out.eligible - round_eligible))
            for q in queries[:latency_queries]:
                begin = time.perf_counter()
                backend.index.search(q[None, :], K)
                out.latencies_ms.append((time.perf_counter() - begin) * 1000)
        # The per-subject calls of the decision path, timed on a few subjects per round:
        # the top-2 rule's template similarities (a filter on subject_id) and ``remove``
        # (a filter read, then a delete). The other subjects are removed through
        # ``_cleanup``, which may take a faster benchmark-only path.
        step = max(1, len(plan.queries) // SUBJECT_CALLS)
        for row in plan.queries[::step][:SUBJECT_CALLS]:
            begin = time.perf_counter()
            backend.index.template_similarities(real.vectors[row],
                                                enrolled[real.identities[row]])
            backend.subject_ms["template_similarities"].append(
                (time.perf_counter() - begin) * 1000)
        for number, (ident, subject) in enumerate(sorted(enrolled.items())):
            if number < SUBJECT_CALLS:
                begin = time.perf_counter()
                backend.index.remove(subject)
                backend.subject_ms["remove"].append((time.perf_counter() - begin) * 1000)
            else:
                _cleanup(backend.index, subject, real.vectors[plan.enrolled[ident]][None, :])
    return [outcomes[label].row() for label, _ in backend.settings]


def _cleanup(index: Any, subject: str, templates: np.ndarray) -> None:
    """Remove a subject the benchmark enrolled. On Milvus, delete its rows by primary key
    (the keys are a hash of subject and template, so the benchmark knows them): a
    filtered read per subject costs a scan of the collection (measured apart, above)."""
    if hasattr(index, "_delete_pks"):
        from gate.identity.milvus import template_pk

        with index._lock:
            index._delete_pks([template_pk(subject, row) for row in templates])
        return
    index.remove(subject)


def protection_check(real: Real, threshold: float) -> dict[str, Any]:
    """Similarities and decisions on the real embeddings, raw against protected."""
    protector = TemplateProtector(BENCH_KEY, real.vectors.shape[1])
    raw = real.vectors @ real.vectors.T
    prot = protector.protect(real.vectors)
    protected = prot @ prot.T
    upper = np.triu_indices(len(raw), k=1)
    diff = np.abs(raw - protected)[upper]
    decisions_raw = raw[upper] >= threshold
    decisions_prot = protected[upper] >= threshold
    np.fill_diagonal(raw, -2.0)
    np.fill_diagonal(protected, -2.0)
    other = TemplateProtector(bytes(range(1, 33)), real.vectors.shape[1]).protect(real.vectors)
    cross = np.sum(prot * other, axis=1)  # the same face under two deployments' keys
    return {
        "pairs": len(diff),
        "max_abs_similarity_difference": float(diff.max()),
        "decisions_differ": int(np.sum(decisions_raw != decisions_prot)),
        "nearest_neighbour_differs": int(np.sum(raw.argmax(1) != protected.argmax(1))),
        "raw_vs_protected_same_face_cos_mean_abs": float(
            np.mean(np.abs(np.sum(real.vectors * prot, axis=1)))),
        "two_keys_same_face_cos_max_abs": float(np.max(np.abs(cross))),
    }


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    default_faces = Path(os.environ.get("GATE_TEST_FACES_DIR", REPO.parent / "shared" / "faces"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=default_faces)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/gate-match-recall"))
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic distractors")
    parser.add_argument("--rounds", type=int, default=4, help="enrolment choices per identity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default="usearch,milvus")
    parser.add_argument("--usearch-ef", type=lambda s: [int(x) for x in s.split(",")],
                        default=[64, 128])
    parser.add_argument("--milvus-uri", default=None,
                        help="a Milvus server (http://...); default: Milvus Lite in the cache")
    parser.add_argument("--milvus-configs", type=json.loads, default=None,
                        help='JSON list of {"index", "build", "search": [...]} (default: '
                        'per engine, see LITE3_CONFIGS, LITE25_CONFIGS, SERVER_CONFIGS)')
    parser.add_argument("--latency-queries", type=int, default=300,
                        help="single-query searches timed per round and setting")
    parser.add_argument("--fit-only", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)

    print("$ " + " ".join([Path(sys.executable).name, *sys.argv]))
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(args.cache_dir, 0o700)
    threshold = Settings().match_threshold
    real = real_embeddings(args.faces, args.cache_dir)
    impostor, genuine = impostor_and_genuine(real)
    model, fit = fit_model(real, impostor, args.seed)
    rounds = plan_rounds(real, args.rounds, near_duplicate_pairs(args.faces), args.seed)
    protection = protection_check(real, threshold)
    result: dict[str, Any] = {
        "n_distractors": args.n, "threshold": threshold, "photos": len(real.identities),
        "identities": len(set(real.identities)), "rounds": args.rounds,
        "queries_per_round": [len(r.queries) for r in rounds],
        "genuine_pairs_at_or_above_threshold": float(np.mean(genuine >= threshold)),
        "impostor_pairs_at_or_above_threshold": float(np.mean(impostor >= threshold)),
        "fit": fit, "protection": protection, "load_average_start": os.getloadavg()[0],
    }
    _print_fit(result)
    if args.fit_only:
        return 0

    data = distractors(model, args.n, args.seed, args.cache_dir)
    ids = distractor_ids(args.n)
    started = time.perf_counter()
    dist_best, dist_arg = best_over(data, real.vectors)
    result["exact_scan_s"] = time.perf_counter() - started
    result["queries_with_a_distractor_at_or_above_threshold"] = float(
        np.mean(dist_best >= threshold))
    stale = [f"rl_{r}_{i}" for r in range(args.rounds) for i in range(len(rounds[0].enrolled))]
    backends = []
    for name in args.backends.split(","):
        if name == "usearch":
            backends.append(usearch_backend(data, ids, args.cache_dir, args, stale))
        elif name == "milvus":
            configs = args.milvus_configs or (
                SERVER_CONFIGS if args.milvus_uri else
                LITE3_CONFIGS if _lite_version().startswith("3.") else LITE25_CONFIGS)
            backends += [milvus_backend(data, ids, args.cache_dir, args, c, stale)
                         for c in configs]
        else:
            parser.error(f"unknown backend {name}")
    result["backends"] = []
    for backend in backends:
        print(f"measuring {backend.name}...", file=sys.stderr, flush=True)
        rows = run_backend(backend, real, rounds, data, ids, dist_best, dist_arg, threshold,
                           args.latency_queries)
        result["backends"].append({
            "name": backend.name, "build_s": backend.build_s, **backend.info, "rows": rows,
            "subject_calls_ms": {
                call: {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                       "calls": len(ms)} for call, ms in backend.subject_ms.items() if ms}})
        _print_backend(result["backends"][-1])
    result["load_average_end"] = os.getloadavg()[0]
    print(f"\nload average {result['load_average_start']:.1f} -> "
          f"{result['load_average_end']:.1f} (2 cores, shared)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _print_fit(result: dict[str, Any]) -> None:
    fit = result["fit"]
    print(f"\n{result['photos']} real photos, {result['identities']} identities; "
          f"queries per round {result['queries_per_round']}; match threshold "
          f"{result['threshold']}")
    print("real pairs at/above threshold: genuine "
          f"{result['genuine_pairs_at_or_above_threshold']:.3f}, impostor "
          f"{result['impostor_pairs_at_or_above_threshold']:.5f}")
    print("\ncosine quantiles      " + " ".join(f"{q:>7}" for q in fit["quantiles"]))
    for key, label in (("real_impostor", "real impostor pairs"),
                       ("real_vs_distractor", "real vs distractor"),
                       ("distractor_vs_distractor", "distractor pairs"),
                       ("isotropic", "real vs isotropic")):
        print(f"{label:<22}" + " ".join(f"{v:>7.3f}" for v in fit[key]))
    p = fit["params"]
    print(f"model: a={p['a']:.3f} s={p['s']:.3f} e={p['e']:.3f} rank={int(p['rank'])}; "
          f"mean/std real {fit['real_impostor_mean_std'][0]:.3f}/"
          f"{fit['real_impostor_mean_std'][1]:.3f}, model {fit['model_mean_std'][0]:.3f}/"
          f"{fit['model_mean_std'][1]:.3f}")
    prot = result["protection"]
    print(f"\nprotection on {prot['pairs']:,} real pairs: max |cos raw - cos protected| "
          f"{prot['max_abs_similarity_difference']:.2e}; decisions that differ "
          f"{prot['decisions_differ']}; nearest neighbours that differ "
          f"{prot['nearest_neighbour_differs']}; |cos(raw, protected)| of a face "
          f"{prot['raw_vs_protected_same_face_cos_mean_abs']:.3f} (mean); same face under "
          f"two keys: max |cos| {prot['two_keys_same_face_cos_max_abs']:.3f}")


def _print_backend(entry: dict[str, Any]) -> None:
    build = "cached" if entry["build_s"] is None else f"{entry['build_s']:.0f}s"
    print(f"\n{entry['name']} (build {build})")
    print(f"  {'setting':<16} {'match recall':>12} {'eligible':>8} {'misses':>6} {'ties':>5} "
          f"{'max gap':>7} {'decision':>8} {'genuine recall':>14} {'(of)':>5} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'timed':>6}")
    for row in entry["rows"]:
        print(f"  {row['setting']:<16} {row['match_recall']:>12.4f} {row['eligible_queries']:>8}"
              f" {row['misses']:>6} {row['near_tie_misses']:>5} {row['max_shortfall']:>7.4f}"
              f" {row['decision_recall']:>8.4f} {row['genuine_recall']:>14.4f}"
              f" {row['genuine_eligible']:>5} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} "
              f"{row['timed_queries']:>6}")
    for row in entry["rows"]:
        rounds = " ".join(f"{r:.4f}" for r in row["per_round"])
        print(f"  {row['setting']:<16} match recall per round: {rounds}")
    for call, ms in entry.get("subject_calls_ms", {}).items():
        print(f"  {call}: p50 {ms['p50']:.2f} ms, p99 {ms['p99']:.2f} ms ({ms['calls']} calls)")
    print(f"  (ties: misses within {NEAR_TIE} of the exact best; max gap: the largest "
          "exact-similarity shortfall of a miss)")


if __name__ == "__main__":
    raise SystemExit(main())
