"""What parsing an inbound report yields: the report type and one result per recipient.

Plain frozen dataclasses shared by dsn.py, arf.py, the format fallbacks and inbound.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from relay.model import BounceKind


class ReportType(StrEnum):
    DSN = "dsn"  # RFC 3464 delivery status notification
    NONSTANDARD = "nonstandard"  # a bounce in an MTA's own plain-text format
    ARF = "arf"  # RFC 5965 feedback (complaint) report
    AUTOREPLY = "autoreply"  # RFC 3834 auto-reply, out-of-office
    UNSUBSCRIBE = "unsubscribe"  # mail to a List-Unsubscribe mailto: address (RFC 2369)
    UNKNOWN = "unknown"  # not recognised as any of the above


@dataclass(frozen=True, slots=True)
class RecipientResult:
    recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded | ""
    status: str  # RFC 3463, or ""
    diagnostic: str
    kind: BounceKind
    reason: str
    original_recipient: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    type: ReportType
    results: tuple[RecipientResult, ...] = ()
    original_message_id: str = ""
    feedback_type: str = ""  # ARF only
    verp_rcpt: str = ""  # the address the report was sent to, when the headers say
    notes: tuple[str, ...] = field(default=())

    @property
    def kind(self) -> BounceKind:
        """The report's overall kind: that of its first failed result, else the first."""
        for r in self.results:
            if r.action in ("failed", ""):
                return r.kind
        if self.results:
            return self.results[0].kind
        if self.type == ReportType.ARF:
            return BounceKind.COMPLAINT
        if self.type in (ReportType.DSN, ReportType.NONSTANDARD):
            return BounceKind.SOFT  # a failure whose recipient we could not tell
        return BounceKind.NOT_BOUNCE
