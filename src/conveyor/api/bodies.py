"""The edge check on JSON request bodies, for every route (/v1, compat, dashboard).

Some JSON is well-formed yet breaks what runs after the parser: nesting a thousand deep makes
the standard library's parser (and pydantic, and the store's encoder) hit Python's recursion
limit; a lone surrogate escape (`"\\ud800"`) is no Unicode text, so encoding it for a store
fails; an integer beyond 64 bits does not fit SQLite's or PostgreSQL's integers. Each of those
was a 500 somewhere (and a body that is not UTF-8 an undocumented 400). `JsonGuard` refuses
them before any route sees the body, with one stable problem type (`unsupported-json`, 422),
whatever the route and whoever parses the body later.

Ordinary bodies pay a UTF-8 check and a few C-speed byte scans: the full check runs only when
a scan finds something that could break a limit (many brackets, a long digit run, a `\\u` escape).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.problems import problem

#: Deepest nesting of arrays and objects accepted; far beyond any real input, far below
#: Python's recursion limit (which every later step shares).
MAX_DEPTH = 128
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
#: Bodies larger than this are left to the routes (each refuses its own oversize with a 413
#: before parsing); the guard never buffers more.
MAX_CHECKED_BYTES = 64 << 20
PROBLEM_TYPE = "unsupported-json"

_LONG_DIGITS = re.compile(rb"\d{19}")
_UNICODE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")
_NOT_FINITE = re.compile(rb"NaN|Infinity|[eE][+]?\d{3}")
_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
#: Routes whose body is a file's bytes, stored as sent whatever they hold.
_FILE_ROUTES = re.compile(r"^/v1/(uploads/|jobs/[^/]+/files/)")


class UnsupportedJson(ValueError):
    """Well-formed JSON that conveyor refuses: too deep, a lone surrogate, a huge integer."""


def _check_int(text: str) -> int:
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise UnsupportedJson(f"the integer {text[:24]}… does not fit in 64 bits")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
    return deepest


def check(raw: bytes | str) -> None:
    """Raise `UnsupportedJson` if `raw` is JSON conveyor must refuse. Bodies that are not JSON
    at all pass: the route that reads them answers with its own error."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:  # RFC 8259: JSON between systems is UTF-8
        raise UnsupportedJson(f"the body is not UTF-8 (byte {exc.start})") from None
    deep = data.count(b"[") + data.count(b"{") > MAX_DEPTH
    escapes = _UNICODE_ESCAPE.search(data) is not None
    digits = _LONG_DIGITS.search(data) is not None
    if not (deep or escapes or digits or _NOT_FINITE.search(data)):
        return
    try:  # orjson is strict RFC 8259 and bounds depth itself
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if "surrogate" in message:
            raise UnsupportedJson("a string holds a lone UTF-16 surrogate escape") from None
        if "depth" in message or "recursion" in message:
            raise UnsupportedJson(f"arrays and objects nest deeper than {MAX_DEPTH}") from None
        if _lenient_json(data):
            raise UnsupportedJson("NaN, Infinity and 1e999 are not JSON numbers") from None
        return  # not JSON: for the route to refuse in its own words
    if deep and _depth(value) > MAX_DEPTH:
        raise UnsupportedJson(f"arrays and objects nest deeper than {MAX_DEPTH}")
    if digits:  # orjson turns integers beyond 64 bits into floats: ask the exact parser
        json.loads(data, parse_int=_check_int)


def _lenient_json(data: bytes) -> bool:
    """Whether Python's parser (which every route uses) takes what orjson refused: NaN,
    Infinity, 1e999."""
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


def _media(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media
    return None


def _json_typed(media: bytes | None) -> bool:
    return media is not None and (media == b"application/json" or media.endswith(b"+json"))


def _maybe_json(media: bytes | None) -> bool:
    """Untyped and text bodies: several compat routes parse those as JSON too."""
    return media is None or media == b"text/plain"


def _looks_like_json(first: bytes) -> bool:
    return first.lstrip()[:1] in (b"{", b"[", b'"')


class JsonGuard:
    """ASGI middleware: reads a JSON request body, refuses unsupported JSON with a 422
    problem, and replays the body to the app unchanged otherwise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        media = _media(scope) if scope["type"] == "http" else None
        if (
            scope["type"] != "http"
            or scope["method"] not in _METHODS
            or _FILE_ROUTES.match(scope["path"])
            or not (_json_typed(media) or _maybe_json(media))
        ):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            if size == 0 and body and not _json_typed(media) and not _looks_like_json(body):
                break  # an untyped body that is no JSON (a file, TSV): stream it on
            size += len(body)
            if size > MAX_CHECKED_BYTES or not message.get("more_body", False):
                break
        last = messages[-1]
        complete = last["type"] == "http.request" and not last.get("more_body", False)
        if complete and 0 < size <= MAX_CHECKED_BYTES:
            try:
                check(b"".join(m.get("body", b"") for m in messages))
            except UnsupportedJson as exc:
                response = problem(
                    422, PROBLEM_TYPE, f"the JSON body is not supported: {exc}",
                    title="Unsupported JSON", instance=scope.get("path"),
                )  # fmt: skip
                await response(scope, receive, send)
                return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
