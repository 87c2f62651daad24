"""A Swiss AI test kind that waits for a gate file while processing (to observe statuses)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conveyor import swissai
from conveyor.kinds.registry import task
from conveyor.worker.context import Context


@task("test.gate", timeout=60)
def gate(params: dict[str, object], ctx: Context) -> dict[str, int]:
    text = ctx.input_file("text").read_bytes()
    gate_file = Path(os.environ["GATE_FILE"])
    deadline = time.monotonic() + 30
    while not gate_file.exists() and time.monotonic() < deadline:
        ctx.progress(0, 1, "waiting for the gate")
        time.sleep(0.02)
    ctx.output_file("result").write_bytes(text.upper())
    return {"size": len(text)}


swissai.service(
    "test.gate",
    name="Gate",
    summary="Upper-cases a text once a gate file exists.",
    data_in_fields=[{"name": "text", "type": ["text/plain"]}],
    data_out_fields=[{"name": "result", "type": ["text/plain"]}],
)
