"""The numbers behind `relay status`: queue depth, recent outcomes, suppressions, schema.

Every query is an aggregate over an index (deliveries by state, by state and time); none
reads message bodies.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from relay.model import FINAL_STATES
from relay.store.db import Database, current_revision, head_revision, utcnow
from relay.store.tables import accounts, deliveries, recipient_events, suppressions


async def gather(db: Database) -> dict[str, Any]:
    now = utcnow()
    hour_ago = now - timedelta(hours=1)
    async with db.read() as conn:
        by_state = dict(
            (
                await conn.execute(
                    select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
                )
            ).all()
        )
        open_states = [s for s in by_state if s not in {f.value for f in FINAL_STATES}]
        oldest = (
            await conn.execute(
                select(func.min(deliveries.c.created_at)).where(
                    deliveries.c.state.in_(open_states or ["queued"])
                )
            )
        ).scalar()
        last_hour = dict(
            (
                await conn.execute(
                    select(recipient_events.c.type, func.count())
                    .where(recipient_events.c.occurred_at >= hour_ago)
                    .group_by(recipient_events.c.type)
                )
            ).all()
        )
        suppressed = dict(
            (
                await conn.execute(
                    select(suppressions.c.reason, func.count()).group_by(suppressions.c.reason)
                )
            ).all()
        )
        pool = [
            dict(r._mapping)
            for r in await conn.execute(
                select(
                    accounts.c.name,
                    accounts.c.paused,
                    accounts.c.paused_reason,
                    accounts.c.consecutive_failures,
                ).order_by(accounts.c.name)
            )
        ]
    revision = await current_revision(db.engine)
    sent = sum(last_hour.get(t, 0) for t in ("delivered", "bounced", "failed"))

    def rate(kind: str) -> float | None:
        return round(last_hour.get(kind, 0) / sent, 4) if sent else None

    return {
        "database": {
            "reachable": True,
            "revision": revision,
            "head": head_revision(),
            "current": revision == head_revision(),
        },
        "queue": {
            "by_state": {k: int(v) for k, v in sorted(by_state.items())},
            "in_queue": int(sum(v for k, v in by_state.items() if k in open_states)),
            "oldest_queued_age_s": int((now - oldest).total_seconds()) if oldest else None,
        },
        "last_hour": {k: int(v) for k, v in sorted(last_hour.items())},
        "rates_last_hour": {"bounce": rate("bounced"), "complaint": rate("complained")},
        "suppressions": {k: int(v) for k, v in sorted(suppressed.items())},
        "accounts": pool,
    }
