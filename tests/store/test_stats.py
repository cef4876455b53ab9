"""Stats from maintained counters and their roll-ups agree with the ground truth: the bumps
themselves, and the events stored in recipient_events (on SQLite and MariaDB)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import func, select

from relay.store import events, stats
from relay.store.db import Database
from relay.store.tables import campaigns, recipient_events, stat_rollups
from tests import rows

T0 = datetime(2026, 11, 20, 0, 0, 0)
METRICS = sorted(stats.METRICS)


def _ranges(rng: random.Random) -> list[tuple[datetime | None, datetime | None]]:
    """Open ends, day and hour boundaries, sub-hour ends, ranges inside one hour or day,
    and ranges far outside the data."""
    out: list[tuple[datetime | None, datetime | None]] = [
        (None, None),
        (T0, None),
        (None, T0 + timedelta(days=3)),
        (T0 + timedelta(days=1), T0 + timedelta(days=2)),
        (T0 + timedelta(hours=5), T0 + timedelta(hours=6)),
        (T0 + timedelta(hours=5, minutes=10), T0 + timedelta(hours=5, minutes=20)),
        (T0 + timedelta(hours=23), T0 + timedelta(days=1, hours=1)),
        (T0 - timedelta(days=30), T0 - timedelta(days=29)),
        (T0 + timedelta(days=100), None),
        (datetime(9999, 12, 31, 22, 30), None),
        (None, datetime(9999, 12, 31, 23, 30)),
    ]
    for _ in range(40):
        start = T0 + timedelta(minutes=rng.randrange(-600, 8 * 24 * 60))
        end = start + timedelta(minutes=rng.randrange(1, 5 * 24 * 60))
        out.append((start if rng.random() > 0.1 else None, end if rng.random() > 0.1 else None))
    return out


def _in(hour: datetime, start: datetime | None, end: datetime | None) -> bool:
    """The API's range rule: hours h with hour_of(start) <= h < end."""
    return (start is None or hour >= stats.hour_of(start)) and (end is None or hour < end)


async def test_rollups_answer_like_the_hourly_bumps(db: Database) -> None:
    rng = random.Random(6)
    tenant_ids = [await rows.tenant(db) for _ in range(3)]
    camps: dict[int, list[int | None]] = {}
    async with db.write() as conn:
        for t in tenant_ids:
            camps[t] = [None]
            for i in range(3):
                r = await conn.execute(
                    campaigns.insert().values(
                        tenant_id=t, name=f"c{i}", state="active", settings={}, created_at=T0
                    )
                )
                camps[t].append(int(r.inserted_primary_key[0]))  # type: ignore[index]
    bumps: list[tuple[int, int | None, datetime, str, int]] = []
    for _ in range(12):  # several transactions, each one bump_many
        batch: Counter[stats.CounterKey] = Counter()
        for _ in range(60):
            t = rng.choice(tenant_ids)
            c = rng.choice(camps[t])
            at = T0 + timedelta(seconds=rng.randrange(0, 7 * 24 * 3600), microseconds=17)
            m = rng.choice(METRICS)
            n = rng.randrange(1, 5)
            batch[(t, c, at, m)] += n
            bumps.append((t, c, at, m, n))
        async with db.write() as conn:
            await stats.bump_many(conn, batch)

    def truth(
        tenant: int | None, start: datetime | None, end: datetime | None, camp: int | None = -2
    ) -> dict[str, int]:
        out = dict.fromkeys(stats.METRICS, 0)
        for t, c, at, m, n in bumps:
            if tenant is not None and t != tenant:
                continue
            if camp != -2 and c != camp:
                continue
            if _in(stats.hour_of(at), start, end):
                out[m] += n
        return out

    async with db.read() as conn:
        for start, end in _ranges(rng):
            for tenant in (*tenant_ids, None):
                got = await stats.totals(conn, tenant, start, end)
                assert got == truth(tenant, start, end), (tenant, start, end)
        all_camps = [c for t in tenant_ids for c in camps[t] if c is not None]
        per_campaign = await stats.by_campaign(conn, all_camps)
        for t in tenant_ids:
            for c in camps[t][1:]:
                assert per_campaign[c] == truth(t, None, None, c)
        c = camps[tenant_ids[0]][1]
        assert c is not None
        for bucket, floor in (("hour", stats.hour_of), ("day", stats.day_of)):
            expect: dict[datetime, Counter[str]] = {}
            for _t, bc, at, m, n in bumps:
                if bc == c:
                    expect.setdefault(floor(at), Counter())[m] += n
            series = await stats.timeline(conn, c, bucket)
            assert [start for start, _ in series] == sorted(expect)
            assert all(dict(expect[s]) == counts for s, counts in series)
        # Bounded reads: the all-time roll-up is one row per metric and tenant.
        n_all = (
            await conn.execute(
                select(func.count())
                .select_from(stat_rollups)
                .where(stat_rollups.c.campaign_id == stats.TENANT, stat_rollups.c.span == "all")
            )
        ).scalar_one()
        assert n_all == len({(t, m) for t, _c, _a, m, _n in bumps})


