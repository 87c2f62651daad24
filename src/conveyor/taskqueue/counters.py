"""Tasks leased per queue over the last minute and hour, for `taskqueues.get?getStats=true`.

Each API process counts the tasks it leased in 10-second buckets and upserts its own record
per bucket (`<queue>/<bucket>/<process>`), so processes never overwrite each other's counts.
Buckets older than an hour are deleted when stats are read.
"""

from __future__ import annotations

import secrets
import threading

from conveyor.store import Store

COLLECTION = "taskqueue_leases"
BUCKET_S = 10
PROCESS = secrets.token_hex(4)


class LeaseCounter:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def add(self, store: Store, queue: str, now: float, count: int) -> None:
        if count <= 0:
            return
        bucket = int(now // BUCKET_S)
        with self._lock:
            total = self._counts.get((queue, bucket), 0) + count
            self._counts[(queue, bucket)] = total
            for key in [k for k in self._counts if k[1] < bucket - 1]:
                del self._counts[key]  # finished buckets are already in the store
            store.put_record(COLLECTION, f"{queue}/{bucket:012d}/{PROCESS}", {"count": total})

    def read(self, store: Store, queue: str, now: float) -> tuple[int, int]:
        """(leased in the last minute, leased in the last hour)."""
        minute = hour = 0
        for key, value in store.list_records(COLLECTION, f"{queue}/"):
            bucket = int(key.split("/")[1])
            age = now - (bucket + 1) * BUCKET_S  # age of the bucket's end
            if age >= 3600:
                store.delete_record(COLLECTION, key)
                continue
            count = int(value.get("count", 0))
            hour += count
            if age < 60:
                minute += count
        return minute, hour


counter = LeaseCounter()
