"""`text.stats`: count lines, words and characters of a text and find its most common words.

Input file `text` (text/plain, UTF-8; read line by line, so any size); output file `result`
(application/json), also returned as the job's result:
`{"lines", "words", "characters", "most_common": [{"word", "count"}, ...]}`.
Words are whitespace-separated tokens (as `wc -w` counts them); the most common words are
compared case-insensitively, letters only (apostrophes inside words kept).
"""

from __future__ import annotations

import re
from collections import Counter

from pydantic import BaseModel, Field

from conveyor import swissai
from conveyor.kinds.registry import task
from conveyor.worker.context import Context

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


class StatsInput(BaseModel):
    top: int = Field(10, ge=1, le=1000, description="How many of the most common words.")


class WordCount(BaseModel):
    word: str
    count: int


class Stats(BaseModel):
    lines: int
    words: int
    characters: int
    most_common: list[WordCount]


@task("text.stats", input=StatsInput, output=Stats, timeout=600, max_attempts=2)
def stats(params: StatsInput, ctx: Context) -> Stats:
    """Statistics of the input file `text`, also written to the output file `result`."""
    result = text_stats(ctx, params.top)
    ctx.output_file("result").write_text(result.model_dump_json(indent=2), "utf-8")
    return result


def text_stats(ctx: Context, top: int) -> Stats:
    path = ctx.input_file("text")
    total = path.stat().st_size or 1
    lines = words = characters = 0
    counts: Counter[str] = Counter()
    done = 0
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        for line in handle:
            lines += 1
            words += len(line.split())
            characters += len(line)
            counts.update(m.group().lower() for m in WORD.finditer(line))
            done += len(line.encode("utf-8", "replace"))
            if lines % 10_000 == 0:
                ctx.progress(done, total, f"{lines} lines")
    common = [WordCount(word=w, count=c) for w, c in counts.most_common(top)]
    return Stats(lines=lines, words=words, characters=characters, most_common=common)


swissai.service(
    "text.stats",
    name="Text statistics",
    slug="text-stats",
    summary="Counts lines, words and characters of a text and lists its most common words.",
    data_in_fields=[{"name": "text", "type": ["text/plain"]}],
    data_out_fields=[{"name": "result", "type": ["application/json"]}],
    tags=[{"name": "Natural Language Processing", "acronym": "NLP"}],
)
