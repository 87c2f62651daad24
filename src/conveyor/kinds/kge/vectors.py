"""Query side of a trained model: embeddings, distances, nearest entities and label search.

The API process loads a model's output files from blob storage once and keeps a few models in
memory (least recently used dropped first). Label search is an in-memory SQLite FTS5 table
over the entities' labels (the local part of each URI, split into words), built on first use.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conveyor.kinds.kge import models as m
from conveyor.storage import BlobStorage, job_key

CACHE_SIZE = 8


class UnknownEntities(LookupError):
    """Some entities are not in the trained model; `names` lists them."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__("unknown entit" + ("y " if len(names) == 1 else "ies ") + ", ".join(names))


def label_of(entity: str) -> str:
    """Readable words from a URI's local part: `.../Barack_Obama` -> `Barack Obama`."""
    local = re.split(r"[/#:]", entity.rstrip("/#"))[-1] or entity
    local = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", local)
    return re.sub(r"[_\-.]+", " ", local).strip() or entity


class Trained:
    """One trained model's entity vectors, and its HNSW index when one was built."""

    def __init__(
        self,
        entities: list[str],
        vectors: np.ndarray[Any, Any],
        index: Any,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.entities = entities
        self.labels = labels or {}
        self.position = {name: i for i, name in enumerate(entities)}
        self.vectors = vectors
        self.index = index
        self._labels: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def rows(self, names: Sequence[str]) -> list[int]:
        missing = [n for n in names if n not in self.position]
        if missing:
            raise UnknownEntities(missing)
        return [self.position[n] for n in names]

    def embedding(self, name: str) -> np.ndarray[Any, Any]:
        row: np.ndarray[Any, Any] = self.vectors[self.rows([name])[0]]
        return row

    def distance(self, a: str, b: str) -> float:
        """Euclidean distance, the metric the index ranks by."""
        ra, rb = self.rows([a, b])
        return float(np.linalg.norm(self.vectors[ra] - self.vectors[rb]))

    def similar(
        self, vector: np.ndarray[Any, Any], limit: int, search_k: int | None = None
    ) -> list[tuple[float, str]]:
        """The `limit` nearest entities to `vector` by the index (exact if none was built)."""
        if self.index is None:
            return self.exact(vector, limit)
        k = min(limit, len(self.entities))
        with self._lock:  # set_ef + query must not interleave between threads
            self.index.set_ef(max(search_k or 0, k, 64))
            labels, squared = self.index.knn_query(vector.astype(np.float32), k=k)
        return [
            (float(np.sqrt(max(d, 0.0))), self.entities[int(i)])
            for i, d in zip(labels[0], squared[0], strict=True)
        ]

    def exact(self, vector: np.ndarray[Any, Any], limit: int) -> list[tuple[float, str]]:
        """Brute-force nearest entities (the ground truth the index is checked against)."""
        distances = np.linalg.norm(self.vectors - vector, axis=1)
        k = min(limit, len(self.entities))
        best = np.argpartition(distances, k - 1)[:k]
        best = best[np.argsort(distances[best], kind="stable")]
        return [(float(distances[i]), self.entities[int(i)]) for i in best]

    def label(self, entity: str) -> str:
        """The imported label, else words made from the URI."""
        return self.labels.get(entity) or label_of(entity)

    def suggest(self, text: str, limit: int = 10) -> list[str]:
        """Entities whose label (imported, or made from the URI) has words starting with every
        word of `text` (FTS5 prefix queries)."""
        words = re.findall(r"\w+", text.lower())
        if not words:
            return []
        with self._lock:
            if self._labels is None:
                self._labels = sqlite3.connect(":memory:", check_same_thread=False)
                label_table(self._labels, self.entities, self.labels)
            query = " ".join(f'"{w}"*' for w in words)
            found = self._labels.execute(
                "SELECT entity FROM labels WHERE labels MATCH ? ORDER BY rank LIMIT ?",
                (f"{{label uri_words}}: ({query})", limit),
            ).fetchall()
        return [str(row[0]) for row in found]


def label_table(db: sqlite3.Connection, entities: list[str], labels: dict[str, str]) -> None:
    """The FTS5 table `suggest` searches: each entity's label and the words of its URI."""
    db.execute("CREATE VIRTUAL TABLE labels USING fts5(label, uri_words, entity UNINDEXED)")
    db.executemany("INSERT INTO labels VALUES (?, ?, ?)",
                   ((labels.get(e, ""), label_of(e), e) for e in entities))  # fmt: skip
    db.commit()


_cache: OrderedDict[tuple[str, str | None, str | None], Trained] = OrderedDict()
_cache_lock = threading.Lock()


def load(
    storage: BlobStorage,
    model_job: str,
    index_job: str | None,
    labels: Callable[[], dict[str, str]] | None = None,
    search_job: str | None = None,
) -> Trained:
    """The trained model of `model_job` (with `index_job`'s index, `search_job`'s label table
    — else one built on first search — and the dataset's labels, read by `labels()` on first
    load only), cached."""
    key = (model_job, index_job, search_job)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    with tempfile.TemporaryDirectory(prefix="conveyor-kge-") as tmp:
        folder = Path(tmp)
        storage.download(job_key(model_job, "out", m.ENTITIES_FILE), folder / "e.json")
        storage.download(job_key(model_job, "out", m.ENTITY_VECTORS), folder / "e.npy")
        entities = json.loads((folder / "e.json").read_text())
        vectors = np.load(folder / "e.npy", allow_pickle=False)
        index = None
        if index_job is not None:
            import hnswlib

            storage.download(job_key(index_job, "out", m.INDEX_FILE), folder / "i.hnsw")
            index = hnswlib.Index(space="l2", dim=int(vectors.shape[1]))
            index.load_index(str(folder / "i.hnsw"), max_elements=len(entities))
        trained = Trained(entities, vectors, index, labels() if labels is not None else None)
        if search_job is not None:
            storage.download(job_key(search_job, "out", m.SEARCH_FILE), folder / "s.sqlite")
            table = sqlite3.connect(":memory:", check_same_thread=False)
            with contextlib.closing(sqlite3.connect(folder / "s.sqlite")) as built:
                built.backup(table)
            trained._labels = table
    with _cache_lock:
        _cache[key] = trained
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return trained
