"""Domain routers that FastAPI builds once instead of twice, as `ApiRoute`s (each owns its
request's database session, see `codepulse.db.session`, and is quick to say it does not match).

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
from starlette.routing import Match
from starlette.types import Scope

from codepulse.db.session import SessionRoute


class FastMatchRoute(APIRoute):
    """An API route that rejects a path it cannot match before the regular expression runs.

    A request is matched against the routes in order until one matches, so without this a route
    deep in the table paid a full regex match (and its scope copies) per route before it: about
    a microsecond each, a hundred routes. The shortcut answers exactly what the match would:
    a route without parameters matches only its own path, one with parameters only paths
    starting with the text before its first parameter."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self._literal = "{" not in self.path
        self._literal_prefix = self.path.partition("{")[0]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # Only for a plain path: not under a root_path, not through an included router's context.
        if scope["type"] == "http" and not scope.get("root_path") and not scope.get("fastapi"):
            path: str = scope["path"]
            if (path != self.path) if self._literal else not path.startswith(self._literal_prefix):
                return Match.NONE, {}
        return super().matches(scope)


class ApiRoute(FastMatchRoute, SessionRoute):
    """The class of API routes: quick to say it does not match, and the owner of its request's
    database session (`SessionRoute`)."""


class DomainRouter(APIRouter):
    """An `APIRouter` for a domain's HTTP routes: declare with the usual decorators, then `build_into`."""

    def __init__(self, *, prefix: str = "", tags: list[str | Enum], route_class: type[APIRoute] = ApiRoute) -> None:
        """`route_class`: `ApiRoute`; `FastMatchRoute` for routes that never touch the request's
        database session (health), which then costs them nothing."""
        super().__init__(prefix=prefix, tags=tags, route_class=route_class)
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
            own_limit = declared.get("max_body_size") is not None
            if not own_limit:
                options["max_body_size"] = max_body_size
            target.add_api_route(
                prefix + self.prefix + path, endpoint, route_class_override=self.route_class, **options
            )
            route = target.routes[-1]
            if isinstance(route, APIRoute) and route.body_field is None and not own_limit:
                # Nothing reads the body of a route without body parameters (one that streams
                # its body itself declares its own limit): the limiter would only cost time.
                route.max_body_size = None
                route.app = request_response(route.get_route_handler())
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
