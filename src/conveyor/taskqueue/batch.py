"""Google's batch requests (`multipart/mixed` of `application/http` parts) for the v1beta2 API.

google-api-python-client's `new_batch_http_request()` POSTs `{rootUrl}batch`: one part per call,
each an HTTP request (`METHOD /path?query HTTP/1.1`, headers, body) with a `Content-ID`. The
answer is `multipart/mixed` too: one `application/http` part per call, in order, each holding a
status line, headers and body, its `Content-ID` the request's prefixed with `response-`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser, Parser
from email.policy import HTTP

from conveyor.taskqueue.names import bad_request

MAX_PARTS = 1000  # Google's limit per batch
TEXT_POLICY = HTTP.clone(max_line_length=None)
# Headers of a part that describe the part itself, not the call it carries.
HOP_HEADERS = frozenset({"host", "content-length", "mime-version", "content-transfer-encoding"})


@dataclass(frozen=True)
class Part:
    """One call of a batch."""

    content_id: str
    method: str
    target: str  # path and query
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """The answer to one call."""

    content_id: str
    status: int
    reason: str
    content_type: str | None
    body: bytes


def parse(content_type: str, body: bytes) -> list[Part]:
    """The calls of a batch body; `TaskQueueError` 400 when it is not a batch."""
    if not content_type.lower().startswith("multipart/mixed"):
        raise bad_request("A batch request must be multipart/mixed.")
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser().parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise bad_request("The batch body is not a valid multipart/mixed message.")
    parts = message.get_payload()
    assert isinstance(parts, list)
    if not parts:
        raise bad_request("The batch holds no request.")
    if len(parts) > MAX_PARTS:
        raise bad_request(f"A batch holds at most {MAX_PARTS} requests, not {len(parts)}.")
    return [_part(index, part) for index, part in enumerate(parts, 1)]


def _part(index: int, part: Message) -> Part:
    content_id = str(part.get("Content-ID") or f"<{index}>")
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        raise bad_request(f"Batch part {index} is not an application/http request.")
    text = raw.decode("utf-8", "replace")
    request_line, _, rest = text.partition("\n")
    words = request_line.strip().split(" ")
    if len(words) != 3 or not words[1].startswith("/") or not words[2].startswith("HTTP/"):
        raise bad_request(f"Batch part {index} does not start with 'METHOD /path HTTP/1.1'.")
    inner = Parser(policy=TEXT_POLICY).parsestr(rest)
    headers = [(k, str(v)) for k, v in inner.items() if k.lower() not in HOP_HEADERS]
    payload = inner.get_payload()
    data = payload.encode("utf-8") if isinstance(payload, str) else b""
    return Part(content_id, words[0].upper(), words[1], headers, data)


def response_id(content_id: str) -> str:
    """`<abc + 1>` → `<response-abc + 1>`, as Google answers."""
    inner = content_id.strip()
    inner = inner[1:-1] if inner.startswith("<") and inner.endswith(">") else inner
    return f"<response-{inner}>"


def render(answers: list[Answer]) -> tuple[str, bytes]:
    """The batch answer: its content type (with the boundary) and body."""
    boundary = f"batch_{secrets.token_hex(12)}"
    out = bytearray()
    for answer in answers:
        out += f"--{boundary}\r\nContent-Type: application/http\r\n".encode()
        out += f"Content-ID: {response_id(answer.content_id)}\r\n\r\n".encode()
        out += f"HTTP/1.1 {answer.status} {answer.reason}\r\n".encode()
        if answer.content_type:
            out += f"Content-Type: {answer.content_type}\r\n".encode()
        out += f"Content-Length: {len(answer.body)}\r\n\r\n".encode()
        out += answer.body + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/mixed; boundary={boundary}", bytes(out)
