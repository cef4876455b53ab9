"""Reused SMTP sessions against a real aiosmtpd server: reuse, the per-connection cap, and
the idle timeout closing a session nobody used (not only on the next use)."""

from __future__ import annotations

import asyncio

from relay.transport.session import Endpoint, SessionCache
from tests.peers import RecordingServer


def _cache(cap: int = 100, idle_s: float = 60.0) -> SessionCache:
    return SessionCache("relay.test", 5.0, 5.0, cap, idle_s)


async def test_reuse_up_to_the_cap() -> None:
    async with RecordingServer() as mx:
        cache = _cache(cap=3)
        endpoint = Endpoint("127.0.0.1", mx.port)
        for i in range(7):
            session = await cache.acquire(endpoint)
            await session.client.sendmail("s@shop.example", [f"r{i}@example.com"], b"Hi\r\n")
            cache.give_back(endpoint, session, ok=True)
        await cache.close()
    assert len(mx.messages) == 7
    assert mx.connections == 3  # 3 + 3 + 1


async def test_idle_session_is_closed_by_the_timeout() -> None:
    async with RecordingServer() as mx:
        cache = _cache(idle_s=0.4)
        endpoint = Endpoint("127.0.0.1", mx.port)
        session = await cache.acquire(endpoint)
        cache.give_back(endpoint, session, ok=True)
        assert session.client.is_connected
        await asyncio.sleep(1.0)  # nobody sends: the reaper closes it on its own
        assert not session.client.is_connected
        again = await cache.acquire(endpoint)
        assert again is not session and mx.connections == 2
        cache.give_back(endpoint, again, ok=True)
        await cache.close()
        assert not again.client.is_connected
