"""Intake: turns one accepted SMTP transaction into a stored message and its deliveries.

Input: the sender (tenant, credential), envelope and raw bytes. Output: `Accepted` once the
message is committed. Reads the few header fields it needs once (stdlib email for address
lists and encoded words), tags
recipients to/cc/bcc, reads and strips Bcc, the campaign header and X-Relay-* headers by
editing the header bytes (the body is never re-serialized), adds a Message-ID when missing.
Commits go through one `GroupCommitter` task: concurrent messages share a transaction.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.policy import default as default_policy
from typing import Any

from relay import log
from relay.addresses import InvalidAddress, normalize
from relay.errors import RelayError, StoreUnavailable
from relay.store.db import Database, describe_error, utcnow
from relay.store.messages import NewMessage, NewRecipient, campaign_for, write_batch
from relay.store.suppressions import SuppressionCache
from relay.store.tenants import Credential, Tenant

logger = log.get("relay.intake")
# One header field with its continuation lines (group 2 keeps the folds, unfolded later).
_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.MULTILINE)
_FOLD = re.compile(r"\r?\n(?=[ \t])")
MAX_BATCH = 200
SETTLE_S = 30.0  # at shutdown, how long to wait for a commit already under way
_READ = {"from", "to", "cc", "subject", "message-id"}  # the header fields intake uses

REPLY_SENDER_DOMAIN = "550 5.7.1 {what} domain {domain!r} is not allowed for this account"
REPLY_STORE_DOWN = "451 4.3.0 Temporary problem storing the message, please retry later"
REPLY_BAD_HEADER = "550 5.6.0 {problem}"


class Rejected(RelayError):
    """The message is refused; `reply` is the full SMTP reply (code, status, sentence)."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        super().__init__(reply)


@dataclass(frozen=True, slots=True)
class Accepted:
    message_id: int  # messages.id
    message_id_header: str
    states: dict[str, str]  # recipient key → delivery state (queued | held | suppressed)


def sender_domain_allowed(tenant: Tenant, domain: str) -> bool:
    return not tenant.sender_domains or domain.lower() in tenant.sender_domains


def check_mail_from(tenant: Tenant, mail_from: str) -> None:
    """Raise Rejected unless MAIL FROM's domain is allowed ('' = null sender, allowed)."""
    if not mail_from:
        return
    domain = mail_from.rpartition("@")[2]
    if not sender_domain_allowed(tenant, domain):
        raise Rejected(REPLY_SENDER_DOMAIN.format(what="MAIL FROM", domain=domain))


def _header_fields(block: bytes) -> list[bytes]:
    """Split a header block into fields, each with its folded continuation lines."""
    fields: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line break, rest: blank line + body)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end >= 0:
            cut = end + len(sep) // 2
            return raw[:cut], raw[cut:]
    return raw, b""


def strip_headers(raw: bytes, drop: set[str], drop_prefix: str) -> bytes:
    """The raw message without header fields named in `drop` (lowercase) or the prefix."""
    head, rest = split_header(raw)
    kept = []
    for f in _header_fields(head):
        name = f.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        if name in drop or name.startswith(drop_prefix):
            continue
        kept.append(f)
    return b"".join(kept) + rest


def read_header(head: bytes, wanted: set[str], prefix: str) -> dict[str, list[str]]:
    """Unfolded values of the fields named in `wanted` (lowercase) or starting with `prefix`.

    Only these few fields are looked at, and nothing is decoded that need not be: a full
    `email` parse with policy=default costs more than the rest of intake together.
    UTF-8 header text (RFC 6532) is kept as such.
    """
    found: dict[str, list[str]] = {}
    for m in _FIELD.finditer(head.decode("utf-8", "replace")):
        name = m.group(1).lower()
        if name in wanted or name.startswith(prefix):
            found.setdefault(name, []).append(_FOLD.sub("", m.group(2)).strip())
    return found


def decoded(name: str, value: str) -> str:
    """A header value with RFC 2047 encoded words decoded, as policy=default shows it."""
    if "=?" not in value:
        return value
    return str(default_policy.header_factory(name, value))


# One mailbox in its common forms, `local@domain` or `Display Name <local@domain>` (a phrase
# without quotes, comments or list separators): read without the RFC 5322 list parser.
_SIMPLE_MAILBOX = re.compile(
    r"[ \t]*(?:[^\"<>,;:()\\@\[\]]*<([!#-'*+./-9=?A-Z^-~-]+@[A-Za-z0-9.-]+)>"
    r"|([!#-'*+./-9=?A-Z^-~-]+@[A-Za-z0-9.-]+))[ \t]*"
)


