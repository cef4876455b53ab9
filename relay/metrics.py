"""Prometheus metrics: one registry and the metric objects every stage updates.

Input: nothing. Output: module-level metric objects and one-line hooks the stages call
(`session_opened`, `timed_intake`, `timed_attempt`, `delivery_outcome`, …); the web role
exposes the registry at /metrics. Counters and histograms are per process; the queue gauges
are read from the database by `relay.service` (the same numbers from every process).
A leaf: imports nothing from relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

T = TypeVar("T")
REGISTRY = CollectorRegistry(auto_describe=True)

# Milliseconds to minutes: a commit is ~ms, an attempt to a slow MX can take a minute.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_ATTEMPT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

queue_depth = Gauge(
    "relay_queue_depth", "Deliveries in the database by state", ["state"], registry=REGISTRY
)
queue_oldest_age_seconds = Gauge(
    "relay_queue_oldest_age_seconds",
    "Age of the oldest delivery not yet in a final state (0 when the queue is empty)",
    registry=REGISTRY,
)
queue_read_at = Gauge(
    "relay_queue_read_timestamp_seconds",
    "When this process last read the queue gauges from the database",
    registry=REGISTRY,
)
# Read from the database by relay.service with `relay status`'s queries (every process
# reports the same numbers; take max(), not sum(), over processes).
last_hour = Gauge(
    "relay_last_hour_events",
    "Delivery outcomes, reports and tracking events in the last hour, by type",
    ["type"],
    registry=REGISTRY,
)
last_hour_rate = Gauge(
    "relay_last_hour_rate",
    "Bounces and complaints in the last hour per message sent in it",
    ["kind"],
    registry=REGISTRY,
)
suppressions = Gauge(
    "relay_suppressions", "Suppression list entries by reason", ["reason"], registry=REGISTRY
)
account_sent_today = Gauge(
    "relay_account_sent_today",
    "Messages sent through a pool account today (UTC)",
    ["account"],
    registry=REGISTRY,
)
account_paused = Gauge(
    "relay_account_paused", "1 while a pool account is paused", ["account"], registry=REGISTRY
)
account_failures = Gauge(
    "relay_account_consecutive_failures",
    "Consecutive connection/session failures of a pool account",
    ["account"],
    registry=REGISTRY,
)
database_up = Gauge(
    "relay_database_up",
    "1 when this process's last status read of the database worked",
    registry=REGISTRY,
)
newest_message_age_seconds = Gauge(
    "relay_newest_message_age_seconds",
    "Age of the newest accepted message in the database (freshness)",
    registry=REGISTRY,
)
deliveries_total = Counter(
    "relay_deliveries_total",
    "Delivery attempts recorded, by the state they led to",
    ["outcome"],
    registry=REGISTRY,
)
delivery_seconds = Histogram(
    "relay_delivery_seconds",
    "Duration of one delivery attempt (render and transport)",
    ["transport"],
    buckets=_ATTEMPT_BUCKETS,
    registry=REGISTRY,
)
smtp_sessions = Gauge("relay_smtp_sessions_open", "Open inbound SMTP sessions", registry=REGISTRY)
smtp_sessions_total = Counter(
    "relay_smtp_sessions_total", "Inbound SMTP sessions accepted", registry=REGISTRY
)
messages_accepted_total = Counter(
    "relay_messages_accepted_total", "Messages accepted (250 after commit)", registry=REGISTRY
)
intake_seconds = Histogram(
    "relay_intake_seconds",
    "SMTP accept latency: end of DATA to durable commit",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
event_buffer_size = Gauge(
    "relay_event_buffer_size", "Tracking events waiting to be written", registry=REGISTRY
)
events_total = Counter(
    "relay_tracking_events_total", "Tracking events received", ["type"], registry=REGISTRY
)
events_dropped_total = Counter(
    "relay_tracking_events_dropped_total",
    "Tracking events dropped (buffer full or store down)",
    registry=REGISTRY,
)
event_flush_seconds = Histogram(
    "relay_event_flush_seconds", "Time to write one batch of tracking events", registry=REGISTRY
)
http_request_seconds = Histogram(
    "relay_http_request_seconds", "API request latency", ["route"], registry=REGISTRY
)
webhooks_total = Counter(
    "relay_webhook_posts_total", "Webhook POSTs by result", ["result"], registry=REGISTRY
)
config_reloads_total = Counter(
    "relay_config_reloads_total", "SIGHUP reloads by result", ["result"], registry=REGISTRY
)


def session_opened() -> None:
    smtp_sessions_total.inc()
    smtp_sessions.inc()


def session_closed() -> None:
    smtp_sessions.dec()


async def timed_intake(commit: Awaitable[T]) -> T:
    """Await an intake commit; on success count the message and observe its latency."""
    started = time.perf_counter()
    result = await commit
    intake_seconds.observe(time.perf_counter() - started)
    messages_accepted_total.inc()
    return result


async def timed_attempt(transport: str, attempt: Awaitable[T]) -> T:
    started = time.perf_counter()
    try:
        return await attempt
    finally:
        delivery_seconds.labels(transport).observe(time.perf_counter() - started)


def delivery_outcome(state: str) -> None:
    deliveries_total.labels(state).inc()


def _replace(gauge: Gauge, values: Mapping[str, float]) -> None:
    """Set a one-label gauge to a fresh reading; labels that vanished drop to 0."""
    for labels in list(gauge._metrics):  # noqa: SLF001 - keep labels seen before, at 0
        if labels[0] not in values:
            gauge.labels(*labels).set(0)
    for label, value in values.items():
        gauge.labels(label).set(value)


def set_queue(by_state: Mapping[str, int], oldest_age_s: float | None) -> None:
    """Replace the queue gauges with one fresh reading (states that vanished drop to 0)."""
    _replace(queue_depth, by_state)
    queue_oldest_age_seconds.set(oldest_age_s or 0)
    queue_read_at.set_to_current_time()


def set_status(report: Mapping[str, Any]) -> None:
    """The rest of `relay status` (relay.store.status.gather) as gauges."""
    set_queue(report["queue"]["by_state"], report["queue"]["oldest_queued_age_s"])
    _replace(last_hour, report["last_hour"])
    _replace(last_hour_rate, {k: v or 0 for k, v in report["rates_last_hour"].items()})
    _replace(suppressions, report["suppressions"])
    accounts = report["accounts"]
    _replace(account_sent_today, {a["name"]: a["sent_today"] for a in accounts})
    _replace(account_paused, {a["name"]: int(a["paused"]) for a in accounts})
    _replace(account_failures, {a["name"]: a["consecutive_failures"] for a in accounts})
    newest = report["database"]["newest_message_age_s"]
    newest_message_age_seconds.set(newest if newest is not None else 0)
    database_up.set(1)


def generate_latest() -> bytes:
    """The registry in Prometheus text format (what /metrics serves)."""
    return prometheus_client.generate_latest(REGISTRY)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One HTTP/1.0-style exchange: GET /metrics → the registry; anything else → 404."""
    try:
        async with asyncio.timeout(10):
            request = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing in them matters here
        parts = request.split()
        ok = len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics"
        body = generate_latest() if ok else b"not found\n"
        head = (
            f"HTTP/1.1 {'200 OK' if ok else '404 Not Found'}\r\n"
            f"Content-Type: {prometheus_client.CONTENT_TYPE_LATEST if ok else 'text/plain'}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(host: str, port: int, stopping: asyncio.Event) -> None:
    """/metrics on its own port until `stopping` (processes without the web role)."""
    server = await asyncio.start_server(_answer, host, port)
    try:
        await stopping.wait()
    finally:
        server.close()
        await server.wait_closed()
