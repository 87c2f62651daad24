"""Google Task Queue REST API v1beta2 (pull queues) on conveyor's store.

`service.TaskQueueService` holds the operations; `api/compat/taskqueue.py` serves them over
HTTP with a discovery document, and `conveyor render-daemon` is a client of that API.
"""

from conveyor.taskqueue.names import QueueRef, TaskQueueError
from conveyor.taskqueue.service import TaskQueueService

__all__ = ["QueueRef", "TaskQueueError", "TaskQueueService"]
