"""The delivery role: lease due deliveries, send them, record what happened.

Input: config, database, a `stopping` event. Output: none; deliveries move to final states.
A bounded active window (`delivery.workers` attempts in flight, Postfix qmgr style) is
refilled in batches of leased deliveries (their messages loaded once per batch); right
before sending, each is checked against the in-memory suppression cache (unless it carries
the `no_suppression` override), then rendered,
handed to the transport, and its `Outcome` queued for a batched write through
`relay.outcome.record_outcomes` (no transaction spans network I/O). Leases still being
worked are renewed before they run out; expired leases of dead workers are recovered
periodically. On stop: no new leases, drain, release the rest.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from relay import log, metrics, reloading
from relay.config import Config
from relay.limits import TenantLimits
from relay.model import Delivery, Outcome, SmtpReply
from relay.outcome import SUPPRESSED_DETAIL, Policy, record_outcomes
from relay.rendering import DeliveryRenderer
from relay.store import accounts
from relay.store import deliveries as queue
from relay.store.db import Database, describe_error, utcnow
from relay.store.suppressions import SuppressionCache
from relay.store.tenants import list_tenants

if TYPE_CHECKING:
    from relay.transport.pool import SmarthostPool

logger = log.get(__name__)

POLL_S = 0.2  # how often an idle scheduler looks for due deliveries
# Outcomes wait this long for company before they are written (unless half the window is
# already done): fewer, larger write transactions. Measured with the split layout on SQLite,
# 50 sessions: ~20% more messages/s end to end than writing each outcome as it comes.
OUTCOME_LINGER_S = 0.03


class Transport(Protocol):
    name: str

    async def send(self, delivery: Delivery, mail_from: str, data: bytes) -> Outcome: ...

    async def close(self) -> None: ...


# Rendering hook: (delivery, stored original) → (envelope sender, bytes to send).
Render = Callable[[Delivery, bytes], Awaitable[tuple[str, bytes]]]


async def pass_through(delivery: Delivery, raw: bytes) -> tuple[str, bytes]:
    """Send the stored bytes as they are (tests of the queue itself; the role renders)."""
    return delivery.mail_from, raw


def build_transport(config: Config) -> Transport:
    if config.delivery.routes:  # per tenant / sender domain
        from relay.transport.routes import Router

        return Router.build(config, _build_one)
    return _build_one(config)


def _build_one(config: Config) -> Transport:
    d = config.delivery
    if d.mode == "sink":
        from relay.transport.sink import SinkTransport

        return SinkTransport(d.sink_dir)
    if d.mode == "smarthost":
        from relay.transport.pool import SmarthostPool

        return SmarthostPool(
            d,
            d.helo_name or config.smtp.hostname,
            pause_after_failures=d.account_pause_after_failures,
            pause_s=d.account_pause,
        )
    from relay.transport.mx import DirectTransport, MxResolver
    from relay.transport.session import SessionCache
    from relay.transport.shaping import Shaper

    resolver = MxResolver(d.dns_servers, d.dns_port, d.dns_timeout)
    cache = SessionCache(
        d.helo_name or config.smtp.hostname,
        d.connect_timeout,
        d.command_timeout,
        d.messages_per_connection,
        d.idle_connection_timeout,
    )
    return DirectTransport(resolver, cache, d.mx_port, Shaper.from_config(d))


def worker_name() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Scheduler:
    def __init__(
        self,
        config: Config,
        db: Database,
        transport: Transport,
        *,
        render: Render = pass_through,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        owner: str | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.transport = transport
        self.render = render
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = owner or worker_name()
        self.policy = Policy.from_config(config.delivery, config.bounce)
        self.limits = TenantLimits(config.delivery, db)
        self.workers = config.delivery.workers
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        self._results: list[tuple[Delivery, Outcome]] = []
        self._have_results = asyncio.Event()
        self._raw: dict[int, bytes] = {}  # originals of messages with deliveries open
        self._raw_users: Counter[int] = Counter()  # message id → its open deliveries
        self._open: set[int] = set()
        self._lease_until: dict[int, datetime] = {}  # leased by us, outcome not yet written
        self.suppressions = SuppressionCache()
        self._writer_done = asyncio.Event()  # leased by us, outcome not yet written

    async def sync_accounts(self) -> None:
        """Share pool state through the database: pauses both ways, usage and warm-up in."""
        from relay.transport.pool import SmarthostPool

        if hasattr(self.transport, "bind_tenants"):  # routes by tenant name (transport.routes)
            self.transport.bind_tenants({t.id: t.name for t in await list_tenants(self.db)})
        for pool in getattr(self.transport, "pools", [self.transport]):
            if isinstance(pool, SmarthostPool):
                await self._sync_pool(pool)

    async def _sync_pool(self, pool: SmarthostPool) -> None:
        now = self.clock()
        await accounts.ensure(self.db, [a.config.name for a in pool.accounts], now)
        for account in pool.accounts:
            if account.newly_paused:
                left = max(account.paused_until - pool.clock(), 0.0)
                await accounts.set_paused(
                    self.db,
                    account.config.name,
                    True,
                    now,
                    account.paused_reason,
                    now + timedelta(seconds=left),
                )
                account.newly_paused = False
        await accounts.expire_pauses(self.db, now)
        window_s = self.config.delivery.account_bounce_window
        pool.sync(await accounts.read_all(self.db, now, window_s), now)

    async def fill(self) -> int:
        """Lease as many due deliveries as the window has room for and start them."""
        room = min(self.workers - len(self.in_flight), self.config.delivery.batch_size)
        if room <= 0:
            return 0
        now = self.clock()
        lease_time_s = self.config.delivery.lease_time
        leased = await queue.lease_due(self.db, self.owner, room, now, lease_time_s)
        if not leased:
            return 0
        until = now + timedelta(seconds=lease_time_s)
        self._open.update(d.id for d in leased)
        self._lease_until.update((d.id, until) for d in leased)
        self._raw_users.update(d.message_id for d in leased)
        try:
            missing = {d.message_id for d in leased} - self._raw.keys()
            stored = await queue.load_messages(self.db, missing)
            self._raw.update((i, m.raw) for i, m in stored.items())
            prime = getattr(self.render, "prime", None)
            if prime is not None:
                prime({i: m.inputs for i, m in stored.items()})
            waiting: list[tuple[Delivery, Outcome]] = []
            if self.limits.enabled:  # over a tenant's limit: back to the queue, no attempt
                leased, waiting = await self.limits.admit(leased, self.clock())
        except BaseException:
            await self._unlease(leased)  # nothing attempted: give them back (or let expire)
            raise
        self._results.extend(waiting)
        if waiting:
            self._have_results.set()
        for delivery in leased:
            task = asyncio.create_task(self._attempt(delivery))
            self.in_flight[delivery.id] = task
            task.add_done_callback(functools.partial(self._finished, delivery.id))
        return len(leased)

    async def _unlease(self, leased: list[Delivery]) -> None:
        """Forget deliveries leased but not started; release them if the database lets us
        (otherwise their leases expire and any worker recovers them)."""
        ids = [d.id for d in leased]
        for d in leased:
            self._open.discard(d.id)
            self._lease_until.pop(d.id, None)
            self._raw_users[d.message_id] -= 1
            if self._raw_users[d.message_id] <= 0:
                del self._raw_users[d.message_id]
                self._raw.pop(d.message_id, None)
        try:
            await queue.release(self.db, self.owner, ids, self.clock())
        except Exception as e:  # noqa: BLE001 - the leases run out on their own
            logger.warning("delivery.release_failed", count=len(ids), error=describe_error(e))

    async def _fill_or_wait(self) -> int:
        """`fill`, but database trouble (locked, restarting, a deadlock) waits a moment and
        is retried by the next round instead of stopping the role."""
        try:
            return await self.fill()
        except Exception as e:  # noqa: BLE001 - database trouble: the next round retries
            logger.warning("delivery.lease_failed", error=describe_error(e))
            await asyncio.sleep(POLL_S)
            return 0

    def _finished(self, delivery_id: int, _task: asyncio.Task[None]) -> None:
        self.in_flight.pop(delivery_id, None)

    async def refresh_suppressions(self) -> None:
        async with self.db.read() as conn:
            await self.suppressions.refresh(conn)

    async def renew_leases(self) -> int:
        """Extend our leases that would run out within half a lease time (long batches,
        slow servers); a lease another worker already recovered is dropped from our books."""
        now = self.clock()
        lease_time_s = self.config.delivery.lease_time
        soon = now + timedelta(seconds=lease_time_s / 2)
        due = [i for i, until in self._lease_until.items() if until <= soon]
        if not due:
            return 0
        held = await queue.renew(self.db, self.owner, due, now, lease_time_s)
        until = now + timedelta(seconds=lease_time_s)
        for i in due:
            if i in held:
                self._lease_until[i] = until
            else:
                self._lease_until.pop(i, None)
                logger.warning("delivery.lease_lost", delivery_id=i)
        return len(held)

    async def _attempt(self, delivery: Delivery) -> None:
        key = delivery.recipient_key or delivery.recipient.lower()
        suppressed = None
        if not delivery.no_suppression:
            suppressed = self.suppressions.reason_for(delivery.tenant_id, key, self.clock())
        if suppressed is not None:
            reply = SmtpReply(550, f"recipient is suppressed ({suppressed})", "5.7.1")
            outcome = Outcome(
                delivery.id, False, reply, "suppression", details={SUPPRESSED_DETAIL: suppressed}
            )
        else:
            try:
                raw = self._raw.get(delivery.message_id, b"")
                mail_from, data = await self.render(delivery, raw)
                send = self.transport.send(delivery, mail_from, data)
                outcome = await metrics.timed_attempt(self.transport.name, send)
            except Exception:  # a bug: count it as a failed attempt, never leave it leased
                logger.exception("delivery.internal_error", delivery_id=delivery.id)
                reply = SmtpReply(451, "internal error in relay (see its log)", "4.3.0")
                outcome = Outcome(delivery.id, False, reply, self.transport.name)
        self._results.append((delivery, outcome))
        self._have_results.set()

    async def flush(self) -> int:
        """Write every outcome collected so far in one transaction."""
        if not self._results:
            self._have_results.clear()
            return 0
        batch, self._results = self._results, []
        self._have_results.clear()
        try:
            await record_outcomes(self.db, self.owner, batch, self.policy, self.clock(), self.rng)
        except BaseException:
            # Not written (database trouble or cancelled): keep them for the next flush.
            self._results[:0] = batch
            self._have_results.set()
            raise
        for d, _ in batch:
            self._open.discard(d.id)
            self._lease_until.pop(d.id, None)
            self._raw_users[d.message_id] -= 1
            if self._raw_users[d.message_id] <= 0:  # its last open delivery: drop the bytes
                del self._raw_users[d.message_id]
                self._raw.pop(d.message_id, None)
        return len(batch)

    async def run_until_idle(self) -> None:
        """Deliver everything due now, then return (tests and benchmarks)."""
        await self.serve(asyncio.Event(), until_idle=True)

    def _room(self) -> bool:
        # Refill in chunks, not one lease transaction per finished attempt.
        chunk = max(1, min(self.config.delivery.batch_size, self.workers // 4))
        return not self.in_flight or self.workers - len(self.in_flight) >= chunk

    async def serve(self, stopping: asyncio.Event, until_idle: bool = False) -> None:
        """Lease, send and record until `stopping` (or, with until_idle, nothing is due)."""
        self._writer_done = asyncio.Event()
        writer = asyncio.create_task(self._write_loop())
        recovery_every_s = min(max(self.config.delivery.lease_time / 4, 1.0), 5.0)
        last_recovery = -recovery_every_s
        refresh_every_s = self.config.bounce.suppression_refresh
        await self.refresh_suppressions()
        last_refresh = asyncio.get_running_loop().time()
        loop = asyncio.get_running_loop()
        stop_wait = asyncio.create_task(stopping.wait())
        try:
            while not stopping.is_set():
                if loop.time() - last_recovery >= recovery_every_s:
                    last_recovery = loop.time()
                    await self._maintain()
                if loop.time() - last_refresh >= refresh_every_s:
                    last_refresh = loop.time()
                    try:
                        await self.refresh_suppressions()
                    except Exception as e:  # noqa: BLE001 - keep the last copy, retry later
                        logger.warning("delivery.suppressions_refresh_failed", error=str(e))
                started = await self._fill_or_wait() if self._room() else 0
                if started and len(self.in_flight) < self.workers:
                    continue
                if until_idle and not started and not self.in_flight:
                    if not self._open:  # every outcome written
                        break
                    await asyncio.sleep(0.005)
                    continue
                waiters: set[asyncio.Future[object]] = {stop_wait, *self.in_flight.values()}  # type: ignore[arg-type]
                await asyncio.wait(waiters, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            try:
                await self._drain()
            finally:  # also when the service cancelled the drain: outcomes, then leases
                self._writer_done.set()
                self._have_results.set()
                await asyncio.gather(writer, return_exceptions=True)  # a running write ends
                await self.flush()
                if self._open:  # leased, never attempted or cut short: back to the queue
                    await queue.release(self.db, self.owner, sorted(self._open), self.clock())
                    self._open.clear()
                    self._lease_until.clear()
                self._raw.clear()
                self._raw_users.clear()
                if not until_idle:
                    await self.transport.close()

    async def _maintain(self) -> None:
        """Periodic upkeep; database trouble here (a deadlock, a restart) is retried at the
        next round instead of stopping the role."""
        try:
            await self.renew_leases()  # first, and before recovery: ours must not expire
            await self.sync_accounts()
            recovered = await queue.recover_expired(self.db, self.clock())
        except Exception as e:  # noqa: BLE001 - database trouble: the next round retries
            logger.warning("delivery.upkeep_failed", error=describe_error(e))
            return
        if recovered:
            logger.info("delivery.leases_recovered", count=recovered)

    async def _write_loop(self) -> None:
        while not self._writer_done.is_set():
            await self._have_results.wait()
            if len(self._results) < self.workers // 2:
                await asyncio.sleep(OUTCOME_LINGER_S)
            self._have_results.clear()
            try:
                await self.flush()
            except Exception as e:  # noqa: BLE001 - database trouble: keep the outcomes, retry
                logger.warning("delivery.outcome_write_failed", error=describe_error(e))
                # A deadlock victim can go again at once; other trouble waits a little.
                await asyncio.sleep(0.05 if "deadlock" in str(e).lower() else 1.0)

    async def _drain(self) -> None:
        """Let attempts in flight finish within `service.drain_timeout`, then cancel the
        rest (their deliveries are released, no attempt counted)."""
        pending = set(self.in_flight.values())
        late = pending
        try:
            if pending:
                _done, late = await asyncio.wait(
                    pending, timeout=self.config.service.drain_timeout
                )
        finally:  # on time, late, or cancelled by the service: nothing may stay on the wire
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            self.in_flight.clear()


async def run(config: Config, db: Database, stopping: asyncio.Event) -> None:
    """The `delivery` role (relay.service)."""
    # Built before the first lease: a missing or unreadable DKIM key stops start-up here.
    render = DeliveryRenderer(config, db)
    scheduler = Scheduler(config, db, build_transport(config), render=render)
    reloading.on_reload(lambda new: setattr(scheduler, "workers", new.delivery.workers))
    logger.info("delivery.started", owner=scheduler.owner, mode=config.delivery.mode)
    await scheduler.serve(stopping)
    logger.info("delivery.stopped", owner=scheduler.owner)
