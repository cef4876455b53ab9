"""Shared fixtures: real databases (SQLite file and MariaDB), built by `alembic upgrade head`.

MariaDB: `RELAY_TEST_MYSQL_URL` (default mysql+aiomysql://root@127.0.0.1/test) names the
server; each test session creates its own database there and drops it afterwards. When the
server is unreachable the MariaDB cases are skipped locally and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import delete
from sqlalchemy.engine import make_url

from relay.config import DatabaseConfig
from relay.store.db import Database, upgrade
from relay.store.tables import metadata

if TYPE_CHECKING:
    from tests.ingress.conftest import Running

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
MYSQL_URL = os.environ.get("RELAY_TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pymysql_connect(url: str, database: str | None = None):  # type: ignore[no-untyped-def]
    import pymysql

    u = make_url(url)
    return pymysql.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        database=database,
        connect_timeout=5,
        autocommit=True,
    )


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB database for this test session, migrated to head; dropped afterwards."""
    name = f"relay_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = _pymysql_connect(MYSQL_URL)
    except Exception as e:  # noqa: BLE001 - any driver error means "no server"
        message = f"MariaDB at {MYSQL_URL} unreachable: {e}"
        if IN_CI:
            pytest.fail(message + " (CI=true: MariaDB is required)")
        pytest.skip(message)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    url = make_url(MYSQL_URL).set(database=name).render_as_string(hide_password=False)
    try:
        asyncio.run(_migrate(url))
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


async def _migrate(url: str) -> None:
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        await upgrade(db.engine)
    finally:
        await db.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets a copy (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database URL: a SQLite file, then the session's MariaDB database."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "relay.db"
        target.write_bytes(template.read_bytes())
        return f"sqlite+aiosqlite:///{target}"
    url: str = request.getfixturevalue("mysql_url")
    asyncio.run(_empty_tables(url))
    return url


async def _empty_tables(url: str) -> None:
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        async with db.write() as conn:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(delete(table))
    finally:
        await db.dispose()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database.from_config(DatabaseConfig(url=db_url))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def ingress(db: Database) -> AsyncIterator[Running]:
    """A running ingress on `db` with a tenant and a login (tests/ingress/conftest.py)."""
    from relay.ingress import server
    from tests.ingress.conftest import start_ingress

    running, servers = await start_ingress(db)
    try:
        yield running
    finally:
        await server.stop(running.shared, servers, drain_s=1)
