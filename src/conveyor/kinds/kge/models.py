"""Inputs and outputs of the `kge.*` kinds, and the training hyper-parameters (no heavy imports).

The bounds are sane limits, not tuning advice: they turn absurd requests (a million epochs, a
negative margin, a 100,000-wide embedding) into a 422 before anything is queued.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ModelName = Literal["TransE", "DistMult", "ComplEx", "RotatE"]
TRIPLES_FILE = "triples.tsv"
ENTITIES_FILE = "entities.json"
RELATIONS_FILE = "relations.json"
ENTITY_VECTORS = "entity_embeddings.npy"
RELATION_VECTORS = "relation_embeddings.npy"
MODEL_FILE = "model.json"
INDEX_FILE = "index.hnsw"
LABELS_FILE = "labels.json"


class Algorithm(BaseModel):
    """Hyper-parameters of one training run (the kge-server's "algorithm")."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName = "TransE"
    embedding_size: int = Field(50, ge=2, le=1024)
    max_epochs: int = Field(80, ge=1, le=5000)
    margin: float = Field(1.0, gt=0, le=100)
    learning_rate: float = Field(0.01, gt=0, le=1)
    batch_size: int = Field(256, ge=1, le=65536)


class TrainInput(Algorithm):
    """`kge.train`: train `model` on the job's input file `triples.tsv` (subject, predicate,
    object per tab-separated line)."""

    dataset: int | None = Field(None, description="The kge dataset this run belongs to.")
    test_fraction: float = Field(0.1, ge=0, le=0.5, description="Held out for MRR/Hits@10.")
    max_test_triples: int = Field(2000, ge=1, le=100_000)
    seed: int = Field(42, ge=0, le=2**31 - 1)
    threads: int = Field(
        1, ge=1, le=64, description="torch threads; 1 suits a worker with one child per core."
    )


class Metrics(BaseModel):
    """Link-prediction quality on the held-out triples, and a random ranker's expectation."""

    test_triples: int
    mrr: float
    hits_at_10: float
    random_mrr: float
    random_hits_at_10: float


class TrainOutput(BaseModel):
    """What a finished `kge.train` job answers (the vectors are its output files)."""

    model: ModelName
    triples: int
    train_triples: int
    entities: int
    relations: int
    dimension: int
    epochs: int
    losses: list[float]
    triples_per_s: float
    metrics: Metrics | None


class IndexInput(BaseModel):
    """`kge.index`: an HNSW index over the input file `entity_embeddings.npy`."""

    model_config = ConfigDict(extra="forbid")

    dataset: int | None = None
    m: int = Field(16, ge=4, le=96, description="HNSW graph degree.")
    ef_construction: int = Field(200, ge=10, le=2000)


class IndexOutput(BaseModel):
    count: int
    dimension: int
    m: int
    ef_construction: int
    seconds: float


class ImportInput(BaseModel):
    """`kge.import`: turn the uploaded RDF/TSV file into `triples.tsv`."""

    model_config = ConfigDict(extra="forbid")

    dataset: int | None = None
    file: str = Field("upload", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
    format: Literal["nt", "turtle", "tsv"] = "nt"


class ImportOutput(BaseModel):
    triples: int
    labels: int
    skipped_literals: int
