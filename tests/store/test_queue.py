"""Operator queue tools: list, show, retry, cancel and history on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from relay.errors import NotFound
from relay.store import queue
from relay.store.db import Database, utcnow
from relay.store.tables import deliveries, delivery_attempts
from tests import rows


async def _queue(db: Database) -> tuple[int, dict[str, int]]:
    tenant = await rows.tenant(db, name="shop")
    msg = await rows.message(db, tenant)
    later = utcnow() + timedelta(hours=1)
    ids = {
        "queued": await rows.delivery(db, msg, "q@a.example"),
        "deferred": await rows.delivery(
            db,
            msg,
            "d@b.example",
            state="deferred",
            next_attempt_at=later,
            attempts=2,
            last_reply="451 4.7.1 try later",
        ),
        "failed": await rows.delivery(db, msg, "f@a.example", state="failed"),
        "delivered": await rows.delivery(db, msg, "ok@a.example", state="delivered"),
        "leased": await rows.delivery(
            db, msg, "busy@a.example", state="sending", lease_owner="node-1", lease_expires_at=later
        ),
    }
    return msg, ids


async def test_list_filters(db: Database) -> None:
    _, ids = await _queue(db)
    listed = {r["id"] for r in await queue.list_deliveries(db, queue.QueueFilter())}
    assert listed == {ids["queued"], ids["deferred"], ids["leased"]}  # not the final ones
    by_domain = await queue.list_deliveries(db, queue.QueueFilter(domain="B.example"))
    assert [r["id"] for r in by_domain] == [ids["deferred"]]
    failed = await queue.list_deliveries(db, queue.QueueFilter(state="failed"))
    assert [r["recipient"] for r in failed] == ["f@a.example"]


async def test_show_includes_attempts(db: Database) -> None:
    msg, ids = await _queue(db)
    async with db.write() as conn:
        await conn.execute(
            delivery_attempts.insert().values(
                delivery_id=ids["deferred"],
                started_at=utcnow(),
                duration_ms=12,
                transport="smarthost",
                account="primary",
                remote_host="mx.b.example",
                reply_code=451,
                enhanced_status="4.7.1",
                reply="try later",
                result="deferred",
            )
        )
    shown = await queue.show_message(db, msg)
    assert shown["tenant"] == "shop" and len(shown["deliveries"]) == 5
    deferred = next(d for d in shown["deliveries"] if d["id"] == ids["deferred"])
    assert [a["reply_code"] for a in deferred["attempt_log"]] == [451]
    with pytest.raises(NotFound):
        await queue.show_message(db, msg + 1000)


async def test_retry_makes_due_now_but_leaves_leased_alone(db: Database) -> None:
    msg, ids = await _queue(db)
    assert await queue.retry(db, msg) == 3  # queued, deferred, failed
    async with db.read() as conn:
        states = dict((await conn.execute(select(deliveries.c.id, deliveries.c.state))).all())
        due = (
            await conn.execute(
                select(deliveries.c.next_attempt_at).where(deliveries.c.id == ids["deferred"])
            )
        ).scalar_one()
    assert states[ids["deferred"]] == states[ids["failed"]] == "queued"
    assert states[ids["leased"]] == "sending" and states[ids["delivered"]] == "delivered"
    assert due <= utcnow()


async def test_cancel_keeps_in_flight_and_final(db: Database) -> None:
    msg, ids = await _queue(db)
    cancelled, busy = await queue.cancel_message(db, msg)
    assert (cancelled, busy) == (2, 1)  # queued + deferred; the leased one is in flight
    async with db.read() as conn:
        states = dict((await conn.execute(select(deliveries.c.id, deliveries.c.state))).all())
    assert states[ids["queued"]] == "cancelled" and states[ids["failed"]] == "failed"


async def test_history_by_email_includes_final(db: Database) -> None:
    _, ids = await _queue(db)
    found = await queue.history(db, queue.QueueFilter(email="OK@a.example"))
    assert [(r["id"], r["state"]) for r in found] == [(ids["delivered"], "delivered")]


async def test_retry_no_suppression_resends_suppressed_and_bounced(db: Database) -> None:
    msg, ids = await _queue(db)
    gone = await rows.delivery(db, msg, "gone@a.example", state="bounced", bounce_kind="hard")
    skipped = await rows.delivery(db, msg, "skip@a.example", state="suppressed")
    plain = await queue.retry(db, msg)
    assert plain == 3  # without the option, suppressed and bounced stay as they are
    only = await queue.retry(db, msg, no_suppression=True, recipients=["gone@a.example"])
    assert only == 1
    # the three again, the bounced one (queued by now) and the suppressed one
    assert await queue.retry(db, msg, no_suppression=True) == 5
    async with db.read() as conn:
        found = {
            r.id: (r.state, r.no_suppression, r.bounce_kind, r.final_at)
            for r in await conn.execute(
                select(
                    deliveries.c.id,
                    deliveries.c.state,
                    deliveries.c.no_suppression,
                    deliveries.c.bounce_kind,
                    deliveries.c.final_at,
                )
            )
        }
    assert found[gone] == ("queued", True, None, None)
    assert found[skipped] == ("queued", True, None, None)
    assert found[ids["failed"]][:2] == ("queued", True)
    assert found[ids["delivered"]][:2] == ("delivered", False)  # never sent twice
    assert found[ids["leased"]][:2] == ("sending", False)  # in a worker's hands: left alone
    with pytest.raises(NotFound):
        await queue.retry(db, msg + 1000, no_suppression=True)
