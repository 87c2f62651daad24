"""Python clients for the conveyor HTTP API: `Client` (sync) and `AsyncClient` (asyncio).

    with conveyor.Client("http://127.0.0.1:8000", token="cvk_...") as client:
        job = client.submit("demo.count", {"to": 5})
        done = client.wait(job.id)          # follows the job's SSE stream
        print(done.state, done.result)

Every call retries with exponential backoff on connection errors and 503s. Each submit carries
an `Idempotency-Key` (random unless you pass one), so a retried submit never makes two jobs.
Errors come back as the same `ConveyorError` subclasses the server raised (`JobNotFoundError`,
`InvalidInputError`, ...), carrying the problem+json fields in `.details`.

The method names match `conveyor.service.Service`, so code (such as the CLI) can use either.
`AsyncClient` (`_async.py`) is the code of both: `Client` (`_sync.py`) is generated from it by
`python src/conveyor/client/unasync.py`, and `_core.py` holds the I/O-free parts they share.
"""

from conveyor.client._async import AsyncClient
from conveyor.client._core import ApiError
from conveyor.client._sync import Client

__all__ = ["ApiError", "AsyncClient", "Client"]
