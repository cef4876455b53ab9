"""A queue for SQLite's write lock, so that a writer wakes the moment it is free.

SQLite lets one connection write at a time. A writer that finds the lock taken is parked
by SQLite's busy handler, which sleeps 1, 2, 5, 10 … 100 ms between tries: under load,
writers spent more time asleep than the lock was held (measured with the split layout:
p90 wait 25–80 ms). relay's writers take the gate before BEGIN IMMEDIATE and let go after
COMMIT: a thread lock among this process's event loops, then an exclusive `flock` on a
file beside the database among processes. Both wake the next writer as soon as the holder
lets go, so BEGIN IMMEDIATE then finds the lock free. (The writers of one event loop line
up on an asyncio.Lock before they come here; see `relay.store.db.Database.write`.)

The gate only orders relay's own writers; SQLite's lock stays the real guard, and a writer
that does not pass the gate (a migration, sqlite3 on the command line) is waited for as
`Database.write` says. The flock goes with its process if that process dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

_GATES: dict[str, WriteGate] = {}
_GATES_LOCK = threading.Lock()


def gate_for(database_path: str) -> WriteGate:
    """The process's one gate for this database file (shared by every engine on it)."""
    key = os.path.realpath(database_path)
    with _GATES_LOCK:
        gate = _GATES.get(key)
        if gate is None:
            gate = _GATES[key] = WriteGate(key + "-writer.lock")
        return gate


class WriteGate:
    def __init__(self, lock_path: str) -> None:
        self.lock_path = lock_path
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._fd_pid = 0
        # Where an event loop waits for a holder in another thread or process: one thread,
        # since a loop's own writers line up before they get here.
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix="relay-db-gate")

    def _file(self) -> int:
        # Opened lazily and again after a fork: a child must not share its parent's open
        # file description, or the two would hold one flock between them.
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fd_pid = os.getpid()
        return self._fd

    def acquire(self) -> None:
        """Block this thread until it holds the gate."""
        self._threads.acquire()
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def try_acquire(self) -> bool:
        """Take the gate if that needs no waiting; never blocks."""
        if not self._threads.acquire(blocking=False):
            return False
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._threads.release()
            return False
        except BaseException:
            self._threads.release()
            raise
        return True

    def release(self) -> None:
        try:
            fcntl.flock(self._file(), fcntl.LOCK_UN)
        finally:
            self._threads.release()

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold the gate from a coroutine; waiting (if any) happens in the waiter thread."""
        if not self.try_acquire():
            waiting = asyncio.get_running_loop().run_in_executor(self._waiter, self.acquire)
            try:
                await asyncio.shield(waiting)
            except asyncio.CancelledError:
                # The thread gets the gate in the end; hand it straight back.
                waiting.add_done_callback(self._release_if_acquired)
                raise
        try:
            yield
        finally:
            self.release()

    def _release_if_acquired(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.release()
