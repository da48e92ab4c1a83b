"""The dashboard on the app: its routes at / (beside /api/v1), its static files at /static, its
pages' CSP, and HTML error pages for page paths (the API keeps its problem+json bodies).

`create_app` calls `mount_web` after the API is mounted and hands `web_page_options()` to the
HTTP layer (codepulse.middleware), which picks the pages' CSP and 500 page by path.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextlib import suppress
from functools import cache
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.staticfiles import StaticFiles

from codepulse.config import Settings
from codepulse.middleware import PageOptions, is_page_path
from codepulse.web import (
    account,
    billing,
    github,
    invitations,
    leaderboard,
    members,
    notifications,
    orgs,
    overview,
    password_reset,
    profile,
    repositories,
    scans,
    settings,
    verify,
)
from codepulse.web.csrf import CsrfRefused
from codepulse.web.forms import MAX_FORM_BYTES
from codepulse.web.rendering import STATIC_DIR, STATIC_PREFIX, page_context, render, render_text
from codepulse.web.session import SignInRequired, clear_session_cookie, current_viewer, sign_in_url

# Scripts and styles only from this origin (no inline script, no eval, no inline style element);
# no plugins, frames of or by others, or form posts elsewhere.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

ROUTERS = (
    overview.router,
    account.router,
    settings.router,
    profile.router,
    password_reset.router,
    orgs.router,
    members.router,
    invitations.router,
    verify.router,
    repositories.router,
    scans.router,
    billing.router,
    github.router,
    leaderboard.router,
    notifications.router,
)

Handler = Callable[[Request, Exception], Awaitable[Response]]


_TITLES = {
    403: "You cannot do this",
    404: "Page not found",
    405: "Not allowed here",
    413: "That was too much to send",
    422: "That request was not understood",
    429: "Too many requests",
    503: "Unavailable for a moment",
}

# Errors that a layer below the routes answers in plain text (the body limit's 413): as pages.
_LAYER_ERRORS = {
    413: (_TITLES[413], "The form was larger than this site accepts."),
    500: ("Something went wrong", None),
}


@cache
def web_page_options() -> PageOptions:
    pages = {
        code: render_text("error.html", _error_context(code, title, detail)).encode()
        for code, (title, detail) in _LAYER_ERRORS.items()
    }
    return PageOptions(csp=PAGE_CSP, error_pages=pages)


def _error_context(status_code: int, title: str, detail: str | None, **context: Any) -> dict[str, Any]:
    return {
        "viewer": None,
        "csrf_token": "",
        "github_sign_in": False,
        "request_id": None,
        "path": "",
        "page_scripts": (),
        "page_styles": (),
        "status_code": status_code,
        "title": title,
        "detail": detail,
    } | context


# GETs that act (GitHub sign-in's start sets a nonce cookie; its landing spends the exchange
# code): a HEAD from a link checker must not do either, so they answer HEAD with 405.
GET_ACTIONS = frozenset({github.START_PATH, github.CALLBACK_PATH})


def mount_web(app: FastAPI, settings: Settings) -> None:
    first = len(app.router.routes)
    for router in ROUTERS:
        router.build_into(app.router, prefix="", responses={}, max_body_size=MAX_FORM_BYTES)
    for route in app.router.routes[first:]:
        if (
            isinstance(route, APIRoute)
            and route.methods
            and "GET" in route.methods
            and route.path not in GET_ACTIONS
            and not _streams(route)
        ):
            # A page answers HEAD as GET (link checkers, monitors); the HTTP layer drops the body.
            # FastAPI, unlike Starlette's Route, does not add HEAD to a GET route by itself.
            route.methods.add("HEAD")
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
    _install_page_errors(app)


def _streams(route: APIRoute) -> bool:
    """An event stream: a HEAD would hold it open for no one to read, so it stays GET only."""
    response_class = getattr(route.response_class, "value", route.response_class)  # FastAPI's default placeholder
    return isinstance(response_class, type) and issubclass(response_class, StreamingResponse)


# --- errors as pages ------------------------------------------------------------------------


async def _error_page(request: Request, problem: Response) -> Response:
    """The API's problem answer, as a page of the same status (and headers such as Retry-After)."""
    body: dict[str, Any] = json.loads(bytes(problem.body))
    status_code = problem.status_code
    detail = body.get("detail") if status_code < 500 and body.get("detail") != body.get("title") else None
    if status_code == 404:
        detail = None  # never echo what was asked for
    await _viewer_for_layout(request)
    response = render(
        request,
        "error.html",
        status_code=status_code,
        title=_TITLES.get(status_code, HTTPStatus(status_code).phrase),
        detail=detail,
    )
    for name in ("retry-after", "allow"):
        if name in problem.headers:
            response.headers[name] = problem.headers[name]
    return response


async def _viewer_for_layout(request: Request) -> None:
    """The layout shows who is signed in when it can be known without a request session (a 404
    outside any route has none)."""
    if "codepulse.session_scope" in request.scope:
        with suppress(Exception):  # an error page must render whatever failed
            await current_viewer(request)


def _page_aware(api_handler: Handler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        problem = await api_handler(request, exc)
        if not is_page_path(request.url.path):
            return problem
        return await _error_page(request, problem)

    return handle


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    target = sign_in_url(cast(SignInRequired, exc).next_path)
    response: Response
    if request.headers.get("hx-request"):
        # htmx would swap the sign-in page into a fragment: it navigates the whole page instead.
        response = Response(status_code=status.HTTP_204_NO_CONTENT, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    if getattr(request.state, "web_stale_cookie", False):
        clear_session_cookie(response, request.app.state.settings)
    return response


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    context = page_context(request)
    context.update(status_code=403, title="This form has expired", detail=None, csrf_refused=True)
    html = render_text("error.html", context)
    return HTMLResponse(html, status_code=403, headers={"Cache-Control": "no-store"})


def _install_page_errors(app: FastAPI) -> None:
    for key, handler in list(app.exception_handlers.items()):
        if isinstance(key, type):
            app.add_exception_handler(key, _page_aware(cast(Handler, handler)))
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
