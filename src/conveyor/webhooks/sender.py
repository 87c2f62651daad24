"""One guarded HTTP request to a client-chosen URL: checked, pinned, bounded.

The URL is checked by the SSRF guard right before connecting and the connection goes to the
address that was checked. Redirects are never followed, environment proxies are ignored, the
whole attempt has a time limit and at most `max_bytes` of the answer are read. Webhook
deliveries and `kge.import`'s SPARQL queries both go out through it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from conveyor.webhooks.ssrf import CallbackPolicy, UnsafeURLError


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: a status code, or an error before any answer."""

    status_code: int | None
    body: bytes = b""
    error: str | None = None
    duration_ms: int = 0
    refused: bool = False
    """The SSRF guard refused the URL: no connection was made."""
    complete: bool = True
    """False when reading stopped at `max_bytes` or at the time limit: `body` is a prefix."""
    content_type: str | None = None
    """The answer's media type, without parameters."""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender:
    """Sends requests to checked URLs; one instance is safe to share between threads."""

    def __init__(
        self,
        policy: CallbackPolicy,
        timeout_s: float,
        max_bytes: int,
        *,
        what: str = "callback URL",
        user_agent: str = "conveyor-webhooks/1",
    ) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.what = what  # names the URL in the guard's refusals
        self.client = httpx.Client(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout_s),
            headers={"user-agent": user_agent},
        )

    def close(self) -> None:
        self.client.close()

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        started = time.monotonic()
        try:
            target = self.policy.check(url, what=self.what)
        except UnsafeURLError as exc:
            return Outcome(None, error=f"refused: {exc}", refused=True)
        request = self.client.build_request(
            method,
            target.pinned_url(),
            headers={**headers, "host": target.host_header},
            content=body,
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        )
        deadline = started + self.timeout_s
        complete = True
        try:
            response = self.client.send(request, stream=True)
            try:
                got = bytearray()
                for chunk in response.iter_raw():
                    got += chunk[: max(0, self.max_bytes - len(got))]
                    if len(got) >= self.max_bytes or time.monotonic() > deadline:
                        complete = False
                        break
            finally:
                response.close()
        except httpx.TimeoutException:
            return Outcome(
                None, error=f"timed out after {self.timeout_s:g}s", duration_ms=_ms(started)
            )
        except httpx.HTTPError as exc:
            return Outcome(None, error=f"{type(exc).__name__}: {exc}", duration_ms=_ms(started))
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower() or None
        return Outcome(
            response.status_code,
            bytes(got),
            duration_ms=_ms(started),
            complete=complete,
            content_type=kind,
        )


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
