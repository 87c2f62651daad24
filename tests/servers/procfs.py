"""Processes as Linux's /proc shows them, for tests that watch children and process groups."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    state: str  # "R", "S", "T", ...; "Z": exited, not yet reaped
    ppid: int
    pgrp: int

    def cmdline(self) -> str:
        """The command line, arguments joined by spaces ("" once the process is gone)."""
        try:
            return Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return ""


def process(pid: int) -> ProcessInfo | None:
    """The process `pid`, or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces
    return ProcessInfo(pid, fields[0], int(fields[1]), int(fields[2]))


def live_processes() -> Iterator[ProcessInfo]:
    """Every process that has not exited (zombies left out)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := process(int(entry))) and found.state != "Z":
            yield found
