"""Processing of mail to the VERP bounce domain: DSNs, complaints and auto-replies.

Input: the raw message and its envelope recipients (from ingress or the IMAP poller).
Parses it (`relay.bounce.parse`, in a thread), matches each result to a delivery by the
VERP token, else by Original-/Final-Recipient plus the original Message-ID, then applies
it (`relay.store.reports.apply_report`). Output: an `InboundResult` listing what matched
and what did not; unmatched reports are logged and returned, never dropped silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from relay.addresses import key_of
from relay.bounce import RecipientResult, Report, ReportType, parse
from relay.config import BounceConfig
from relay.model import BounceKind, SuppressionReason
from relay.render.tokens import InvalidToken, Keyring, TokenKind
from relay.store import reports
from relay.store.db import Database

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Applied:
    delivery_id: int
    recipient: str
    matched_by: str  # verp | message_id
    kind: str
    reason: str
    status: str
    state: str
    suppressed: str | None


@dataclass(frozen=True, slots=True)
class InboundResult:
    report: Report
    applied: tuple[Applied, ...] = ()
    unmatched: tuple[RecipientResult, ...] = field(default=())

    @property
    def matched(self) -> bool:
        return bool(self.applied)


def verp_token(address: str, config: BounceConfig) -> str | None:
    """The token in `{local_prefix}+{token}@{domain}`, or None for any other address."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    prefix = f"{config.local_prefix}+".lower()
    if not config.domain or domain.lower() != config.domain.lower():
        return None
    if not local.lower().startswith(prefix):
        return None
    return local[len(prefix) :] or None


async def process(
    db: Database,
    keyring: Keyring,
    config: BounceConfig,
    raw: bytes,
    rcpt_tos: Sequence[str] = (),
    now: datetime | None = None,
) -> InboundResult:
    report = await asyncio.to_thread(parse, raw)
    delivery_id = _delivery_from_verp(keyring, config, [*rcpt_tos, report.verp_rcpt])
    results = report.results
    if not results and report.type in (ReportType.AUTOREPLY, ReportType.UNKNOWN):
        log.info("inbound.not_bounce", type=str(report.type), delivery_id=delivery_id)
        return InboundResult(report)
    ttl = {str(r): config.ttl_s(str(r)) for r in SuppressionReason}
    applied: list[Applied] = []
    unmatched: list[RecipientResult] = []
    async with db.write() as conn:
        for result in results:
            d, how = None, ""
            if delivery_id is not None:
                d, how = await reports.delivery_by_id(conn, delivery_id), "verp"
                # A VERP token names one delivery: results about other addresses are not it.
                if (
                    d is not None
                    and len(results) > 1
                    and d.recipient_key != key_of(result.recipient)
                ):
                    d = None
            if d is None:
                for candidate in (result.original_recipient, result.recipient):
                    d = await reports.delivery_by_message_id(
                        conn, report.original_message_id, key_of(candidate) if candidate else ""
                    )
                    if d is not None:
                        how = "message_id"
                        break
            if d is None:
                unmatched.append(result)
                continue
            effect = await reports.apply_report(
                conn,
                d,
                kind=result.kind,
                reason=result.reason,
                status=result.status,
                diagnostic=result.diagnostic,
                action=result.action,
                ttl_s=ttl,
                soft_limit=config.soft_bounce_limit,
                soft_window_s=config.soft_bounce_window,
                now=now,
            )
            applied.append(
                Applied(
                    d.id,
                    d.recipient_key,
                    how,
                    str(result.kind),
                    result.reason,
                    result.status,
                    effect.state,
                    effect.suppressed,
                )
            )
    for a in applied:
        log.info(
            "inbound.applied",
            delivery_id=a.delivery_id,
            matched_by=a.matched_by,
            kind=a.kind,
            reason=a.reason,
            status=a.status,
            state=a.state,
            suppressed=a.suppressed,
        )
    for u in unmatched:
        log.info(
            "inbound.unmatched",
            type=str(report.type),
            recipient=u.recipient,
            kind=str(u.kind),
            reason=u.reason,
            status=u.status,
            message_id=report.original_message_id,
        )
    return InboundResult(report, tuple(applied), tuple(unmatched))


def _delivery_from_verp(keyring: Keyring, config: BounceConfig, addresses: list[str]) -> int | None:
    for address in addresses:
        token = verp_token(address, config) if address else None
        if token is None:
            continue
        try:
            return keyring.verify(token, TokenKind.BOUNCE).delivery_id
        except InvalidToken:
            log.info("inbound.bad_token", address=address)
    return None


__all__ = ["Applied", "BounceKind", "InboundResult", "process", "verp_token"]
