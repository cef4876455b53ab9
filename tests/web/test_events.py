"""The tracking event buffer when full: hits are still answered at once, the events that do
not fit are dropped, counted in relay_tracking_events_dropped_total and logged (once per
10 s, not once per event), and what did fit is written by the next flush."""

from __future__ import annotations

import asyncio

import httpx
from structlog.testing import capture_logs

from relay import metrics
from relay.config import Config
from relay.render.tokens import Keyring, TokenData, TokenKind
from relay.store.db import Database
from relay.web.app import create_app
from relay.web.pixel import GIF as PIXEL
from tests.web.conftest import Clock, state
from tests.web.test_tracking import BROWSER, _delivery, _events

DROPPED = "relay_tracking_events_dropped_total"


def _dropped_total() -> float:
    value = metrics.REGISTRY.get_sample_value(DROPPED)
    assert value is not None
    return value


async def test_full_buffer_drops_counts_and_logs_without_blocking(
    config: Config, db: Database, keyring: Keyring, clock: Clock
) -> None:
    small = config.model_copy(
        update={
            "http": config.http.model_copy(
                update={"event_buffer_size": 100, "event_batch_size": 1000}
            )
        }
    )
    # No lifespan runs under ASGITransport, so nothing drains the buffer while it fills:
    # a handler that waited for room would wait for ever (hence the timeout).
    app = create_app(small, db, keyring=keyring, clock=clock)
    buffer = state(app).buffer
    _, delivery_id, (link_id,) = await _delivery(db)
    pixel = f"/track/open/{keyring.sign(TokenData(TokenKind.OPEN, delivery_id))}"
    click = f"/track/click/{keyring.sign(TokenData(TokenKind.CLICK, delivery_id, link_id))}"
    before = _dropped_total()
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 5555))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as c:
            agent = {"User-Agent": BROWSER}
            async with asyncio.timeout(30):
                for _ in range(100):
                    assert (await c.get(pixel, headers=agent)).content == PIXEL
                assert len(buffer) == 100 and buffer.dropped == 0
                with capture_logs() as logs:
                    overflow = [await c.get(pixel, headers=agent) for _ in range(4)]
                    overflow += [await c.get(click, headers=agent) for _ in range(3)]
            assert [r.status_code for r in overflow] == [200] * 4 + [302] * 3
            assert all(r.content == PIXEL for r in overflow[:4])
            assert {r.headers.get("location") for r in overflow[4:]} == {"https://shop.example/a"}
            assert len(buffer) == 100 and buffer.dropped == 7
            assert _dropped_total() - before == 7
            exposed = (await c.get("/metrics")).text
            assert f"{DROPPED} {_dropped_total()}" in exposed
        drops = [e for e in logs if e["event"] == "tracking.events_dropped"]
        assert len(drops) == 1 and drops[0]["log_level"] == "warning"
        assert drops[0]["reason"] == "buffer full"
        assert await buffer.flush() == 100
    finally:
        await buffer.close()
    events = await _events(db)
    assert len(events) == 100 and {e.type for e in events} == {"opened"}
