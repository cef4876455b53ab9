"""Processing of mail to the VERP bounce domain: DSNs, complaints and auto-replies.

Input: the raw message and its envelope recipients (from ingress or the IMAP poller).
`receive` (ingress, IMAP poller) first stores the message in `inbound_reports`, durably,
before the 250, then processes it and marks the row processed; if processing fails the row
stays unprocessed for `replay` (`relay bounces replay`): nothing is ever dropped.
Parses it (`relay.bounce.parse`, in a thread), matches each result to a delivery by the
VERP token, else by Original-/Final-Recipient plus the original Message-ID, then applies
it (`relay.store.reports.apply_report`). Mail to a List-Unsubscribe `mailto:` address
(`{local_prefix}+unsub-TOKEN@{domain}`) is an unsubscribe request, whatever it says. Output:
an `InboundResult` listing what matched and what did not; unmatched reports are logged and
returned, never dropped silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from relay.addresses import key_of
from relay.bounce import RecipientResult, Report, ReportType, codes, parse
from relay.config import BounceConfig
from relay.model import BounceKind, SuppressionReason
from relay.render.tokens import InvalidToken, Keyring, TokenKind
from relay.store import events, reports, suppressions
from relay.store.db import Database, utcnow

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Applied:
    delivery_id: int
    recipient: str
    matched_by: str  # verp | message_id | unsubscribe
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
    unsubscribe = _unsubscribe_from(keyring, config, rcpt_tos)
    if unsubscribe is not None:
        return await _unsubscribe(db, config, unsubscribe, now)
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
                policy_reasons=codes.POLICY_REASONS,
                sender_reasons=codes.SENDER_REASONS,
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


async def receive(
    db: Database,
    keyring: Keyring,
    config: BounceConfig,
    mail_from: str,
    rcpt_tos: Sequence[str],
    raw: bytes,
) -> InboundResult | None:
    """Store mail to the bounce domain durably, then process it (see the module docstring)."""
    async with db.write() as conn:
        report_id = await reports.store_inbound(
            conn, rcpt_tos[0] if rcpt_tos else "", mail_from, raw
        )
    return await _process_stored(db, keyring, config, report_id, raw, rcpt_tos)


async def replay(
    db: Database,
    keyring: Keyring,
    config: BounceConfig,
    limit: int = 100,
    report_id: int | None = None,
) -> list[tuple[int, InboundResult | None]]:
    """Process stored reports whose processing never finished (e.g. the database failed
    half-way), oldest first; or the one with `report_id`, whatever its state. Returns each
    report id with its result (None: failed again, still unprocessed)."""
    async with db.read() as conn:
        pending = await reports.unprocessed_inbound(conn, limit, report_id)
    done = []
    for stored in pending:
        rcpt = [stored.rcpt] if stored.rcpt else []
        done.append(
            (stored.id, await _process_stored(db, keyring, config, stored.id, stored.raw, rcpt))
        )
    return done


async def _process_stored(
    db: Database,
    keyring: Keyring,
    config: BounceConfig,
    report_id: int,
    raw: bytes,
    rcpt_tos: Sequence[str],
) -> InboundResult | None:
    try:
        processed = await process(db, keyring, config, raw, rcpt_tos)
    except Exception:  # noqa: BLE001 - stored already; `relay bounces replay` retries it
        log.exception("inbound.processing_failed", report_id=report_id)
        return None
    detail = {
        "type": str(processed.report.type),
        "applied": [a.delivery_id for a in processed.applied],
        "unmatched": [r.recipient for r in processed.unmatched],
    }
    kinds = {a.kind for a in processed.applied} or {str(processed.report.type)}
    async with db.write() as conn:
        await reports.mark_inbound(
            conn, report_id, processed.matched, ",".join(sorted(kinds)), detail
        )
    return processed


def _delivery_from_verp(keyring: Keyring, config: BounceConfig, addresses: list[str]) -> int | None:
    for address in addresses:
        token = verp_token(address, config) if address else None
        if token is None or token.startswith(UNSUBSCRIBE_PREFIX):
            continue
        try:
            return keyring.verify(token, TokenKind.BOUNCE).delivery_id
        except InvalidToken:
            log.info("inbound.bad_token", address=address)
    return None


UNSUBSCRIBE_PREFIX = "unsub-"  # {local_prefix}+unsub-TOKEN@{domain}, in List-Unsubscribe


def _unsubscribe_from(
    keyring: Keyring, config: BounceConfig, rcpt_tos: Sequence[str]
) -> int | None:
    """The delivery named by a List-Unsubscribe mailto: address among the recipients."""
    for address in rcpt_tos:
        token = verp_token(address, config)
        if token is None or not token.startswith(UNSUBSCRIBE_PREFIX):
            continue
        try:
            found = keyring.verify(token[len(UNSUBSCRIBE_PREFIX) :], TokenKind.UNSUBSCRIBE)
        except InvalidToken:
            log.info("inbound.bad_token", address=address)
            continue
        return found.delivery_id
    return None


async def _unsubscribe(
    db: Database, config: BounceConfig, delivery_id: int, now: datetime | None
) -> InboundResult:
    """Any message to the mailto: address is the request (RFC 2369): suppress the recipient
    for its tenant, as the one-click POST does."""
    at = now or utcnow()
    expires_at = suppressions.expiry(config.ttl_s(str(SuppressionReason.UNSUBSCRIBE)), at)
    report = Report(ReportType.UNSUBSCRIBE)
    async with db.write() as conn:
        owner = await events.delivery_owner(conn, delivery_id)
        if owner is not None:
            await events.record_unsubscribe(conn, owner, at, None, "mailto", expires_at)
    if owner is None:
        log.info("inbound.unmatched", type=str(report.type), delivery_id=delivery_id)
        return InboundResult(report)
    log.info("inbound.unsubscribed", delivery_id=delivery_id)
    applied = Applied(
        delivery_id,
        owner.recipient_key,
        "unsubscribe",
        str(ReportType.UNSUBSCRIBE),
        str(SuppressionReason.UNSUBSCRIBE),
        "",
        owner.state,
        str(SuppressionReason.UNSUBSCRIBE),
    )
    return InboundResult(report, (applied,))


__all__ = ["Applied", "BounceKind", "InboundResult", "process", "receive", "replay", "verp_token"]
