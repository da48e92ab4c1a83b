"""The request session: one per request, one owner.

Every part of a request that needs the database — authentication, role guards, the endpoint —
uses the request's `RequestSessionScope` (the `RequestScope` or `DbSession` dependencies, or
`request_session_scope(request)` where a dependency reads it directly). It opens nothing until
first asked (`RequestSessionScope.session()`), so a read answered from caches costs no
connection at all. Its owner is the route (`SessionRoute`, the class of every API route), which

- makes the scope before any dependency runs;
- commits when the endpoint returns a success or a redirect, before the response is sent (a
  failed commit becomes an error response, never a lie);
- rolls back and closes on every other path: an exception raised by any dependency (a 401 from
  authentication, a 403/404 from a guard) or by the endpoint, a validation error, an error
  status the endpoint returns without raising (the dashboard's pages render their forms' errors),
  a cancelled request (a client gone). The close is shielded from cancellation, so the connection (and, on
  SQLite, the database's write lock) always goes back.

Nothing else opens, adopts or closes a request's session.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.background import BackgroundTasks
from starlette.datastructures import State

from codepulse.db.engine import Database, close_shielded

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WRITES_ATTRIBUTE = "__codepulse_writes__"

_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])


def writes(endpoint: _Endpoint) -> _Endpoint:
    """Mark a GET endpoint that writes (an OAuth callback): its session then locks up front on
    SQLite like a POST's, instead of failing to upgrade a read transaction."""
    setattr(endpoint, _WRITES_ATTRIBUTE, True)
    return endpoint


def is_write_request(request: Request) -> bool:
    return request.method not in READ_ONLY_METHODS or bool(
        getattr(request.scope.get("endpoint"), _WRITES_ATTRIBUTE, False)
    )


class RequestSessionScope:
    """A request's database session, opened on first use. Write requests get a write session
    (BEGIN IMMEDIATE on SQLite), reads a read session."""

    __slots__ = ("_after_response", "_app_state", "_session", "writing")

    def __init__(self, app_state: State, *, writing: bool) -> None:
        self._app_state = app_state  # its `database`, read on first use
        self.writing = writing
        self._session: AsyncSession | None = None
        self._after_response: BackgroundTasks | None = None

    @property
    def opened(self) -> bool:
        return self._session is not None

    def session(self) -> AsyncSession:
        """The request's session (made now if this is the first use; making one does no I/O)."""
        if self._session is None:
            database: Database = self._app_state.database
            self._session = database.session(write=self.writing)
        return self._session

    def after_response(self, func: Callable[..., Any], *args: Any) -> None:
        """Run `func(*args)` once the response is sent (and this request's connection is back in
        the pool), as a background task of the response."""
        if self._after_response is None:
            self._after_response = BackgroundTasks()
        self._after_response.add_task(func, *args)

    def attach_after_response(self, response: Response) -> None:
        """Hand the work queued with `after_response` to the response, after its own."""
        tasks = self._after_response
        if tasks is None:
            return
        if isinstance(response.background, BackgroundTasks):
            response.background.tasks.extend(tasks.tasks)
        else:
            if response.background is not None:
                tasks.tasks.insert(0, response.background)
            response.background = tasks

    async def commit(self) -> None:
        """Commit what the request did, then return the connection (it is returned even when the
        commit fails, and the failure propagates)."""
        session = self._session
        if session is None:
            return
        try:
            if session.in_transaction() or session.new or session.dirty or session.deleted:
                await session.commit()
        finally:
            await self.close()

    async def close(self) -> None:
        """Roll back whatever is open and return the connection, whatever else is happening:
        the close runs shielded from cancellation (a client gone)."""
        session, self._session = self._session, None
        if session is not None:
            await close_shielded(session)


_SCOPE_KEY = "codepulse.session_scope"


class SessionRoute(APIRoute):
    """An API route that owns its request's session scope: made before the dependencies are
    solved, committed when the endpoint has returned (before the response is sent: a failed
    commit is an error response, never a lie), rolled back and closed on every other path.

    The owner wraps the route's handler rather than being a dependency with `yield`: FastAPI
    solves a generator dependency through an exit stack and a cancel scope on every request,
    which cost more than the rest of a cached read (see issue 11 §5)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        marked_writer = bool(getattr(self.endpoint, _WRITES_ATTRIBUTE, False))

        async def handle_with_session(request: Request) -> Response:
            writing = marked_writer or request.method not in READ_ONLY_METHODS
            scope = RequestSessionScope(request.app.state, writing=writing)
            request.scope[_SCOPE_KEY] = scope
            try:
                response = await handler(request)
            except BaseException:
                await scope.close()
                raise
            if response.status_code >= 400:
                # An error answered without raising (a page showing its form's errors): what the
                # request did is not kept either.
                await scope.close()
            else:
                await scope.commit()
            scope.attach_after_response(response)
            return response

        return handle_with_session


def request_session_scope(request: Request) -> RequestSessionScope:
    """The session scope of the request's route (a `SessionRoute`)."""
    try:
        scope: RequestSessionScope = request.scope[_SCOPE_KEY]
    except KeyError:
        raise RuntimeError(
            f"{request.url.path}: its route is not a SessionRoute, so no request session is owned; "
            "build routes with DomainRouter or APIRouter(route_class=SessionRoute)"
        ) from None
    return scope


async def _request_scope(request: Request) -> RequestSessionScope:
    return request_session_scope(request)


RequestScope = Annotated[RequestSessionScope, Depends(_request_scope)]


async def _db_session(request: Request) -> AsyncSession:
    return request_session_scope(request).session()


DbSession = Annotated[AsyncSession, Depends(_db_session)]
