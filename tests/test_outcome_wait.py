"""Waiting is not failing: a wait on our own limit counts no attempt, and max_age counts
from the first attempt, not from when the delivery was queued or scheduled."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

from relay.model import WAIT_DETAIL, Delivery, DeliveryState, Outcome, SmtpReply
from relay.outcome import Policy, decide

NOW = datetime(2026, 11, 23, 12, 0, 0)
POLICY = Policy(max_age_s=3600, retry_schedule_s=(300,), retry_jitter=0.0)
RNG = random.Random(0)


def _delivery(attempts: int = 0, queued_ago: timedelta = timedelta(0)) -> Delivery:
    return Delivery(
        1, 1, 1, "a@example.com", "example.com", "s@x.example", attempts, NOW - queued_ago
    )


def _wait(seconds: float) -> Outcome:
    reply = SmtpReply(451, "every smarthost account is at its daily limit", "4.3.2")
    return Outcome(
        1, False, reply, "smarthost", retry_after_s=seconds, details={WAIT_DETAIL: "daily_limit"}
    )


def test_wait_requeues_without_an_attempt_even_past_max_age() -> None:
    old = _delivery(queued_ago=timedelta(days=30))  # far past max_age since it was queued
    d = decide(old, _wait(7200), POLICY, NOW, RNG)
    assert (d.state, d.tried) == (DeliveryState.QUEUED, False)
    assert d.next_attempt_at == NOW + timedelta(seconds=7200)
    retried = decide(_delivery(attempts=2), _wait(60), POLICY, NOW, RNG)
    assert (retried.state, retried.tried) == (DeliveryState.DEFERRED, False)


def test_max_age_counts_from_the_first_attempt() -> None:
    soft = Outcome(1, False, SmtpReply(451, "busy", "4.2.0"), "smarthost")
    # Queued (or scheduled, or waiting on limits) for days, tried for the first time now.
    first = decide(_delivery(queued_ago=timedelta(days=3)), soft, POLICY, NOW, RNG)
    assert first.state is DeliveryState.DEFERRED
    # Retried 58 minutes after its first attempt: the next retry lands past max_age.
    tried = replace(
        _delivery(attempts=1, queued_ago=timedelta(days=3)),
        first_attempt_at=NOW - timedelta(minutes=58),
    )
    late = decide(tried, soft, POLICY, NOW, RNG)
    assert late.state is DeliveryState.FAILED and late.classification.reason == "expired"
