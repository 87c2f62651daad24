"""kge benchmark: training throughput, similar-entity query latency, index recall vs exact.

A synthetic graph of >= 100,000 triples with learnable structure (entities in clusters;
relation r links cluster c to cluster c + r), trained with the `kge.train` handler in this
process (a stand-in Context, the same code a worker runs), indexed with `kge.index`'s builder,
then queried through `vectors.Trained` (what the API process serves) and over HTTP through a
real `conveyor api` process. Also compares the ANN candidates (hnswlib, usearch, annoy:
whichever are installed) on the trained vectors.

Prints a table and writes bench/results/kge.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import ROOT, start_api, stop

from conveyor.kinds.kge import index as kge_index
from conveyor.kinds.kge import models as m
from conveyor.kinds.kge import train as kge_train
from conveyor.kinds.kge.triples import to_tsv
from conveyor.kinds.kge.vectors import Trained


class BenchContext:
    """The parts of the worker Context the handlers use, writing to a temp folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cancelled = False
        self.epochs: list[tuple[float, float]] = []

    def input_file(self, name: str) -> Path:
        return self.folder / name

    def output_file(self, name: str) -> Path:
        return self.folder / f"out-{name}"

    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        self.epochs.append((time.monotonic(), current))

    def log(self, message: str) -> None:
        print("   ", message)


def synthetic(
    entities: int, relations: int, triples: int, clusters: int, seed: int
) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, clusters, entities)
    members = [np.flatnonzero(cluster == c) for c in range(clusters)]
    out: set[tuple[str, str, str]] = set()
    while len(out) < triples:
        s = int(rng.integers(entities))
        r = int(rng.integers(relations))
        target = members[(cluster[s] + r + 1) % clusters]
        o = int(target[rng.integers(len(target))])
        out.add(
            (f"http://example.org/e{s}", f"http://example.org/r{r}", f"http://example.org/e{o}")
        )
    return sorted(out)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def query_bench(trained: Trained, queries: np.ndarray[Any, Any], k: int) -> dict[str, float]:
    latencies, hits = [], []
    for row in queries:
        vector = trained.vectors[row]
        started = time.perf_counter()
        got = trained.similar(vector, k)
        latencies.append(time.perf_counter() - started)
        exact = trained.exact(vector, k)
        hits.append(len({e for _, e in got} & {e for _, e in exact}) / k)
    total = sum(latencies)
    return {
        "queries": len(queries),
        "qps": round(len(queries) / total, 1),
        "p50_ms": round(percentile(latencies, 50) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 99) * 1e3, 3),
        "recall_at_10": round(float(np.mean(hits)), 4),
    }


def ann_candidates(
    vectors: np.ndarray[Any, Any], queries: np.ndarray[Any, Any], k: int
) -> list[dict[str, Any]]:
    """Build time, recall@k and query latency of each installed ANN library."""
    d2 = (
        (vectors[queries] ** 2).sum(1)[:, None]
        - 2 * vectors[queries] @ vectors.T
        + (vectors**2).sum(1)[None]
    )
    exact = np.argsort(d2, axis=1)[:, :k]
    rows: list[dict[str, Any]] = []

    def score(name: str, build: Any, search: Any) -> None:
        started = time.perf_counter()
        idx = build()
        built = time.perf_counter() - started
        started = time.perf_counter()
        got = [search(idx, vectors[q]) for q in queries]
        per = (time.perf_counter() - started) / len(queries)
        recall = float(
            np.mean(
                [
                    len(set(map(int, a)) & set(map(int, b))) / k
                    for a, b in zip(got, exact, strict=True)
                ]
            )
        )
        rows.append(
            {
                "library": name,
                "build_s": round(built, 2),
                "recall_at_10": round(recall, 4),
                "query_us": round(per * 1e6, 1),
            }
        )

    def hnsw_search(idx: Any, v: Any) -> Any:
        idx.set_ef(64)
        return idx.knn_query(v, k=k)[0][0]

    score("hnswlib (M=16, ef=64)", lambda: kge_index.build(vectors, 16, 200), hnsw_search)
    try:
        from usearch.index import Index

        def usearch_build() -> Any:
            u = Index(
                ndim=vectors.shape[1],
                metric="l2sq",
                dtype="f32",
                connectivity=16,
                expansion_add=200,
                expansion_search=64,
            )
            u.add(np.arange(len(vectors)), vectors)
            return u

        score("usearch (M=16, ef=64)", usearch_build, lambda u, v: u.search(v, k).keys)
    except ImportError:
        print("usearch not installed: skipped in the ANN comparison")
    try:
        from annoy import AnnoyIndex

        def annoy_build(trees: int) -> Any:
            a = AnnoyIndex(vectors.shape[1], "euclidean")
            for i, v in enumerate(vectors):
                a.add_item(i, v)
            a.build(trees)
            return a

        score("annoy (10 trees)", lambda: annoy_build(10), lambda a, v: a.get_nns_by_vector(v, k))
        score("annoy (50 trees)", lambda: annoy_build(50), lambda a, v: a.get_nns_by_vector(v, k))
    except ImportError:
        print("annoy not installed: skipped in the ANN comparison")
    return rows


