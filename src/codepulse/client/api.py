"""The client's calls to a codepulse server: bearer token, problem+json errors read, retries of
429, 5xx and network errors with exponential backoff honouring Retry-After.

httpx is imported here, and this module only when a command talks to a server: importing httpx
costs about 0.15 s, more than `codepulse --help` may take.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from codepulse import __version__

USER_AGENT = f"codepulse-cli/{__version__}"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_WAIT = 60.0


class ApiError(Exception):
    """The server answered with an error (its problem's `code` and `detail`), or could not be reached.
    `problem` is the whole problem document, for its extension members (e.g. `interval`)."""

    def __init__(self, status: int | None, code: str, detail: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.problem = problem or {}

    @property
    def unauthorized(self) -> bool:
        return self.status == 401


def _problem(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("code") or f"http_{response.status_code}")
    detail = str(body.get("detail") or body.get("title") or response.reason_phrase or "request failed")
    return ApiError(response.status_code, code, detail, body)


def _retry_after(response: httpx.Response | None, attempt: int, backoff: float) -> float:
    if response is not None:
        try:
            return min(max(float(response.headers.get("Retry-After", "")), 0.0), MAX_RETRY_WAIT)
        except ValueError:
            pass
    return float(min(backoff * 2.0**attempt, MAX_RETRY_WAIT))


class Api:
    """One server, one token (or none, to sign in)."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=timeout, transport=transport)
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **options: Any) -> Any:
        """The JSON answer (None for 204); ApiError for an error answer or after the last retry."""
        for attempt in range(self.attempts):
            last = attempt == self.attempts - 1
            try:
                response = self._client.request(method, path, **options)
            except httpx.TransportError as error:
                if last:
                    raise ApiError(None, "unreachable", f"cannot reach {self._client.base_url}: {error}") from None
                self.sleep(_retry_after(None, attempt, self.backoff))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                self.sleep(_retry_after(response, attempt, self.backoff))
                continue
            if response.is_error:
                raise _problem(response)
            return None if response.status_code == 204 or not response.content else response.json()
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
