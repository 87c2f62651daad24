"""Inputs and outputs of the `kge.*` kinds, and the training hyper-parameters (no heavy imports).

The bounds are sane limits, not tuning advice: they turn absurd requests (a million epochs, a
negative margin, a 100,000-wide embedding) into a 422 before anything is queued.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ModelName = Literal["TransE", "DistMult", "ComplEx", "RotatE"]
TRIPLES_FILE = "triples.tsv"
ENTITIES_FILE = "entities.json"
RELATIONS_FILE = "relations.json"
ENTITY_VECTORS = "entity_embeddings.npy"
RELATION_VECTORS = "relation_embeddings.npy"
MODEL_FILE = "model.json"
INDEX_FILE = "index.hnsw"
LABELS_FILE = "labels.json"
SEARCH_FILE = "autocomplete.sqlite"


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


class AutocompleteInput(BaseModel):
    """`kge.autocomplete`: the label search table of a trained model's entities (input files
    `entities.json` and `labels.json`)."""

    model_config = ConfigDict(extra="forbid")
    langs: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] = Field(
        min_length=1, max_length=20, description="ISO 639 codes (the original's `langs`)."
    )
    dataset: int | None = None


class AutocompleteOutput(BaseModel):
    entities: int
    labelled: int = Field(description="Entities with an imported label (the rest: URI words).")
    langs: list[str]


class SparqlSource(BaseModel):
    """Triples from a SPARQL 1.1 endpoint, read page by page (see `conveyor.kinds.kge.sparql`)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(
        max_length=2000,
        pattern=r"^[hH][tT][tT][pP][sS]?://",
        description="The SPARQL query endpoint (http/https); it must pass the SSRF guard"
        " (CONVEYOR_CALLBACK_ALLOW, CONVEYOR_CALLBACK_PORTS).",
    )
    query: str = Field(
        min_length=1,
        max_length=100_000,
        description="A graph pattern binding ?s ?p ?o (a WHERE clause's body), or a whole"
        " SELECT ?s ?p ?o query; PREFIX lines may precede either.",
    )
    graph: str | None = Field(
        None, max_length=2000, description="Query this named graph (the protocol's"
        " default-graph-uri)."
    )  # fmt: skip
    levels: int = Field(
        0, ge=0, le=5, description="Crawl rounds after the query (the original's levels): each"
        " reads all triples of every entity the previous read reached, each entity once."
    )  # fmt: skip
    page_size: int = Field(10_000, ge=1, le=100_000, description="Triples per request.")
    limit: int | None = Field(None, ge=1, le=50_000_000, description="Stop after this many.")
    timeout_s: float = Field(60.0, gt=0, le=600, description="Per request.")
    retries: int = Field(4, ge=0, le=10, description="Per request, on transient failures.")

    @field_validator("query")
    @classmethod
    def _triple_query(cls, value: str) -> str:
        from conveyor.kinds.kge.sparql import triple_query

        triple_query(value)  # QueryError is a ValueError: pydantic reports it
        return value


class ImportInput(BaseModel):
    """`kge.import`: turn the uploaded RDF/TSV file, or a SPARQL endpoint's triples, into
    `triples.tsv`."""

    model_config = ConfigDict(extra="forbid")

    dataset: int | None = None
    file: str = Field("upload", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
    format: Literal["nt", "turtle", "tsv"] = "nt"
    sparql: SparqlSource | None = Field(None, description="Read from an endpoint, not a file.")


class ImportOutput(BaseModel):
    triples: int
    labels: int
    skipped_literals: int
    skipped_unusable: int = Field(
        0, description="SPARQL rows with an unbound term, a blank node (its label means"
        " nothing outside one answer) or a literal subject/predicate."
    )  # fmt: skip
    pages: int = Field(0, description="SPARQL requests for triples (0 for a file).")
