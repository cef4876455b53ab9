"""Runs relay: config → database (schema current) → secrets and DKIM keys → roles (their
listeners), in one TaskGroup.

Each role is a coroutine `run(config, db, stopping)` that serves until the `stopping` event
is set, then drains (within `service.drain_timeout`) and returns. SIGTERM/SIGINT set it; a
second signal cancels at once. SIGHUP re-reads the config and applies the keys in
`relay.reloading.RELOADABLE`. A process with the web role (or `service.metrics_listen`) also
refreshes the database-read gauges of /metrics (queue, last hour, suppressions, pool).
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal

from relay import log, metrics, reloading, sdnotify
from relay.config import Config, account_password, read_secret, split_hostport
from relay.errors import ConfigError, RelayError
from relay.render.dkim import load_signer
from relay.render.tokens import load_keyring
from relay.store import status
from relay.store.db import Database, check_schema, upgrade

QUEUE_GAUGES_S = 15.0  # how often /metrics' queue gauges are read from the database
STATUS_GAUGES_S = 60.0  # and the rest of `relay status` (suppression counts scan a table)
# After `service.drain_timeout` the roles cancel what is left, write outcomes and release
# leases; this is how much longer the service waits for that before cancelling the roles.
CLEANUP_S = 5.0

Role = Callable[[Config, Database, asyncio.Event], Coroutine[Any, Any, None]]

# role name → "module:function"; a role whose module does not exist yet is refused.
ROLE_ENTRY_POINTS = {
    "smtp": "relay.ingress.server:run",
    "web": "relay.web.app:run",
    "delivery": "relay.scheduler:run",
    "bounce_mailbox": "relay.bounce_mailbox:serve",  # runs with smtp when configured
}


def companion_roles(config: Config, roles: Sequence[str]) -> list[str]:
    """Roles started along with the chosen ones: the IMAP bounce poller goes with smtp."""
    return ["bounce_mailbox"] if "smtp" in roles and config.bounce_mailbox.host else []


def resolve_role(name: str) -> Role:
    module_name, _, func = ROLE_ENTRY_POINTS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise RelayError(f"role {name!r} is not available in this version yet") from None
    role: Role = getattr(module, func)
    return role


async def prepare_database(config: Config) -> Database:
    db = Database.from_config(config.database)
    try:
        if config.database.auto_migrate:
            await upgrade(db.engine)
        await check_schema(db.engine)
    except BaseException:
        await db.dispose()
        raise
    return db


def load_secrets(config: Config, roles: Sequence[str]) -> None:
    """Read every secret and key the roles will need, before any of them listens: a missing
    file or a bad key stops start-up with a ConfigError naming it, with no port ever open."""
    load_keyring(config)  # tracking tokens (smtp: VERP, web: links, delivery: rendering)
    if "delivery" in roles:
        load_signer(config)  # reads and test-signs every DKIM key
        for i, account in enumerate(config.delivery.accounts):
            account_password(account, i)
    if "smtp" in roles and config.bounce_mailbox.host:
        mailbox = config.bounce_mailbox
        read_secret(mailbox.password, mailbox.password_file, "bounce_mailbox.password")


async def run(
    config: Config, roles: Sequence[str], load_config: Callable[[], Config] | None = None
) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a drain, 1 when a second signal cut it short.
    `load_config` re-reads the config on SIGHUP (None: SIGHUP is ignored)."""
    log.setup(config.log.level, config.log.format)
    logger = log.get("relay.service")
    db = await prepare_database(config)
    try:
        await asyncio.to_thread(load_secrets, config, roles)  # file reads, RSA test-signing
        entry_points = {
            name: resolve_role(name) for name in [*roles, *companion_roles(config, roles)]
        }
    except BaseException:
        await db.dispose()
        raise
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            logger.warning("service.forced_stop", signal=signal.Signals(signum).name)
            if main_task is not None:
                main_task.cancel()
            return
        logger.info("service.stopping", signal=signal.Signals(signum).name)
        stopping.set()

    current = config

    def on_hangup() -> None:
        nonlocal current
        if load_config is None or stopping.is_set():
            return
        current = reload(current, load_config)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    forced = False
    try:
        kind = type(loop).__module__.split(".")[0]  # 'uvloop' or 'asyncio'
        logger.info("service.starting", roles=list(roles), loop=kind)
        async with asyncio.TaskGroup() as group:
            stops = [RoleStop() for _ in entry_points]
            role_tasks = [
                group.create_task(role(config, db, stop), name=f"role:{name}")
                for (name, role), stop in zip(entry_points.items(), stops, strict=True)
            ]
            for stop, task in zip(stops, role_tasks, strict=True):
                await _serving(stop, task)  # listeners bound before systemd hears READY
            sdnotify.notify("READY=1", f"STATUS=serving roles {','.join(roles)}")
            if (interval := sdnotify.watchdog_interval_s()) is not None:
                group.create_task(_watchdog(interval, stopping), name="watchdog")
            if "web" in entry_points or config.service.metrics_listen:
                group.create_task(_status_gauges(db, stopping), name="status-gauges")
            if config.service.metrics_listen:
                group.create_task(
                    _serve_metrics(config.service.metrics_listen, stopping), name="metrics"
                )
            await stopping.wait()
            for stop in stops:
                stop.set()
            sdnotify.notify("STOPPING=1", "STATUS=draining")
            # The roles keep to drain_timeout themselves; CLEANUP_S covers their last writes.
            _, late = await asyncio.wait(
                role_tasks, timeout=config.service.drain_timeout + CLEANUP_S
            )
            if late:
                # Roles release their leases when cancelled; nothing committed is lost.
                logger.warning("service.drain_timeout", roles=[t.get_name() for t in late])
                for task in late:
                    task.cancel()
    except asyncio.CancelledError:
        if not stopping.is_set():
            raise
        forced = True  # a second signal: stop now
    except BaseExceptionGroup as group_error:
        # A role that refuses to start (bad key file, port taken) raised a RelayError inside
        # the TaskGroup: surface it as itself so the CLI prints one line, not a traceback.
        mine = group_error.subgroup(lambda e: isinstance(e, RelayError))
        if mine is None:
            raise
        first = mine.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        reloading.clear()
        await db.dispose()
    logger.info("service.stopped", forced=forced)
    return 1 if forced else 0


