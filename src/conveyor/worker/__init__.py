"""Workers: the supervisor, its child processes and the handler context."""

from conveyor.worker.context import Context, JobCancelled, PermanentError

__all__ = ["Context", "JobCancelled", "PermanentError"]
