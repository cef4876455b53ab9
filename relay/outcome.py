"""Applies delivery outcomes: the one place where a transport's report becomes state.

Input: (leased `Delivery`, `Outcome`) pairs from the scheduler, the `[delivery]` policy and
the time. Output: per delivery the new state. Side effects, in ONE short write transaction
per batch (one statement per table, not per delivery): the delivery row (state, attempts,
next_attempt_at, last reply, lease cleared), a `delivery_attempts` row, recipient counters,
a `recipient_events` row, stats counters, webhooks, a hard-bounce suppression (lifetime
`bounce.hard_bounce_ttl`) or a soft-bounce escalation (`bounce.soft_bounce_limit` failed
deliveries within the window; the sender's own trouble never counts); a permanent policy
block is charged to the pool account's bounce rate instead of the address. A
delivery whose lease this worker no longer holds is left alone. A wait on our own limit
(`WAIT_DETAIL`) requeues without counting an attempt.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from relay import log, metrics
from relay.bounce.classify import classify_reply
from relay.bounce.codes import POLICY_REASONS, SENDER_REASONS
from relay.config import BounceConfig, DeliveryConfig
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
from relay.store import deliveries as queue
from relay.store import reports, stats, suppressions, webhooks
from relay.store.accounts import record_use
from relay.store.db import Database

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

logger = log.get(__name__)

# Failed deliveries that never count toward a recipient's soft-bounce escalation: the
# sender's trouble, plus "policy", the reason relay recorded for such blocks before it used
# sisimai's names only (events still in the escalation window after an upgrade).
_NOT_THE_RECIPIENT = SENDER_REASONS | {"policy"}
MIN_SERVER_DELAY_S = 60.0  # floor for a "try again in N seconds" reply
SUPPRESSED_DETAIL = "suppressed"  # Outcome.details key set by the scheduler's pre-send check


def classify(reply: SmtpReply) -> Classification:
    """The bounce stream's classification of a reply: sisimai reason names, RFC 3463 status.

    One failure policy for delivery replies and DSNs alike (`relay.bounce`): hard only when
    the address itself is bad; a policy, reputation or spam block (reasons in
    `POLICY_REASONS`, most 5.7.x replies) is soft, charged to the account, never counted
    toward the recipient's escalation.
    """
    return classify_reply(reply)


@dataclass(frozen=True, slots=True)
class Policy:
    max_age_s: float
    retry_schedule_s: tuple[float, ...]
    retry_jitter: float
    hard_bounce_ttl_s: float = 0.0  # lifetime of a hard-bounce suppression; 0 = forever
    soft_bounce_limit: int = 0  # failed deliveries within the window that suppress; 0 = never
    soft_bounce_window_s: float = 7 * 86400.0
    soft_bounce_ttl_s: float = 0.0

    @classmethod
    def from_config(cls, config: DeliveryConfig, bounce: BounceConfig | None = None) -> Policy:
        found = cls(config.max_age, tuple(config.retry_schedule), config.retry_jitter)
        if bounce is None:
            return found
        return replace(
            found,
            hard_bounce_ttl_s=bounce.hard_bounce_ttl,
            soft_bounce_limit=bounce.soft_bounce_limit,
            soft_bounce_window_s=bounce.soft_bounce_window,
            soft_bounce_ttl_s=bounce.soft_bounce_ttl,
        )

    def backoff_s(self, attempts: int, rng: random.Random) -> float:
        """Delay before retry number `attempts` (1-based); the last step repeats; ± jitter."""
        base = self.retry_schedule_s[min(max(attempts, 1), len(self.retry_schedule_s)) - 1]
        return base * (1 + rng.uniform(-self.retry_jitter, self.retry_jitter))


@dataclass(frozen=True, slots=True)
class Decision:
    state: DeliveryState
    classification: Classification
    next_attempt_at: datetime | None = None
    tried: bool = True  # False: suppressed or waiting on a limit; no attempt is counted


def decide(
    delivery: Delivery, outcome: Outcome, policy: Policy, now: datetime, rng: random.Random
) -> Decision:
    """The new state for a delivery after this outcome (pure)."""
    if SUPPRESSED_DETAIL in outcome.details:
        reason = outcome.details[SUPPRESSED_DETAIL]
        return Decision(
            DeliveryState.SUPPRESSED, Classification(BounceKind.NOT_BOUNCE, reason), tried=False
        )
    if WAIT_DETAIL in outcome.details:
        # Our own limit, not the recipient's trouble: back to the queue, never toward failure.
        state = DeliveryState.DEFERRED if delivery.attempts else DeliveryState.QUEUED
        wait_s = outcome.retry_after_s if outcome.retry_after_s is not None else 60.0
        reason = outcome.details[WAIT_DETAIL]
        return Decision(
            state,
            Classification(BounceKind.NOT_BOUNCE, reason),
            now + timedelta(seconds=wait_s),
            tried=False,
        )
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
    # Age counts from the first attempt: time spent scheduled or waiting on our own limits
    # before it does not bring a delivery closer to failing.
    first = delivery.first_attempt_at
    if first is None:
        first = delivery.created_at if delivery.attempts else now
    if next_at - first > timedelta(seconds=policy.max_age_s):
        return Decision(DeliveryState.FAILED, Classification(found.kind, "expired", found.status))
    return Decision(DeliveryState.DEFERRED, found, next_at)


_EVENT = {
    DeliveryState.DELIVERED: EventType.DELIVERED,
    DeliveryState.DEFERRED: EventType.DEFERRED,
    DeliveryState.BOUNCED: EventType.BOUNCED,
    DeliveryState.FAILED: EventType.FAILED,
    DeliveryState.SUPPRESSED: EventType.SUPPRESSED,
}
# Delivery state → recipients counter column.
_COUNTER = {
    DeliveryState.DELIVERED: "delivered_count",
    DeliveryState.DEFERRED: "soft_bounce_count",
    DeliveryState.BOUNCED: "hard_bounce_count",
}
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


async def record_outcomes(
    db: Database,
    owner: str,
    results: Sequence[tuple[Delivery, Outcome]],
    policy: Policy,
    now: datetime,
    rng: random.Random,
) -> list[DeliveryState | None]:
    """Apply a batch of outcomes in one transaction; None where the lease was lost."""
    decided = [(d, o, decide(d, o, policy, now, rng)) for d, o in results]
    async with db.write() as conn:
        mine = await queue.owned(conn, owner, [d.id for d, _, _ in decided])
        batch = _Batch(now, policy)
        for delivery, outcome, decision in decided:
            if delivery.id in mine:
                batch.add(delivery, outcome, decision)
        await batch.write(conn)
    states: list[DeliveryState | None] = []
    for delivery, outcome, decision in decided:
        metrics.delivery_outcome(_metric_label(decision) if delivery.id in mine else "lease_lost")
        if delivery.id not in mine:
            states.append(None)
            logger.warning("delivery.lease_lost", delivery_id=delivery.id)
            continue
        states.append(decision.state)
        if not decision.tried and decision.state is not DeliveryState.SUPPRESSED:
            logger.debug(
                "delivery.waiting",
                delivery_id=delivery.id,
                reason=decision.classification.reason,
                until=str(decision.next_attempt_at),
            )
            continue
        logger.info(
            f"delivery.{decision.state}",
            delivery_id=delivery.id,
            message_id=delivery.message_id,
            tenant_id=delivery.tenant_id,
            domain=delivery.domain,
            account=outcome.account,
            mx=outcome.remote_host,
            reply=str(outcome.reply),
            attempt=delivery.attempts + int(decision.tried),
        )
    return states


def _metric_label(decision: Decision) -> str:
    if not decision.tried and decision.state is not DeliveryState.SUPPRESSED:
        return "waiting"  # our own limit, not an attempt
    return str(decision.state)


class _Batch:
    """The rows one batch of outcomes writes, collected so each table gets one statement."""

    def __init__(self, now: datetime, policy: Policy) -> None:
        self.now = now
        self.policy = policy
        self.soft_failed: list[Delivery] = []  # may escalate to a soft_bounce suppression
        self.updates: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.counters: list[tuple[str, int, str, datetime, bool]] = []
        self.events: list[dict[str, Any]] = []
        self.metrics: Counter[stats.CounterKey] = Counter()
        self.usage: Counter[tuple[str, bool]] = Counter()
        self.bounced: list[tuple[Delivery, Outcome]] = []
        self.webhooks: list[tuple[int, str, dict[str, Any]]] = []

    def add(self, delivery: Delivery, outcome: Outcome, decision: Decision) -> None:
        now, state = self.now, decision.state
        values: dict[str, Any] = {
            "b_id": delivery.id,
            "b_tried": int(decision.tried),
            "state": str(state),
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
        }
        if decision.next_attempt_at is not None:
            values["next_attempt_at"] = decision.next_attempt_at
        if state.is_final:
            values["final_at"] = now
        self.updates.append(values)
        if not decision.tried:
            if state is DeliveryState.SUPPRESSED:
                self._event(delivery, outcome, decision)
            return
        values.update(
            last_reply_code=outcome.reply.code,
            last_reply=str(outcome.reply)[:2000],
            account=outcome.account or outcome.remote_host,
        )
        if state is not DeliveryState.DELIVERED:
            values.update(
                bounce_kind=str(decision.classification.kind),
                bounce_reason=decision.classification.reason[:32],
            )
        self.attempts.append(
            {
                "delivery_id": delivery.id,
                "started_at": now - timedelta(milliseconds=outcome.duration_ms),
                "duration_ms": outcome.duration_ms,
                "transport": outcome.transport,
                "account": outcome.account,
                "remote_host": outcome.remote_host,
                "reply_code": outcome.reply.code,
                "enhanced_status": outcome.reply.enhanced,
                "reply": str(outcome.reply)[:2000],
                "result": str(state),
            }
        )
        column = _COUNTER.get(state)
        if column is not None:
            bounce = state is not DeliveryState.DELIVERED
            self.counters.append((column, delivery.tenant_id, _key(delivery), now, bounce))
        cause = _cause(outcome, decision)
        if outcome.account and state in (DeliveryState.DELIVERED, DeliveryState.BOUNCED):
            self.usage[(outcome.account, state is DeliveryState.BOUNCED)] += 1
        elif outcome.account and state is DeliveryState.FAILED and cause in POLICY_REASONS:
            # A policy/reputation block of the sender: the account's health pays, not the address.
            self.usage[(outcome.account, True)] += 1
        if state is DeliveryState.BOUNCED:
            self.bounced.append((delivery, outcome))
        elif state is DeliveryState.FAILED and cause not in _NOT_THE_RECIPIENT:
            self.soft_failed.append(delivery)
        self._event(delivery, outcome, decision)

    def _event(self, delivery: Delivery, outcome: Outcome, decision: Decision) -> None:
        state = decision.state
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
        if decision.tried and decision.classification.reason == "expired":
            detail["cause"] = _cause(outcome, decision)  # what kept failing until max_age
        self.events.append(
            {
                "tenant_id": delivery.tenant_id,
                "delivery_id": delivery.id,
                "message_id": delivery.message_id,
                "campaign_id": delivery.campaign_id,
                "recipient": _key(delivery),
                "type": str(_EVENT[state]),
                "occurred_at": self.now,
                "detail": detail,
            }
        )
        metric = _METRIC.get(state)
        if metric is not None:
            self.metrics[(delivery.tenant_id, delivery.campaign_id, self.now, metric)] += 1
        if state in _WEBHOOK_STATES:
            payload = {
                "delivery_id": delivery.id,
                "message_id": delivery.message_id,
                "recipient": delivery.recipient,
                **detail,
            }
            kind = str(state) if state is not DeliveryState.BOUNCED else "bounced"
            self.webhooks.append((delivery.tenant_id, kind, payload))

    async def write(self, conn: AsyncConnection) -> None:
        now = self.now
        await queue.complete(conn, self.updates, self.attempts, self.counters, self.events)
        policy = self.policy
        for delivery, outcome in self.bounced:
            await suppressions.add(
                conn,
                delivery.tenant_id,
                _key(delivery),
                str(SuppressionReason.HARD_BOUNCE),
                source=f"delivery {delivery.id}: {outcome.reply}",
                expires_at=suppressions.expiry(policy.hard_bounce_ttl_s, now),
            )
        if policy.soft_bounce_limit:
            since = now - timedelta(seconds=policy.soft_bounce_window_s)
            for delivery in self.soft_failed:  # after the events above are written
                key = _key(delivery)
                found = await reports.soft_failures(
                    conn, delivery.tenant_id, key, since, _NOT_THE_RECIPIENT
                )
                if found >= policy.soft_bounce_limit:
                    await suppressions.add(
                        conn,
                        delivery.tenant_id,
                        key,
                        str(SuppressionReason.SOFT_BOUNCE),
                        source=f"delivery {delivery.id}: {found} soft failures",
                        expires_at=suppressions.expiry(policy.soft_bounce_ttl_s, now),
                    )
        if self.webhooks:
            await webhooks.enqueue_many(conn, self.webhooks, at=now)
        # Last, right before the commit: rows every delivery process updates (this minute's
        # and today's account usage, this hour's stats counters). Their row locks are held
        # until the commit, so any statement after them would make other nodes wait longer.
        # Same order in every process (accounts sorted, then stats sorted): no deadlock.
        # Shared between nodes: daily limits, warm-up and the hard-bounce rate read these.
        for account in sorted({a for a, _ in self.usage}):
            sent = self.usage[(account, False)] + self.usage[(account, True)]
            bounced = self.usage[(account, True)]
            await record_use(conn, account, now, sent, bounced)
        await stats.bump_many(conn, self.metrics)  # the stats API's maintained counters


def _cause(outcome: Outcome, decision: Decision) -> str:
    """The reason behind a failure; for an expiry, what the last reply said."""
    reason = decision.classification.reason
    if reason == "expired" and not outcome.reply.is_positive:
        return classify(outcome.reply).reason
    return reason


def _key(delivery: Delivery) -> str:
    return delivery.recipient_key or delivery.recipient.lower()