class RoleStop(asyncio.Event):
    """A role's stop signal. A role waits for it once it serves (listeners bound, first
    lease loop running), so its first `wait()` also tells the service the role is up."""

    def __init__(self) -> None:
        super().__init__()
        self.serving = asyncio.Event()

    async def wait(self) -> Literal[True]:
        self.serving.set()
        return await super().wait()


async def _serving(stop: RoleStop, task: asyncio.Task[None]) -> None:
    """Until the role serves, or ends (a role that fails to start fails the TaskGroup)."""
    waiter = asyncio.ensure_future(stop.serving.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


async def _watchdog(interval_s: float, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        sdnotify.notify("WATCHDOG=1")
        try:
            await asyncio.wait_for(stopping.wait(), interval_s)
        except TimeoutError:
            pass


def reload(current: Config, load_config: Callable[[], Config]) -> Config:
    """SIGHUP: the config to run with from now on; the old one when the new is invalid."""
    say = log.get("relay.service")
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    sdnotify.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")
    try:
        return _reload(current, load_config, say)
    finally:
        sdnotify.notify("READY=1")


def _reload(current: Config, load_config: Callable[[], Config], say: Any) -> Config:
    try:
        new = load_config()
        merged, applied, restart = reloading.merge(current, new)
    except ConfigError as e:
        metrics.config_reloads_total.labels("invalid").inc()
        say.warning("service.reload_failed", key=e.key, problem=e.problem, kept="old config")
        return current
    reloading.apply(merged)
    metrics.config_reloads_total.labels("ok").inc()
    say.info("service.reloaded", applied=applied)
    if restart:
        say.warning("service.reload_needs_restart", keys=restart)
    log.set_level(merged.log.level)  # last, so that the lines above use the old level
    return merged


async def _status_gauges(db: Database, stopping: asyncio.Event) -> None:
    """`relay status` as /metrics gauges: the queue every QUEUE_GAUGES_S, the rest (last
    hour, suppressions, pool, freshness) every STATUS_GAUGES_S."""
    say = log.get("relay.service")
    last_full = -STATUS_GAUGES_S
    loop = asyncio.get_running_loop()
    while not stopping.is_set():
        try:
            summary = await status.queue_summary(db)  # first: the cheap, most watched part
            metrics.set_queue(summary["by_state"], summary["oldest_queued_age_s"])
            if loop.time() - last_full >= STATUS_GAUGES_S:
                metrics.set_status(await status.gather(db))
                last_full = loop.time()
        except Exception as e:  # noqa: BLE001 - database trouble: stale gauges, next round
            metrics.database_up.set(0)
            say.warning("metrics.queue_read_failed", error=type(e).__name__)
        try:
            await asyncio.wait_for(stopping.wait(), QUEUE_GAUGES_S)
        except TimeoutError:
            pass


async def _serve_metrics(address: str, stopping: asyncio.Event) -> None:
    host, port = split_hostport(address)
    try:
        await metrics.serve(host, port, stopping)
    except OSError as e:
        raise ConfigError("service.metrics_listen", f"cannot listen: {e.strerror or e}") from None
