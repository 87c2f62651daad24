"""An example kind: count words, report progress, write a file (docs/howto/write-a-kind.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field

import conveyor


class ReportIn(BaseModel):
    words: list[str] = Field(min_length=1, description="Words to count.")
    top: int = Field(3, ge=1, le=100, description="How many of the most common to return.")


class ReportOut(BaseModel):
    total: int
    common: list[tuple[str, int]]


@conveyor.task("examples.word_report", input=ReportIn, output=ReportOut, max_attempts=2,
               timeout=60)  # fmt: skip
def word_report(inp: ReportIn, ctx: conveyor.Context) -> ReportOut:
    """Count words, reporting progress, and write the counts as a file."""
    counts: dict[str, int] = {}
    for done, word in enumerate(inp.words, start=1):
        counts[word] = counts.get(word, 0) + 1
        ctx.progress(done, len(inp.words), f"counted {word!r}")
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    with ctx.output_file("counts.tsv").open("w") as out:
        out.writelines(f"{word}\t{count}\n" for word, count in ranked)
    ctx.log(f"{len(counts)} distinct words")
    return ReportOut(total=len(inp.words), common=ranked[: inp.top])
