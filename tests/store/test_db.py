"""relay.store.db: the MariaDB bytes literal and run_write, on SQLite and MariaDB."""

from __future__ import annotations

import os

import pytest
from pymysql.converters import escape_bytes_prefixed
from sqlalchemy import select

from relay.store.db import Database, escape_bytes_literal, utcnow
from relay.store.tables import messages, tenants

EVERY_BYTE = bytes(range(256))


@pytest.mark.parametrize(
    "value",
    [EVERY_BYTE, b"", b"\\\\'\"\r\n\x00\x1a", b"a\\0b\\\\n", b"plain", os.urandom(4096)],
)
def test_bytes_literal_is_pymysqls(value: bytes) -> None:
    assert escape_bytes_literal(value) == escape_bytes_prefixed(value)


async def test_run_write_commits_bytes_exactly(db: Database) -> None:
    raw = b"From: a@shop.example\r\n\r\n" + EVERY_BYTE * 200 + b"\r\n.\r\n\\'\"\x00"
    now = utcnow()

    def write(conn):  # type: ignore[no-untyped-def]
        conn.execute(tenants.insert().values(id=1, name="shop", created_at=now))
        result = conn.execute(
            messages.insert().values(
                tenant_id=1,
                message_id_header="<x@y>",
                mail_from="",
                from_header="",
                subject="",
                size=len(raw),
                raw=raw,
                raw_encoding="identity",
                smtputf8=False,
                options={},
                received_at=now,
            )
        )
        return int(result.inserted_primary_key[0])

    message_id = await db.run_write(write)
    async with db.read() as conn:
        stored = await conn.execute(select(messages.c.raw).where(messages.c.id == message_id))
        assert stored.scalar_one() == raw
    if db.is_mysql:
        async with db.read() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver.escape(b"\r\n") == "_binary'\\r\\n'"
            assert driver.escape.__name__ == "fast"  # ours, not PyMySQL's


async def test_run_write_rolls_back_on_error(db: Database) -> None:
    now = utcnow()

    def write(conn):  # type: ignore[no-untyped-def]
        conn.execute(tenants.insert().values(id=1, name="shop", created_at=now))
        raise RuntimeError("the batch fails after its first statement")

    with pytest.raises(RuntimeError):
        await db.run_write(write)
    async with db.read() as conn:
        assert (await conn.execute(select(tenants))).all() == []
    await db.run_write(lambda conn: conn.execute(tenants.insert().values(name="b", created_at=now)))
    async with db.read() as conn:
        assert len((await conn.execute(select(tenants))).all()) == 1
