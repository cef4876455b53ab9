"""Accept → store → lease → render → deliver, with real parts end to end.

A message goes through the real intake (links stored once), the scheduler renders it per
recipient with the real Renderer, and a real SMTP server on loopback receives it: each
recipient's copy carries its own tracking links, pixel, List-Unsubscribe and VERP sender,
and every tracking token decodes back to a stored link of that message.
"""

from __future__ import annotations

import email
import random
from email.policy import default as default_policy
from pathlib import Path

from sqlalchemy import select

from relay import config as config_module
from relay.intake import Intake, Settings
from relay.render import _plan, collect_links, stored_plan
from relay.render.tokens import TokenKind, load_keyring
from relay.rendering import DeliveryRenderer
from relay.scheduler import Scheduler
from relay.store import stats, tenants
from relay.store.db import Database
from relay.store.tables import deliveries, links, messages
from relay.transport.pool import SmarthostPool
from tests.peers import RecordingServer

HTML_MESSAGE = (
    b"From: Shop <news@shop.example>\r\n"
    b"To: ann@example.com\r\n"
    b"Cc: bob@example.org\r\n"
    b"Subject: Sale\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b'<html><body><p><a href="https://shop.example/sale">Sale</a>'
    b' <a href="mailto:help@shop.example">help</a></p></body></html>\r\n'
)


async def test_accept_render_deliver(db: Database, tmp_path: Path) -> None:
    async with RecordingServer() as mx:
        cfg = config_module.load(
            None,
            env={
                "RELAY_DATA_DIR": str(tmp_path),
                "RELAY_BOUNCE__DOMAIN": "bounces.relay.test",
                "RELAY_HTTP__PUBLIC_URL": "https://t.relay.test",
                "RELAY_DELIVERY__MODE": "smarthost",
                "RELAY_DELIVERY__ACCOUNTS": (
                    f'[{{"name": "sink", "host": "127.0.0.1", "port": {mx.port}, "tls": "none"}}]'
                ),
            },
        )
        tenant = await tenants.add_tenant(db, "shop", ["shop.example"])
        intake = Intake(
            db,
            Settings("relay.test", "X-Campaign-ID"),
            collect_links=lambda raw: collect_links(raw, cfg),
            stored_plan=lambda raw: stored_plan(raw, cfg),
        )
        try:
            accepted = await intake.submit(
                tenant,
                None,
                "news@shop.example",
                ["ann@example.com", "bob@example.org"],
                HTML_MESSAGE,
            )
        finally:
            await intake.close()
        async with db.read() as conn:
            stored = dict(
                (
                    await conn.execute(
                        select(links.c.id, links.c.url).where(
                            links.c.message_id == accepted.message_id
                        )
                    )
                ).all()
            )
        assert list(stored.values()) == ["https://shop.example/sale"]
        async with db.read() as conn:
            raw, plan = (
                await conn.execute(
                    select(messages.c.raw, messages.c.render_plan).where(
                        messages.c.id == accepted.message_id
                    )
                )
            ).one()
        # The plan intake found is stored with the message: a delivery process without
        # intake's plan cache restores it instead of scanning the message again.
        assert _plan.load(raw, plan, cfg) == _plan.SHARED.get(raw, cfg)

        transport = SmarthostPool(cfg.delivery, "relay.test", rng=random.Random(1))
        scheduler = Scheduler(
            cfg, db, transport, render=DeliveryRenderer(cfg, db), rng=random.Random(1), owner="w1"
        )
        built, found = _plan.SHARED.misses, _plan.SHARED.hits
        await scheduler.run_until_idle()
        await transport.close()
        # The bytes read back from the store are the ones intake planned: both recipients'
        # renders found intake's plan in the process's cache instead of scanning again.
        assert (_plan.SHARED.misses, _plan.SHARED.hits) == (built, found + 2)

    keyring = load_keyring(cfg)
    async with db.read() as conn:
        by_rcpt = dict((await conn.execute(select(deliveries.c.recipient, deliveries.c.id))).all())
        states = set((await conn.execute(select(deliveries.c.state))).scalars())
    assert states == {"delivered"}
    async with db.read() as conn:
        counted = await stats.totals(conn, tenant.id)
    assert (counted["sent"], counted["delivered"]) == (2, 2)  # maintained counters
    assert len(mx.messages) == 2
    for received in mx.messages:
        (rcpt,) = received.rcpt_tos
        delivery_id = by_rcpt[rcpt]
        local, _, domain = received.mail_from.partition("@")
        assert domain == "bounces.relay.test" and local.startswith("bounces+")
        verp = keyring.verify(local.removeprefix("bounces+"), TokenKind.BOUNCE)
        assert verp.delivery_id == delivery_id
        msg = email.message_from_bytes(received.data, policy=default_policy)
        assert "List-Unsubscribe-Post" in msg
        html = msg.get_content()
        assert "mailto:help@shop.example" in html  # left alone
        assert "https://shop.example/sale" not in html  # rewritten
        click = html.split("https://t.relay.test/track/click/")[1].split('"')[0]
        data = keyring.verify(click, TokenKind.CLICK)
        assert (data.delivery_id, stored[data.link_id]) == (
            delivery_id,
            "https://shop.example/sale",
        )
        assert "/track/open/" in html
