"""The request session: one per request, one owner.

Every part of a request that needs the database — authentication, role guards, the endpoint —
depends on `RequestScope` (or on `DbSession`, the session itself). FastAPI solves it once per
request. It opens nothing until first asked (`RequestSessionScope.session()`), so a read answered
from caches costs no connection at all. Its owner is the dependency below, which

- commits when the endpoint returns, before the response is sent (`scope="function"`: a failed
  commit becomes an error response, never a lie);
- rolls back and closes on every other path: an exception raised by any dependency (a 401 from
  authentication, a 403/404 from a guard) or by the endpoint, a validation error, a cancelled
  request (a client gone). The close is shielded from cancellation, so the connection (and, on
  SQLite, the database's write lock) always goes back.

Nothing else opens, adopts or closes a request's session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

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

    __slots__ = ("_database", "_session", "writing")

    def __init__(self, database: Database, *, writing: bool) -> None:
        self._database = database
        self.writing = writing
        self._session: AsyncSession | None = None

    @property
    def opened(self) -> bool:
        return self._session is not None

    def session(self) -> AsyncSession:
        """The request's session (made now if this is the first use; making one does no I/O)."""
        if self._session is None:
            self._session = self._database.session(write=self.writing)
        return self._session

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


async def _request_scope(request: Request) -> AsyncIterator[RequestSessionScope]:
    scope = RequestSessionScope(request.app.state.database, writing=is_write_request(request))
    try:
        yield scope
    except BaseException:
        await scope.close()
        raise
    await scope.commit()


# scope="function": the commit runs when the endpoint returns, before the response is sent.
RequestScope = Annotated[RequestSessionScope, Depends(_request_scope, scope="function")]


async def _db_session(scope: RequestScope) -> AsyncSession:
    return scope.session()


DbSession = Annotated[AsyncSession, Depends(_db_session)]
