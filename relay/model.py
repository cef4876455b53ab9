"""Plain values passed between the stages: states, envelopes, replies, outcomes.

A leaf module: imports nothing from relay. Everything here is immutable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class DeliveryState(StrEnum):
    QUEUED = "queued"
    DEFERRED = "deferred"
    SENDING = "sending"
    DELIVERED = "delivered"
    BOUNCED = "bounced"  # hard: the address is bad
    FAILED = "failed"  # gave up: expired, or soft bounces exhausted
    SUPPRESSED = "suppressed"  # skipped, never sent
    CANCELLED = "cancelled"
    HELD = "held"  # campaign paused, or tenant/credential on hold

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        DeliveryState.DELIVERED,
        DeliveryState.BOUNCED,
        DeliveryState.FAILED,
        DeliveryState.SUPPRESSED,
        DeliveryState.CANCELLED,
    }
)
# States a scheduler may lease once due.
DUE_STATES = frozenset({DeliveryState.QUEUED, DeliveryState.DEFERRED})


class RecipientType(StrEnum):
    TO = "to"
    CC = "cc"
    BCC = "bcc"


class BounceKind(StrEnum):
    HARD = "hard"  # the address itself is bad: suppress it
    SOFT = "soft"  # temporary, or the sender's fault (policy, reputation): do not suppress
    COMPLAINT = "complaint"  # the recipient reported the mail (ARF)
    NOT_BOUNCE = "not_bounce"  # success, auto-reply, or not a bounce at all


class SuppressionReason(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"  # escalated after repeated soft bounces
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


class EventType(StrEnum):
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    COMPLAINED = "complained"


class CampaignState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """One SMTP reply: basic code, enhanced status (RFC 3463) when given, and the text."""

    code: int
    text: str = ""
    enhanced: str | None = None

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        if self.text:
            parts.append(self.text)
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the SMTP client said in MAIL FROM / RCPT TO, with the accepted message bytes."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    smtputf8: bool = False
    remote_addr: str = ""
    tenant_id: int | None = None
    credential_id: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A leased delivery as the transport sees it: one message to one recipient."""

    id: int
    message_id: int
    tenant_id: int
    recipient: str
    domain: str
    mail_from: str
    attempts: int
    created_at: datetime
    campaign_id: int | None = None
    recipient_key: str = ""  # normalized, lowercased (suppressions, recipients)
    first_attempt_at: datetime | None = None  # None until tried; max_age counts from it
    no_suppression: bool = False  # send even if suppressed (allowed header, CLI resend)


@dataclass(frozen=True, slots=True)
class Classification:
    """What a failure means: kind, reason (sisimai vocabulary) and RFC 3463 status."""

    kind: BounceKind
    reason: str
    status: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a transport reports for one delivery attempt; `outcome.py` applies it.

    `delivered` is True on a 2xx after DATA. Otherwise `reply` holds the last SMTP reply (or a
    synthetic one for connection trouble) and `retry_after_s` a server-given delay if any.
    """

    delivery_id: int
    delivered: bool
    reply: SmtpReply
    transport: str
    account: str | None = None
    remote_host: str | None = None
    duration_ms: int = 0
    retry_after_s: float | None = None
    details: dict[str, str] = field(default_factory=dict)


# Outcome.details key: not attempted because of our own limit (a tenant's sending limit, a
# destination's rate, every account at its daily limit); due again after `retry_after_s`,
# no attempt counted, never fails by itself.
WAIT_DETAIL = "wait"
