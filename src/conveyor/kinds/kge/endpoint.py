"""A SPARQL 1.1 Protocol client for user-given endpoints, through conveyor's SSRF guard.

Queries go out as URL-encoded POSTs (the protocol's "query via POST": no URL length limit) with
`default-graph-uri` when a graph is named, asking for `application/sparql-results+json`; rdflib
parses the results (JSON, or XML/CSV/TSV when that is what comes back). The request itself
goes through `conveyor.webhooks.sender.Sender`, because a user-given URL must be checked and
pinned like a webhook's: resolved once, every address checked against `CONVEYOR_CALLBACK_ALLOW`
and `CONVEYOR_CALLBACK_PORTS`, no redirects, no environment proxies, bounded size and time.
(rdflib's SPARQLConnector and SPARQLWrapper both go through `urllib.request.urlopen`, which
follows redirects and takes proxies from the environment, and rdflib's GET path turns every
HTTP error into one ValueError, losing the status that tells a retry from a refusal.)

Transient failures (connection errors, time-outs, 408, 429, 5xx) are retried with exponential
backoff; a refusal (4xx, a redirect, an unsafe URL, malformed results) is `EndpointRefused`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from urllib.parse import urlencode

from conveyor.webhooks.sender import Outcome, Sender
from conveyor.webhooks.ssrf import CallbackPolicy

ACCEPT = "application/sparql-results+json, application/sparql-results+xml;q=0.5"
MAX_ANSWER_BYTES = 256 << 20
BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504})
Row = dict[str, Any]
"""One solution: variable name → rdflib term (URIRef, Literal or BNode); unbound ones absent."""


class EndpointRefused(Exception):
    """The endpoint (or the SSRF guard) refused the query: retrying will not help."""


class EndpointUnavailable(Exception):
    """The endpoint kept failing transiently; the job may be retried later."""


@dataclass
class Endpoint:
    """One SPARQL endpoint a job queries; `check_cancelled` (it raises once the job is
    cancelled) cuts retry waits short."""

    url: str
    graph: str | None = None
    timeout_s: float = 60.0
    retries: int = 4
    policy: CallbackPolicy = field(default_factory=CallbackPolicy.from_env)
    check_cancelled: Callable[[], None] = lambda: None
    log: Callable[[str], None] = lambda line: None

    def __post_init__(self) -> None:
        self.sender = Sender(
            self.policy, self.timeout_s, MAX_ANSWER_BYTES,
            what="SPARQL endpoint", user_agent="conveyor-kge-import/1",
        )  # fmt: skip

    def close(self) -> None:
        self.sender.close()

    def select(self, query: str) -> list[Row]:
        """The solutions of a SELECT query, retrying transient failures."""
        form = {"query": query}
        if self.graph is not None:
            form["default-graph-uri"] = self.graph
        body = urlencode(form).encode()
        headers = {
            "accept": ACCEPT,
            "accept-encoding": "identity",  # the sender reads raw bytes
            "content-type": "application/x-www-form-urlencoded",
        }
        for attempt in range(self.retries + 1):
            outcome = self.sender.send("POST", self.url, headers, body)
            problem = _transient_problem(outcome)
            if problem is None:
                return _rows(outcome)
            if attempt == self.retries:
                raise EndpointUnavailable(
                    f"the SPARQL endpoint failed {attempt + 1} time(s); last: {problem}"
                )
            delay = min(MAX_BACKOFF_S, BACKOFF_S * 2**attempt) * random.uniform(0.75, 1.25)
            self.log(f"SPARQL endpoint: {problem}; retrying in {delay:.1f}s")
            self._wait(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _wait(self, seconds: float) -> None:
        """Back off, but stop as soon as the job is cancelled."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.check_cancelled()
            time.sleep(min(0.1, left))
        self.check_cancelled()


def _transient_problem(outcome: Outcome) -> str | None:
    """What went wrong if a retry may help, None if the answer is usable; raise
    `EndpointRefused` if it is not and never will be."""
    if outcome.refused:
        raise EndpointRefused(outcome.error)
    status = outcome.status_code
    if status is None:
        return outcome.error or "no answer"
    if status in TRANSIENT:
        return f"HTTP {status}: {_text(outcome.body)}"
    if 300 <= status < 400:
        raise EndpointRefused(
            f"the SPARQL endpoint answered HTTP {status} (a redirect); redirects from"
            " user-given URLs are not followed: give the URL it redirects to"
        )
    if status >= 400:
        raise EndpointRefused(f"the SPARQL endpoint answered HTTP {status}: {_text(outcome.body)}")
    if not outcome.complete:
        if len(outcome.body) >= MAX_ANSWER_BYTES:
            raise EndpointRefused(
                f"a page of results is larger than {MAX_ANSWER_BYTES >> 20} MiB: lower page_size"
            )
        return "the answer did not arrive within the time limit"
    return None


def _rows(outcome: Outcome) -> list[Row]:
    from rdflib.query import Result

    kind = outcome.content_type or "application/sparql-results+json"
    try:
        result = Result.parse(BytesIO(outcome.body), content_type=kind)
        if result.type != "SELECT":
            raise ValueError(f"a {result.type} result, not a SELECT's solutions")
        return [{str(k): v for k, v in row.items()} for row in result.bindings]
    except Exception as exc:  # rdflib's result parsers raise many types
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise EndpointRefused(
            f"the SPARQL endpoint's answer ({kind}) is not valid SPARQL results: {reason};"
            f" it starts with {_text(outcome.body, 120)!r}"
        ) from None


def _text(body: bytes, limit: int = 500) -> str:
    return " ".join(body[: limit * 4].decode("utf-8", "replace").split())[:limit]
