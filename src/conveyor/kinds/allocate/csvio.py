"""The original service's CSV files, read strictly, and the allocation CSV written back.

- preferences (`pref`): columns `name, P1, N1, P2, N2, …` — the student, then project `Pi` at
  rank `Ni`; the original required ten pairs, here any number works and blank pairs are
  skipped (a missing `Ni` column means rank i).
- projects (`proj`): columns `PID, SUP` — project and supervisor; an optional `CAP` column sets
  the project's capacity (default 1).

Every error names the file, the line and what is wrong, so the API can answer 400 with it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

MAX_LINES = 1_000_000


class CsvError(ValueError):
    """A CSV file is malformed; the message names the file and line."""


def _reader(text: str, what: str, required: Iterable[str]) -> csv.DictReader[str]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    fields = [f.strip() for f in reader.fieldnames or []]
    if not fields:
        raise CsvError(f"{what}: the file is empty (expected a header line)")
    reader.fieldnames = fields
    missing = [c for c in required if c not in fields]
    if missing:
        raise CsvError(
            f"{what}: missing column(s) {', '.join(missing)} in the header (line 1);"
            f" found {', '.join(fields)}"
        )
    return reader


def decode(data: bytes, what: str) -> str:
    """UTF-8 (with or without BOM) text, or a `CsvError` naming the file."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvError(f"{what}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _int(value: str, what: str, line: int, column: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise CsvError(
            f"{what}: line {line}: column {column}: {value!r} is not an integer"
        ) from None


def _check_row(row: dict[str | None, str | None], what: str, line: int, width: int) -> None:
    if None in row:
        raise CsvError(f"{what}: line {line}: more fields than the header's {width}")
    if any(v is None for v in row.values()):
        raise CsvError(f"{what}: line {line}: fewer fields than the header's {width}")


def read_preferences(
    text: str, what: str = "pref", lines: dict[str, int] | None = None
) -> dict[str, list[tuple[str, int]]]:
    """`name,P1,N1,…` rows → student → [(project, rank), …]; `lines` gets each student's
    line number (to name it in later checks)."""
    reader = _reader(text, what, ["name", "P1"])
    fields = reader.fieldnames or []
    pairs = []
    i = 1
    while f"P{i}" in fields:
        pairs.append((f"P{i}", f"N{i}" if f"N{i}" in fields else None, i))
        i += 1
    out: dict[str, list[tuple[str, int]]] = {}
    for row in reader:
        line = reader.line_num
        if line > MAX_LINES:
            raise CsvError(f"{what}: more than {MAX_LINES} lines")
        _check_row(row, what, line, len(fields))
        name = (row["name"] or "").strip()
        if not name:
            raise CsvError(f"{what}: line {line}: column name is empty")
        if name in out:
            raise CsvError(f"{what}: line {line}: student {name!r} appears twice")
        choices = []
        for p_col, n_col, default_rank in pairs:
            project = (row[p_col] or "").strip()
            rank_text = (row[n_col] or "").strip() if n_col else ""
            if not project:
                if rank_text:
                    raise CsvError(f"{what}: line {line}: {n_col} is set but {p_col} is empty")
                continue
            rank = _int(rank_text, what, line, n_col) if n_col and rank_text else default_rank
            if rank < 0:
                raise CsvError(f"{what}: line {line}: column {n_col}: rank {rank} is negative")
            choices.append((project, rank))
        out[name] = choices
        if lines is not None:
            lines[name] = line
    if not out:
        raise CsvError(f"{what}: no student rows after the header")
    return out


def read_projects(text: str, what: str = "proj") -> tuple[dict[str, str], dict[str, int]]:
    """`PID,SUP[,CAP]` rows → (project → supervisor, project → capacity)."""
    reader = _reader(text, what, ["PID", "SUP"])
    fields = reader.fieldnames or []
    staff: dict[str, str] = {}
    capacity: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        _check_row(row, what, line, len(fields))
        project = (row["PID"] or "").strip()
        supervisor = (row["SUP"] or "").strip()
        if not project or not supervisor:
            raise CsvError(f"{what}: line {line}: PID and SUP must both be set")
        if project in staff:
            raise CsvError(f"{what}: line {line}: project {project!r} appears twice")
        staff[project] = supervisor
        cap_text = (row.get("CAP") or "").strip()
        if cap_text:
            cap = _int(cap_text, what, line, "CAP")
            if cap < 0:
                raise CsvError(f"{what}: line {line}: column CAP: {cap} is negative")
            capacity[project] = cap
    if not staff:
        raise CsvError(f"{what}: no project rows after the header")
    return staff, capacity


def write_allocation(
    path: Path,
    allocation: dict[str, str | None],
    ranks: dict[str, int | None],
    staff: dict[str, str],
) -> None:
    """`student,project,supervisor,rank` — blank project for unallocated students."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "project", "supervisor", "rank"])
        for student, project in allocation.items():
            rank = ranks.get(student)
            writer.writerow(
                [
                    student,
                    project or "",
                    staff.get(project, "") if project else "",
                    "" if rank is None else rank,
                ]
            )
