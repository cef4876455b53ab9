"""Leaving `held` (campaign resume, release of a tenant's or login's held mail) keeps each
delivery's schedule: scheduled mail (`X-Relay-Send-At`) is not sent early, a retry keeps its
backoff and stays `deferred`, and only what was already due becomes due now. Both databases."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from relay.store import campaigns, deliveries, queue
from relay.store.db import Database, utcnow
from relay.store.tables import deliveries as deliveries_table
from tests import rows


async def _rows(db: Database, ids: dict[str, int]) -> dict[str, tuple[str, datetime]]:
    async with db.read() as conn:
        found = {
            r.id: (r.state, r.next_attempt_at)
            for r in await conn.execute(
                select(
                    deliveries_table.c.id,
                    deliveries_table.c.state,
                    deliveries_table.c.next_attempt_at,
                ).where(deliveries_table.c.id.in_(ids.values()))
            )
        }
    return {name: found[i] for name, i in ids.items()}


async def _three(db: Database, message_id: int, state: str, **values: int) -> dict[str, int]:
    """A scheduled delivery (due in 2 h), a retry backing off (due in 30 min, tried twice) and
    one already due an hour ago."""
    now = utcnow()
    return {
        "scheduled": await rows.delivery(
            db, message_id, "s@a.example", state=state,
            next_attempt_at=now + timedelta(hours=2), **values,
        ),
        "backoff": await rows.delivery(
            db, message_id, "b@a.example", state=state, attempts=2,
            last_reply="451 4.7.1 try later", next_attempt_at=now + timedelta(minutes=30),
            **values,
        ),
        "overdue": await rows.delivery(
            db, message_id, "o@a.example", state=state,
            next_attempt_at=now - timedelta(hours=1), **values,
        ),
    }  # fmt: skip


def _check_schedule_kept(
    before: dict[str, tuple[str, datetime]],
    after: dict[str, tuple[str, datetime]],
    released_at: datetime,
) -> None:
    assert after["scheduled"] == ("queued", before["scheduled"][1])
    assert after["backoff"] == ("deferred", before["backoff"][1])
    state, due = after["overdue"]
    assert state == "queued" and due >= released_at - timedelta(seconds=1)


async def _leased(db: Database) -> set[str]:
    leased = await deliveries.lease_due(db, "test-worker", 10, utcnow(), 60)
    return {d.recipient for d in leased}


async def test_resume_keeps_schedule_and_backoff(db: Database) -> None:
    tenant = await rows.tenant(db)
    campaign_id = await rows.campaign(db, tenant, name="winter")
    msg = await rows.message(db, tenant, campaign_id=campaign_id)
    ids = await _three(db, msg, "queued")
    async with db.write() as conn:
        await conn.execute(
            deliveries_table.update()
            .where(deliveries_table.c.id == ids["backoff"])
            .values(state="deferred")
        )
    before = await _rows(db, ids)
    async with db.write() as conn:
        campaign = await campaigns.get(conn, tenant, "winter")
        assert await campaigns.pause(conn, campaign) == 3
    assert {s for s, _ in (await _rows(db, ids)).values()} == {"held"}

    released_at = utcnow()
    async with db.write() as conn:
        assert await campaigns.resume(conn, await campaigns.get(conn, tenant, "winter")) == 3
    _check_schedule_kept(before, await _rows(db, ids), released_at)
    assert await _leased(db) == {"o@a.example"}  # the scheduled and the backing-off wait


async def test_resume_leaves_mail_of_a_held_tenant_or_login_held(db: Database) -> None:
    tenant = await rows.tenant(db, hold=True)
    other = await rows.tenant(db)
    login = await rows.credential(db, other, hold=True)
    spring = {owner: await rows.campaign(db, owner, name="spring") for owner in (tenant, other)}
    ids = {}
    for name, owner, values in (
        ("held_tenant", tenant, {}),
        ("held_login", other, {"credential_id": login}),
        ("free", other, {}),
    ):
        msg = await rows.message(db, owner, campaign_id=spring[owner], **values)
        ids[name] = await rows.delivery(db, msg, f"{name}@a.example", state="held")
    for owner in (tenant, other):
        async with db.write() as conn:
            await campaigns.resume(conn, await campaigns.get(conn, owner, "spring"))
    after = {name: state for name, (state, _) in (await _rows(db, ids)).items()}
    assert after == {"held_tenant": "held", "held_login": "held", "free": "queued"}


async def test_release_keeps_schedule_and_backoff(db: Database) -> None:
    tenant = await rows.tenant(db, name="staging", hold=True)
    msg = await rows.message(db, tenant)
    ids = await _three(db, msg, "held")
    before = await _rows(db, ids)
    released_at = utcnow()
    assert await queue.release_held(db, message_id=msg) == 3
    _check_schedule_kept(before, await _rows(db, ids), released_at)
    assert await _leased(db) == {"o@a.example"}


async def test_bulk_release_by_tenant_and_login_keeps_schedule(db: Database) -> None:
    tenant = await rows.tenant(db, name="staging")
    login = await rows.credential(db, tenant, username="app-dev", hold=True)
    by_login = await rows.message(db, tenant, credential_id=login)
    by_tenant = await rows.message(db, tenant)
    later = utcnow() + timedelta(hours=3)
    ids = {
        "login": await rows.delivery(db, by_login, "l@a.example", state="held",
                                     next_attempt_at=later),
        "tenant": await rows.delivery(db, by_tenant, "t@a.example", state="held", attempts=1,
                                      next_attempt_at=later),
    }  # fmt: skip
    assert await queue.release_held(db, credential="app-dev") == 1
    assert await queue.release_held(db, tenant="staging") == 1
    after = await _rows(db, ids)
    assert after == {"login": ("queued", later), "tenant": ("deferred", later)}
    assert await _leased(db) == set()
