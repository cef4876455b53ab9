"""A stand-in for `AsyncConnection` that runs each statement at once on a synchronous one.

Why: with aiosqlite, every statement of a write transaction is a trip to its thread and back
through the event loop, and SQLite's write lock stays taken across all those trips. With
hundreds of SMTP sessions on the loop, each trip waited for the loop, so a transaction of a
few statements held the lock for 5–25 ms (measured) while a commit itself costs ~0.3 ms, and
every other writer waited that long. The store's functions keep their `await conn.execute`
form; given this stand-in, the awaits finish without giving the loop away, so a transaction
runs from BEGIN to COMMIT in one go and holds the lock only as long as its work takes.
Only for SQLite (a local file: statements take microseconds, the fsync'd commit well under a
millisecond); `relay.store.db.Database.write` hands it out once the write gate is held.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, CursorResult

T = TypeVar("T")


class InlineConnection:
    """The parts of `AsyncConnection` the store uses, over a sync `Connection`."""

    def __init__(self, sync_connection: Connection) -> None:
        self.sync_connection = sync_connection
        self.dialect = sync_connection.dialect

    async def execute(self, statement: Any, parameters: Any = None, **kw: Any) -> CursorResult[Any]:
        return self.sync_connection.execute(statement, parameters, **kw)

    async def exec_driver_sql(self, statement: str, parameters: Any = None, **kw: Any) -> Any:
        return self.sync_connection.exec_driver_sql(statement, parameters, **kw)

    async def scalar(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        return self.sync_connection.scalar(statement, parameters, **kw)

    async def scalars(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        return self.sync_connection.scalars(statement, parameters, **kw)

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return fn(self.sync_connection, *args, **kw)

    def get_execution_options(self) -> Any:
        return self.sync_connection.get_execution_options()

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[Any]:
        with self.sync_connection.begin_nested() as savepoint:
            yield savepoint
