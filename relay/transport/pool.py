"""The `smarthost` transport: a pool of upstream accounts with a pick strategy and failover.

Input: `[delivery]` config (accounts, strategy, timeouts), a clock and a random source.
Output: an `Outcome` per delivery. An account that is unreachable, drops the session or
refuses AUTH is skipped for the next one; after `pause_after_failures` consecutive site
failures (or at once on AUTH failure) it is paused for `account_pause` seconds; when its
hard-bounce rate over `account_bounce_window` passes `account_bounce_rate`, for
`account_bounce_pause`. Daily limit, warm-up and `per_minute` rate come from counters shared
through the database; when every account is paused or at a limit, the delivery is postponed
(back to the queue untried) until the first one has room again.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from relay import log
from relay.config import AccountConfig, DeliveryConfig, account_password
from relay.model import WAIT_DETAIL, Delivery, Outcome, SmtpReply
from relay.store.accounts import AccountRow
from relay.transport.session import Endpoint, SessionCache
from relay.transport.smarthost import send_one

logger = log.get(__name__)


@dataclass
class AccountState:
    config: AccountConfig
    endpoint: Endpoint
    consecutive_failures: int = 0
    paused_until: float = 0.0
    paused_reason: str = ""
    sent_today: int = 0  # from usage_counters at the last sync, plus what we sent since
    limit_today: int = 0  # 0 = unlimited; daily_limit, raised by the warm-up ramp
    sent_minute: float = 0.0  # the sliding minute at the last sync, plus what we sent since
    newly_paused: bool = False  # to be written to the accounts table at the next sync

    def at_limit(self) -> bool:
        return self.at_daily_limit() or self.at_minute_limit()

    def at_daily_limit(self) -> bool:
        return self.limit_today > 0 and self.sent_today >= self.limit_today

    def at_minute_limit(self) -> bool:
        return self.config.per_minute > 0 and self.sent_minute >= self.config.per_minute


class SmarthostPool:
    name = "smarthost"

    def __init__(
        self,
        config: DeliveryConfig,
        helo_name: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        pause_after_failures: int = 5,
        pause_s: float = 300.0,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC).replace(tzinfo=None),
    ) -> None:
        self.strategy = config.strategy
        self.clock = clock
        self.rng = rng or random.Random()
        self.pause_after_failures = pause_after_failures
        self.pause_s = pause_s
        self.wall = wall
        self.bounce_rate = config.account_bounce_rate
        self.bounce_min = config.account_bounce_min
        self.bounce_pause_s = config.account_bounce_pause
        self.cache = SessionCache(
            helo_name,
            config.connect_timeout,
            config.command_timeout,
            config.messages_per_connection,
            config.idle_connection_timeout,
        )
        self.accounts = [
            AccountState(a, _endpoint(a, i))
            for i, a in enumerate(config.accounts)
        ]
        self._turn = itertools.count()

    def order(self) -> list[AccountState]:
        """Accounts to try for the next message: the strategy's pick first, then the rest."""
        n = len(self.accounts)
        if self.strategy == "random":
            start = self.rng.randrange(n)
        elif self.strategy == "weighted":
            weights = [a.config.weight for a in self.accounts]
            start = self.rng.choices(range(n), weights=weights)[0]
        else:
            start = next(self._turn) % n
        return [self.accounts[(start + i) % n] for i in range(n)]

    async def send(self, delivery: Delivery, mail_from: str, data: bytes) -> Outcome:
        now = self.clock()
        last: Outcome | None = None
        paused = 0
        for account in self.order():
            if account.paused_until > now:
                paused += 1
                continue
            if account.at_limit():
                continue
            outcome, found = await send_one(
                self.cache,
                account.endpoint,
                delivery,
                mail_from,
                data,
                self.name,
                account.config.name,
            )
            if found is None or found.scope.value != "site":
                account.consecutive_failures = 0
                account.sent_today += 1
                account.sent_minute += 1
                return outcome
            last = outcome
            account.consecutive_failures += 1
            if found.auth:
                self._pause(account, now, "authentication refused")
            elif account.consecutive_failures >= self.pause_after_failures:
                self._pause(account, now, f"{account.consecutive_failures} consecutive failures")
            logger.info("account.failover", account=account.config.name, reply=str(outcome.reply))
        if last is not None:
            return last
        reply = SmtpReply(451, "every smarthost account is paused or at its limit", "4.3.2")
        return Outcome(
            delivery.id,
            False,
            reply,
            self.name,
            retry_after_s=self._until_room(now),
            details={WAIT_DETAIL: "pool busy"},
        )

    def _until_room(self, now: float) -> float:
        """Seconds until some account may send again (a pause ends, a minute, a day)."""
        wall = self.wall()
        next_minute = wall.replace(second=0, microsecond=0) + timedelta(minutes=1) - wall
        tomorrow = wall.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        waits = []
        for a in self.accounts:
            wait = max(a.paused_until - now, 0.0)
            if a.at_daily_limit():
                wait = max(wait, (tomorrow - wall).total_seconds())
            elif a.at_minute_limit():
                wait = max(wait, next_minute.total_seconds())
            waits.append(wait)
        return max(min(waits, default=60.0), 1.0)

    def sync(self, rows: list[AccountRow], now: datetime) -> None:
        """Take the shared state (pauses, today's usage, warm-up day) from the database."""
        by_name = {r.name: r for r in rows}
        mono = self.clock()
        for account in self.accounts:
            row = by_name.get(account.config.name)
            if row is None:
                continue
            account.sent_today = row.sent_today
            account.sent_minute = row.sent_minute
            account.limit_today = limit_for(account.config, row.warmup_started_at, now)
            if not row.paused and not account.newly_paused and self._bouncing(row):
                rate = row.window_bounced / row.window_sent
                self._pause(account, mono, f"hard-bounce rate {rate:.0%}", self.bounce_pause_s)
                continue
            if row.paused and not account.newly_paused:
                left = (row.paused_until - now).total_seconds() if row.paused_until else 1e9
                account.paused_until = mono + max(left, 0.0)
                account.paused_reason = row.paused_reason or "paused"
            elif not row.paused and not account.newly_paused:
                account.paused_until = 0.0

    def _bouncing(self, row: AccountRow) -> bool:
        if not self.bounce_rate or row.window_sent < self.bounce_min:
            return False
        return row.window_bounced / row.window_sent > self.bounce_rate

    def _pause(
        self, account: AccountState, now: float, reason: str, pause_s: float | None = None
    ) -> None:
        account.paused_until = now + (self.pause_s if pause_s is None else pause_s)
        account.paused_reason = reason
        account.newly_paused = True
        logger.warning("account.paused", account=account.config.name, reason=reason)

    async def close(self) -> None:
        await self.cache.close()


def limit_for(account: AccountConfig, warmup_started_at: datetime | None, now: datetime) -> int:
    """Today's limit: the warm-up ramp's value for this day (capped by daily_limit)."""
    if not account.warmup or warmup_started_at is None:
        return account.daily_limit
    day = max((now - warmup_started_at).days, 0)
    ramp = account.warmup[min(day, len(account.warmup) - 1)]
    return min(ramp, account.daily_limit) if account.daily_limit else ramp


def _until_tomorrow_s() -> float:
    now = datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds() + 1.0


def _endpoint(account: AccountConfig, index: int) -> Endpoint:
    password = account_password(account, index)
    return Endpoint(account.host, account.port, account.tls, account.username, password)
