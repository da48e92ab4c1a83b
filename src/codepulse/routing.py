"""Domain routers that FastAPI builds once instead of twice.

FastAPI builds an HTTP route (its dependency tree, the pydantic adapters of its parameters and
response) when the route is declared on an `APIRouter`, and builds it again for the router that
includes it. With every domain's routes that second pass was a quarter of start-up. A
`DomainRouter` records what its decorators declare and builds nothing; `build_into` adds each route to
the app's own router with the API's prefix and defaults, where it is built exactly once — the
same route `app.get(...)` would have made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from fastapi import APIRouter


class DomainRouter(APIRouter):
    """An `APIRouter` for a domain's HTTP routes: declare with the usual decorators, then `build_into`."""

    def __init__(self, *, prefix: str = "", tags: list[str | Enum]) -> None:
        super().__init__(prefix=prefix, tags=tags)
        self.declared: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        self.declared.append((path, endpoint, options))

    def add_api_websocket_route(self, *args: Any, **kwargs: Any) -> None:
        # Not deferred; keep WebSocket routes on a plain APIRouter.
        raise TypeError("DomainRouter holds HTTP routes only; declare WebSocket routes on an APIRouter")

    def build_into(
        self,
        target: APIRouter,
        *,
        prefix: str,
        responses: Mapping[int | str, dict[str, Any]],
        max_body_size: int,
    ) -> None:
        """Build every declared route on `target` under `prefix`, with the API's default problem
        responses and body limit (a route's own `max_body_size` wins)."""
        for path, endpoint, declared in self.declared:
            options = dict(declared)
            options["tags"] = [*self.tags, *(declared.get("tags") or [])]
            options["responses"] = {**responses, **self.responses, **(declared.get("responses") or {})}
            if declared.get("max_body_size") is None:
                options["max_body_size"] = max_body_size
            target.add_api_route(prefix + self.prefix + path, endpoint, **options)
