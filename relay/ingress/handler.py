"""One SMTP session: aiosmtpd subclass with our AUTH, limits, fast DATA and hooks.

Input: a client connection. Output: SMTP replies; accepted messages handed to
`relay.intake.Intake.submit` (authenticated or trusted clients) or `relay.inbound.receive`
(unauthenticated mail to the bounce domain). 250 only after the commit returned.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
from base64 import b64decode
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import AuthResult, Envelope, Session

from relay import inbound, log, metrics
from relay.addresses import InvalidAddress, normalize
from relay.config import BounceConfig, SmtpConfig
from relay.errors import StoreUnavailable
from relay.ingress import replies
from relay.ingress._session import FastSMTP, has_long_line
from relay.ingress.auth import Authenticator, AuthThrottle
from relay.intake import Intake, Rejected, check_mail_from, split_header
from relay.render.tokens import Keyring
from relay.store.db import Database
from relay.store.tenants import Credential, Tenant, get_tenant_by_id

logger = log.get("relay.ingress")
_SIZE_PARAM = re.compile(r"\bSIZE=(\d+)", re.IGNORECASE)


@dataclass(slots=True)
class Shared:
    """State shared by every session of one ingress: config, store, counters."""

    config: SmtpConfig
    db: Database
    intake: Intake
    authenticator: Authenticator
    throttle: AuthThrottle
    bounce_domain: str
    trusted_tenant: Tenant | None
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    keyring: Keyring
    bounce: BounceConfig
    connections: dict[str, int] = field(default_factory=dict)
    total: int = 0
    stopping: bool = False
    in_data: int = 0
    sessions: set[SubmissionSMTP] = field(default_factory=set)
    no_data: asyncio.Event = field(default_factory=asyncio.Event)  # set when in_data == 0
    trusted_ips: dict[str, bool] = field(default_factory=dict)  # peer IP → in `trusted`


@dataclass(slots=True)
class Identity:
    tenant: Tenant
    credential: Credential | None


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class Handler:
    """aiosmtpd hooks: who may send where, and what happens to the data."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def handle_EHLO(
        self,
        server: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd reads commands in order, so pipelined clients are served correctly.
        lines = [*responses[:-1], "250-PIPELINING", responses[-1]]
        # aiosmtpd writes (and drains) each element on its own: joined, the multi-line reply
        # leaves in one send instead of eight (the same bytes on the wire).
        return ["\r\n".join(lines)]

    async def handle_MAIL(
        self,
        server: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if address == "<>" and server.identity is None:
            # The null reverse-path of DSNs (RFC 5321 4.5.5), as aiosmtpd keeps it: remote
            # MTAs bounce with it, and RCPT then only admits the bounce domain.
            envelope.mail_from = address
            return "250 2.1.0 Ok"
        if address:
            try:
                address = normalize(address).address
            except InvalidAddress as e:
                return replies.BAD_SENDER.format(reason=e)
        identity = server.identity
        if identity is not None:
            try:
                check_mail_from(identity.tenant, address)
            except Rejected as e:
                return e.reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        try:
            addr = normalize(address)
        except InvalidAddress as e:
            return replies.BAD_ADDRESS.format(reason=e)
        if len(envelope.rcpt_tos) >= self.shared.config.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        if server.identity is None:
            # Never an open relay: strangers may only write to the bounce domain.
            if not self.shared.bounce_domain or addr.domain != self.shared.bounce_domain:
                return replies.AUTH_REQUIRED
        envelope.rcpt_tos.append(addr.address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        identity = server.identity
        try:
            if identity is None:
                await inbound.receive(
                    self.shared.db,
                    self.shared.keyring,
                    self.shared.bounce,
                    envelope.mail_from or "",
                    list(envelope.rcpt_tos),
                    raw,
                )
                return replies.ACCEPTED.format(id="inbound")
            accepted = await metrics.timed_intake(
                self.shared.intake.submit(
                    identity.tenant,
                    identity.credential,
                    envelope.mail_from or "",
                    list(envelope.rcpt_tos),
                    raw,
                    smtputf8=bool(envelope.smtp_utf8),
                )
            )
        except Rejected as e:
            return e.reply
        except StoreUnavailable:
            return replies.STORE_DOWN
        except Exception as e:  # noqa: BLE001 - a driver error from inbound: our trouble
            if isinstance(e, asyncio.CancelledError):
                raise
            ref = secrets.token_hex(4)
            logger.error("ingress.data_failed", ref=ref, error=type(e).__name__)
            return replies.STORE_DOWN
        server.accepted.append(accepted.message_id)  # for the session's log line
        return replies.ACCEPTED.format(id=accepted.message_id)

    async def handle_exception(self, error: Exception) -> str:
        ref = secrets.token_hex(4)
        logger.error("ingress.session_error", ref=ref, error=type(error).__name__)
        return replies.ERROR.format(ref=ref)


class SubmissionSMTP(FastSMTP):
    """aiosmtpd's session with async AUTH, our reply texts and a chunked DATA reader."""

    timeout_reply = replies.TIMEOUT

    def __init__(self, shared: Shared, **kwargs: Any) -> None:
        super().__init__(Handler(shared), **kwargs)
        self.shared = shared
        self.identity: Identity | None = None
        self.peer_ip = ""
        self._counted = False
        self.accepted: list[int] = []  # message ids, logged once when the session ends
        self.in_data = False  # between 354 and the reply: a drain waits for it

    # -- connection limits ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if not first:
            # STARTTLS re-wraps the same connection; RFC 3207 4.2: forget any AUTH.
            if self.identity is not None and self.identity.credential is not None:
                self.identity = None
            return
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer_ip = str(peer[0])
        shared = self.shared
        refusal = None
        if shared.stopping:
            refusal = replies.SHUTTING_DOWN
        elif shared.total >= shared.config.max_connections:
            refusal = replies.TOO_MANY_CONNECTIONS
        elif shared.connections.get(self.peer_ip, 0) >= shared.config.max_connections_per_ip:
            refusal = replies.TOO_MANY_FROM_IP
        if refusal is not None:
            if self._handler_coroutine is not None:
                self._handler_coroutine.cancel()
            # uvloop's transports are not asyncio.WriteTransport subclasses; both can write.
            transport.write(refusal.encode() + b"\r\n")  # type: ignore[attr-defined]
            transport.close()
            return
        self._counted = True
        metrics.session_opened()
        shared.sessions.add(self)
        shared.total += 1
        shared.connections[self.peer_ip] = shared.connections.get(self.peer_ip, 0) + 1
        if shared.trusted_tenant and self._trusted():
            self.identity = Identity(shared.trusted_tenant, None)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            metrics.session_closed()
            log.smtp_session(logger, self.peer_ip, self.identity, self.accepted, error)
            shared = self.shared
            shared.sessions.discard(self)
            shared.total -= 1
            left = shared.connections.get(self.peer_ip, 1) - 1
            if left:
                shared.connections[self.peer_ip] = left
            else:
                shared.connections.pop(self.peer_ip, None)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        # aiosmtpd cancels the session on EOF; close now. Under uvloop a client that connects
        # and leaves at once would otherwise hold its connection slot until idle_timeout.
        super().eof_received()
        return False

    def _trusted(self) -> bool:
        # Remembered per IP: apps connect once per message, from a handful of addresses.
        known = self.shared.trusted_ips.get(self.peer_ip)
        if known is None:
            try:
                ip = ipaddress.ip_address(self.peer_ip)
                known = any(ip in net for net in self.shared.trusted)
            except ValueError:
                known = False
            if len(self.shared.trusted_ips) >= 4096:
                self.shared.trusted_ips.clear()
            self.shared.trusted_ips[self.peer_ip] = known
        return known

    # -- AUTH ----------------------------------------------------------------------------
    async def smtp_AUTH(self, arg: str) -> None:
        if self.shared.throttle.blocked(self.peer_ip):
            await self.push(replies.AUTH_BLOCKED)
            return
        needs_tls = self.shared.config.auth_require_tls and not _is_loopback(self.peer_ip)
        if needs_tls and self._tls_protocol is None:
            await self.push(replies.AUTH_NEEDS_TLS)
            return
        self._pause_timeout()  # no deadline while we check the password
        try:
            await super().smtp_AUTH(arg)
        finally:
            self._reset_timeout()

    async def challenge_auth(self, *args: Any, **kwargs: Any) -> Any:
        # The client answers a challenge within the command deadline, not the idle one.
        self._reset_timeout(self.shared.config.command_timeout)
        try:
            return await super().challenge_auth(*args, **kwargs)
        finally:
            self._pause_timeout()

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False)
        else:
            try:
                blob = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Cannot split the AUTH PLAIN value")
            return AuthResult(success=False, handled=True)
        return await self._login(parts[1], parts[2])

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False)
        return await self._login(login, password)

    async def _login(self, login: bytes, password: bytes) -> AuthResult:
        username = login.decode("utf-8", "replace")
        try:
            credential = await self.shared.authenticator.check(
                username, password.decode("utf-8", "replace")
            )
            tenant = (
                await get_tenant_by_id(self.shared.db, credential.tenant_id)
                if (credential is not None and not credential.disabled)
                else None
            )
        except Exception as e:  # noqa: BLE001 - database trouble: temporary
            if isinstance(e, asyncio.CancelledError):
                raise
            return AuthResult(success=False, handled=False, message=replies.STORE_DOWN)
        if credential is None or tenant is None:
            delay = self.shared.throttle.fail(self.peer_ip)
            logger.info("ingress.auth_failed", ip=self.peer_ip, username=username)
            if delay:
                await asyncio.sleep(delay)  # slow down guessing; the session is ours alone
            message = replies.AUTH_DISABLED if credential is not None else replies.AUTH_INVALID
            return AuthResult(success=False, handled=False, message=message)
        self.shared.throttle.succeed(self.peer_ip)
        self.identity = Identity(tenant, credential)
        return AuthResult(success=True, auth_data=username, message=replies.AUTH_OK)

    # -- MAIL: our 552 text for an announced SIZE --------------------------------------
    async def smtp_MAIL(self, arg: str | None) -> None:
        if self.shared.stopping:  # draining: no new transaction (one in DATA just finished)
            await self.push(replies.SHUTTING_DOWN)
            if self.transport is not None:
                self.transport.close()
            return
        limit = self.shared.config.max_message_size
        if arg and (m := _SIZE_PARAM.search(arg)) and int(m.group(1)) > limit:
            await self.push(replies.TOO_BIG.format(limit=limit))
            return
        await super().smtp_MAIL(arg)

    # -- DATA: read in large chunks instead of line by line ----------------------------
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Need RCPT command first")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.shared.in_data += 1
        self.in_data = True
        self.shared.no_data.clear()
        try:
            limit = self.shared.config.max_message_size
            body, too_big = await self._read_data(limit, self.shared.config.command_timeout)
            problem = replies.TOO_BIG.format(limit=limit) if too_big else self._check_content(body)
            if problem is not None:
                self._set_post_data_state()  # type: ignore[no-untyped-call]
                await self.push(problem)
                return
            self.envelope.content = body
            self.envelope.original_content = body
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(status)
        finally:
            self._reset_timeout()  # back to the idle deadline
            self.shared.in_data -= 1
            self.in_data = False
            if not self.shared.in_data:
                self.shared.no_data.set()

    def _check_content(self, body: bytes) -> str | None:
        config = self.shared.config
        head, _ = split_header(body)
        if len(head) > config.max_header_size:
            return replies.HEADER_TOO_BIG.format(limit=config.max_header_size)
        if has_long_line(body, config.max_line_length):
            return replies.LINE_TOO_LONG.format(limit=config.max_line_length)
        return None
