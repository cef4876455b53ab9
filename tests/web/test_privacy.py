"""http.store_ip through the real endpoints: the IP stored with an open, a click and an
unsubscribe is the client's in full, truncated to its IPv4 /24 or IPv6 /48, or none."""

from __future__ import annotations

import httpx
import pytest

from relay.config import Config
from relay.render.tokens import Keyring, TokenData, TokenKind
from relay.store.db import Database
from relay.web.app import create_app
from tests.web.conftest import Clock, state
from tests.web.test_tracking import BROWSER, _delivery, _events

V4 = "198.51.100.7"
V6 = "2001:db8:1234:5678:9abc::1"
STORED = {
    "full": {V4: V4, V6: V6},
    "truncated": {V4: "198.51.100.0", V6: "2001:db8:1234::"},
    "none": {V4: None, V6: None},
}


@pytest.mark.parametrize("mode", ["full", "truncated", "none"])
@pytest.mark.parametrize("client_ip", [V4, V6])
async def test_stored_ip_follows_store_ip(
    mode: str, client_ip: str, config: Config, db: Database, keyring: Keyring, clock: Clock
) -> None:
    private = config.model_copy(update={"http": config.http.model_copy(update={"store_ip": mode})})
    app = create_app(private, db, keyring=keyring, clock=clock)
    _, delivery_id, (link_id,) = await _delivery(db)
    transport = httpx.ASGITransport(app=app, client=(client_ip, 5555))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as c:
            agent = {"User-Agent": BROWSER}
            opened = await c.get(
                f"/track/open/{keyring.sign(TokenData(TokenKind.OPEN, delivery_id))}",
                headers=agent,
            )
            clicked = await c.get(
                f"/track/click/{keyring.sign(TokenData(TokenKind.CLICK, delivery_id, link_id))}",
                headers=agent,
            )
            unsubscribed = await c.post(
                f"/unsubscribe/{keyring.sign(TokenData(TokenKind.UNSUBSCRIBE, delivery_id))}",
                content=b"List-Unsubscribe=One-Click",
                headers={**agent, "Content-Type": "application/x-www-form-urlencoded"},
            )
        assert (opened.status_code, clicked.status_code, unsubscribed.status_code) == (
            200,
            302,
            200,
        )
        await state(app).buffer.flush()
    finally:
        await state(app).buffer.close()
    expected = STORED[mode][client_ip]
    stored = sorted((e.type, e.ip) for e in await _events(db))
    assert stored == [("clicked", expected), ("opened", expected), ("unsubscribed", expected)]
