"""Real SMTP peers on loopback for tests: a recording server with scripted replies.

    async with RecordingServer() as mx:          # listens on 127.0.0.1, a free port
        mx.script_rcpt("bad@example.com", "550 5.1.1 No such user")
        ... deliver to ("127.0.0.1", mx.port) ...
        assert mx.messages[0].rcpt_tos == ["a@example.com"]

Replies can be scripted per recipient (RCPT), for DATA (a queue of replies, one per
message), and the server can drop the connection or stall. It counts connections so tests
can prove connection reuse, and records the chunks it read from the network so tests can
see whether commands came pipelined (`RecordingServer(pipelining=True)` advertises
PIPELINING, RFC 2920; aiosmtpd reads pipelined commands but does not advertise it).

`RecordingServer(auth={"user": "password"})` offers AUTH PLAIN/LOGIN without TLS (loopback),
requires it before MAIL (530), accepts those accounts and answers anything else, or an
account named in `refuse_auth(...)`, `535 5.7.8`; every attempt is kept in `logins`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

AUTH_REFUSED = "535 5.7.8 Authentication credentials invalid"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: str
    mail_options: list[str] = field(default_factory=list)


class _Handler:
    def __init__(self, server: RecordingServer) -> None:
        self.server = server

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.server.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.server.auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if self.server.mail_replies:
            return self.server.mail_replies.popleft()
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.server.rcpt_replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.server.data_delay_s:
            await asyncio.sleep(self.server.data_delay_s)
        if self.server.data_replies:
            reply = self.server.data_replies.popleft()
            if reply == "DROP":
                assert server.transport is not None
                server.transport.close()
                return "421 4.4.2 dropped"
            if not reply.startswith("2"):
                return reply
        content = envelope.original_content or envelope.content or b""
        assert isinstance(content, bytes)
        self.server.messages.append(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=content,
                peer=str(session.peer),
                mail_options=list(envelope.mail_options),
            )
        )
        self.server.arrived.set()
        return "250 2.0.0 OK queued"


class _Authenticator:
    def __init__(self, server: RecordingServer) -> None:
        self.server = server

    def __call__(
        self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False, message=AUTH_REFUSED)
        login = data.login.decode("utf-8", "replace")
        ok = login not in self.server.refused_logins and self.server.auth.get(
            login
        ) == data.password.decode("utf-8", "replace")
        self.server.logins.append((login, ok))
        if not ok:
            return AuthResult(success=False, handled=False, message=AUTH_REFUSED)
        return AuthResult(success=True, auth_data=data)


class _CountingSMTP(SMTP):
    def __init__(self, *args: Any, recorder: RecordingServer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorder = recorder

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._recorder.connections += 1
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._recorder.chunks.append(data)
        super().data_received(data)


class _Controller(Controller):
    def __init__(self, recorder: RecordingServer, **kwargs: Any) -> None:
        self._recorder = recorder
        super().__init__(_Handler(recorder), **kwargs)

    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, recorder=self._recorder, **self.SMTP_kwargs)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (aiosmtpd's Controller cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RecordingServer:
    """An aiosmtpd server in its own thread that records every message it accepts."""

    def __init__(
        self,
        hostname: str = "127.0.0.1",
        *,
        pipelining: bool = False,
        ssl_context: ssl.SSLContext | None = None,  # implicit TLS (tls_context: STARTTLS)
        auth: dict[str, str] | None = None,  # username → password: require AUTH
        **smtp_kwargs: Any,
    ) -> None:
        self.pipelining = pipelining
        self.auth = dict(auth or {})
        self.refused_logins: set[str] = set()
        self.logins: list[tuple[str, bool]] = []  # (username, accepted) per AUTH attempt
        self.chunks: list[bytes] = []  # as read from the network, in order
        self.messages: list[Received] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_replies: deque[str] = deque()
        self.mail_replies: deque[str] = deque()
        self.data_delay_s = 0.0
        self.connections = 0
        self.arrived = asyncio.Event()
        smtp_kwargs.setdefault("enable_SMTPUTF8", True)
        if auth is not None:
            smtp_kwargs.update(
                # auth_required=True would warn (no TLS); handle_MAIL enforces it instead.
                authenticator=_Authenticator(self),
                auth_require_tls=False,
            )
        self._controller = _Controller(
            self, hostname=hostname, port=0, ssl_context=ssl_context, server_kwargs=smtp_kwargs
        )

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def script_rcpt(self, address: str, reply: str) -> None:
        self.rcpt_replies[address.lower()] = reply

    def refuse_auth(self, *usernames: str) -> None:
        """From now on, answer these accounts' AUTH with 535 5.7.8 (password or not)."""
        self.refused_logins.update(usernames)

    def script_mail(self, *replies: str) -> None:
        """Replies for the next MAIL commands, in order (instead of 250)."""
        self.mail_replies.extend(replies)

    def script_data(self, *replies: str) -> None:
        """Replies for the next DATA commands, in order ('DROP' closes the connection)."""
        self.data_replies.extend(replies)

    def start(self) -> RecordingServer:
        self._controller.port = free_port()
        self._controller.start()
        self.connections = 0  # the controller's own start-up probe is not a client
        self.chunks.clear()
        return self

    def stop(self) -> None:
        self._controller.stop()

    async def __aenter__(self) -> RecordingServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)
