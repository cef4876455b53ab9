"""Applies delivery outcomes: the one place where a transport's report becomes state.

Input: (leased `Delivery`, `Outcome`) pairs from the scheduler, the `[delivery]` policy and
the time. Output: per delivery the new state. Side effects, in ONE short write transaction
per batch: the delivery row (state, attempts, next_attempt_at, last reply, lease cleared),
a `delivery_attempts` row, recipient counters, a `recipient_events` row, and a hard-bounce
suppression. A delivery whose lease this worker no longer holds is left alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from relay import log
from relay.bounce.classify import classify_reply
from relay.config import DeliveryConfig
from relay.model import (
    WAIT_DETAIL,
    BounceKind,
    Classification,
    Delivery,
    DeliveryState,
    EventType,
    Outcome,
    SmtpReply,
    SuppressionReason,
)
from relay.store import stats, suppressions, webhooks
from relay.store.accounts import record_use
from relay.store.db import Database
from relay.store.tables import deliveries, delivery_attempts, recipient_events, recipients

logger = log.get(__name__)

# Texts that blame the sender (policy, reputation, spam), not the address: no suppression.
_POLICY_WORDS = ("spam", "policy", "blocked", "blacklist", "blocklist", "reputation", "dmarc")
MIN_SERVER_DELAY_S = 60.0  # floor for a "try again in N seconds" reply
SUPPRESSED_DETAIL = "suppressed"  # Outcome.details key set by the scheduler's pre-send check


def classify(reply: SmtpReply) -> Classification:
    """The bounce stream's classifier; the built-in rule below is the fallback for 5xx it
    calls soft/unknown-without-reason (kept so policy texts never suppress)."""
    found = classify_reply(reply)
    if found.kind is not BounceKind.HARD or not reply.is_permanent:
        return found
    return _builtin(reply) if _builtin(reply).kind is not BounceKind.HARD else found


def _builtin(reply: SmtpReply) -> Classification:
    status = reply.enhanced or ""
    if reply.is_positive:
        return Classification(BounceKind.NOT_BOUNCE, "delivered", status)
    if reply.is_transient:
        return Classification(BounceKind.SOFT, "temporary", status)
    text = reply.text.lower()
    if status.startswith("5.7.") or any(w in text for w in _POLICY_WORDS):
        return Classification(BounceKind.SOFT, "policy", status)
    return Classification(BounceKind.HARD, "user_unknown" if status == "5.1.1" else "hard", status)


@dataclass(frozen=True, slots=True)
class Policy:
    max_age_s: float
    retry_schedule_s: tuple[float, ...]
    retry_jitter: float

    @classmethod
    def from_config(cls, config: DeliveryConfig) -> Policy:
        return cls(config.max_age, tuple(config.retry_schedule), config.retry_jitter)

    def backoff_s(self, attempts: int, rng: random.Random) -> float:
        """Delay before retry number `attempts` (1-based); the last step repeats; ± jitter."""
        base = self.retry_schedule_s[min(max(attempts, 1), len(self.retry_schedule_s)) - 1]
        return base * (1 + rng.uniform(-self.retry_jitter, self.retry_jitter))


@dataclass(frozen=True, slots=True)
class Decision:
    state: DeliveryState
    classification: Classification
    next_attempt_at: datetime | None = None


def decide(
    delivery: Delivery, outcome: Outcome, policy: Policy, now: datetime, rng: random.Random
) -> Decision:
    """The new state for a delivery after this outcome (pure)."""
    if SUPPRESSED_DETAIL in outcome.details:
        reason = outcome.details[SUPPRESSED_DETAIL]
        return Decision(DeliveryState.SUPPRESSED, Classification(BounceKind.NOT_BOUNCE, reason))
    if WAIT_DETAIL in outcome.details:  # a limit, not the remote side: no attempt counted
        state = DeliveryState.DEFERRED if delivery.attempts else DeliveryState.QUEUED
        wait = timedelta(seconds=max(outcome.retry_after_s or 1.0, 0.0))
        why = Classification(BounceKind.NOT_BOUNCE, outcome.details[WAIT_DETAIL])
        return Decision(state, why, now + wait)
    if outcome.delivered:
        return Decision(DeliveryState.DELIVERED, classify(outcome.reply))
    found = classify(outcome.reply)
    if outcome.reply.is_permanent:
        if found.kind is BounceKind.HARD:
            return Decision(DeliveryState.BOUNCED, found)
        return Decision(DeliveryState.FAILED, found)
    attempts = delivery.attempts + 1
    delay = policy.backoff_s(attempts, rng)
    if outcome.retry_after_s is not None:
        # The server said when: honour it, but never sooner than a minute (no hammering).
        delay = max(outcome.retry_after_s, MIN_SERVER_DELAY_S)
    next_at = now + timedelta(seconds=delay)
    if next_at - delivery.created_at > timedelta(seconds=policy.max_age_s):
        return Decision(DeliveryState.FAILED, Classification(found.kind, "expired", found.status))
    return Decision(DeliveryState.DEFERRED, found, next_at)


_EVENT = {
    DeliveryState.DELIVERED: EventType.DELIVERED,
    DeliveryState.DEFERRED: EventType.DEFERRED,
    DeliveryState.BOUNCED: EventType.BOUNCED,
    DeliveryState.FAILED: EventType.FAILED,
    DeliveryState.SUPPRESSED: EventType.SUPPRESSED,
}
_COUNTER = {
    DeliveryState.DELIVERED: recipients.c.delivered_count,
    DeliveryState.DEFERRED: recipients.c.soft_bounce_count,
    DeliveryState.BOUNCED: recipients.c.hard_bounce_count,
}


async def record_outcomes(
    db: Database,
    owner: str,
    results: Sequence[tuple[Delivery, Outcome]],
    policy: Policy,
    now: datetime,
    rng: random.Random,
) -> list[DeliveryState | None]:
    """Apply a batch of outcomes in one transaction; None where the lease was lost."""
    states: list[DeliveryState | None] = []
    async with db.write() as conn:
        for delivery, outcome in results:
            decision = decide(delivery, outcome, policy, now, rng)
            applied = await _apply(conn, owner, delivery, outcome, decision, now)
            states.append(decision.state if applied else None)
    for (delivery, outcome), state in zip(results, states, strict=True):
        if state is not None and WAIT_DETAIL in outcome.details:
            logger.debug("delivery.postponed", delivery_id=delivery.id, why=str(outcome.reply))
        elif state is None:
            logger.warning("delivery.lease_lost", delivery_id=delivery.id)
        else:
            logger.info(
                f"delivery.{state}",
                delivery_id=delivery.id,
                message_id=delivery.message_id,
                domain=delivery.domain,
                account=outcome.account,
                mx=outcome.remote_host,
                reply=str(outcome.reply),
                attempt=delivery.attempts + 1,
            )
    return states


# Delivery state → stats counter (relay.store.stats.METRICS) and the states webhooks hear of.
_METRIC = {
    DeliveryState.DELIVERED: "delivered",
    DeliveryState.BOUNCED: "bounced_hard",
    DeliveryState.FAILED: "failed",
    DeliveryState.DEFERRED: "deferred",
    DeliveryState.SUPPRESSED: "suppressed",
}
_WEBHOOK_STATES = frozenset(
    {DeliveryState.DELIVERED, DeliveryState.BOUNCED, DeliveryState.DEFERRED, DeliveryState.FAILED}
)


async def _apply(
    conn: AsyncConnection,
    owner: str,
    delivery: Delivery,
    outcome: Outcome,
    decision: Decision,
    now: datetime,
) -> bool:
    state = decision.state
    if WAIT_DETAIL in outcome.details:
        return await _postpone(conn, owner, delivery, decision, now)
    tried = state is not DeliveryState.SUPPRESSED
    values: dict[str, Any] = {
        "state": str(state),
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if tried:
        values.update(
            attempts=deliveries.c.attempts + 1,
            last_reply_code=outcome.reply.code,
            last_reply=str(outcome.reply)[:2000],
            account=outcome.account or outcome.remote_host,
        )
    if state is not DeliveryState.DELIVERED and tried:
        values.update(
            bounce_kind=str(decision.classification.kind),
            bounce_reason=decision.classification.reason[:32],
        )
    if decision.next_attempt_at is not None:
        values["next_attempt_at"] = decision.next_attempt_at
    if state.is_final:
        values["final_at"] = now
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery.id, deliveries.c.lease_owner == owner)
        .values(**values)
    )
    if result.rowcount != 1:
        return False
    key = delivery.recipient.lower()
    if tried:
        await conn.execute(
            delivery_attempts.insert().values(
                delivery_id=delivery.id,
                started_at=now - timedelta(milliseconds=outcome.duration_ms),
                duration_ms=outcome.duration_ms,
                transport=outcome.transport,
                account=outcome.account,
                remote_host=outcome.remote_host,
                reply_code=outcome.reply.code,
                enhanced_status=outcome.reply.enhanced,
                reply=str(outcome.reply)[:2000],
                result=str(state),
            )
        )
    counter = _COUNTER.get(state)
    if counter is not None:
        changes: dict[str, Any] = {counter.name: counter + 1, "last_seen_at": now}
        if state is not DeliveryState.DELIVERED:
            changes["last_bounce_at"] = now
        await conn.execute(
            update(recipients)
            .where(recipients.c.tenant_id == delivery.tenant_id, recipients.c.email == key)
            .values(**changes)
        )
    if outcome.account and state in (DeliveryState.DELIVERED, DeliveryState.BOUNCED):
        # Shared between nodes: daily limits, warm-up and the hard-bounce rate read these.
        await record_use(conn, outcome.account, now, 1, int(state is DeliveryState.BOUNCED))
    if state is DeliveryState.BOUNCED:
        await suppressions.add(
            conn,
            delivery.tenant_id,
            key,
            str(SuppressionReason.HARD_BOUNCE),
            source=f"delivery {delivery.id}: {outcome.reply}",
        )
    detail = {
        "code": outcome.reply.code,
        "enhanced": outcome.reply.enhanced,
        "text": outcome.reply.text[:500],
        "kind": str(decision.classification.kind),
        "reason": decision.classification.reason,
        "transport": outcome.transport,
        "account": outcome.account,
        "remote_host": outcome.remote_host,
    }
    await conn.execute(
        recipient_events.insert().values(
            tenant_id=delivery.tenant_id,
            delivery_id=delivery.id,
            message_id=delivery.message_id,
            campaign_id=delivery.campaign_id,
            recipient=key,
            type=str(_EVENT[state]),
            occurred_at=now,
            detail=detail,
        )
    )
    # Maintained counters for the stats API, and webhooks, in the same transaction.
    metric = _METRIC.get(state)
    if metric is not None:
        await stats.bump(conn, delivery.tenant_id, delivery.campaign_id, metric, now)
    if state in _WEBHOOK_STATES:
        await webhooks.enqueue(
            conn,
            delivery.tenant_id,
            str(state) if state is not DeliveryState.BOUNCED else "bounced",
            {
                "delivery_id": delivery.id,
                "message_id": delivery.message_id,
                "recipient": delivery.recipient,
                **detail,
            },
            at=now,
        )
    return True


async def _postpone(
    conn: AsyncConnection, owner: str, delivery: Delivery, decision: Decision, now: datetime
) -> bool:
    """Back to the queue untried: no attempt row, no event, attempts unchanged."""
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery.id, deliveries.c.lease_owner == owner)
        .values(
            state=str(decision.state),
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=decision.next_attempt_at,
            updated_at=now,
        )
    )
    return bool(result.rowcount == 1)
