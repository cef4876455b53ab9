"""Polls an IMAP mailbox for bounces, for operators whose bounces land in a mailbox.

Input: `[bounce_mailbox]` (host, port, tls, user, password, folder, move_to). Each poll
fetches the unseen messages, hands each raw message to `handle` (in `relay serve`, the
`bounce_mailbox` role that runs with `smtp`: `relay.inbound.receive`), then moves it to
`move_to` or marks it seen; a message whose handling fails stays unseen for the next poll.
imaplib is blocking, so it runs in a thread with a socket timeout. Never logs the password
or message bodies.
"""

from __future__ import annotations

import asyncio
import imaplib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from relay import inbound
from relay.config import BounceMailboxConfig, Config, read_secret
from relay.errors import RelayError
from relay.render.tokens import load_keyring
from relay.store.db import Database

log = structlog.get_logger(__name__)
Handler = Callable[[bytes], Awaitable[Any]]


class MailboxError(RelayError):
    """The IMAP server could not be reached, refused the login or the folder."""


def _connect(config: BounceMailboxConfig) -> imaplib.IMAP4:
    password = read_secret(config.password, config.password_file, "bounce_mailbox.password")
    imap: imaplib.IMAP4 | None = None
    try:
        if config.tls == "ssl":
            imap = imaplib.IMAP4_SSL(
                config.host,
                config.port,
                ssl_context=ssl.create_default_context(),
                timeout=config.timeout,
            )
        else:
            imap = imaplib.IMAP4(config.host, config.port, timeout=config.timeout)
            if config.tls == "starttls":
                imap.starttls(ssl.create_default_context())
        connected: imaplib.IMAP4 = imap
        connected.login(config.user, password)
        typ, _ = connected.select(_quote(config.folder))
        if typ != "OK":
            raise MailboxError(f"bounce_mailbox.folder: cannot open {config.folder!r}")
        return connected
    except (OSError, imaplib.IMAP4.error, MailboxError) as e:
        if imap is not None:
            imap.shutdown()
        if isinstance(e, MailboxError):
            raise
        # imaplib's login error text is the server's; it never contains the password.
        raise MailboxError(f"bounce_mailbox: {config.host}:{config.port}: {e}") from None


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fetch_unseen(config: BounceMailboxConfig, limit: int) -> list[tuple[bytes, bytes]]:
    imap = _connect(config)
    try:
        typ, data = imap.uid("SEARCH", "UNSEEN")
        uids = data[0].split()[:limit] if typ == "OK" and data and data[0] else []
        out = []
        for uid in uids:
            # BODY.PEEK leaves \\Seen alone: only successfully handled messages get it.
            typ, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((p[1] for p in parts if isinstance(p, tuple)), None) if typ == "OK" else None
            if raw:
                out.append((uid, raw))
        return out
    finally:
        imap.logout()


def _finish(config: BounceMailboxConfig, uids: list[bytes]) -> None:
    if not uids:
        return
    imap = _connect(config)
    try:
        uid_set = b",".join(uids).decode()
        if config.move_to:
            typ, _ = imap.uid("COPY", uid_set, _quote(config.move_to))
            if typ != "OK":
                raise MailboxError(f"bounce_mailbox.move_to: cannot copy to {config.move_to!r}")
            imap.uid("STORE", uid_set, "+FLAGS.SILENT", "(\\Deleted \\Seen)")
            imap.expunge()
        else:
            imap.uid("STORE", uid_set, "+FLAGS.SILENT", "(\\Seen)")
    finally:
        imap.logout()


async def poll_once(config: BounceMailboxConfig, handle: Handler, limit: int = 500) -> int:
    """Fetch unseen messages, handle each, move or flag the handled ones. Returns the count."""
    messages = await asyncio.to_thread(_fetch_unseen, config, limit)
    done: list[bytes] = []
    for uid, raw in messages:
        try:
            await handle(raw)
        except RelayError as e:
            log.warning("bounce_mailbox.handle_failed", uid=uid.decode(), error=str(e))
            continue
        done.append(uid)
    await asyncio.to_thread(_finish, config, done)
    if messages:
        log.info("bounce_mailbox.polled", fetched=len(messages), handled=len(done))
    return len(done)


async def run(config: BounceMailboxConfig, handle: Handler, stopping: asyncio.Event) -> None:
    """Poll every `interval` until `stopping` is set; trouble is logged and retried."""
    while not stopping.is_set():
        try:
            await poll_once(config, handle)
        except MailboxError as e:
            log.warning("bounce_mailbox.unavailable", error=str(e))
        except Exception as e:  # noqa: BLE001 - never let one bad poll end `relay serve`
            log.error("bounce_mailbox.poll_failed", error=f"{type(e).__name__}: {e}")
        try:
            await asyncio.wait_for(stopping.wait(), timeout=config.interval)
        except TimeoutError:
            pass


async def serve(config: Config, db: Database, stopping: asyncio.Event) -> None:
    """The poller as a `relay serve` role: each message goes through `relay.inbound.receive`
    (stored in inbound_reports, then matched and applied), as if it had come over SMTP."""
    keyring = load_keyring(config)
    log.info("bounce_mailbox.polling", host=config.bounce_mailbox.host)

    async def handle(raw: bytes) -> None:
        await inbound.receive(db, keyring, config.bounce, "", (), raw)

    await run(config.bounce_mailbox, handle, stopping)
