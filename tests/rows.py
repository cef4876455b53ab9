"""Row builders for tests: insert a tenant, campaign, SMTP credential, message or delivery
with sensible defaults.

Only the fields a test cares about need naming (buildbot `fakedb/row.py` style):

    tenant_id = await rows.tenant(db)
    message_id = await rows.message(db, tenant_id, raw=b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
    delivery_id = await rows.delivery(db, message_id, recipient="a@example.com")
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from sqlalchemy import select

from relay.store.db import Database, utcnow
from relay.store.tables import campaigns, deliveries, messages, smtp_credentials, tenants

_names = itertools.count(1)

DEFAULT_RAW = (
    b"From: Shop <news@shop.example>\r\n"
    b"To: someone@example.com\r\n"
    b"Subject: Hello\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <m1@shop.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello there.\r\n"
)


async def tenant(db: Database, **values: Any) -> int:
    row = {
        "name": f"tenant-{next(_names)}",
        "sender_domains": [],
        "settings": {},
        "hold": False,
        "created_at": utcnow(),
    }
    row.update(values)
    async with db.write() as conn:
        result = await conn.execute(tenants.insert().values(**row))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def campaign(db: Database, tenant_id: int, **values: Any) -> int:
    row = {"tenant_id": tenant_id, "name": f"campaign-{next(_names)}", "created_at": utcnow()}
    row.update(values)
    async with db.write() as conn:
        result = await conn.execute(campaigns.insert().values(**row))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def credential(db: Database, tenant_id: int, **values: Any) -> int:
    """A login whose password never verifies (the hash is not Argon2): for queue rows."""
    row = {
        "tenant_id": tenant_id,
        "username": f"login-{next(_names)}",
        "password_hash": "x",
        "created_at": utcnow(),
    }
    row.update(values)
    async with db.write() as conn:
        result = await conn.execute(smtp_credentials.insert().values(**row))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def message(db: Database, tenant_id: int, raw: bytes = DEFAULT_RAW, **values: Any) -> int:
    row = {
        "tenant_id": tenant_id,
        "message_id_header": "<m1@shop.example>",
        "mail_from": "news@shop.example",
        "from_header": "Shop <news@shop.example>",
        "subject": "Hello",
        "size": len(raw),
        "raw": raw,
        "raw_encoding": "identity",
        "smtputf8": False,
        "options": {},
        "received_at": utcnow(),
    }
    row.update(values)
    async with db.write() as conn:
        result = await conn.execute(messages.insert().values(**row))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def delivery(
    db: Database, message_id: int, recipient: str = "someone@example.com", **values: Any
) -> int:
    async with db.read() as conn:
        msg = (
            await conn.execute(
                select(messages.c.tenant_id, messages.c.campaign_id).where(
                    messages.c.id == message_id
                )
            )
        ).one()
    now: datetime = utcnow()
    row = {
        "message_id": message_id,
        "tenant_id": msg.tenant_id,
        "campaign_id": msg.campaign_id,
        "recipient": recipient,
        "recipient_key": recipient.lower(),
        "domain": recipient.rpartition("@")[2].lower(),
        "rcpt_type": "to",
        "state": "queued",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
    row.update(values)
    async with db.write() as conn:
        result = await conn.execute(deliveries.insert().values(**row))
    return int(result.inserted_primary_key[0])  # type: ignore[index]
