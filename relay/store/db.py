"""The database engine: one async engine factory for SQLite and MySQL/MariaDB.

Input: `DatabaseConfig`. Output: an `AsyncEngine` tuned for the dialect (SQLite: WAL,
foreign keys, busy timeout, synchronous=FULL so a commit is on disk; MySQL: utf8mb4,
pre-ping, recycle, READ COMMITTED). Also tells whether the schema is at the code's head.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager as AsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from relay.config import DatabaseConfig
from relay.errors import ConfigError, SchemaError, StoreUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


def utcnow() -> datetime:
    """Naive UTC, the form every `*_at` column stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def is_mysql(engine: AsyncEngine | Connection) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


def create_engine(config: DatabaseConfig, **overrides: Any) -> AsyncEngine:
    url = make_url(config.url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(config, url.database or "", **overrides)
    return _mysql_engine(config, **overrides)


def _sqlite_engine(config: DatabaseConfig, path: str, **overrides: Any) -> AsyncEngine:
    if path and path != ":memory:":
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            problem = f"cannot create the folder for {path!r}: {e.strerror}"
            raise ConfigError("database.url", problem) from None
    options: dict[str, Any] = {"connect_args": {"timeout": config.busy_timeout}}
    options.update(overrides)
    engine = create_async_engine(config.url, **options)
    busy_ms = int(config.busy_timeout * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own BEGIN handling defers locking; we issue BEGIN IMMEDIATE ourselves
        # for writers (see `begin_write`), so let it stay out of the way.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        # FULL: a commit is fsync'd before it returns, so 250 really means durably stored.
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("relay_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _mysql_engine(config: DatabaseConfig, **overrides: Any) -> AsyncEngine:
    options: dict[str, Any] = {
        "pool_size": config.pool_size,
        "max_overflow": config.pool_size,
        "pool_pre_ping": True,
        "pool_recycle": int(config.pool_recycle),
        "isolation_level": "READ COMMITTED",
        "connect_args": {"charset": "utf8mb4", "connect_timeout": 10},
    }
    options.update(overrides)
    return create_async_engine(config.url, **options)


class Database:
    """The engine plus the two ways in: `read()` for queries, `write()` for a transaction.

    On SQLite a write transaction starts with BEGIN IMMEDIATE: it takes the write lock up
    front instead of upgrading a read lock mid-transaction, the upgrade that makes concurrent
    writers fail with 'database is locked'. On MySQL both are plain transactions.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_mysql = is_mysql(engine)
        self.config: DatabaseConfig | None = None  # set by from_config; `twin` needs it
        self._writer = engine.execution_options(relay_write=True)

    @classmethod
    def from_config(cls, config: DatabaseConfig, **overrides: Any) -> Database:
        db = cls(create_engine(config, **overrides))
        db.config = config
        return db

    def twin(self, **overrides: Any) -> Database | None:
        """A second Database on the same config with its own engine (e.g. for another
        thread's event loop: async connections belong to the loop that opened them). None
        when there is no config to copy, or for in-memory SQLite (a twin would be another,
        empty database)."""
        if self.config is None:
            return None
        database = self.engine.url.database or ""
        if self.engine.url.get_backend_name() == "sqlite" and database in ("", ":memory:"):
            return None
        return Database.from_config(self.config, **overrides)

    def read(self) -> AsyncContextManager[AsyncConnection]:
        return self.engine.connect()

    def write(self) -> AsyncContextManager[AsyncConnection]:
        return self._writer.begin()

    async def dispose(self) -> None:
        await self.engine.dispose()


def migrations_config(url: str) -> Any:
    """An Alembic Config pointing at our migrations and the given database."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["url"] = url
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None, "migrations/ has no revision"
    return head


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations_config("sqlite://"))
    return {rev.revision for rev in script.walk_revisions()}


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(conn: Connection) -> str | None:
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(conn).get_current_revision()

    try:
        async with engine.connect() as conn:
            return await conn.run_sync(read)
    except (OperationalError, DBAPIError, OSError) as e:
        raise StoreUnavailable(f"cannot reach the database: {_reason(e)}") from e


async def upgrade(engine: AsyncEngine) -> tuple[str | None, str]:
    """Apply every pending migration; idempotent. Returns (before, after) revisions."""
    from alembic import command

    before = await current_revision(engine)
    cfg = migrations_config(engine.url.render_as_string(hide_password=False))

    def run(conn: Connection) -> None:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(run)
    return before, head_revision()


async def check_schema(engine: AsyncEngine) -> None:
    """Raise SchemaError unless the database is exactly at this code's head revision."""
    current = await current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaError(
            "the database has no relay schema yet: run `relay migrate` "
            "(or set database.auto_migrate = true)"
        )
    if current not in known_revisions():
        raise SchemaError(
            f"the database is at revision {current}, newer than this relay ({head}): "
            "upgrade relay before starting it"
        )
    raise SchemaError(
        f"the database is at revision {current}, behind this relay ({head}): run `relay migrate`"
    )


async def ping(engine: AsyncEngine) -> None:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (OperationalError, DBAPIError, OSError) as e:
        raise StoreUnavailable(f"cannot reach the database: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def describe_error(e: BaseException) -> str:
    """The first line of a driver error, fit for a log line or a reply."""
    return _reason(e)
