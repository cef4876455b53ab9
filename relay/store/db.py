"""The database engine: one async engine factory for SQLite and MySQL/MariaDB.

Input: `DatabaseConfig`. Output: an `AsyncEngine` tuned for the dialect (SQLite: WAL,
foreign keys, busy timeout, synchronous=FULL so a commit is on disk; MySQL: utf8mb4,
pre-ping, recycle, READ COMMITTED), and `Database`: reads, write transactions (SQLite: lined
up through `relay.store.write_gate` and run inline, see `Database.write`) and `run_write` for
a transaction written as one synchronous function (SQLite: in a writer thread). Also tells
whether the schema is at the code's head.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from relay.config import DatabaseConfig
from relay.errors import ConfigError, SchemaError, StoreUnavailable
from relay.store.inline import InlineConnection
from relay.store.write_gate import WriteGate, gate_for

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"
T = TypeVar("T")


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
    _sqlite_setup(engine.sync_engine, config.busy_timeout)
    return engine


def sqlite_writer(config: DatabaseConfig, busy_timeout: float = 0) -> Engine | None:
    """A synchronous pysqlite engine on the same file, for `Database.write`'s inline
    transactions (busy timeout zero: it must never sleep on the event loop) or for
    `run_write`'s thread; None for an in-memory database (a second engine would open
    another one)."""
    url = make_url(config.url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    engine = create_sync_engine(
        url.set(drivername="sqlite"),
        # Used by one thread at a time (writes are lined up), made lazily there.
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
        pool_size=1,
        max_overflow=0,
    )
    _sqlite_setup(engine, busy_timeout)
    return engine


def _sqlite_setup(engine: Engine, busy_timeout: float) -> None:
    busy_ms = int(busy_timeout * 1000)

    @event.listens_for(engine, "connect")
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

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("relay_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


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
    engine = create_async_engine(config.url, **options)

    @event.listens_for(engine.sync_engine, "connect")
    def _fast_bytes(dbapi_conn: Any, _record: Any) -> None:
        driver = getattr(dbapi_conn, "driver_connection", None)
        if driver is not None and hasattr(driver, "escape"):
            driver.escape = _escaper(driver.escape)

    return engine


# PyMySQL's bytes literal (`escape_bytes_prefixed`) maps every character through a table and
# drops to its slow path at the first CR or LF, so escaping one 50 KB message (in the event
# loop, with aiomysql) cost ~2 ms. The same literal from seven `bytes.replace` passes costs
# ~0.1 ms; tests/store/test_db.py checks it is identical for every byte.
_BYTE_ESCAPES = (
    (b"\0", b"\\0"),
    (b"\n", b"\\n"),
    (b"\r", b"\\r"),
    (b"\032", b"\\Z"),
    (b'"', b'\\"'),
    (b"'", b"\\'"),
)


def escape_bytes_literal(value: bytes) -> str:
    """`_binary'…'`, exactly as PyMySQL's `escape_bytes_prefixed` writes it."""
    escaped = value.replace(b"\\", b"\\\\")  # first: the backslashes added below stay
    for raw, literal in _BYTE_ESCAPES:
        if raw in escaped:
            escaped = escaped.replace(raw, literal)
    return "_binary'" + escaped.decode("ascii", "surrogateescape") + "'"


def _escaper(escape: Callable[[Any], str]) -> Callable[[Any], str]:
    def fast(obj: Any) -> str:
        if type(obj) is bytes:
            return escape_bytes_literal(obj)
        return escape(obj)

    return fast


