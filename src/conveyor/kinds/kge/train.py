"""`kge.train`: a PyKEEN model trained on the job's triples, one progress report per epoch.

The vectors are written as job output files (NumPy `.npy`, loaded with `allow_pickle=False`,
plus JSON label lists), never into the queue. Complex-valued models (ComplEx, RotatE) are
stored as real vectors `[real parts, imaginary parts]`, so Euclidean distance and the index
work the same for every model.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from conveyor.kinds.kge import models as m
from conveyor.kinds.kge.triples import TriplesError, parse_tsv
from conveyor.kinds.registry import task
from conveyor.worker.context import Context, PermanentError


def random_baseline(entities: int) -> tuple[float, float]:
    """MRR and Hits@10 of a ranker that puts the true entity at a uniformly random rank."""
    n = max(entities, 1)
    return sum(1.0 / r for r in range(1, n + 1)) / n, min(10, n) / n


class _EpochReporter:
    """A PyKEEN training callback: progress (epoch/total, loss, ETA) and cancellation."""

    def __init__(self, ctx: Context, total: int, train_triples: int) -> None:
        self.ctx, self.total, self.train_triples = ctx, total, train_triples
        self.started = time.monotonic()
        self.losses: list[float] = []
        self.rates: list[float] = []
        self.last = self.started

    def post_epoch(self, epoch: int, epoch_loss: float) -> None:
        now = time.monotonic()
        self.rates.append(self.train_triples / max(now - self.last, 1e-9))
        self.last = now
        self.losses.append(float(epoch_loss))
        eta = (now - self.started) / epoch * (self.total - epoch)
        text = f"epoch {epoch}/{self.total}, loss {epoch_loss:.4f}, ETA {eta:.0f}s"
        self.ctx.progress(epoch, self.total, text)  # raises JobCancelled once cancelled
        if epoch == self.total or epoch % max(1, self.total // 10) == 0:
            self.ctx.log(text)


def _callback(reporter: _EpochReporter) -> Any:
    from pykeen.training.callbacks import TrainingCallback

    class Callback(TrainingCallback):  # type: ignore[misc,unused-ignore]
        def post_epoch(self, epoch: int, epoch_loss: float, **kwargs: Any) -> None:
            reporter.post_epoch(epoch, epoch_loss)

    return Callback()  # type: ignore[no-untyped-call,unused-ignore]


def _vectors(representation: Any) -> np.ndarray[Any, Any]:
    import torch

    with torch.no_grad():
        values = representation(indices=None).detach().cpu()
    if values.is_complex():
        values = torch.cat([values.real, values.imag], dim=-1)
    out: np.ndarray[Any, Any] = values.reshape(values.shape[0], -1).numpy().astype(np.float32)
    return out


def _write_outputs(ctx: Context, model: Any, factory: Any, info: dict[str, Any]) -> int:
    entities = _vectors(model.entity_representations[0])
    relations = _vectors(model.relation_representations[0])
    by_id = sorted(factory.entity_to_id.items(), key=lambda kv: kv[1])
    rel_by_id = sorted(factory.relation_to_id.items(), key=lambda kv: kv[1])
    np.save(ctx.output_file(m.ENTITY_VECTORS), entities, allow_pickle=False)
    np.save(ctx.output_file(m.RELATION_VECTORS), relations, allow_pickle=False)
    ctx.output_file(m.ENTITIES_FILE).write_text(json.dumps([k for k, _ in by_id]))
    ctx.output_file(m.RELATIONS_FILE).write_text(json.dumps([k for k, _ in rel_by_id]))
    ctx.output_file(m.MODEL_FILE).write_text(json.dumps(info, indent=1))
    return int(entities.shape[1])


def _load(path: Path) -> np.ndarray[Any, Any]:
    try:
        triples = parse_tsv(path.read_text(encoding="utf-8"))
    except (TriplesError, UnicodeDecodeError) as exc:
        raise PermanentError(f"{m.TRIPLES_FILE}: {exc}") from None
    if not triples:
        raise PermanentError("the dataset has no triples to train on")
    return np.array(triples, dtype=str)


@task(
    "kge.train",
    input=m.TrainInput,
    output=m.TrainOutput,
    queue="kge",
    max_attempts=3,
    description="Train a knowledge-graph embedding (PyKEEN) with per-epoch progress.",
)
def train(inp: m.TrainInput, ctx: Context) -> m.TrainOutput:
    """Train `inp.model` on `triples.tsv`; write the vectors and label lists as outputs."""
    import torch

    labeled = _load(ctx.input_file(m.TRIPLES_FILE))
    factory, training, testing = _split(labeled, inp)
    ctx.progress(0, inp.max_epochs, "training started")
    reporter = _EpochReporter(ctx, inp.max_epochs, training.num_triples)
    torch.manual_seed(inp.seed)
    # One thread by default: a worker runs one child per core, and on a busy 2-core box two
    # threads per child made an epoch 2-3x slower than one (measured, bench/kge.py).
    torch.set_num_threads(inp.threads)
    model = _fit(inp, training, reporter)
    metrics = _evaluate(model, training, testing, factory.num_entities) if testing else None
    algorithm = m.Algorithm.model_validate(inp.model_dump(include=set(m.Algorithm.model_fields)))
    info = {"algorithm": algorithm.model_dump(), "metrics": metrics and metrics.model_dump()}
    dimension = _write_outputs(ctx, model, factory, info)
    rates = reporter.rates
    return m.TrainOutput(
        model=inp.model,
        triples=len(labeled),
        train_triples=training.num_triples,
        entities=factory.num_entities,
        relations=factory.num_relations,
        dimension=dimension,
        epochs=len(reporter.losses),
        losses=[round(x, 6) for x in reporter.losses],
        triples_per_s=round(float(np.median(rates)) if rates else 0.0, 1),
        metrics=metrics,
    )


def _split(labeled: np.ndarray[Any, Any], inp: m.TrainInput) -> tuple[Any, Any, Any]:
    """The whole factory (all labels), the training part and the held-out part (or None)."""
    from pykeen.triples import TriplesFactory

    factory = TriplesFactory.from_labeled_triples(labeled)
    held_out = int(len(labeled) * inp.test_fraction)
    if held_out < 1 or len(labeled) - held_out < 2:
        return factory, factory, None
    # PyKEEN's split keeps every entity in the training part (it moves triples back if needed).
    training, testing = factory.split(
        [1 - inp.test_fraction, inp.test_fraction], random_state=inp.seed
    )
    if testing.num_triples > inp.max_test_triples:
        keep = np.random.default_rng(inp.seed).choice(
            testing.num_triples, inp.max_test_triples, replace=False
        )
        testing = testing.clone_and_exchange_triples(testing.mapped_triples[np.sort(keep)])
    return factory, training, testing


def _fit(inp: m.TrainInput, training: Any, reporter: _EpochReporter) -> Any:
    """PyKEEN's sLCWA training loop with a margin ranking loss and Adam."""
    from pykeen.losses import MarginRankingLoss
    from pykeen.models import model_resolver
    from pykeen.training import SLCWATrainingLoop
    from torch.optim import Adam

    model = model_resolver.make(
        inp.model,
        triples_factory=training,
        embedding_dim=inp.embedding_size,
        loss=MarginRankingLoss(margin=inp.margin),
        random_seed=inp.seed,
    )
    optimizer = Adam(model.parameters(), lr=inp.learning_rate)
    loop = SLCWATrainingLoop(model=model, triples_factory=training, optimizer=optimizer)
    loop.train(
        triples_factory=training,
        num_epochs=inp.max_epochs,
        batch_size=min(inp.batch_size, training.num_triples),
        callbacks=[_callback(reporter)],
        use_tqdm=False,
        use_tqdm_batch=False,
    )
    return model


def _evaluate(model: Any, training: Any, testing: Any, entities: int) -> m.Metrics:
    """Filtered rank-based link prediction on the held-out triples."""
    from pykeen.evaluation import RankBasedEvaluator

    result = RankBasedEvaluator(filtered=True).evaluate(
        model,
        testing.mapped_triples,
        additional_filter_triples=[training.mapped_triples],
        batch_size=256,
        use_tqdm=False,
    )
    return _metrics(result, testing, entities)


def _metrics(result: Any, testing: Any, entities: int) -> m.Metrics:
    mrr = float(result.get_metric("both.realistic.inverse_harmonic_mean_rank"))
    hits = float(result.get_metric("both.realistic.hits_at_10"))
    random_mrr, random_hits = random_baseline(entities)
    return m.Metrics(
        test_triples=int(testing.num_triples),
        mrr=round(mrr, 4) if math.isfinite(mrr) else 0.0,
        hits_at_10=round(hits, 4),
        random_mrr=round(random_mrr, 4),
        random_hits_at_10=round(random_hits, 4),
    )
