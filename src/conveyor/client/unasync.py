"""Write `_sync.py` (`Client`) from `_async.py` (`AsyncClient`): one client's code serves both.

    python src/conveyor/client/unasync.py      # after every edit of _async.py

Plain token rewriting, as httpcore's `unasync` does; tests/unit/test_client_unasync.py fails
while `_sync.py` is stale. Run as a script, it imports nothing of conveyor, so it works even
when `_sync.py` is missing or broken.
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "_async.py"
TARGET = HERE / "_sync.py"
HEADER = '"""`Client`, generated from `_async.py` by `unasync.py` (edit those, not this)."""'

# Applied in order to the source after its one-line module docstring.
RULES = (
    (r"^import asyncio\n", ""),
    (r"\basyncio\.sleep\b", "time.sleep"),
    (r"\bAn asyncio client\b", "A synchronous client"),
    (r"\basync def\b", "def"),
    (r"\basync (for|with)\b", r"\1"),
    (r"\bawait ", ""),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsyncBaseTransport\b", "BaseTransport"),
    (r"\bAsyncClient\b", "Client"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\baclose\b", "close"),
    (r"\baread\b", "read"),
    (r"\baiter_(lines|bytes)\b", r"iter_\1"),
    # `yield from` has no async form: the source loops
    (r"^( *)for (\w+) in (.+):\n +yield \2\n", r"\1yield from \3\n"),
)
IMPORT = re.compile(r"^(from \S+ import )(.+)$", re.MULTILINE)


def _sorted_names(match: re.Match[str]) -> str:
    """Renamed imports re-sorted as ruff's isort does: constants, classes, then the rest."""
    names = match[2].split(", ")
    names.sort(key=lambda name: (not name.isupper(), not name[0].isupper(), name))
    return match[1] + ", ".join(names)


def render() -> str:
    """The text `_sync.py` must have."""
    docstring, body = SOURCE.read_text().split("\n", 1)
    if not (docstring.startswith('"""') and docstring.endswith('"""')):
        raise ValueError(f"{SOURCE.name} must start with a one-line docstring")
    for pattern, replacement in RULES:
        body = re.sub(pattern, replacement, body, flags=re.MULTILINE)
    body = IMPORT.sub(_sorted_names, body)
    return f"{HEADER}\n{body}"


if __name__ == "__main__":
    TARGET.write_text(render())
