"""The tracking event buffer: requests append, a background task writes batches.

Input: `TrackEvent`s from the open/click handlers (never awaiting the database). Output:
batches written by `relay.store.events.record_tracking` in one transaction each, by size or
every `http.event_flush_interval`. When full, events are dropped and counted, never blocking
a request; `close()` writes whatever is left.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from relay import log as relay_log
from relay import metrics
from relay.store import events as store_events
from relay.store.db import Database

log = relay_log.get(__name__)


class EventBuffer:
    def __init__(
        self,
        db: Database,
        max_size: int = 50_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.25,
        machine_click_window_s: float = 5.0,
    ) -> None:
        self.db = db
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
                    async with self.db.write() as conn:
                        await store_events.record_tracking(conn, batch, self.machine_click_window_s)
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
                # Building a batch's statements is CPU on this loop: let requests in between.
                await asyncio.sleep(0)
            return total

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
        await asyncio.shield(self.flush())