async def test_tracking_stats_match_stored_events(db: Database) -> None:
    """Opens and clicks through record_tracking (machine agents, implied opens, repeats),
    in time order over five days; every range and campaign agrees with recipient_events."""
    rng = random.Random(61)
    tenant_id = await rows.tenant(db)
    camp_ids = []
    async with db.write() as conn:
        for i in range(2):
            r = await conn.execute(
                campaigns.insert().values(
                    tenant_id=tenant_id, name=f"k{i}", state="active", settings={}, created_at=T0
                )
            )
            camp_ids.append(int(r.inserted_primary_key[0]))  # type: ignore[index]
    delivery_ids = []
    for i, camp in enumerate([*camp_ids, None]):
        message_id = await rows.message(db, tenant_id, campaign_id=camp)
        for j in range(8):
            delivery_ids.append(
                await rows.delivery(
                    db,
                    message_id,
                    recipient=f"r{i}-{j}@example.com",
                    state="delivered",
                    final_at=T0 - timedelta(days=1),
                )
            )
    times = sorted(
        T0 + timedelta(seconds=rng.randrange(0, 5 * 24 * 3600), microseconds=rng.randrange(10**6))
        for _ in range(300)
    )
    tracked = [
        events.TrackEvent(
            rng.choice(("opened", "opened", "clicked")),
            rng.choice(delivery_ids),
            at,
            machine=rng.random() < 0.3,
            url="https://shop.example/x",
        )
        for at in times
    ]
    for i in range(0, len(tracked), 37):
        async with db.write() as conn:
            await events.record_tracking(conn, tracked[i : i + 37], machine_click_window_s=5)

    e = recipient_events.c

    async def truth(start: datetime | None, end: datetime | None, camp: int | None = -2) -> dict:  # type: ignore[type-arg]
        query = select(e.delivery_id, e.type, e.occurred_at, e.unique_first, e.machine).where(
            e.tenant_id == tenant_id
        )
        if camp != -2:
            query = query.where(e.campaign_id == camp)
        out = dict.fromkeys(stats.METRICS, 0)
        first_human: dict[tuple[int, str], datetime] = {}
        stored = list(await conn.execute(query.order_by(e.occurred_at, e.id)))
        for d, kind, at, _unique, machine in stored:
            if not machine:
                first_human.setdefault((d, kind), at)
        for d, kind, at, unique, machine in stored:
            if not _in(stats.hour_of(at), start, end):
                continue
            out[kind] += 1
            out[f"{kind}_human"] += not machine
            out[f"{kind}_unique"] += bool(unique)
            out[f"{kind}_unique_human"] += first_human.get((d, kind)) == at and not machine
        return out

    async with db.read() as conn:
        stored = (await conn.execute(select(func.count()).select_from(recipient_events))).scalar()
        assert stored and stored > len(tracked)  # implied opens were added
        for start, end in _ranges(rng):
            assert await stats.totals(conn, tenant_id, start, end) == await truth(start, end)
        per_campaign = await stats.by_campaign(conn, camp_ids)
        for camp in camp_ids:
            assert per_campaign[camp] == await truth(None, None, camp)