def http_bench(
    entities: list[str], vectors: np.ndarray[Any, Any], built: Any, queries: np.ndarray[Any, Any]
) -> dict[str, float]:
    """Similar-entity queries through a real `conveyor api` process (GET .../similar_entities).

    The dataset record and its model/index files are seeded into a fresh store as a finished
    train + index would leave them (the training itself is measured above)."""
    import uuid

    import httpx

    from conveyor.kinds.kge import datasets as ds
    from conveyor.storage import job_key, open_storage
    from conveyor.store import open_store

    home = Path(tempfile.mkdtemp(prefix="conveyor-bench-kge-"))
    store_url = f"sqlite:///{home / 'bench.db'}"
    storage = open_storage(f"file://{home / 'files'}")
    model_job, index_job = uuid.uuid4().hex, uuid.uuid4().hex
    np.save(home / "e.npy", vectors, allow_pickle=False)
    storage.upload(job_key(model_job, "out", m.ENTITY_VECTORS), home / "e.npy")
    storage.write(job_key(model_job, "out", m.ENTITIES_FILE), [json.dumps(entities).encode()])
    built.save_index(str(home / "i.hnsw"))
    storage.upload(job_key(index_job, "out", m.INDEX_FILE), home / "i.hnsw")
    store = open_store(store_url)
    store.put_record(ds.DATASETS, f"{1:012d}", {
        "id": 1, "name": "bench", "description": "", "status": ds.INDEXED, "triples": 0,
        "entities": len(entities), "relations": 0, "algorithm": None, "task": None,
        "model_job": model_job, "index_job": index_job, "metrics": None, "imported": [],
    })  # fmt: skip
    store.close()
    api, url = start_api(store_url, home)
    try:
        latencies: list[float] = []
        with httpx.Client(base_url=url, timeout=30) as http:
            first = http.get(f"/kge/datasets/1/similar_entities/{entities[0]}")  # loads the model
            assert first.status_code == 200, first.text
            for row in queries:
                started = time.perf_counter()
                r = http.get(f"/kge/datasets/1/similar_entities/{entities[int(row)]}?limit=10")
                latencies.append(time.perf_counter() - started)
                assert r.status_code == 200, r.text
        return {
            "queries": len(latencies),
            "qps": round(len(latencies) / sum(latencies), 1),
            "p50_ms": round(percentile(latencies, 50) * 1e3, 2),
            "p99_ms": round(percentile(latencies, 99) * 1e3, 2),
        }
    finally:
        stop(api)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--relations", type=int, default=20)
    parser.add_argument("--triples", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "kge.json"))
    args = parser.parse_args()

    triples = synthetic(args.entities, args.relations, args.triples, clusters=50, seed=7)
    with tempfile.TemporaryDirectory(prefix="kge-bench-") as tmp:
        folder = Path(tmp)
        (folder / m.TRIPLES_FILE).write_text(to_tsv(triples))
        ctx = BenchContext(folder)
        inp = m.TrainInput(
            model="TransE",
            embedding_size=args.dim,
            max_epochs=args.epochs,
            batch_size=args.batch,
            learning_rate=0.01,
            max_test_triples=500,
        )
        started = time.monotonic()
        out = kge_train.train(inp, ctx)
        train_s = time.monotonic() - started
        vectors = np.load(ctx.output_file(m.ENTITY_VECTORS), allow_pickle=False)
        entities = json.loads(ctx.output_file(m.ENTITIES_FILE).read_text())
    started = time.monotonic()
    built = kge_index.build(vectors, 16, 200)
    index_s = time.monotonic() - started
    trained = Trained(entities, vectors, built)
    queries = np.random.default_rng(1).choice(
        len(entities), min(args.queries, len(entities)), replace=False
    )
    query = query_bench(trained, queries, 10)
    ann = ann_candidates(vectors, queries[:300], 10)
    http = http_bench(entities, vectors, built, queries)

    result: dict[str, Any] = {
        "dataset": {"triples": len(triples), "entities": out.entities, "relations": out.relations},
        "train": {
            "model": "TransE", "dim": args.dim, "epochs": out.epochs, "batch_size": args.batch,
            "train_triples": out.train_triples, "seconds": round(train_s, 1),
            "triples_per_s_per_epoch_median": out.triples_per_s, "losses": out.losses,
            "metrics": out.metrics.model_dump() if out.metrics else None,
        },
        "index": {"library": "hnswlib", "M": 16, "ef_construction": 200,
                  "build_s": round(index_s, 2)},
        "similar_entities": query,
        "similar_entities_http": http,
        "ann_candidates": ann,
    }  # fmt: skip
    print(
        f"\ndataset: {len(triples):,} triples, {out.entities:,} entities, {out.relations} relations"
    )
    print(
        f"train TransE dim {args.dim}, {out.epochs} epochs: {train_s:.1f}s, "
        f"{out.triples_per_s:,.0f} triples/s per epoch (median)"
    )
    print(f"held-out metrics: {result['train']['metrics']}")
    print(f"index hnswlib build {index_s:.2f}s")
    print(
        f"similar entities (k=10): {query['qps']:,.0f} q/s, p50 {query['p50_ms']} ms, "
        f"p99 {query['p99_ms']} ms, recall@10 {query['recall_at_10']}"
    )
    print(
        f"similar entities over HTTP (one client, GET, k=10): {http['qps']:,.0f} q/s, "
        f"p50 {http['p50_ms']} ms, p99 {http['p99_ms']} ms"
    )
    print(f"\n{'ANN library':<24}{'build s':>9}{'recall@10':>11}{'query us':>10}")
    for row in ann:
        print(
            f"{row['library']:<24}{row['build_s']:>9}{row['recall_at_10']:>11}{row['query_us']:>10}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
