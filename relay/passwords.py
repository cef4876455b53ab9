"""Generating and checking the secrets relay hands out: SMTP passwords and API keys.

Only an Argon2id hash (salted, memory-hard) is stored. Verification costs tens of
milliseconds of CPU, so callers on the event loop run it in a thread; `VerifyCache`
remembers recent successes so that an app opening a connection per message does not pay
it every time. A leaf: imports nothing from relay.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory profile)


def generate_password() -> str:
    """32 URL-safe characters (192 bits) that never start with '-': pasted after a command-line
    option (swaks --auth-password …), a leading dash would be read as another option."""
    while True:
        password = secrets.token_urlsafe(24)
        if not password.startswith("-"):
            return password


def generate_username() -> str:
    return "relay-" + secrets.token_hex(6)


def generate_api_key() -> tuple[str, str]:
    """A new API key and its public prefix: ('rk_<prefix>_<secret>', '<prefix>')."""
    prefix = secrets.token_hex(6)
    return f"rk_{prefix}_{secrets.token_urlsafe(30)}", prefix


def api_key_prefix(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "rk" or len(parts[1]) != 12:
        return None
    return parts[1]


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(stored_hash: str, secret: str) -> bool:
    try:
        return _hasher.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


class VerifyCache:
    """Remembers (hash, secret) pairs that verified, for `ttl_s` seconds.

    Keys are SHA-256 digests of the pair, so the cache never holds a secret in clear; a
    changed or deleted credential has a new hash and misses the cache.
    """

    def __init__(self, ttl_s: float = 300.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._seen: dict[bytes, float] = {}

    def _key(self, stored_hash: str, secret: str) -> bytes:
        return hashlib.sha256(f"{stored_hash}\0{secret}".encode()).digest()

    def hit(self, stored_hash: str, secret: str) -> bool:
        key = self._key(stored_hash, secret)
        expires = self._seen.get(key)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._seen[key]
            return False
        return True

    def remember(self, stored_hash: str, secret: str) -> None:
        if len(self._seen) >= self.max_entries:
            self._seen.clear()
        self._seen[self._key(stored_hash, secret)] = time.monotonic() + self.ttl_s
