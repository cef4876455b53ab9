"""relay.store.messages on SQLite and MariaDB: batch insert, suppression, campaign race."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from relay.store.db import Database, utcnow
from relay.store.messages import NewMessage, NewRecipient, campaign_for, insert_batch
from relay.store.suppressions import add as add_suppression
from relay.store.tables import campaigns, deliveries, recipients
from tests import rows


def _message(tenant_id: int, *keys: str, held: bool = False) -> NewMessage:
    row = {
        "tenant_id": tenant_id,
        "message_id_header": "<x@y>",
        "mail_from": "a@shop.example",
        "from_header": "",
        "subject": "",
        "size": 3,
        "raw": b"x\r\n",
        "raw_encoding": "identity",
        "smtputf8": False,
        "options": {},
        "received_at": utcnow(),
    }
    rcpts = [NewRecipient(k, k, k.rpartition("@")[2], "to") for k in keys]
    return NewMessage(tenant_id, row, rcpts, held=held)


async def test_batch_of_two_tenants_with_suppression_per_tenant(db: Database) -> None:
    t1, t2 = await rows.tenant(db), await rows.tenant(db)
    async with db.write() as conn:
        await add_suppression(conn, t1, "x@example.org", "hard_bounce")
    batch = [
        _message(t1, "x@example.org", "y@example.org"),
        _message(t2, "x@example.org"),
        _message(t2, "x@example.org", held=True),
    ]
    async with db.write() as conn:
        ids = await insert_batch(conn, batch)
    assert len(set(ids)) == 3
    assert batch[0].states == {"x@example.org": "suppressed", "y@example.org": "queued"}
    assert batch[1].states == {"x@example.org": "queued"}
    assert batch[2].states == {"x@example.org": "held"}
    async with db.read() as conn:
        assert len((await conn.execute(select(deliveries))).all()) == 4
        counts = {
            (r.tenant_id, r.email): r.messages_count for r in await conn.execute(select(recipients))
        }
    assert counts == {(t1, "x@example.org"): 1, (t1, "y@example.org"): 1, (t2, "x@example.org"): 2}


async def test_campaign_created_once_under_concurrency(db: Database) -> None:
    tenant_id = await rows.tenant(db)
    results = await asyncio.gather(*(campaign_for(db, tenant_id, "launch") for _ in range(8)))
    assert len({r for r in results}) == 1
    async with db.read() as conn:
        assert len((await conn.execute(select(campaigns))).all()) == 1