async def test_migration_backfills_rollups_from_hourly_counters(db: Database) -> None:
    """Revision 0002 on a database that already has hourly counters: the roll-ups it builds
    answer every range like the counters did."""
    from alembic import command

    from relay.store.db import migrations_config
    from relay.store.tables import stat_counters

    rng = random.Random(2)
    bumps = [
        (
            t,
            c,
            T0 + timedelta(hours=rng.randrange(0, 24 * 6)),
            rng.choice(METRICS),
            rng.randrange(9),
        )
        for t in (11, 12)
        for c in (0, 5, 6)
        for _ in range(40)
    ]
    cfg = migrations_config(db.engine.url.render_as_string(hide_password=False))

    def migrate(conn, target: str, down: bool) -> None:  # type: ignore[no-untyped-def]
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, target)

    async with db.engine.begin() as conn:
        await conn.run_sync(migrate, "0001", True)
    merged: Counter[tuple[int, int, datetime, str]] = Counter()
    for t, c, hour, m, n in bumps:
        merged[(t, c, hour, m)] += n
    async with db.write() as conn:
        await conn.execute(
            stat_counters.insert(),
            [
                {"tenant_id": t, "campaign_id": c, "bucket_start": h, "metric": m, "count": n}
                for (t, c, h, m), n in merged.items()
            ],
        )
    async with db.engine.begin() as conn:
        await conn.run_sync(migrate, "head", False)
    async with db.read() as conn:
        for start, end in _ranges(rng):
            want = dict.fromkeys(stats.METRICS, 0)
            for t, _c, hour, m, n in bumps:
                if t == 11 and _in(hour, start, end):
                    want[m] += n
            assert await stats.totals(conn, 11, start, end) == want
        got = await stats.by_campaign(conn, [5])
        want = dict.fromkeys(stats.METRICS, 0)
        for _t, c, _h, m, n in bumps:
            if c == 5:
                want[m] += n
        assert got[5] == want


async def test_concurrent_writers_neither_deadlock_nor_lose_counts(db: Database) -> None:
    """Six writers at once, each transaction one bump_many over shared hot roll-up rows
    (the tenant's 'all' row) and new hourly rows: every count arrives, no deadlock."""
    import asyncio

    tenant_ids = [await rows.tenant(db) for _ in range(2)]
    rng = random.Random(7)
    plans = [
        [
            Counter(
                {
                    (
                        rng.choice(tenant_ids),
                        rng.choice((None, 1, 2)),
                        T0 + timedelta(hours=rng.randrange(48)),
                        rng.choice(("sent", "delivered", "opened")),
                    ): rng.randrange(1, 4)
                    for _ in range(rng.randrange(1, 12))
                }
            )
            for _ in range(15)
        ]
        for _ in range(6)
    ]

    async def writer(plan: list[Counter[stats.CounterKey]]) -> None:
        for counts in plan:
            async with db.write() as conn:
                await stats.bump_many(conn, counts)

    await asyncio.gather(*(writer(plan) for plan in plans))
    want: Counter[tuple[int, str]] = Counter()
    for plan in plans:
        for counts in plan:
            for (t, _c, _at, m), n in counts.items():
                want[(t, m)] += n
    async with db.read() as conn:
        for t in tenant_ids:
            got = await stats.totals(conn, t)
            assert {m: n for m, n in got.items() if n} == {
                m: n for (tt, m), n in want.items() if tt == t
            }
            assert got == await stats.totals(
                conn, t, T0 - timedelta(days=1), T0 + timedelta(days=3)
            )
