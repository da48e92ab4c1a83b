"""PostgreSQL LISTEN/NOTIFY; on SQLite (one process) an in-process stand-in for the channels
someone listens to with `listen_in_process` (the task queue's workers poll instead)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncSession,
)

from codepulse.db.dialect import is_postgresql
from codepulse.db.engine import Database, after_commit

# SQLite: the callbacks of `listen_in_process`, per channel.
_in_process: dict[str, list[Callable[[str], None]]] = {}


async def notify(session: AsyncSession, channel: str, payload: str = "") -> None:
    """PostgreSQL NOTIFY on `channel`, delivered when the session's transaction commits (and
    never if it rolls back). On SQLite, the in-process listeners of `channel` are called after
    the commit; without any, a no-op (listeners poll)."""
    if is_postgresql(session):
        await session.execute(select(func.pg_notify(channel, payload)))
    elif _in_process.get(channel):
        after_commit(session, lambda: _deliver_in_process(channel, payload))


def _deliver_in_process(channel: str, payload: str) -> None:
    for callback in tuple(_in_process.get(channel, ())):
        callback(payload)


def listen_in_process(channel: str, callback: Callable[[str], None]) -> Callable[[], None]:
    """SQLite: call `callback(payload)` after each commit that `notify`-ed `channel` in this
    process (an SQLite database has one serving process). Returns the function that stops it."""
    _in_process.setdefault(channel, []).append(callback)

    def stop() -> None:
        callbacks = _in_process.get(channel, [])
        if callback in callbacks:
            callbacks.remove(callback)

    return stop


class Listener:
    """A dedicated PostgreSQL connection LISTENing on one channel (see `listen`)."""

    def __init__(self, connection: AsyncConnection, driver: Any, channel: str, handler: Any) -> None:
        self._connection = connection
        self._driver = driver
        self._channel = channel
        self._handler = handler

    @property
    def alive(self) -> bool:
        """False once the server connection is gone (a restart): notifications stop arriving."""
        return not self._driver.is_closed()

    async def close(self) -> None:
        try:
            if self.alive:
                await self._driver.remove_listener(self._channel, self._handler)
        finally:
            # Never return a LISTENing connection to the pool: close it instead.
            await self._connection.invalidate()
            await self._connection.close()


async def listen(database: Database, channel: str, callback: Callable[[str], None]) -> Listener | None:
    """Call `callback(payload)` for every NOTIFY on `channel`, on a connection of its own held
    until `Listener.close()`. None on SQLite (no notifications: poll)."""
    if database.dialect != "postgresql":
        return None
    connection = await database.engine.connect()
    try:
        driver = (await connection.get_raw_connection()).driver_connection  # the asyncpg connection
        if driver is None:  # pragma: no cover - a checked-out connection always has one
            raise RuntimeError("no driver connection")

        def handler(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        await driver.add_listener(channel, handler)
    except BaseException:
        await connection.invalidate()
        await connection.close()
        raise
    return Listener(connection, driver, channel, handler)
