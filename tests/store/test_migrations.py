"""The migrations build exactly the schema tables.py describes, on SQLite and MariaDB."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from relay.config import DatabaseConfig
from relay.errors import SchemaError
from relay.store.db import Database, check_schema, current_revision, head_revision, upgrade
from relay.store.tables import metadata


async def test_schema_matches_tables(db: Database) -> None:
    def diff(conn):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)

    async with db.read() as conn:
        changes = await conn.run_sync(diff)
    assert changes == [], f"migrations and relay/store/tables.py disagree: {changes}"


async def test_upgrade_is_idempotent(db: Database) -> None:
    before, after = await upgrade(db.engine)
    assert before == after == head_revision()
    await check_schema(db.engine)


async def test_empty_database_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database.from_config(DatabaseConfig(url=f"sqlite+aiosqlite:///{tmp_path}/empty.db"))
    try:
        with pytest.raises(SchemaError, match="relay migrate"):
            await check_schema(db.engine)
        assert await current_revision(db.engine) is None
    finally:
        await db.dispose()


async def test_newer_database_is_refused(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    with pytest.raises(SchemaError, match="newer than this relay"):
        await check_schema(db.engine)
    async with db.write() as conn:
        await conn.execute(
            text("UPDATE alembic_version SET version_num = :v"), {"v": head_revision()}
        )


async def test_sqlite_pragmas(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database.from_config(DatabaseConfig(url=f"sqlite+aiosqlite:///{tmp_path}/p.db"))
    try:
        async with db.read() as conn:
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            fks = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
            sync = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
            busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
        assert (journal, fks, sync) == ("wal", 1, 2)  # 2 = FULL
        assert busy == 30_000
    finally:
        await db.dispose()


@pytest.mark.mysql
async def test_mysql_session_settings(mysql_url: str) -> None:
    db = Database.from_config(DatabaseConfig(url=mysql_url))
    try:
        async with db.read() as conn:
            charset = (await conn.execute(text("SELECT @@character_set_client"))).scalar_one()
            isolation = (await conn.execute(text("SELECT @@tx_isolation"))).scalar_one()
        assert charset == "utf8mb4"
        assert isolation == "READ-COMMITTED"
    finally:
        await db.dispose()
