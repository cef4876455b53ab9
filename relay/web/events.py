"""The tracking event buffer: requests append, a background task writes batches.

Input: `TrackEvent`s from the open/click handlers (never awaiting the database). Output:
batches written by `relay.store.events.record_tracking` in one transaction each, by size or
every `http.event_flush_interval`. The writing runs on a writer thread with its own event
loop and engine, so building statements and binding every row (~45 µs of CPU an event)
never holds the request loop. When full, events are dropped and counted, never blocking a
request; `close()` writes whatever is left, then stops the writer thread.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from relay import log as relay_log
from relay import metrics
from relay.store import events as store_events
from relay.store.db import Database

log = relay_log.get(__name__)
T = TypeVar("T")


class WriterThread:
    """An event loop on a daemon thread with its own Database: coroutines handed to `call`
    run there, so their CPU work (SQLAlchemy compiling and binding) is off the caller's
    loop; the caller only awaits the result."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    async def call(self, fn: Callable[[Database], Awaitable[T]]) -> T:
        async def run() -> T:
            return await fn(self.db)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self._loop))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.call(lambda db: db.dispose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, 30)
            if not self._thread.is_alive():
                self._loop.close()


class EventBuffer:
    def __init__(
        self,
        db: Database,
        max_size: int = 50_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.25,
        machine_click_window_s: float = 5.0,
        writer_thread: bool = True,
    ) -> None:
        self.db = db
        self.writer_thread = writer_thread
        self._writer: WriterThread | None = None  # started by the first flush
        self.max_size = max_size
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.machine_click_window_s = machine_click_window_s
        self.dropped = 0
        self.written = 0
        self._queue: collections.deque[store_events.TrackEvent] = collections.deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._last_drop_log = 0.0
        self._counters: dict[str, Any] = {}  # labelled children: labels() locks and hashes

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, event: store_events.TrackEvent) -> bool:
        """Queue one event; False (and counted) when the buffer is full.

        On the pixel's hot path: the size gauge is set by flushes and /metrics, not here."""
        counter = self._counters.get(event.type)
        if counter is None:
            counter = self._counters[event.type] = metrics.events_total.labels(event.type)
        counter.inc()
        if len(self._queue) >= self.max_size:
            self._drop(1, "buffer full")
            return False
        self._queue.append(event)
        if len(self._queue) >= self.batch_size:
            self._wake.set()
        return True

    def _drop(self, n: int, why: str) -> None:
        self.dropped += n
        metrics.events_dropped_total.inc(n)
        now = time.monotonic()
        if now - self._last_drop_log >= 10:  # one line per 10 s, not one per event
            self._last_drop_log = now
            log.warning("tracking.events_dropped", reason=why, dropped_total=self.dropped)

    async def flush(self) -> int:
        """Write everything queued now, in batches; returns events written."""
        async with self._lock:
            total = 0
            while self._queue:
                n = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
                metrics.event_buffer_size.set(len(self._queue))
                started = time.perf_counter()
                try:
                    await self._write(batch)
                except Exception as e:  # noqa: BLE001 - any store trouble: keep or drop, never crash
                    # Keep them for the next round while there is room; otherwise drop.
                    room = self.max_size - len(self._queue)
                    keep = batch[:room]
                    self._queue.extendleft(reversed(keep))
                    if len(keep) < len(batch):
                        self._drop(len(batch) - len(keep), "store unavailable")
                    log.error("tracking.flush_failed", error=type(e).__name__, events=len(batch))
                    return total
                metrics.event_flush_seconds.observe(time.perf_counter() - started)
                total += len(batch)
                self.written += len(batch)
                # Let requests in between batches (matters when writing on this loop).
                await asyncio.sleep(0)
            return total

    async def _write(self, batch: list[store_events.TrackEvent]) -> None:
        async def write(db: Database) -> None:
            async with db.write() as conn:
                await store_events.record_tracking(conn, batch, self.machine_click_window_s)

        if self._writer is None and self.writer_thread:
            # Its own engine on its own thread; a Database built from a bare engine (no
            # config to copy) writes on this loop instead.
            twin = self.db.twin(**({"pool_size": 1, "max_overflow": 1} if self.db.is_mysql else {}))
            if twin is None:
                self.writer_thread = False
            else:
                self._writer = WriterThread(twin, "relay-event-writer")
        if self._writer is None:
            await write(self.db)
        else:
            await self._writer.call(write)

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush every interval (or sooner when a batch is full) until `stopping`, then
        flush what is left."""

        async def wake_on_stop() -> None:
            await stopping.wait()
            self._wake.set()

        watcher = asyncio.create_task(wake_on_stop())
        try:
            while not stopping.is_set():
                self._wake.clear()
                try:
                    async with asyncio.timeout(self.flush_interval_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                await self.flush()
        finally:
            watcher.cancel()
            await self.close()

    async def close(self) -> None:
        """Write what is queued, then stop the writer thread (idempotent)."""
        await asyncio.shield(self.flush())
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.shield(writer.close())
