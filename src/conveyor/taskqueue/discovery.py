"""conveyor's own discovery document for `taskqueue:v1beta2`, describing what it serves.

`googleapiclient.discovery.build("taskqueue", "v1beta2",
discoveryServiceUrl="http://host:port/api/{api}/{apiVersion}")` reads it; it declares no OAuth
scopes, so the client sends no Google credentials (send a conveyor API key through `http=`).
"""

from __future__ import annotations

from typing import Any

PATH = "taskqueue/v1beta2/projects/"


def _param(type_: str, location: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "location": location, "description": description, **extra}


PROJECT = _param("string", "path", "The project under which the queue lies.", required=True)
TASKQUEUE = _param("string", "path", "The id of the taskqueue.", required=True)
TASK = _param("string", "path", "The id of the task.", required=True)
NEW_LEASE = _param("integer", "query", "The new lease in seconds.", required=True,
                   format="int32")  # fmt: skip
QUEUE_PATH = "{project}/taskqueues/{taskqueue}"
TASKS_PATH = QUEUE_PATH + "/tasks"
TASK_PATH = TASKS_PATH + "/{task}"
ORDER = ["project", "taskqueue"]


def _method(name: str, http: str, path: str, description: str, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"project": PROJECT, "taskqueue": TASKQUEUE}
    if "{task}" in path:
        params["task"] = TASK
    params.update(extra.pop("parameters", {}))
    order = [*ORDER, *(["task"] if "{task}" in path else []), *extra.pop("order", [])]
    return {"id": f"taskqueue.{name}", "path": path, "httpMethod": http,
            "description": description, "parameters": params, "parameterOrder": order,
            **extra}  # fmt: skip


INT64 = {"type": "integer", "format": "int64"}
SCHEMAS: dict[str, Any] = {
    "Task": {
        "id": "Task",
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "Name of the task."},
            "kind": {"type": "string", "default": "taskqueues#task"},
            "queueName": {"type": "string", "description": "Name of the queue."},
            "payloadBase64": {"type": "string", "description": "Base64 of the payload."},
            "enqueueTimestamp": {**INT64, "description": "Microseconds since the epoch."},
            "leaseTimestamp": {**INT64, "description": "Lease expiry, microseconds."},
            "retry_count": {
                "type": "integer",
                "format": "int32",
                "description": "How many times the task was leased.",
            },
            "tag": {"type": "string", "description": "Tag for the task (lease groups)."},
        },
    },
    "TaskQueue": {
        "id": "TaskQueue",
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string", "default": "taskqueues#taskqueue"},
            "stats": {
                "type": "object",
                "properties": {
                    "totalTasks": {"type": "integer", "format": "int32"},
                    "oldestTask": {**INT64, "description": "Enqueue time of the oldest task."},
                    "leasedLastMinute": INT64,
                    "leasedLastHour": INT64,
                },
            },
        },
    },
    "Tasks": {
        "id": "Tasks",
        "type": "object",
        "properties": {
            "kind": {"type": "string", "default": "taskqueue#tasks"},
            "items": {"type": "array", "items": {"$ref": "Task"}},
        },
    },
    "Tasks2": {
        "id": "Tasks2",
        "type": "object",
        "properties": {
            "kind": {"type": "string", "default": "taskqueue#tasks"},  # the original's
            "items": {"type": "array", "items": {"$ref": "Task"}},
        },
    },
}

TASK_METHODS: dict[str, Any] = {
    "insert": _method("tasks.insert", "POST", TASKS_PATH, "Insert a new task in a TaskQueue.",
                      request={"$ref": "Task"}, response={"$ref": "Task"}),
    "list": _method("tasks.list", "GET", TASKS_PATH, "List the tasks of a TaskQueue (100).",
                    response={"$ref": "Tasks2"}),
    "get": _method("tasks.get", "GET", TASK_PATH, "Get a particular task from a TaskQueue.",
                   response={"$ref": "Task"}),
    "delete": _method("tasks.delete", "DELETE", TASK_PATH, "Delete a task from a TaskQueue."),
    "lease": _method(
        "tasks.lease", "POST", TASKS_PATH + "/lease", "Lease 1 or more tasks from a TaskQueue.",
        parameters={
            "leaseSecs": _param("integer", "query", "The lease in seconds.", required=True,
                                format="int32"),
            "numTasks": _param("integer", "query", "The number of tasks to lease (<= 1000).",
                               required=True, format="int32"),
            "groupByTag": _param("boolean", "query", "Lease tasks with the same tag only."),
            "tag": _param("string", "query", "The tag to group by (default: the oldest"
                          " task's tag)."),
        },
        order=["numTasks", "leaseSecs"],
        response={"$ref": "Tasks"},
    ),
    "update": _method("tasks.update", "POST", TASK_PATH, "Update the lease of a task.",
                      parameters={"newLeaseSeconds": NEW_LEASE}, order=["newLeaseSeconds"],
                      request={"$ref": "Task"}, response={"$ref": "Task"}),
    "patch": _method("tasks.patch", "PATCH", TASK_PATH, "Update the lease of a task (patch).",
                     parameters={"newLeaseSeconds": NEW_LEASE}, order=["newLeaseSeconds"],
                     request={"$ref": "Task"}, response={"$ref": "Task"}),
}  # fmt: skip

QUEUE_METHODS: dict[str, Any] = {
    "get": _method("taskqueues.get", "GET", QUEUE_PATH, "Get detailed information about a"
                   " TaskQueue.", parameters={"getStats": _param("boolean", "query",
                   "Whether to get stats.")}, response={"$ref": "TaskQueue"}),
}  # fmt: skip

COMMON_PARAMETERS: dict[str, Any] = {
    "alt": {"type": "string", "default": "json", "enum": ["json"], "location": "query",
            "description": "Data format for the response."},
    "fields": _param("string", "query", "Selector specifying which fields to include."),
    "key": _param("string", "query", "API key (ignored by conveyor)."),
    "prettyPrint": {"type": "boolean", "default": "true", "location": "query",
                    "description": "Returns response with indentations and line breaks."},
    "quotaUser": _param("string", "query", "Ignored."),
    "userIp": _param("string", "query", "Ignored."),
}  # fmt: skip


def document(root_url: str) -> dict[str, Any]:
    """The discovery document with URLs under `root_url` (ending in `/`)."""
    return {
        "kind": "discovery#restDescription",
        "discoveryVersion": "v1",
        "id": "taskqueue:v1beta2",
        "name": "taskqueue",
        "version": "v1beta2",
        "revision": "conveyor",
        "title": "TaskQueue API (conveyor)",
        "description": "Google Task Queue v1beta2 pull queues, served by conveyor.",
        "ownerDomain": "conveyor.dev",
        "ownerName": "conveyor",
        "protocol": "rest",
        "rootUrl": root_url,
        "servicePath": PATH,
        "baseUrl": root_url + PATH,
        "basePath": "/" + PATH,
        "batchPath": "batch",
        "parameters": COMMON_PARAMETERS,
        "auth": {"oauth2": {}},
        "schemas": SCHEMAS,
        "resources": {
            "taskqueues": {"methods": QUEUE_METHODS},
            "tasks": {"methods": TASK_METHODS},
        },
    }
