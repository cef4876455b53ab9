"""The outcome policy: which state a reply leads to, backoff with jitter, expiry."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from relay.model import BounceKind, Delivery, DeliveryState, Outcome, SmtpReply
from relay.outcome import SUPPRESSED_DETAIL, Policy, classify, decide

NOW = datetime(2026, 11, 23, 12, 0, 0)
POLICY = Policy(max_age_s=5 * 86400, retry_schedule_s=(300, 600, 3600), retry_jitter=0.2)


def _delivery(attempts: int = 0, age: timedelta = timedelta(0)) -> Delivery:
    return Delivery(1, 1, 1, "a@example.com", "example.com", "s@shop.example", attempts, NOW - age)


def _outcome(code: int, text: str = "", enhanced: str | None = None, **kw: object) -> Outcome:
    return Outcome(1, 200 <= code < 300, SmtpReply(code, text, enhanced), "smarthost", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "enhanced", "text", "state", "kind"),
    [
        (250, "2.0.0", "OK", DeliveryState.DELIVERED, BounceKind.NOT_BOUNCE),
        (451, "4.2.0", "busy", DeliveryState.DEFERRED, BounceKind.SOFT),
        (550, "5.1.1", "No such user", DeliveryState.BOUNCED, BounceKind.HARD),
        (554, "5.7.1", "rejected", DeliveryState.FAILED, BounceKind.SOFT),
        (550, None, "Message blocked as spam", DeliveryState.FAILED, BounceKind.SOFT),
    ],
)
def test_states(
    code: int, enhanced: str | None, text: str, state: DeliveryState, kind: BounceKind
) -> None:
    decision = decide(_delivery(), _outcome(code, text, enhanced), POLICY, NOW, random.Random(0))
    assert decision.state is state
    assert decision.classification.kind is kind
    assert classify(SmtpReply(code, text, enhanced)).kind is kind


def test_backoff_follows_schedule_within_jitter_and_last_step_repeats() -> None:
    rng = random.Random(7)
    for attempts, base in [(0, 300), (1, 600), (2, 3600), (9, 3600)]:
        d = decide(_delivery(attempts), _outcome(451), POLICY, NOW, rng)
        assert d.next_attempt_at is not None
        delay = (d.next_attempt_at - NOW).total_seconds()
        assert base * 0.8 <= delay <= base * 1.2
    delays = {
        decide(_delivery(), _outcome(451), POLICY, NOW, rng).next_attempt_at for _ in range(5)
    }
    assert len(delays) > 1  # jitter spreads retries


def test_expiry_and_server_given_delay() -> None:
    old = _delivery(3, age=timedelta(days=5) - timedelta(minutes=1))
    expired = decide(old, _outcome(451), POLICY, NOW, random.Random(0))
    assert expired.state is DeliveryState.FAILED and expired.classification.reason == "expired"
    asked = decide(_delivery(), _outcome(450, retry_after_s=7200.0), POLICY, NOW, random.Random(0))
    assert asked.next_attempt_at == NOW + timedelta(hours=2)
    # sooner than the retry schedule (5 min) when the server says so, but not below a minute
    soon = decide(_delivery(), _outcome(450, retry_after_s=90.0), POLICY, NOW, random.Random(0))
    assert soon.next_attempt_at == NOW + timedelta(seconds=90)
    now_ = decide(_delivery(), _outcome(450, retry_after_s=1.0), POLICY, NOW, random.Random(0))
    assert now_.next_attempt_at == NOW + timedelta(seconds=60)


def test_suppressed_detail() -> None:
    o = Outcome(1, False, SmtpReply(550), "suppression", details={SUPPRESSED_DETAIL: "complaint"})
    assert decide(_delivery(), o, POLICY, NOW, random.Random(0)).state is DeliveryState.SUPPRESSED
