"""One mail transaction (MAIL, RCPT…, DATA, the message) on a connected aiosmtplib session,
pipelined (RFC 2920) when the server advertises PIPELINING, one command at a time otherwise.

Input: a connected, greeted client; sender, recipients, message bytes, a per-reply deadline.
Output: a `Transaction` with the server's reply to MAIL, to each RCPT (in order, so each
recipient is judged on its own), to DATA and to the end of the message. Replies are read by
a small reader swapped onto the connection's transport for the transaction (aiosmtplib's
protocol reads exactly one reply per command written); the client gets its protocol back
afterwards. A lost connection or a missed deadline raises aiosmtplib's exceptions, and the
session is then in an unknown state: the caller must drop it.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass
from typing import cast

import aiosmtplib

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>]")
_MAX_REPLY = 64 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400


@dataclass(frozen=True, slots=True)
class Transaction:
    recipients: int  # how many RCPT TO the transaction had
    mail: Reply
    rcpts: tuple[Reply, ...]  # one per recipient, in order; empty when MAIL was refused
    data: Reply | None  # the reply to DATA (354 expected); None when not sent
    final: Reply | None  # the reply after the message; None when the message was not sent
    pipelined: bool

    @property
    def delivered(self) -> bool:
        return self.final is not None and 200 <= self.final.code < 300

    def accepted(self) -> list[int]:
        """Indexes of the recipients the server took (meaningful once `delivered`)."""
        return [i for i, r in enumerate(self.rcpts) if 200 <= r.code < 300]


class _Reader(asyncio.Protocol):
    """Parses every complete reply that arrives, however the server batches them."""

    def __init__(self, previous: asyncio.BaseProtocol) -> None:
        self.previous = previous
        self.buffer = bytearray()
        self.replies: deque[Reply] = deque()
        self.lines: list[str] = []
        self.error: Exception | None = None
        self.last: Reply | None = None
        self.wakeup = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        while (end := self.buffer.find(b"\n")) >= 0:
            line = bytes(self.buffer[: end + 1])
            del self.buffer[: end + 1]
            try:
                code = int(line[:3])
            except ValueError:
                self._fail(aiosmtplib.SMTPException("malformed reply line from the server"))
                return
            self.lines.append(line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape"))
            if line[3:4] != b"-":
                self.replies.append(Reply(code, "\n".join(self.lines)))
                self.lines = []
        if len(self.buffer) > _MAX_REPLY:
            self._fail(aiosmtplib.SMTPException("reply line too long"))
        self.wakeup.set()

    def _fail(self, error: Exception) -> None:
        self.error = self.error or error
        self.wakeup.set()
        self.writable.set()

    def eof_received(self) -> bool | None:
        self._fail(aiosmtplib.SMTPServerDisconnected("unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("connection lost"))
        self.previous.connection_lost(exc)  # the client learns it is disconnected

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def next(self, timeout_s: float) -> Reply:
        try:
            async with asyncio.timeout(timeout_s):
                while not self.replies:
                    if self.error is not None:
                        raise self.error
                    self.wakeup.clear()
                    await self.wakeup.wait()
        except TimeoutError:
            raise aiosmtplib.SMTPReadTimeoutError("timed out waiting for a reply") from None
        self.last = self.replies.popleft()
        return self.last

    async def drained(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self.writable.wait()
        except TimeoutError:
            raise aiosmtplib.SMTPTimeoutError("timed out sending") from None
        if self.error is not None:
            raise self.error


def message_bytes(data: bytes) -> bytes:
    """CRLF line endings, dot-stuffed, ending in the '.' line (RFC 5321 4.5.2)."""
    data = _LINE_ENDINGS.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data) + b".\r\n"


def _path(address: str) -> str:
    if _UNSAFE.search(address):
        raise ValueError(f"address {address!r} cannot be sent in an SMTP command")
    return f"<{address}>"


async def transact(
    client: aiosmtplib.SMTP,
    mail_from: str,
    recipients: list[str],
    data: bytes,
    *,
    timeout_s: float,
    mail_options: list[str] | None = None,
) -> Transaction:
    """Run one transaction; pipelined when the server offers PIPELINING."""
    if client.is_ehlo_or_helo_needed:
        await client.ehlo(timeout=timeout_s)
    # uvloop's transports are not asyncio.WriteTransport subclasses: check, then cast.
    if client.transport is None or client.transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("not connected")
    transport = cast(asyncio.WriteTransport, client.transport)
    options = list(mail_options or [])
    encoding = "utf-8" if any(o.upper() == "SMTPUTF8" for o in options) else "ascii"
    body = message_bytes(data)
    if client.supports_extension("size"):
        options.insert(0, f"SIZE={len(body) - 3}")  # the octets before the final '.'
    mail = f"MAIL FROM:{_path(mail_from)}{''.join(' ' + o for o in options)}\r\n"
    rcpts = [f"RCPT TO:{_path(r)}\r\n" for r in recipients]
    commands = [c.encode(encoding) for c in (mail, *rcpts)] + [b"DATA\r\n"]
    pipelined = client.supports_extension("pipelining")
    previous = transport.get_protocol()
    reader = _Reader(previous)
    transport.set_protocol(reader)
    try:
        if pipelined:
            return await _pipelined(transport, reader, commands, body, timeout_s)
        return await _lockstep(transport, reader, commands, body, timeout_s)
    except aiosmtplib.SMTPServerDisconnected as e:
        if reader.last is not None and reader.last.code == 421:  # it said why it hung up
            raise aiosmtplib.SMTPResponseException(421, reader.last.text) from e
        raise
    finally:
        if not transport.is_closing():
            transport.set_protocol(previous)


async def _pipelined(
    transport: asyncio.WriteTransport,
    reader: _Reader,
    commands: list[bytes],
    body: bytes,
    timeout_s: float,
) -> Transaction:
    # RFC 2920: MAIL, every RCPT and DATA in one group; the replies come back in order.
    transport.write(b"".join(commands))
    n = len(commands) - 2
    mail = await reader.next(timeout_s)
    rcpts = tuple([await reader.next(timeout_s) for _ in range(n)])
    data = await reader.next(timeout_s)
    if not mail.ok:  # the RCPT replies say only "need MAIL"; a 354 still needs its '.'
        await _send_body(transport, reader, (), data, body, timeout_s)
        return Transaction(n, mail, (), data, None, True)
    final = await _send_body(transport, reader, rcpts, data, body, timeout_s)
    return Transaction(n, mail, rcpts, data, final, True)


async def _lockstep(
    transport: asyncio.WriteTransport,
    reader: _Reader,
    commands: list[bytes],
    body: bytes,
    timeout_s: float,
) -> Transaction:
    n = len(commands) - 2
    transport.write(commands[0])
    mail = await reader.next(timeout_s)
    if not mail.ok:
        return Transaction(n, mail, (), None, None, False)
    rcpts: list[Reply] = []
    for command in commands[1:-1]:
        transport.write(command)
        rcpts.append(await reader.next(timeout_s))
    if not any(200 <= r.code < 300 for r in rcpts):
        return Transaction(n, mail, tuple(rcpts), None, None, False)
    transport.write(commands[-1])
    data = await reader.next(timeout_s)
    final = await _send_body(transport, reader, rcpts, data, body, timeout_s)
    return Transaction(n, mail, tuple(rcpts), data, final, False)


async def _send_body(
    transport: asyncio.WriteTransport,
    reader: _Reader,
    rcpts: tuple[Reply, ...] | list[Reply],
    data: Reply,
    body: bytes,
    timeout_s: float,
) -> Reply | None:
    if data.code != 354:
        return None
    if not any(200 <= r.code < 300 for r in rcpts):
        # RFC 2920 3.1: DATA was accepted though no recipient (or no MAIL) was; end it with
        # an empty message (servers refuse it: no valid recipients) and send nothing.
        transport.write(b".\r\n")
        await reader.next(timeout_s)
        return None
    transport.write(body)
    await reader.drained(timeout_s)
    return await reader.next(timeout_s)
