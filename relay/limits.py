"""Per-tenant sending limits: which leased deliveries may be attempted now.

Input: a batch of leased deliveries, `[delivery.tenant_limits]` (per tenant name, '*' for
every other tenant) and the time. Output: the deliveries that may go now, and a postponed
`Outcome` for each one over its tenant's per-minute, per-hour or per-day limit: it waits in
the queue without counting an attempt and never fails because of the limit. The windows
slide and are shared by every delivery node through the database (`relay.store.limits`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

from relay import log
from relay.config import DeliveryConfig
from relay.model import WAIT_DETAIL, Delivery, Outcome, SmtpReply
from relay.store import limits as counters
from relay.store.db import Database
from relay.store.limits import Limits
from relay.store.tenants import list_tenants

logger = log.get(__name__)

REFRESH_S = 30.0  # how often tenant names are re-read (new tenants, renames)
PRUNE_S = 3600.0


class TenantLimits:
    def __init__(
        self, config: DeliveryConfig, db: Database, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.by_name = {
            name: Limits(c.per_minute, c.per_hour, c.per_day)
            for name, c in config.tenant_limits.items()
        }
        self.db = db
        self.clock = clock
        self._by_id: dict[int, Limits] = {}
        self._read_at = -REFRESH_S
        self._pruned_at = self.clock()

    @property
    def enabled(self) -> bool:
        return any(self.by_name.values())

    async def admit(
        self, leased: Sequence[Delivery], now: datetime
    ) -> tuple[list[Delivery], list[tuple[Delivery, Outcome]]]:
        """Split a leased batch into (attempt now, postponed outcomes)."""
        if not self.enabled:
            return list(leased), []
        await self._refresh(now)
        by_tenant: dict[int, list[Delivery]] = {}
        for d in leased:
            by_tenant.setdefault(d.tenant_id, []).append(d)
        go: list[Delivery] = []
        wait: list[tuple[Delivery, Outcome]] = []
        for tenant_id, group in by_tenant.items():
            limits = self._by_id.get(tenant_id, self.by_name.get("*", Limits()))
            if not limits:
                go += group
                continue
            grant = await counters.take(self.db, f"tenant:{tenant_id}", len(group), limits, now)
            go += group[: grant.granted]
            for d, wait_s in zip(group[grant.granted :], grant.waits_s, strict=True):
                wait.append((d, _postponed(d, wait_s)))
            if grant.granted < len(group):
                logger.info(
                    "tenant.limited",
                    tenant_id=tenant_id,
                    sent=grant.granted,
                    waiting=len(group) - grant.granted,
                )
        return go, wait

    async def _refresh(self, now: datetime) -> None:
        if self.clock() - self._read_at >= REFRESH_S:
            self._read_at = self.clock()
            self._by_id = {
                t.id: self.by_name[t.name]
                for t in await list_tenants(self.db)
                if t.name in self.by_name
            }
        if self.clock() - self._pruned_at >= PRUNE_S:
            self._pruned_at = self.clock()
            await counters.prune(self.db, now)


def _postponed(delivery: Delivery, wait_s: float) -> Outcome:
    reply = SmtpReply(451, "the tenant's sending limit is reached; waiting in the queue", "4.7.0")
    return Outcome(
        delivery.id,
        False,
        reply,
        "limits",
        retry_after_s=wait_s,
        details={WAIT_DETAIL: "tenant limit"},
    )
