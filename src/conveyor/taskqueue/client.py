"""A small v1beta2 client over httpx, for daemons that keep the pull model.

Write calls use the `b~<project>` form of the project, as Google's client library did.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import httpx


class TaskQueueHTTPError(Exception):
    """The API answered with an error (Google's JSON error shape)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class TaskQueueClient:
    """The methods the render daemons use: lease, insert, patch, delete, list, attach."""

    def __init__(
        self, url: str, project: str, taskqueue: str, token: str | None = None,
        timeout: float = 60.0,
    ) -> None:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.path = f"/taskqueue/v1beta2/projects/b~{project}/taskqueues/{taskqueue}"
        self.taskqueue = taskqueue

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, self.path + path, **kwargs)
        if response.status_code >= 400:
            try:
                message = str(response.json()["error"]["message"])
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise TaskQueueHTTPError(response.status_code, message)
        return response.json() if response.content else None

    def lease(self, n: int, lease_s: float, tag: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"numTasks": n, "leaseSecs": lease_s}
        if tag is not None:
            params.update(groupByTag="true", tag=tag)
        return list(self._call("POST", "/tasks/lease", params=params).get("items", []))

    def insert(self, payload: dict[str, Any], tag: str) -> dict[str, Any]:
        encoded = base64.b64encode(json.dumps(payload).encode()).decode("ascii")
        body = {"queueName": self.taskqueue, "payloadBase64": encoded, "tag": tag}
        return dict(self._call("POST", "/tasks", json=body))

    def patch(self, task_id: str, new_lease_s: float) -> dict[str, Any]:
        return dict(
            self._call(
                "PATCH", f"/tasks/{quote(task_id)}", params={"newLeaseSeconds": new_lease_s},
                json={"queueName": self.taskqueue},
            )
        )  # fmt: skip

    def delete(self, task_id: str) -> None:
        self._call("DELETE", f"/tasks/{quote(task_id)}")

    def list(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/tasks").get("items", []))

    def attach(self, task_id: str, name: str, data: bytes) -> str:
        """Store an output file of a leased task's job; return its download URL."""
        answer = self._call("PUT", f"/tasks/{quote(task_id)}/files/{quote(name)}", content=data)
        return str(answer["url"])
