"""SMTP AUTH checks: credentials from `smtp_credentials`, per-IP failure throttling.

Input: username/password from AUTH PLAIN or LOGIN and the client IP. Output: the
credential, or a reason for refusal. The Argon2 check runs in a thread; a `VerifyCache`
spares apps that reconnect for every message. Never logs secrets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.passwords import VerifyCache, verify_secret
from relay.store.db import Database
from relay.store.tenants import Credential, find_credential


@dataclass(slots=True)
class _Failures:
    count: int = 0
    blocked_until: float = 0.0
    last_at: float = 0.0


@dataclass(slots=True)
class AuthThrottle:
    """Counts failures per IP: after `delay_after` each failure is slowed by `delay_s`,
    after `block_after` the IP is refused for `block_s`. `clock` is injectable for tests."""

    delay_after: int
    block_after: int
    block_s: float
    delay_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _by_ip: dict[str, _Failures] = field(default_factory=dict)

    def blocked(self, ip: str) -> bool:
        entry = self._by_ip.get(ip)
        return entry is not None and entry.blocked_until > self.clock()

    def fail(self, ip: str) -> float:
        """Record a failure; returns how long to wait before answering."""
        now = self.clock()
        entry = self._by_ip.setdefault(ip, _Failures())
        if now - entry.last_at > self.block_s:
            entry.count = 0  # old failures are forgiven
        entry.count += 1
        entry.last_at = now
        if entry.count >= self.block_after:
            entry.blocked_until = now + self.block_s
        if len(self._by_ip) > 100_000:
            self._by_ip.clear()  # bound memory under a spray of addresses
        return self.delay_s if entry.count >= self.delay_after else 0.0

    def succeed(self, ip: str) -> None:
        self._by_ip.pop(ip, None)


class Authenticator:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.cache = VerifyCache()

    async def check(self, username: str, password: str) -> Credential | None:
        """The credential when the password matches (disabled ones included: caller decides)."""
        credential = await find_credential(self.db, username)
        if credential is None:
            return None
        if self.cache.hit(credential.password_hash, password):
            return credential
        ok = await asyncio.to_thread(verify_secret, credential.password_hash, password)
        if not ok:
            return None
        self.cache.remember(credential.password_hash, password)
        return credential
