"""What every API handler needs: the caller's key, its tenant scope, parsed parameters,
cursors and JSON encoding of times.

Keys: `Authorization: Bearer rk_<prefix>_<secret>`; the prefix finds the row, the Argon2
check runs in a thread and recent successes are cached (relay.passwords.VerifyCache).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from relay import passwords
from relay.addresses import InvalidAddress, normalize
from relay.store import tenants
from relay.web.errors import ApiError, bad_param
from relay.web.state import state_of

MAX_LIMIT = 500
MAX_ID = 2**63 - 1  # BIGINT: larger numbers cannot name a row (and overflow drivers)


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    tenant_id: int | None  # None: admin key

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


async def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise _unauthorized("send an API key: 'Authorization: Bearer <key>'")
    prefix = passwords.api_key_prefix(key)
    if prefix is None:
        raise _unauthorized("the API key is malformed")
    state = state_of(request)
    found = await tenants.find_api_key(state.db, prefix)
    if found is None:
        raise _unauthorized("unknown or revoked API key")
    if not state.verify_cache.hit(found.key_hash, key):
        ok = await asyncio.to_thread(passwords.verify_secret, found.key_hash, key)
        if not ok:
            raise _unauthorized("unknown or revoked API key")
        state.verify_cache.remember(found.key_hash, key)
    return Principal(found.id, found.tenant_id)


def tenant_scope(request: Request, who: Principal) -> int | None:
    """The tenant a request is about: the key's own; an admin key may pick one with
    ?tenant=<id> or see every tenant (None)."""
    if not who.is_admin:
        return who.tenant_id
    raw = request.query_params.get("tenant")
    return None if raw is None else int_param(request, "tenant", minimum=1)


async def existing_tenant(request: Request, who: Principal, tenant_id: int | None) -> None:
    """Before writing for the tenant an admin key named: it exists, or 404 (else the row's
    foreign key fails, or a swallowed conflict leaves nothing to show)."""
    if who.is_admin and tenant_id is not None:
        await tenants.get_tenant_by_id(state_of(request).db, tenant_id)  # NotFound: 404


def int_param(
    request: Request,
    name: str,
    default: int | None = None,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise bad_param(name, "is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_param(name, f"expected an integer, got {raw!r}") from None
    maximum = MAX_ID if maximum is None else maximum
    if value < minimum or value > maximum:
        raise bad_param(name, f"must be between {minimum} and {maximum}, got {value}")
    return value


def parse_time(raw: str, name: str) -> datetime:
    """An ISO-8601 time as naive UTC; a time without offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # overflow: 9999-12-31T23:59-01:00 is past year 9999
        raise bad_param(
            name, f"expected an ISO-8601 time such as 2026-11-23T10:00:00Z, got {raw!r}"
        ) from None
    return value


def time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    return None if raw is None or raw == "" else parse_time(raw, name)


def time_range(request: Request) -> tuple[datetime | None, datetime | None]:
    start, end = time_param(request, "from"), time_param(request, "to")
    if start and end and start >= end:
        raise bad_param("from", "must be before 'to'")
    return start, end


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def limit_param(request: Request) -> int:
    return int_param(request, "limit", default=100, minimum=1, maximum=MAX_LIMIT)


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def cursor_param(request: Request) -> int:
    """The id after which the next page starts (0 = first page)."""
    raw = request.query_params.get("cursor")
    if not raw:
        return 0
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        kind, _, value = text.partition(":")
        number = int(value)
        if kind != "id" or not 0 <= number <= MAX_ID:
            raise ValueError(kind)
        return number
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_param("cursor", "not a cursor this API gave out") from None


def page(items: list[dict[str, Any]], ids: list[int], limit: int) -> dict[str, Any]:
    """A page of a list fetched with limit + 1 rows: the extra row says there is more."""
    more = len(items) > limit
    return {
        "items": items[:limit],
        "next_cursor": encode_cursor(ids[limit - 1]) if more else None,
    }


def email_value(raw: Any, name: str = "email") -> str:
    """The normalized key of an address parameter, or a 400 naming the parameter."""
    if not isinstance(raw, str) or not raw:
        raise bad_param(name, "expected an email address")
    try:
        return normalize(raw).key
    except InvalidAddress as e:
        raise bad_param(name, str(e)) from None
