"""The webhook dispatcher: POSTs queued events to tenants' endpoints, signed, with retries.

Input: due rows of `webhook_deliveries` (relay.store.webhooks). Output: HTTP POSTs of the
event JSON with `X-Relay-Timestamp` and `X-Relay-Signature: v1=<hex HMAC-SHA256 of
"<timestamp>.<body>" with the webhook's secret>`; 2xx = sent, otherwise retried with
exponential backoff until `max_attempts`. Runs as a task beside the web role.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from relay import log as relay_log
from relay import metrics
from relay.store import webhooks as store
from relay.store.db import Database, utcnow

log = relay_log.get(__name__)

SIGNATURE_HEADER = "X-Relay-Signature"
TIMESTAMP_HEADER = "X-Relay-Timestamp"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (documented in README): recompute and compare in constant time."""
    try:
        expected = sign(secret, int(timestamp), body)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min … capped at 6 h."""
    return timedelta(seconds=min(30 * 2 ** (attempts - 1), 6 * 3600))


class Dispatcher:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime] = utcnow,
        timeout_s: float = 10.0,
        max_attempts: int = 12,
        batch: int = 50,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.batch = batch
        self._client = client

    async def _post(self, client: httpx.AsyncClient, row: Any) -> str | None:
        body = json.dumps(row.event, separators=(",", ":"), sort_keys=True).encode()
        timestamp = int(self.clock().replace(tzinfo=UTC).timestamp())  # clock: naive UTC
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "relay-webhooks/1",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(row.secret, timestamp, body),
        }
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await client.post(row.url, content=body, headers=headers)
        except (TimeoutError, httpx.HTTPError) as e:
            return f"{type(e).__name__}: {e}"[:500]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def run_once(self) -> int:
        """Claim and send one batch; returns how many were attempted."""
        now = self.clock()
        async with self.db.write() as conn:
            rows = await store.claim_due(
                conn, now, timedelta(seconds=self.timeout_s * 3), self.batch
            )
        if not rows:
            return 0
        client = self._client or httpx.AsyncClient(timeout=self.timeout_s)
        try:
            results = await asyncio.gather(*(self._post(client, r) for r in rows))
        finally:
            if self._client is None:
                await client.aclose()
        async with self.db.write() as conn:
            for row, error in zip(rows, results, strict=True):
                attempts = row.attempts + 1
                retry_at = None
                if error is not None and attempts < self.max_attempts:
                    retry_at = now + backoff(attempts)
                await store.record(conn, row.id, attempts, error, retry_at)
                result = "sent" if error is None else ("retry" if retry_at else "failed")
                metrics.webhooks_total.labels(result).inc()
                if error is not None:
                    log.info(
                        "webhook.failed",
                        post_id=row.id,
                        attempt=attempts,
                        error=error,
                        retry_at=retry_at.isoformat() if retry_at else None,
                    )
        return len(rows)

    async def flush(self, timeout_s: float) -> int:
        """On stop: POST what is due now (the events just written on the way out) until
        nothing is due or `timeout_s` passes; what is left waits for the next start."""
        sent = 0
        try:
            async with asyncio.timeout(timeout_s):
                while n := await self.run_once():
                    sent += n
        except TimeoutError:
            log.warning("webhook.flush_timeout", sent=sent)
        except Exception as e:  # noqa: BLE001 - the store may be down; rows stay queued
            log.error("webhook.dispatch_failed", error=type(e).__name__)
        return sent

    async def run(self, stopping: asyncio.Event, idle_s: float = 1.0) -> None:
        while not stopping.is_set():
            try:
                sent = await self.run_once()
            except Exception as e:  # noqa: BLE001 - the store may be down; try again later
                log.error("webhook.dispatch_failed", error=type(e).__name__)
                sent = 0
            if not sent:
                try:
                    async with asyncio.timeout(idle_s):
                        await stopping.wait()
                except TimeoutError:
                    pass
