"""A Swiss AI Center service written for conveyor: the keywords of a text.

The template's `MyService.process(self, data)` becomes the kind's handler: `data["text"].data`
is `ctx.input_file("text")`, and each `TaskData` it returned is a file written to
`ctx.output_file(name)`, its type chosen with `swissai.output_type` (else sniffed).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import conveyor
from conveyor import swissai
from conveyor.worker.context import Context, PermanentError


@dataclass(frozen=True)
class Model:
    """Stands in for a real model (a `transformers.pipeline(...)`, an ONNX session...)."""

    stopwords: frozenset[str]
    loaded_at: float = field(default_factory=time.time)

    def keywords(self, text: str, top: int = 10) -> list[tuple[str, int]]:
        words = re.findall(r"[a-zà-ÿ']+", text.lower())
        return Counter(w for w in words if w not in self.stopwords).most_common(top)


@functools.cache
def model() -> Model:
    """Loaded by the first task a worker process runs, then kept for all its later tasks."""
    return Model(frozenset({"a", "an", "and", "are", "as", "at", "be", "by", "for", "from",
                            "in", "is", "it", "of", "on", "or", "the", "to"}))  # fmt: skip


@conveyor.task("examples.keywords", timeout=120)
def keywords(params: object, ctx: Context) -> dict[str, object]:
    raw = ctx.input_file("text").read_bytes()  # the template's data["text"].data
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PermanentError("the text is not UTF-8") from None  # the task ends in `error`
    found = model().keywords(text)

    table = io.StringIO()
    csv.writer(table, lineterminator="\n").writerows([("word", "count"), *found])
    ctx.output_file("keywords").write_text(table.getvalue())
    swissai.output_type(ctx, "keywords", "text/csv")  # the field allows text/plain as well

    summary = {"words": len(text.split()), "keywords": [w for w, _ in found]}
    ctx.output_file("summary").write_text(json.dumps(summary))  # sniffed: application/json
    return {"model_loaded_at": model().loaded_at}


swissai.service(
    "examples.keywords",
    name="Keywords",
    slug="keywords",
    summary="The most frequent words of a text, as CSV, with a JSON summary.",
    data_in_fields=[{"name": "text", "type": ["text/plain"]}],
    data_out_fields=[
        {"name": "keywords", "type": ["text/csv", "text/plain"]},
        {"name": "summary", "type": ["application/json"]},
    ],
    tags=[{"name": "Natural Language Processing", "acronym": "NLP"}],
)
