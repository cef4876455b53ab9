"""Inbound mail to the bounce (VERP) domain: stored durably for bounce processing.

Input: envelope and raw bytes of a DSN/ARF sent to bounce.domain. Output: none. Side
effect: one `inbound_reports` row per recipient (matched=false), committed before return.
Initial version: the bounce stream replaces the body with DSN parsing; keep the signature.
"""

from __future__ import annotations

from relay.store.db import Database, utcnow
from relay.store.tables import inbound_reports


async def receive(db: Database, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
    now = utcnow()
    rows = [
        {"received_at": now, "rcpt": rcpt, "mail_from": mail_from, "matched": False, "raw": raw}
        for rcpt in rcpt_tos
    ]
    async with db.write() as conn:
        await conn.execute(inbound_reports.insert(), rows)
