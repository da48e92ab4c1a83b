"""Domain routers that FastAPI builds once instead of twice.

FastAPI builds an HTTP route (its dependency tree, the pydantic adapters of its parameters and
response) when the route is declared on an `APIRouter`, and builds it again for the router that
includes it. With every domain's routes that second pass was a quarter of start-up. A
`DomainRouter` records what its decorators declare and builds nothing; `build_into` adds each route to
the app's own router with the API's prefix and defaults, where it is built exactly once — the
same route `app.get(...)` would have made.

Building is also the bulk of `create_app` (about 3 ms a route). A process that builds several apps
(the test suite builds hundreds) builds each route once: later apps get a copy of the built route
bound to their own dependency overrides, with a request handler of its own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from fastapi import APIRouter
from fastapi._body_limit import wrap_app_with_body_limit
from fastapi.routing import APIRoute, request_response


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
        key = (id(self), prefix, id(responses), max_body_size)
        built = _built_routes.get(key)
        if built is not None and built[0] is self:
            for template in built[1]:
                target.routes.append(_copy_route(template, target.dependency_overrides_provider))
            return
        first = len(target.routes)
        for path, endpoint, declared in self.declared:
            options = dict(declared)
            options["tags"] = [*self.tags, *(declared.get("tags") or [])]
            options["responses"] = {**responses, **self.responses, **(declared.get("responses") or {})}
            if declared.get("max_body_size") is None:
                options["max_body_size"] = max_body_size
            target.add_api_route(prefix + self.prefix + path, endpoint, **options)
        routes = [route for route in target.routes[first:] if isinstance(route, APIRoute)]
        _built_routes[key] = (self, routes)


# (router id, prefix, responses id, body limit) -> (the router, its built routes). The router is
# kept to make sure an id is not reused by another object.
_built_routes: dict[tuple[int, str, int, int], tuple[DomainRouter, list[APIRoute]]] = {}


def _copy_route(template: APIRoute, overrides_provider: Any) -> APIRoute:
    """`template` (built for another app) for an app whose dependency overrides are
    `overrides_provider`: the built dependency tree and adapters are shared (they hold nothing of
    an app); the request handler, which captures the overrides, is made anew."""
    route = copy.copy(template)
    route.dependency_overrides_provider = overrides_provider
    route.app = wrap_app_with_body_limit(request_response(route.get_route_handler()), route.max_body_size)
    return route
