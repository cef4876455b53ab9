"""Bulk writes to the suppression list, for `relay suppressions import`.

Input: batches of `Entry` (scope, normalized address, reason, source, times). Output: each
entry added, updated (an existing row of the scope that differed is replaced, as an operator's
explicit add would) or unchanged. One batch is a handful of statements in the caller's
transaction; the change counter moves once per batch, so running caches refresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store import suppressions as suppression_list
from relay.store.db import utcnow
from relay.store.tables import recipients, suppressions


@dataclass(frozen=True, slots=True)
class Entry:
    tenant_id: int | None  # None = global
    email: str  # the normalized key
    reason: str
    source: str
    expires_at: datetime | None
    created_at: datetime | None = None  # kept from an export; None = now


@dataclass(slots=True)
class BatchResult:
    added: list[Entry] = field(default_factory=list)
    updated: list[Entry] = field(default_factory=list)
    unchanged: list[Entry] = field(default_factory=list)


async def write_batch(conn: AsyncConnection, entries: list[Entry]) -> BatchResult:
    """Write one batch (entries unique by scope and email) in the caller's transaction."""
    result = BatchResult()
    if not entries:
        return result
    c = suppressions.c
    stored = {
        (r.scope, r.email): (r.reason, r.source, r.expires_at)
        for r in await conn.execute(
            select(c.scope, c.email, c.reason, c.source, c.expires_at).where(
                c.email.in_(sorted({e.email for e in entries})),
                c.scope.in_(sorted({suppression_list.scope_of(e.tenant_id) for e in entries})),
            )
        )
    }
    for e in entries:
        old = stored.get((suppression_list.scope_of(e.tenant_id), e.email))
        if old is None:
            result.added.append(e)
        elif old == (e.reason, e.source[:255], e.expires_at):
            result.unchanged.append(e)
        else:
            result.updated.append(e)
    if result.added:
        try:
            async with conn.begin_nested():
                await conn.execute(suppressions.insert(), [_values(e) for e in result.added])
        except IntegrityError:  # a concurrent writer added one of them: row by row instead
            for e in result.added:
                await suppression_list.add(
                    conn, e.tenant_id, e.email, e.reason, e.source, e.expires_at, replace=True
                )
    if result.updated:
        await conn.execute(
            update(suppressions)
            .where(c.scope == bindparam("b_scope"), c.email == bindparam("b_email"))
            .values(
                reason=bindparam("b_reason"),
                source=bindparam("b_source"),
                created_at=bindparam("b_created_at"),
                expires_at=bindparam("b_expires_at"),
            ),
            [
                {f"b_{k}": v for k, v in _values(e).items() if k != "tenant_id"}
                for e in result.updated
            ],
        )
    changed = [e for e in result.added + result.updated if e.tenant_id is not None]
    if changed:  # the tenant's recipients.status follows, as for any suppression
        await conn.execute(
            update(recipients)
            .where(
                recipients.c.tenant_id == bindparam("b_tenant"),
                recipients.c.email == bindparam("b_email"),
            )
            .values(status=bindparam("b_status")),
            [
                {
                    "b_tenant": e.tenant_id,
                    "b_email": e.email,
                    "b_status": suppression_list.RECIPIENT_STATUS.get(e.reason, "suppressed"),
                }
                for e in changed
            ],
        )
    if result.added or result.updated:
        await suppression_list.bump_counter(conn, suppression_list.COUNTER)
    return result


def _values(e: Entry) -> dict[str, object]:
    return {
        "scope": suppression_list.scope_of(e.tenant_id),
        "tenant_id": e.tenant_id,
        "email": e.email,
        "reason": e.reason,
        "source": e.source[:255],
        "created_at": e.created_at or utcnow(),
        "expires_at": e.expires_at,
    }
