"""Outbound SMTP sessions kept open and reused, per destination (account or MX host).

Input: where to connect (host, port, TLS mode, credentials) and deadlines. Output: a
connected, authenticated aiosmtplib client, handed out to one sender at a time and taken
back after the message; capped at `messages_per_connection`; a session left idle longer than
the idle timeout is closed (QUIT) by a reaper timer, not left open on the server.
Connection errors propagate to the caller (the failure policy decides what they mean).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiosmtplib


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    tls: str = "none"  # starttls | implicit | none | opportunistic
    username: str = ""
    password: str = field(default="", repr=False)  # never printed


@dataclass(slots=True)
class Session:
    client: aiosmtplib.SMTP
    sent: int = 0
    last_used: float = 0.0
    dirty: bool = False  # a transaction failed: RSET before the next one


class SessionCache:
    """Idle sessions per endpoint; connects when none is free."""

    def __init__(
        self,
        helo_name: str,
        connect_timeout_s: float,
        command_timeout_s: float,
        messages_per_connection: int,
        idle_timeout_s: float,
    ) -> None:
        self.helo_name = helo_name or None
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.cap = messages_per_connection
        self.caps: dict[Endpoint, int] = {}  # per-destination caps (shaping) over `cap`
        self.idle_timeout_s = idle_timeout_s
        self._idle: dict[Endpoint, list[Session]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.TimerHandle | None = None
        self.connects = 0

    async def acquire(self, endpoint: Endpoint) -> Session:
        idle = self._idle.get(endpoint, [])
        now = time.monotonic()
        while idle:
            session = idle.pop()
            if now - session.last_used > self.idle_timeout_s or not session.client.is_connected:
                await _quit(session)
                continue
            if session.dirty:
                try:
                    await session.client.rset(timeout=self.command_timeout_s)
                except aiosmtplib.SMTPException:
                    await _quit(session)
                    continue
                session.dirty = False
            return session
        return await self._connect(endpoint)

    async def _connect(self, endpoint: Endpoint) -> Session:
        client = aiosmtplib.SMTP(
            hostname=endpoint.host,
            port=endpoint.port,
            local_hostname=self.helo_name,
            timeout=self.command_timeout_s,
            use_tls=endpoint.tls == "implicit",
            # None = STARTTLS when offered (opportunistic); True = required; False = never.
            start_tls={"starttls": True, "opportunistic": None}.get(endpoint.tls, False),
            validate_certs=endpoint.tls != "opportunistic",
        )
        self.connects += 1
        async with asyncio.timeout(self.connect_timeout_s + self.command_timeout_s):
            await client.connect(timeout=self.connect_timeout_s)
            try:
                if endpoint.username:
                    await client.login(endpoint.username, endpoint.password)
            except BaseException:
                client.close()
                raise
        return Session(client)

    def give_back(self, endpoint: Endpoint, session: Session, ok: bool) -> None:
        """Return a session after a transaction; it is closed at the cap or when broken."""
        session.sent += 1
        session.last_used = time.monotonic()
        session.dirty = not ok
        if session.sent >= self.caps.get(endpoint, self.cap) or not session.client.is_connected:
            self._close_later(session)
            return
        self._idle.setdefault(endpoint, []).append(session)
        if self._reaper is None:
            loop = asyncio.get_running_loop()
            self._reaper = loop.call_later(self.idle_timeout_s / 2, self._reap)

    def _close_later(self, session: Session) -> None:
        task = asyncio.get_running_loop().create_task(_quit(session))
        self._closing.add(task)  # keep a reference until it is done
        task.add_done_callback(self._closing.discard)

    def _reap(self) -> None:
        """Close sessions idle longer than the timeout; re-arm while any stay idle."""
        self._reaper = None
        cutoff = time.monotonic() - self.idle_timeout_s
        for endpoint, idle in list(self._idle.items()):
            keep = [s for s in idle if s.last_used > cutoff]
            for session in idle:
                if session.last_used <= cutoff:
                    self._close_later(session)
            if keep:
                self._idle[endpoint] = keep
            else:
                del self._idle[endpoint]
        if self._idle:
            loop = asyncio.get_running_loop()
            self._reaper = loop.call_later(self.idle_timeout_s / 2, self._reap)

    def has_idle(self, endpoint: Endpoint) -> bool:
        return bool(self._idle.get(endpoint))

    def discard(self, session: Session) -> None:
        session.client.close()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        sessions = [s for idle in self._idle.values() for s in idle]
        self._idle.clear()
        await asyncio.gather(*(_quit(s) for s in sessions), *self._closing)


async def _quit(session: Session) -> None:
    try:
        async with asyncio.timeout(5):
            await session.client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        session.client.close()
