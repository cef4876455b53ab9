"""The `smarthost` transport: a pool of upstream accounts with a pick strategy and failover.

Input: `[delivery]` config (accounts, strategy, timeouts), a clock and a random source.
Output: an `Outcome` per delivery. An account that is unreachable, drops the session or
refuses AUTH is skipped for the next one; after `pause_after_failures` consecutive site
failures (or at once on AUTH failure) it is paused for `account_pause` seconds.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from relay import log
from relay.config import AccountConfig, DeliveryConfig, read_secret
from relay.model import Delivery, Outcome, SmtpReply
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
    ) -> None:
        self.strategy = config.strategy
        self.clock = clock
        self.rng = rng or random.Random()
        self.pause_after_failures = pause_after_failures
        self.pause_s = pause_s
        self.cache = SessionCache(
            helo_name,
            config.connect_timeout,
            config.command_timeout,
            config.messages_per_connection,
            config.idle_connection_timeout,
        )
        self.accounts = [
            AccountState(a, _endpoint(a, f"delivery.accounts.{i}"))
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
        for account in self.order():
            if account.paused_until > now:
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
        reply = SmtpReply(451, "every smarthost account is paused", "4.3.2")
        return Outcome(delivery.id, False, reply, self.name)

    def _pause(self, account: AccountState, now: float, reason: str) -> None:
        account.paused_until = now + self.pause_s
        account.paused_reason = reason
        logger.warning("account.paused", account=account.config.name, reason=reason)

    async def close(self) -> None:
        await self.cache.close()


def _endpoint(account: AccountConfig, key: str) -> Endpoint:
    password = read_secret(account.password, account.password_file, key + ".password")
    return Endpoint(account.host, account.port, account.tls, account.username, password)
