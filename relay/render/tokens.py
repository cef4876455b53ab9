"""Tracking tokens: compact, URL-safe, HMAC-SHA256 signed, rotatable.

A token names what a tracking URL is about: the kind (open, click, unsubscribe, bounce),
the delivery, and for clicks the link (`links.id`). Layout before base64url:

    kid (1 byte) | kind (1 byte) | delivery_id (varint) | link_id (varint) | mac (10 bytes)

`kid` is the first byte of SHA-256(secret), so a token says which secret signed it and old
secrets can stay in the keyring after rotation. Verification needs no database: a tampered
or foreign token fails the MAC. Pure: no I/O except `load_keyring`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from relay.config import Config, read_secret
from relay.errors import ConfigError

MAC_BYTES = 10  # 80 bits: forging one token takes ~2^79 tries; each try is an HTTP request
SECRET_FILE_NAME = "tracking.secret"


class TokenKind(IntEnum):
    OPEN = 1
    CLICK = 2
    UNSUBSCRIBE = 3
    BOUNCE = 4  # VERP return path


@dataclass(frozen=True, slots=True)
class TokenData:
    kind: TokenKind
    delivery_id: int
    link_id: int = 0


class InvalidToken(ValueError):
    """Malformed, tampered with, or signed by a secret we do not hold."""


def _kid(secret: bytes) -> int:
    return hashlib.sha256(secret).digest()[0]


class Keyring:
    """The current signing secret and older ones that still verify."""

    def __init__(self, current: bytes, previous: list[bytes] | tuple[bytes, ...] = ()) -> None:
        if len(current) < 16:
            raise ConfigError("tracking.secret", "must be at least 16 characters long")
        self.current = current
        self.current_kid = _kid(current)
        self._by_kid: dict[int, list[bytes]] = {}
        for secret in (current, *previous):
            self._by_kid.setdefault(_kid(secret), []).append(secret)

    def sign(self, data: TokenData) -> str:
        body = bytes((self.current_kid, int(data.kind)))
        body += _varint(data.delivery_id) + _varint(data.link_id)
        mac = hmac.digest(self.current, body, "sha256")[:MAC_BYTES]  # one-shot C path: fast
        return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode("ascii")

    def verify(self, token: str, kind: TokenKind | None = None) -> TokenData:
        """The token's data, or InvalidToken. `kind` also rejects a token of another kind."""
        if not 8 <= len(token) <= 64:
            raise InvalidToken("bad length")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise InvalidToken("not base64url") from None
        if len(raw) < 4 + MAC_BYTES:
            raise InvalidToken("too short")
        body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        for secret in self._by_kid.get(body[0], ()):
            expected = hmac.digest(secret, body, "sha256")[:MAC_BYTES]
            if hmac.compare_digest(mac, expected):
                break
        else:
            raise InvalidToken("bad signature")
        try:
            token_kind = TokenKind(body[1])
            delivery_id, rest = _read_varint(body[2:])
            link_id, rest = _read_varint(rest)
        except (ValueError, IndexError):
            raise InvalidToken("malformed body") from None
        if rest:
            raise InvalidToken("trailing bytes")
        if kind is not None and token_kind != kind:
            raise InvalidToken(f"a {token_kind.name.lower()} token, not {kind.name.lower()}")
        return TokenData(token_kind, delivery_id, link_id)


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return bytes((value,))
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes) -> tuple[int, bytes]:
    value = shift = 0
    for i, byte in enumerate(data):
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, data[i + 1 :]
        shift += 7
        if shift > 63:
            break
    raise ValueError("bad varint")


def load_keyring(config: Config) -> Keyring:
    """The keyring from config; when no secret is configured, one is generated once into
    `{data_dir}/tracking.secret` (0600) and reused on every start and by every process
    sharing that directory. Nodes sharing a database must share the secret (set it)."""
    t = config.tracking
    secret = read_secret(t.secret, t.secret_file, "tracking.secret")
    if not secret:
        secret = _generated_secret(Path(config.data_dir) / SECRET_FILE_NAME)
    return Keyring(secret.encode(), [s.encode() for s in t.previous_secrets])


def _generated_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ConfigError("tracking.secret", f"cannot read {str(path)!r}: {e.strerror}") from None
    secret = secrets.token_urlsafe(32)
    # Written whole to a private temporary file, then published by link(), which fails if the
    # name exists: a process starting beside us sees no file or the complete one, never an
    # empty file that it would reject as too short.
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(draft, path)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text(encoding="ascii").strip()
    except OSError as e:
        raise ConfigError("tracking.secret", f"cannot create {str(path)!r}: {e.strerror}") from None
    finally:
        draft.unlink(missing_ok=True)
    return secret
