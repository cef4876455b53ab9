"""The aiosmtpd session made cheap per connection: cached command tables, fast paths.

aiosmtpd's `SMTP.__init__` introspects the class and the handler (`inspect.getmembers`,
`dir`, `inspect.signature`) on every connection, and most clients open one connection per
message. `FastSMTP` does that once per (session class, handler class) and binds per
connection; it also parses plain `<local@domain>` MAIL/RCPT arguments without the email
header parser, reads DATA in large chunks, and answers a timeout with 421 before closing.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from aiosmtpd.smtp import SMTP, _AuthMechAttr
from aiosmtpd.smtp import __ident__ as IDENT

# Reader buffer: big enough that a DATA chunk arrives without pausing the transport every
# line (aiosmtpd uses 1001, one SMTP line). Command lines keep aiosmtpd's own length check.
READ_LIMIT = 256 * 1024
# A plain MAIL/RCPT argument: <dot-atom@domain> then parameters. Anything else (quoted local
# parts, source routes, comments) goes to aiosmtpd's full parser.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"[ \t]*<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?![ \t]*\()[ \t]*"
)


_Tables = tuple[tuple[tuple[str, str, bool], ...], tuple[str, ...], tuple[str, ...], str | None]
_TABLES: dict[tuple[type, type], _Tables] = {}


def _tables(cls: type[SMTP], handler_cls: type) -> _Tables:
    """What aiosmtpd's __init__ finds by introspection, as attribute names (cached)."""
    found = _TABLES.get((cls, handler_cls))
    if found is None:
        found = _TABLES[(cls, handler_cls)] = _introspect(cls, handler_cls)
    return found


def _introspect(cls: type[SMTP], handler_cls: type) -> _Tables:
    auth = tuple(
        (getattr(func, "__auth_mechanism_name__", name[5:].replace("__", "-")), name, is_self)
        for owner, is_self in ((cls, True), (handler_cls, False))
        for name, func in inspect.getmembers(owner)
        if name.startswith("auth_")
    )
    hooks = tuple(m for m in dir(handler_cls) if m.startswith("handle_"))
    commands = tuple(m for m in dir(cls) if m.startswith("smtp_"))
    ehlo_version = None
    if "handle_EHLO" in hooks:
        # Unbound: one more parameter (self) than aiosmtpd's bound count of 5 or 4.
        hook = handler_cls.handle_EHLO  # type: ignore[attr-defined]
        params = len(inspect.signature(hook).parameters) - 1
        ehlo_version = {5: "new", 4: "old"}.get(params)
        if ehlo_version is None:
            raise RuntimeError("Unsupported EHLO Hook")
    return auth, hooks, commands, ehlo_version


class _Bound(Mapping[str, Any]):
    """name → bound method, bound when asked (a session uses 6 of ~20 commands)."""

    __slots__ = ("_obj", "_prefix", "_names")

    def __init__(self, obj: object, prefix: str, attrs: tuple[str, ...]) -> None:
        self._obj, self._prefix = obj, prefix
        self._names = frozenset(a[len(prefix) :] for a in attrs)

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        return getattr(self._obj, self._prefix + name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self._obj, self._prefix + name) if name in self._names else default

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names))

    def __len__(self) -> int:
        return len(self._names)


class FastSMTP(SMTP):
    """`SMTP` with per-class introspection and a 421 on timeout (see the module docstring).

    Supports the constructor options relay uses; `tests/ingress/test_session.py` checks that
    it sets exactly the attributes the stock constructor sets.
    """

    timeout_reply: ClassVar[str] = "421 4.4.2 Timeout, closing the connection"

    def __init__(
        self,
        handler: Any,
        *,
        hostname: str,
        data_size_limit: int | None,
        enable_SMTPUTF8: bool,
        decode_data: bool,
        tls_context: Any,
        timeout: float,
        auth_require_tls: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.__ident__ = IDENT
        self.loop = loop
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(limit=READ_LIMIT, loop=loop),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.event_handler = handler
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        # Per session: aiosmtpd's class-level dict is shared, and EHLO adds to it.
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)
        self.hostname = hostname
        self.tls_context = tls_context
        self.require_starttls = False
        self._timeout_duration = timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = auth_require_tls
        self._proxy_timeout = None
        self._auth_callback = None
        self._authenticator = None
        self._auth_required = False
        auth, hooks, commands, self._ehlo_hook_ver = _tables(type(self), type(handler))
        self._auth_methods = {
            mech: _AuthMechAttr(getattr(self if is_self else handler, name), is_self)
            for mech, name, is_self in auth
        }
        self._handle_hooks = _Bound(handler, "handle_", hooks)  # type: ignore[assignment]
        self._smtp_methods = _Bound(self, "smtp_", commands)  # type: ignore[assignment]
        self._enforce_call_limit = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if arg and (m := _PLAIN_PATH.match(arg)):
            return m.group(1), arg[m.end() :]
        return super()._getaddr(arg)

    def _timeout_cb(self) -> None:
        # aiosmtpd just closes; RFC 5321 4.5.3.2 wants a 421 so the client knows why.
        transport = self.transport
        if transport is None:  # already gone; a late timer has nothing to close
            return
        if not transport.is_closing():
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(self.timeout_reply.encode() + b"\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _pause_timeout(self) -> None:
        """No deadline while the client waits for us (e.g. the commit after DATA)."""
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()

    async def _read_data(self, limit: int, deadline_s: float) -> tuple[bytes, bool]:
        """The unstuffed message and whether it exceeded `limit` (then it is dropped).

        Returns once the terminating dot has been read; the client must answer within
        `deadline_s` between chunks.
        """
        reader = self._reader
        buf = bytearray()
        size = 0
        too_big = False
        self._reset_timeout(deadline_s)
        while True:
            at_dot = True
            try:
                chunk = await reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as e:
                chunk = await reader.read(e.consumed)
                at_dot = False
            except asyncio.IncompleteReadError:
                raise ConnectionResetError("connection closed during DATA") from None
            self._reset_timeout(deadline_s)
            buf += chunk
            if at_dot and ((size == 0 and len(buf) == 3) or buf[-5:-3] == b"\r\n"):
                size += len(buf) - 3
                del buf[-3:]
                break
            if size + len(buf) > limit:
                too_big = True
            if too_big and len(buf) > 8:
                size += len(buf) - 4
                del buf[:-4]  # keep only what the terminator check needs
        self._pause_timeout()
        if too_big or size > limit:
            return b"", True
        data = bytes(buf)
        # Dot-unstuffing (RFC 5321 4.5.2) over the whole buffer at once.
        if data.startswith(b"."):
            data = data[1:]
        return data.replace(b"\r\n.", b"\r\n"), False


def has_long_line(data: bytes, limit: int) -> bool:
    """Whether a line (CRLF not counted) is longer than `limit` characters.

    A line longer than `limit` covers a whole aligned window of (limit + 1) // 2 bytes, so
    only windows without a line feed are looked at closely: ~2n/limit `find` calls instead
    of splitting the message into lines.
    """
    step = max((limit + 1) // 2, 1)
    end = len(data)
    start = 0
    while start + step <= end:
        if data.find(b"\n", start, start + step) >= 0:
            start += step
            continue
        first = data.rfind(b"\n", 0, start) + 1
        last = data.find(b"\n", start + step)
        last = end if last < 0 else last
        length = last - first - (1 if last > first and data[last - 1] == 13 else 0)
        if length > limit:
            return True
        start = last - last % step + step if last < end else end
    return False