def _addresses(values: list[str]) -> set[str]:
    keys: set[str] = set()
    complex_values = []
    for value in values:
        m = _SIMPLE_MAILBOX.fullmatch(value)
        if m is None:
            complex_values.append(value)
            continue
        try:
            keys.add(normalize(m.group(1) or m.group(2)).key)
        except InvalidAddress:
            continue
    if not complex_values:
        return keys
    for _, addr_spec in email.utils.getaddresses(complex_values):
        if addr_spec:
            try:
                keys.add(normalize(addr_spec).key)
            except InvalidAddress:
                continue
    return keys


def may_hold_links(raw: bytes) -> bool:
    """False when no part of the message can hold an http(s) URL: the word 'http' appears
    nowhere, and nothing could hide it (base64 or quoted-printable parts, HTML character
    references). Saves the MIME walk of link collection for messages without links."""
    lowered = raw.lower()
    return any(s in lowered for s in (b"http", b"base64", b"quoted-printable", b"&#"))


def parse_send_at(value: str) -> datetime:
    """RFC 3339 or RFC 5322 date → naive UTC."""
    text = value.strip()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise Rejected(
                REPLY_BAD_HEADER.format(
                    problem=f"X-Relay-Send-At {text!r} is not an RFC 3339 or RFC 5322 date"
                )
            ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Settings:
    hostname: str
    campaign_header: str = "X-Campaign-ID"


class Intake:
    """Validates and prepares messages, then commits them through the group committer."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        collect_links: Callable[[bytes], list[str]] | None = None,
        stored_plan: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        # The URLs rendering will track (relay.render.collect_links), stored once per message,
        # and the rendering plan found on the way (relay.render.stored_plan), so that a
        # delivery process elsewhere does not scan the message again.
        self.collect_links = collect_links
        self.stored_plan = stored_plan
        self.committer = GroupCommitter(db)

    async def submit(
        self,
        tenant: Tenant,
        credential: Credential | None,
        mail_from: str,
        rcpt_tos: list[str],
        raw: bytes,
        smtputf8: bool = False,
    ) -> Accepted:
        """Store one message for these envelope recipients; raises Rejected or StoreUnavailable."""
        check_mail_from(tenant, mail_from)
        campaign_header = self.settings.campaign_header.lower()
        fields = read_header(split_header(raw)[0], {*_READ, campaign_header}, "x-relay-")

        def first(name: str) -> str:
            values = fields.get(name)
            return decoded(name, values[0]) if values else ""

        from_keys = _addresses(fields.get("from", []))
        for key in from_keys:
            domain = key.rpartition("@")[2]
            if not sender_domain_allowed(tenant, domain):
                raise Rejected(REPLY_SENDER_DOMAIN.format(what="From header", domain=domain))
        campaign_name = first(campaign_header)
        options: dict[str, Any] = {}
        for name, values in fields.items():
            if name.startswith("x-relay-"):
                options[name[len("x-relay-") :].replace("-", "_")] = decoded(name, values[-1])
        next_attempt_at = parse_send_at(options["send_at"]) if "send_at" in options else None
        no_suppression = options.get("no_suppression") == "1" and bool(
            credential and credential.allow_no_suppression
        )
        campaign_id, held = None, tenant.hold or bool(credential and credential.hold)
        if campaign_name:
            campaign_id, state = await self._campaign(tenant.id, campaign_name[:255])
            held = held or state == "paused"
        stored = strip_headers(raw, {"bcc", campaign_header}, "x-relay-")
        message_id_header = first("message-id")
        if not message_id_header:
            message_id_header = f"<{secrets.token_hex(12)}@{self.settings.hostname}>"
            stored = f"Message-ID: {message_id_header}\r\n".encode() + stored
        to_keys, cc_keys = _addresses(fields.get("to", [])), _addresses(fields.get("cc", []))
        recipients: list[NewRecipient] = []
        for rcpt in rcpt_tos:
            try:
                addr = normalize(rcpt)
            except InvalidAddress as e:
                raise Rejected(f"553 5.1.3 {e}") from None
            kind = "to" if addr.key in to_keys else "cc" if addr.key in cc_keys else "bcc"
            recipients.append(NewRecipient(addr.address, addr.key, addr.domain, kind))
        row = {
            "tenant_id": tenant.id,
            "credential_id": credential.id if credential else None,
            "campaign_id": campaign_id,
            "message_id_header": message_id_header[:998],
            "mail_from": mail_from,
            "from_header": first("from")[:998],
            "subject": first("subject")[:998],
            "size": len(stored),
            "raw": stored,
            "raw_encoding": "identity",
            "render_plan": None,
            "smtputf8": smtputf8,
            "options": options,
            "received_at": utcnow(),
        }
        item = NewMessage(
            tenant.id,
            row,
            recipients,
            held=held,
            check_suppression=not no_suppression,
            next_attempt_at=next_attempt_at,
            links=self._links(stored, options),
        )
        if item.links and self.stored_plan is not None:
            row["render_plan"] = self.stored_plan(stored)  # the plan cache has it now
        message_id = await self.committer.commit(item)
        logger.info(
            "message.accepted",
            message_id=message_id,
            tenant=tenant.name,
            recipients=len(recipients),
            size=len(stored),
        )
        return Accepted(message_id, message_id_header, dict(item.states))

    def _links(self, stored: bytes, options: dict[str, Any]) -> list[str]:
        if self.collect_links is None or str(options.get("track", "")).strip().lower() == "none":
            return []
        if not may_hold_links(stored):
            return []
        return self.collect_links(stored)

    async def _campaign(self, tenant_id: int, name: str) -> tuple[int, str]:
        try:
            return await campaign_for(self.db, tenant_id, name)
        except Exception as e:  # noqa: BLE001 - any driver error: the store is unavailable
            raise StoreUnavailable(describe_error(e)) from e

    async def close(self) -> None:
        await self.committer.close()


class GroupCommitter:
    """One task commits everything queued since its last commit in a single transaction.

    Each caller awaits its own future, resolved only after the commit returned (on SQLite,
    fsync'd: synchronous=FULL). A failed transaction fails the whole batch: nothing of it is
    kept, and every caller answers 451.
    """

    def __init__(self, db: Database, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[NewMessage, asyncio.Future[int]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0  # transactions committed (for metrics and tests)
        # Each batch reads the suppression change counter in its transaction: unchanged, the
        # in-memory copy answers; changed, that batch asks the table and the copy is reloaded
        # after the commit (never while holding the write lock).
        self.suppressions = SuppressionCache()

    async def commit(self, item: NewMessage) -> int:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="intake.committer")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(i, f) for i, f in batch if not f.cancelled()]
            if not live:
                continue
            items = [i for i, _ in live]
            body = functools.partial(write_batch, batch=items, cache=self.suppressions)
            work = asyncio.ensure_future(self.db.run_write(body))
            try:
                ids, current = await asyncio.shield(work)
                self.commits += 1
            except asyncio.CancelledError:
                # Shutting down mid-commit: the transaction runs to its end either way, so
                # wait for it (bounded) and answer each caller by what really happened.
                await asyncio.wait([work], timeout=SETTLE_S)
                self._settle(live, work)
                raise
            except Exception as e:  # noqa: BLE001 - any driver error fails the batch
                logger.error("intake.commit_failed", error=describe_error(e), batch=len(live))
                for _, f in live:
                    if not f.done():
                        f.set_exception(StoreUnavailable(describe_error(e)))
                continue
            for (_, f), message_id in zip(live, ids, strict=True):
                if not f.done():
                    f.set_result(message_id)
            if not current:
                await self._reload_suppressions()

    def _settle(
        self,
        live: list[tuple[NewMessage, asyncio.Future[int]]],
        work: asyncio.Future[tuple[list[int], bool]],
    ) -> None:
        """Resolve the callers of a batch whose commit finished while we were cancelled."""
        failed = not work.done() or work.cancelled() or work.exception() is not None
        if not work.done():
            work.cancel()  # gave up waiting: 451 (a commit that still lands is a duplicate)
        for index, (_, f) in enumerate(live):
            if f.done():
                continue
            if failed:
                f.set_exception(StoreUnavailable("intake is shutting down"))
            else:
                f.set_result(work.result()[0][index])

    async def _reload_suppressions(self) -> None:
        try:
            async with self.db.read() as conn:
                await self.suppressions.refresh(conn)
        except Exception as e:  # noqa: BLE001 - the next batch asks the table instead
            if isinstance(e, asyncio.CancelledError):
                raise
            logger.warning("intake.suppressions_reload_failed", error=describe_error(e))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