class Database:
    """The engine plus the ways in: `read()` for queries, `write()` for a transaction,
    `run_write()` for a transaction written as one synchronous function.

    On SQLite a write transaction starts with BEGIN IMMEDIATE: it takes the write lock up
    front instead of upgrading a read lock mid-transaction, the upgrade that makes concurrent
    writers fail with 'database is locked'. On MySQL both are plain transactions.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        inline: Engine | None = None,
        threaded: Engine | None = None,
    ) -> None:
        self.engine = engine
        self.is_mysql = is_mysql(engine)
        self.config: DatabaseConfig | None = None  # set by from_config; `twin` needs it
        self._writer = engine.execution_options(relay_write=True)
        self._inline_engine, self._threaded_engine = inline, threaded
        self._inline = inline and inline.execution_options(relay_write=True)
        self._threaded = threaded and threaded.execution_options(relay_write=True)
        self._thread: ThreadPoolExecutor | None = None
        self._gate: WriteGate | None = None
        self._line: asyncio.Lock | None = None  # this Database's inline writers, in turn
        self._line_holder: asyncio.Task[Any] | None = None
        if inline is not None or threaded is not None:
            self._gate = gate_for(engine.url.database or "")

    @classmethod
    def from_config(cls, config: DatabaseConfig, **overrides: Any) -> Database:
        inline = sqlite_writer(config)
        threaded = sqlite_writer(config, config.busy_timeout) if inline else None
        db = cls(create_engine(config, **overrides), inline, threaded)
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

    async def run_write(self, work: Callable[[Connection], T]) -> T:
        """Run `work(conn)` on a synchronous connection as one write transaction, committed
        when it returns.

        SQLite (a file): in a writer thread, past the write gate. Intake's group commit
        uses it: the loop goes on reading other sessions' DATA during the commit, so the
        next batch is larger (measured: inline instead cost 25–40% of the acceptance rate).
        Otherwise: `run_sync` on an async connection. If the caller is cancelled, the
        transaction still runs to its end in the thread; callers that must know its
        outcome shield it.
        """
        if self._threaded is None or self._gate is None:
            async with self.write() as conn:
                return await conn.run_sync(work)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="relay-db-write")
        writer, gate = self._threaded, self._gate

        def transaction() -> T:
            gate.acquire()
            try:
                with writer.begin() as conn:
                    return work(conn)
            finally:
                gate.release()

        return await asyncio.get_running_loop().run_in_executor(self._thread, transaction)

    def read(self) -> AsyncContextManager[AsyncConnection]:
        return self.engine.connect()

    def write(self) -> AsyncContextManager[AsyncConnection]:
        """A write transaction, committed when the block ends without an exception.

        SQLite (a file): the writers of this Database line up, take the write gate
        (`relay.store.write_gate`: other loops and processes), then run their statements
        inline on a synchronous connection (`relay.store.inline`): the loop is held for
        the statements and the fsync'd commit, never for a wait. A writer outside relay
        holding the lock (migrations, the sqlite3 shell) is waited for with sleeps on the
        loop, up to `database.busy_timeout`. Elsewhere: an aiosqlite / aiomysql
        transaction.
        """
        if self._inline is None:
            return self._writer.begin()
        return self._inline_write()

    @asynccontextmanager
    async def _inline_write(self) -> AsyncIterator[AsyncConnection]:
        async with self._inline_transaction() as conn:
            # A stand-in with AsyncConnection's methods: the store's functions take either.
            yield cast(AsyncConnection, InlineConnection(conn))

    @asynccontextmanager
    async def _inline_transaction(self) -> AsyncIterator[Connection]:
        assert self._inline is not None and self._gate is not None
        if self._line is None:
            self._line = asyncio.Lock()
        task = asyncio.current_task()
        if self._line.locked() and self._line_holder is task:
            # It would wait for itself for ever (aiosqlite failed after busy_timeout).
            raise RuntimeError("a write transaction opened inside another one on this Database")
        async with self._line, self._gate.held():
            self._line_holder = task
            conn = await self._begin_inline(self._inline)
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            else:
                conn.commit()
            finally:
                conn.close()
                self._line_holder = None

    async def _begin_inline(self, engine: Engine) -> Connection:
        """BEGIN IMMEDIATE; if a writer outside relay holds the lock, try again after a
        sleep that lets the loop run, until `busy_timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.busy_timeout if self.config else 30.0)
        pause = 0.001
        while True:
            conn = engine.connect()
            try:
                conn.begin()  # the "begin" listener issues BEGIN IMMEDIATE
                return conn
            except OperationalError as e:
                conn.close()
                if "locked" not in str(e) or loop.time() >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def dispose(self) -> None:
        if self._thread is not None and self._threaded_engine is not None:
            # Closed in the thread that opened it; waits for a transaction still running.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._thread, self._threaded_engine.dispose)
            self._thread.shutdown()
            self._thread = None
        if self._inline_engine is not None:
            self._inline_engine.dispose()
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
