"""`kge.autocomplete`: the label search table of a trained model's entities, built once by a
worker (the original's `build_autocomplete_index`, which filled Elasticsearch from Wikidata).

The table is SQLite FTS5 over each entity's imported label (`rdfs:label`/`skos:prefLabel`,
English or untagged first) and the words of its URI; `suggest_name` searches it. Without this
job the API builds the same table in memory on the first search of each process.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3

from conveyor.kinds.kge import models as m
from conveyor.kinds.kge.vectors import label_table
from conveyor.kinds.registry import task
from conveyor.worker.context import Context, PermanentError


@task(
    "kge.autocomplete",
    input=m.AutocompleteInput,
    output=m.AutocompleteOutput,
    queue="kge",
    description="Build the label search table (suggest_name) of a trained model's entities.",
)
def autocomplete(inp: m.AutocompleteInput, ctx: Context) -> m.AutocompleteOutput:
    try:
        entities = json.loads(ctx.input_file(m.ENTITIES_FILE).read_text("utf-8"))
        labels = json.loads(ctx.input_file(m.LABELS_FILE).read_text("utf-8"))
    except ValueError as exc:
        raise PermanentError(f"unreadable input: {exc}") from None
    if not isinstance(entities, list) or not isinstance(labels, dict):
        raise PermanentError("entities.json must be a list and labels.json an object")
    ctx.progress(0, len(entities), "building the label table")
    with contextlib.closing(sqlite3.connect(ctx.output_file(m.SEARCH_FILE))) as db:
        label_table(db, [str(e) for e in entities], {str(k): str(v) for k, v in labels.items()})
    ctx.progress(len(entities), len(entities), f"{len(entities)} entities")
    labelled = sum(1 for e in entities if labels.get(e))
    return m.AutocompleteOutput(entities=len(entities), labelled=labelled, langs=inp.langs)
