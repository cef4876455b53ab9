"""A queue between processes for SQLite's write lock, so a writer wakes when it is free.

SQLite lets one connection write at a time. A writer that finds the lock taken is parked
by SQLite's busy handler, which sleeps 1, 2, 5, 10 … 100 ms between tries. With
`relay serve --role smtp,web` beside `--role delivery` on one file, the two processes spent
more time asleep than the lock was held (measured: p90 wait 25–80 ms). The gate is an
exclusive `flock` on a file beside the database, taken before BEGIN IMMEDIATE and let go
after COMMIT: the kernel wakes the next process as soon as the holder lets go.

Within a process, the writers of one event loop line up on an asyncio.Lock for the whole
transaction. Intake's writer thread is not lined up with them: measured in the one-process
layout, queueing intake's group commits behind the delivery role's writes made the commits
smaller and cost more CPU than the busy handler's sleeps did. The gate only orders relay's
own writers; SQLite's lock stays the real guard, so a writer that does not pass the gate
(a migration, sqlite3 on the command line) is still waited for by the busy handler. The
flock goes with its process if that process dies.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager

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
    """An exclusive flock that this process's writers share: processes queue on it; a
    writer of this process that asks while another holds it goes straight on (a count of
    holders)."""

    def __init__(self, lock_path: str) -> None:
        self.lock_path = lock_path
        self._mutex = threading.Lock()
        self._holders = 0
        self._fd: int | None = None
        self._fd_pid = 0
        # Where an event loop waits for another process to let go: one thread, since a
        # loop's own writers line up on an asyncio.Lock before they get here.
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix="relay-db-gate")

    def _file(self) -> int:
        # Opened lazily and again after a fork: a child must not share its parent's open
        # file description, or the two would hold one flock between them.
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fd_pid = os.getpid()
            self._holders = 0
        return self._fd

    def acquire(self) -> None:
        """Block this thread until this process holds the gate."""
        with self._mutex:
            if self._holders == 0:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            self._holders += 1

    def try_acquire(self) -> bool:
        """Take the gate if that needs no waiting (never blocks: an event loop calls it,
        while another thread may hold the mutex waiting for another process)."""
        if not self._mutex.acquire(blocking=False):
            return False
        try:
            if self._holders == 0:
                try:
                    fcntl.flock(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
            self._holders += 1
            return True
        finally:
            self._mutex.release()

    def release(self) -> None:
        with self._mutex:
            self._holders -= 1
            if self._holders == 0:
                fcntl.flock(self._file(), fcntl.LOCK_UN)

    @contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    @asynccontextmanager
    async def held_async(self, queue: asyncio.Lock) -> AsyncIterator[None]:
        """Hold the gate from a coroutine for a whole transaction. `queue` lines up the
        loop's own writers for the transaction too: they would otherwise meet on SQLite's
        lock, the busy handler's sleeps again."""
        async with queue:
            if not self.try_acquire():
                waiting = asyncio.get_running_loop().run_in_executor(self._waiter, self.acquire)
                try:
                    await asyncio.shield(waiting)
                except asyncio.CancelledError:
                    # The thread gets the gate in the end; hand it straight back.
                    waiting.add_done_callback(_release_when_acquired(self))
                    raise
            try:
                yield
            finally:
                self.release()


def _release_when_acquired(gate: WriteGate) -> Callable[[asyncio.Future[None]], None]:
    def done(future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is None:
            gate.release()

    return done
