"""1:N identity index: exact numpy search against usearch HNSW, 10k to 1M templates.

    .venv/bin/python benchmarks/index.py                          # 10k, 100k, 1M at 128-d
    .venv/bin/python benchmarks/index.py --sizes 10000,50000 --json out.json
    .venv/bin/python benchmarks/index.py --sizes 1000000 --dim 512 --dtype i8
    .venv/bin/python benchmarks/index.py --sweep --sizes 100000   # pick HNSW parameters
    .venv/bin/python benchmarks/index.py --churn 0.1 --sizes 100000  # removal, re-enrolment

Synthetic SFace-like data (128-d unit vectors, fixed seed): subject centres are drawn
from an anisotropic Gaussian (per-axis scale (i+1)^-1/4 in a random rotation, effective
dimension ~80, impostor cosine std ~0.1); each subject has 1-3 templates at cosine ~0.85
to its centre. Genuine queries are noisy copies of one enrolled template (cosine ~0.78 to
it); impostor queries come from subjects that were never enrolled. N counts templates.

Per size it reports build time, save and load (memory-mapped view and full load) time,
memory (RSS delta, usearch's own count, file size), single-query k=5 latency p50/p99 for
both indexes (HNSW also on the reloaded view), recall@1 of HNSW against exact search
(top-1 subject agreement; genuine and impostor queries separately), identification
accuracy, the largest similarity difference, and the ratios HNSW/exact.
Temporary files go to a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gate.identity.ann import (  # noqa: E402
    DEFAULT_CONNECTIVITY,
    DEFAULT_DTYPE,
    DEFAULT_EXPANSION_ADD,
    DEFAULT_EXPANSION_SEARCH,
    SIDE_TABLE_SUFFIX,
    HnswIndex,
)
from gate.identity.index import ExactIndex, IndexHit  # noqa: E402

TEMPLATE_NOISE = 0.6  # cos(template, centre) ~ 1/sqrt(1 + 0.6^2) ~ 0.86
QUERY_NOISE = 0.8  # cos(query, its template) ~ 0.78
IMPOSTOR_SHARE = 0.2
K = 5


# -- data ---------------------------------------------------------------------------------


@dataclass
class Data:
    templates: np.ndarray  # (n, dim) float32 unit
    owners: list[str]  # subject id per template row
    queries: np.ndarray  # (q, dim)
    truth: list[str | None]  # enrolled subject behind each query, None for impostors


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(n: int, dim: int, n_queries: int, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    scale = (np.arange(dim) + 1.0) ** -0.25

    def centres(count: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, 200_000):
            stop = min(count, start + 200_000)
            z = rng.standard_normal((stop - start, dim)) * scale
            out[start:stop] = z @ rotation.T
        return _unit(out)

    def noisy(rows: np.ndarray, sigma: float) -> np.ndarray:
        out = np.empty_like(rows)
        for start in range(0, len(rows), 200_000):
            block = rows[start : start + 200_000]
            noise = rng.standard_normal(block.shape).astype(np.float32) * (sigma / np.sqrt(dim))
            out[start : start + 200_000] = block + noise
        return _unit(out)

    per_subject = rng.integers(1, 4, size=n)  # 1-3 templates; more subjects than needed
    n_subjects = int(np.searchsorted(np.cumsum(per_subject), n)) + 1
    per_subject = per_subject[:n_subjects]
    per_subject[-1] -= int(per_subject.sum()) - n
    subject_of_row = np.repeat(np.arange(n_subjects), per_subject)
    templates = noisy(centres(n_subjects)[subject_of_row], TEMPLATE_NOISE)
    names = [f"{i:08x}-{int(rng.integers(1 << 62)):016x}" for i in range(n_subjects)]
    owners = [names[i] for i in subject_of_row]

    n_impostors = int(n_queries * IMPOSTOR_SHARE)
    n_genuine = n_queries - n_impostors
    rows = rng.choice(n, size=n_genuine, replace=False)
    genuine = noisy(templates[rows], QUERY_NOISE)
    impostors = noisy(noisy(centres(n_impostors), TEMPLATE_NOISE), QUERY_NOISE)
    truth: list[str | None] = [owners[int(r)] for r in rows] + [None] * n_impostors
    return Data(templates, owners, np.concatenate([genuine, impostors]), truth)


# -- measuring ----------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def latencies_ms(search: Callable[[np.ndarray, int], list[list[IndexHit]]],
                 queries: np.ndarray, cpu_clock: Callable[[], int] = time.thread_time_ns,
                 ) -> tuple[dict[str, float], list[list[IndexHit]]]:
    """Single-query k=5 latency: wall clock, and CPU time (barely moved by other load).

    HNSW searches one query on the calling thread, so its CPU time is the thread's; exact
    search runs BLAS threads, so it is measured with the process clock.
    """
    for q in queries[:20]:  # warm up
        search(q[None, :], K)
    wall, cpu = [], []
    hits: list[list[IndexHit]] = []
    for q in queries:
        start, start_cpu = time.perf_counter_ns(), cpu_clock()
        result = search(q[None, :], K)
        cpu.append(cpu_clock() - start_cpu)
        wall.append(time.perf_counter_ns() - start)
        hits.append(result[0])
    w, c = np.asarray(wall) / 1e6, np.asarray(cpu) / 1e6
    return {"p50_ms": float(np.percentile(w, 50)), "p99_ms": float(np.percentile(w, 99)),
            "cpu_p50_ms": float(np.percentile(c, 50)),
            "cpu_p99_ms": float(np.percentile(c, 99))}, hits


def top1(hits: list[list[IndexHit]]) -> list[str | None]:
    return [h[0].subject_id if h else None for h in hits]


def agreement(a: list[str | None], b: list[str | None], mask: np.ndarray) -> float:
    same = np.array([x == y for x, y in zip(a, b, strict=True)])
    return float(same[mask].mean()) if mask.any() else float("nan")


def build_exact(data: Data, dim: int) -> tuple[ExactIndex, float, int]:
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    index = ExactIndex(dim)
    row = 0
    while row < len(data.owners):  # one add per subject, as enrolment does
        stop = row + 1
        while stop < len(data.owners) and data.owners[stop] == data.owners[row]:
            stop += 1
        index.add(data.owners[row], data.templates[row:stop])
        row = stop
    return index, time.perf_counter() - start, rss_bytes() - before


def build_hnsw(data: Data, dim: int, params: dict[str, Any]) -> tuple[HnswIndex, float, int]:
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    index = HnswIndex(dim, **params)
    index.add_many(data.owners, data.templates)
    return index, time.perf_counter() - start, rss_bytes() - before


def exact_truth(index: ExactIndex, queries: np.ndarray) -> list[list[IndexHit]]:
    out: list[list[IndexHit]] = []
    chunk = max(1, 100_000_000 // max(1, len(index)))  # ~400 MB of similarities at a time
    for start in range(0, len(queries), chunk):
        out.extend(index.search(queries[start : start + chunk], K))
    return out


# -- one size -----------------------------------------------------------------------------


def load_average() -> float:
    return os.getloadavg()[0]


def compare(hits: list[list[IndexHit]], truth_hits: list[list[IndexHit]],
            data: Data) -> dict[str, float]:
    """HNSW against exact search: recall@1 and how far its top-1 similarity falls short."""
    genuine = np.array([t is not None for t in data.truth])
    approx_top, exact_top = top1(hits), top1(truth_hits)
    shortfall = np.array([(e[0].similarity - h[0].similarity) if h and e else np.nan
                          for h, e in zip(hits, truth_hits, strict=True)])
    same = np.array([a == b for a, b in zip(approx_top, exact_top, strict=True)])
    impostor_exact = np.array([e[0].similarity if e else np.nan for e in truth_hits])[~genuine]
    return {
        "recall1_genuine": float(same[genuine].mean()),
        "recall1_impostor": float(same[~genuine].mean()) if (~genuine).any() else float("nan"),
        "recall1_all": float(same.mean()),
        "accuracy": agreement(approx_top, data.truth, genuine),
        # f16/i8 rounding when both found the same template; search misses otherwise.
        "max_sim_gap_same": float(np.nanmax(np.abs(shortfall[same]))) if same.any() else 0.0,
        "max_shortfall_impostor": float(np.nanmax(shortfall[~genuine]))
        if (~genuine).any() else float("nan"),
        "max_impostor_similarity": float(np.nanmax(impostor_exact))
        if len(impostor_exact) else float("nan"),
    }


def run_size(n: int, dim: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    print(f"\n== N={n:,} dim={dim} ==", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    data = make_data(n, dim, args.queries)
    print(f"data generated in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    params = {"dtype": args.dtype, "connectivity": args.connectivity,
              "expansion_add": args.expansion_add, "expansion_search": args.ef_search[0]}
    result: dict[str, Any] = {"n": n, "dim": dim, "queries": len(data.queries),
                              "impostor_queries": sum(t is None for t in data.truth),
                              "subjects": len(set(data.owners)), "hnsw_params": params,
                              "load_average_start": load_average()}

    hnsw, build_s, rss = build_hnsw(data, dim, params)
    result["hnsw_build_s"] = build_s
    result["hnsw_rss_mb"] = rss / 1e6
    result["hnsw_usearch_mb"] = hnsw.memory_usage / 1e6
    print(f"hnsw built in {build_s:.1f}s", file=sys.stderr, flush=True)

    path = workdir / f"index-{n}-{dim}.usearch"
    start = time.perf_counter()
    hnsw.save(path)
    result["hnsw_save_s"] = time.perf_counter() - start
    result["hnsw_file_mb"] = path.stat().st_size / 1e6
    result["side_table_mb"] = Path(str(path) + SIDE_TABLE_SUFFIX).stat().st_size / 1e6

    exact, exact_build_s, exact_rss = build_exact(data, dim)
    result["exact_build_s"] = exact_build_s
    result["exact_rss_mb"] = exact_rss / 1e6
    start = time.perf_counter()
    truth_hits = exact_truth(exact, data.queries)
    result["exact_batch_s"] = time.perf_counter() - start
    n_lat = min(len(data.queries), args.exact_latency_queries)
    lat, _ = latencies_ms(exact.search, data.queries[:n_lat], time.process_time_ns)
    result["exact"] = {**lat, "latency_queries": n_lat,
                       "accuracy": agreement(top1(truth_hits), data.truth,
                                             np.array([t is not None for t in data.truth]))}
    print(f"exact: {lat}", file=sys.stderr, flush=True)
    del exact
    gc.collect()

    runs = []
    for ef in args.ef_search:
        hnsw.expansion_search = ef
        lat, hits = latencies_ms(hnsw.search, data.queries)
        runs.append({"ef_search": ef, **lat, **compare(hits, truth_hits, data)})
        print(f"hnsw: {runs[-1]}", file=sys.stderr, flush=True)
    result["hnsw"] = runs
    hnsw.expansion_search = args.ef_search[0]
    reference = hnsw.search(data.queries[:200], K)
    del hnsw
    gc.collect()

    # Restart: memory-map the saved file (the page cache is warm: it was just written).
    before = rss_bytes()
    start = time.perf_counter()
    viewed = HnswIndex.load(path, view=True)
    result["hnsw_view_load_s"] = time.perf_counter() - start
    lat, _ = latencies_ms(viewed.search, data.queries)
    result["view"] = {**lat, "rss_mb": (rss_bytes() - before) / 1e6,
                      "same_results": viewed.search(data.queries[:200], K) == reference}
    del viewed
    gc.collect()
    start = time.perf_counter()
    loaded = HnswIndex.load(path, view=False)
    result["hnsw_full_load_s"] = time.perf_counter() - start
    del loaded
    path.unlink()
    Path(str(path) + SIDE_TABLE_SUFFIX).unlink()

    result["ratio_p99"] = runs[0]["p99_ms"] / result["exact"]["p99_ms"]
    result["ratio_cpu_p99"] = runs[0]["cpu_p99_ms"] / result["exact"]["cpu_p99_ms"]
    result["ratio_memory"] = result["hnsw_usearch_mb"] / (n * dim * 4 / 1e6)
    result["load_average_end"] = load_average()
    return result


# -- parameter sweep ----------------------------------------------------------------------


def sweep(n: int, dim: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    data = make_data(n, dim, args.queries)
    exact, _, _ = build_exact(data, dim)
    truth_hits = exact_truth(exact, data.queries)
    del exact
    rows = []
    for dtype in args.sweep_dtypes:
        for connectivity in args.sweep_connectivity:
            for expansion_add in args.sweep_expansion_add:
                params = {"dtype": dtype, "connectivity": connectivity,
                          "expansion_add": expansion_add}
                index, build_s, _ = build_hnsw(data, dim, params)
                for ef in args.ef_search:
                    index.expansion_search = ef
                    lat, hits = latencies_ms(index.search, data.queries)
                    row = {"n": n, **params, "ef_search": ef, "build_s": build_s,
                           "usearch_mb": index.memory_usage / 1e6, **lat,
                           **compare(hits, truth_hits, data), "load": load_average()}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                del index
                gc.collect()
    return rows


# -- removal churn ------------------------------------------------------------------------


def churn(n: int, dim: int, fraction: float) -> None:
    """Remove a share of subjects (scrub vectors take their slots), then enrol as many."""
    data = make_data(n, dim, 1000)
    index, _, _ = build_hnsw(data, dim, {})
    genuine = np.array([t is not None for t in data.truth])
    rows: dict[str, list[int]] = {}
    for i, subject in enumerate(data.owners):
        rows.setdefault(subject, []).append(i)
    queried = {t for t in data.truth if t}
    rng = np.random.default_rng(5)
    victims = {str(s) for s in rng.choice(sorted(rows), size=int(len(rows) * fraction),
                                          replace=False)} - queried
    exact = ExactIndex(dim)
    for subject, r in rows.items():
        if subject not in victims:
            exact.add(subject, data.templates[r])
    truth_top = top1(exact_truth(exact, data.queries))
    del exact

    def measure(stage: str) -> None:
        lat, hits = latencies_ms(index.search, data.queries)
        print(f"{stage:<28} recall@1 genuine {agreement(top1(hits), truth_top, genuine):.4f}  "
              f"CPU p50 {lat['cpu_p50_ms']:.2f} ms  p99 {lat['cpu_p99_ms']:.2f} ms", flush=True)

    print(f"N={n:,}: removing {len(victims):,} of {len(rows):,} subjects")
    measure("before")
    start = time.perf_counter()
    removed = sum(index.remove(s) for s in victims)
    took = time.perf_counter() - start
    print(f"removed {removed:,} templates in {took:.1f}s ({took / len(victims) * 1e3:.1f} ms "
          "per subject)")
    measure("after removal (scrubbed)")
    start = time.perf_counter()
    for s in victims:
        index.add(s + "-new", data.templates[rows[s]])
    took = time.perf_counter() - start
    print(f"enrolled {len(victims):,} subjects in {took:.1f}s, recycling every scrub slot")
    measure("after re-enrolment")


# -- output -------------------------------------------------------------------------------


def print_table(results: list[dict[str, Any]]) -> None:
    head = (f"{'N':>9} {'dim':>4} {'index':<24} {'build s':>7} {'load s':>6} {'mem MB':>6} "
            f"{'p50 ms':>6} {'p99 ms':>6} {'cpu p99':>7} {'recall@1':>8} {'imp r@1':>7}")
    print(head)
    print("-" * len(head))
    for r in results:
        e = r["exact"]
        print(f"{r['n']:>9,} {r['dim']:>4} {'exact (numpy f32)':<24} {r['exact_build_s']:>7.1f} "
              f"{'-':>6} {r['exact_rss_mb']:>6.0f} {e['p50_ms']:>6.2f} {e['p99_ms']:>6.2f} "
              f"{e['cpu_p99_ms']:>7.2f} {'ref':>8} {'ref':>7}")
        p = r["hnsw_params"]
        for run in r["hnsw"]:
            name = f"hnsw {p['dtype']} M={p['connectivity']} ef={run['ef_search']}"
            print(f"{r['n']:>9,} {r['dim']:>4} {name:<24} {r['hnsw_build_s']:>7.1f} "
                  f"{r['hnsw_full_load_s']:>6.2f} {r['hnsw_usearch_mb']:>6.0f} "
                  f"{run['p50_ms']:>6.3f} {run['p99_ms']:>6.3f} {run['cpu_p99_ms']:>7.3f} "
                  f"{run['recall1_genuine']:>8.4f} {run['recall1_impostor']:>7.3f}")
        v = r["view"]
        print(f"{r['n']:>9,} {r['dim']:>4} {'  same, mmap view':<24} {'':>7} "
              f"{r['hnsw_view_load_s']:>6.2f} {v['rss_mb']:>6.0f} {v['p50_ms']:>6.3f} "
              f"{v['p99_ms']:>6.3f} {v['cpu_p99_ms']:>7.3f} "
              f"{'same' if v['same_results'] else 'DIFFERS':>8}")
    print()
    for r in results:
        first = r["hnsw"][0]
        print(f"N={r['n']:,} ({r['subjects']:,} subjects, {r['queries']} queries of which "
              f"{r['impostor_queries']} impostors; load avg {r['load_average_start']:.1f}->"
              f"{r['load_average_end']:.1f}): HNSW/exact p99 {r['ratio_p99']:.3f} "
              f"(cpu {r['ratio_cpu_p99']:.3f}); usearch memory {r['hnsw_usearch_mb']:.0f} MB = "
              f"{r['ratio_memory']:.2f}x the f32 matrix; RSS delta {r['hnsw_rss_mb']:.0f} MB "
              f"(exact {r['exact_rss_mb']:.0f} MB); file {r['hnsw_file_mb']:.0f} MB + side "
              f"table {r['side_table_mb']:.1f} MB; save {r['hnsw_save_s']:.2f}s, view "
              f"{r['hnsw_view_load_s']:.2f}s, full load {r['hnsw_full_load_s']:.2f}s; "
              f"identification accuracy exact {r['exact']['accuracy']:.4f} / hnsw "
              f"{first['accuracy']:.4f}; max sim gap {first['max_sim_gap_same']:.4f}; "
              f"impostors: max exact sim {first['max_impostor_similarity']:.3f}, "
              f"max hnsw shortfall {first['max_shortfall_impostor']:.4f}")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _strs(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_ints, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact-latency-queries", type=int, default=300)
    parser.add_argument("--dtype", default=DEFAULT_DTYPE)
    parser.add_argument("--connectivity", type=int, default=DEFAULT_CONNECTIVITY)
    parser.add_argument("--expansion-add", type=int, default=DEFAULT_EXPANSION_ADD)
    parser.add_argument("--ef-search", type=_ints, default=[DEFAULT_EXPANSION_SEARCH],
                        help="one or more expansion_search values; the first is the headline")
    parser.add_argument("--sweep", action="store_true",
                        help="grid over dtype/connectivity/expansion_add at each size")
    parser.add_argument("--sweep-dtypes", type=_strs, default=["f16", "i8"])
    parser.add_argument("--sweep-connectivity", type=_ints, default=[16, 32])
    parser.add_argument("--sweep-expansion-add", type=_ints, default=[64, 128])
    parser.add_argument("--churn", type=float, default=0.0, metavar="FRACTION",
                        help="remove this share of subjects, then enrol as many (default index)")
    parser.add_argument("--exact-only", action="store_true",
                        help="only exact-search latency per size (to place the threshold)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="also write the results as JSON (to stdout without PATH)")
    args = parser.parse_args(argv)

    if args.churn:
        for n in args.sizes:
            churn(n, args.dim, args.churn)
        return 0
    if args.exact_only:
        print(f"{'N':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu p50':>7} {'cpu p99':>7}  load")
        for n in args.sizes:
            data = make_data(n, args.dim, args.exact_latency_queries)
            exact, _, _ = build_exact(data, args.dim)
            lat, _ = latencies_ms(exact.search, data.queries, time.process_time_ns)
            print(f"{n:>9,} {lat['p50_ms']:>7.3f} {lat['p99_ms']:>7.3f} "
                  f"{lat['cpu_p50_ms']:>7.3f} {lat['cpu_p99_ms']:>7.3f}  {load_average():.1f}",
                  flush=True)
        return 0
    if args.sweep:
        rows = [row for n in args.sizes for row in sweep(n, args.dim, args)]
        print(json.dumps(rows, indent=1))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="gate-index-bench-") as tmp:
        for n in args.sizes:
            results.append(run_size(n, args.dim, args, Path(tmp)))
    if args.json == "-":
        print(json.dumps(results, indent=1))
    else:
        print_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
