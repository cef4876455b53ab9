"""Maintained stats counters, never full scans: hourly per campaign, rolled up for reads.

Writers (intake, outcome, the tracking event flush) call `bump`/`bump_many` inside their own
transaction; each bump adds to `stat_counters` (tenant × campaign × hour × metric) and to the
`stat_rollups` rows above it (campaign by day and all time; tenant by hour, day and all time).
Readers pick the coarsest rows that answer: an all-time overview or campaign reads one row per
metric, a time range reads whole days plus at most 46 edge hours, so stats cost the same
with a thousand deliveries or a hundred million, and with one campaign or ten thousand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, union_all
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.tables import stat_counters, stat_rollups

# The closed set of metrics; `bump` refuses others so a typo cannot invent a counter.
METRICS = frozenset(
    {
        "sent",  # accepted for delivery (one per delivery row)
        "delivered",
        "bounced_hard",
        "bounced_soft",
        "failed",
        "deferred",
        "suppressed",
        "complained",
        "unsubscribed",
        "opened",  # every open, human or machine
        "opened_human",
        "opened_unique",  # first open of a delivery
        "opened_unique_human",
        "clicked",
        "clicked_human",
        "clicked_unique",
        "clicked_unique_human",
    }
)

CounterKey = tuple[int, int | None, datetime, str]  # tenant, campaign, any time, metric

TENANT = -1  # stat_rollups.campaign_id of a tenant-wide row
ALL_TIME = datetime(1970, 1, 1)  # stat_rollups.bucket_start of an 'all' row
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def day_of(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


async def bump(
    conn: AsyncConnection,
    tenant_id: int,
    campaign_id: int | None,
    metric: str,
    at: datetime,
    n: int = 1,
) -> None:
    """Add n to one counter, in the caller's transaction."""
    await bump_many(conn, {(tenant_id, campaign_id, at, metric): n})


def rollup_keys(
    tenant_id: int, campaign_id: int, hour: datetime, metric: str
) -> tuple[tuple[int, int, str, datetime, str], ...]:
    """The stat_rollups rows (tenant, campaign, span, bucket_start, metric) an hourly
    counter adds to."""
    day = day_of(hour)
    return (
        (tenant_id, campaign_id, "day", day, metric),
        (tenant_id, campaign_id, "all", ALL_TIME, metric),
        (tenant_id, TENANT, "hour", hour, metric),
        (tenant_id, TENANT, "day", day, metric),
        (tenant_id, TENANT, "all", ALL_TIME, metric),
    )


async def bump_many(conn: AsyncConnection, counts: Mapping[CounterKey, int]) -> None:
    """Add many counters at once (one executemany upsert per table), in the caller's
    transaction."""
    await conn.run_sync(bump_many_sync, counts)


def bump_many_sync(conn: Connection, counts: Mapping[CounterKey, int]) -> None:
    """`bump_many` on a synchronous connection (a transaction run by `Database.run_write`)."""
    merged: Counter[tuple[int, int, datetime, str]] = Counter()
    for (tenant_id, campaign_id, at, metric), n in counts.items():
        if metric not in METRICS:
            raise ValueError(f"unknown stats metric {metric!r}")
        merged[(tenant_id, campaign_id or 0, hour_of(at), metric)] += n
    rolled: Counter[tuple[int, int, str, datetime, str]] = Counter()
    for (t, c, hour, m), n in merged.items():
        if n:
            for key in rollup_keys(t, c, hour, m):
                rolled[key] += n
    rows = [
        {"tenant_id": t, "campaign_id": c, "bucket_start": b, "metric": m, "count": n}
        for (t, c, b, m), n in sorted(merged.items())
        if n
    ]
    if not rows:
        return
    # Sorted rows, counters before roll-ups: concurrent writers take row locks in one
    # order, so they cannot deadlock.
    conn.execute(_upsert(conn.dialect.name, "counters"), rows)
    conn.execute(
        _upsert(conn.dialect.name, "rollups"),
        [dict(zip(_ROLLUP_COLUMNS, (*key, n), strict=True)) for key, n in sorted(rolled.items())],
    )


_ROLLUP_COLUMNS = ("tenant_id", "campaign_id", "span", "bucket_start", "metric", "count")
_UPSERTS: dict[tuple[str, str], Any] = {}


def _upsert(dialect: str, which: str) -> Any:
    """Built once per dialect and table: building `excluded` copies the column collection."""
    stmt = _UPSERTS.get((dialect, which))
    if stmt is not None:
        return stmt
    table = stat_counters if which == "counters" else stat_rollups
    if dialect == "sqlite":
        keys = ["tenant_id", "campaign_id", "bucket_start", "metric"]
        if which == "rollups":
            keys.insert(2, "span")
        ins = sqlite_insert(table)
        stmt = ins.on_conflict_do_update(
            index_elements=keys, set_={"count": table.c.count + ins.excluded.count}
        )
    else:
        mins = mysql_insert(table)
        stmt = mins.on_duplicate_key_update(count=table.c.count + mins.inserted.count)
    _UPSERTS[(dialect, which)] = stmt
    return stmt


def _rollup_sum(
    tenant_id: int | None, span: str, start: datetime | None, end: datetime | None
) -> Any:
    r = stat_rollups.c
    query = (
        select(r.metric, func.sum(r.count).label("total"))
        .where(r.campaign_id == TENANT, r.span == span)
        .group_by(r.metric)
    )
    if tenant_id is not None:
        query = query.where(r.tenant_id == tenant_id)
    if start is not None:
        query = query.where(r.bucket_start >= start)
    if end is not None:
        query = query.where(r.bucket_start < end)
    return query


def _ceil(at: datetime, floor: Any, step: timedelta) -> datetime | None:
    """The first bucket boundary at or after `at`; None past datetime.max."""
    low = floor(at)
    if low == at:
        return at
    try:
        return low + step  # type: ignore[no-any-return]
    except OverflowError:
        return None


def totals_query(
    tenant_id: int | None, start: datetime | None = None, end: datetime | None = None
) -> Any:
    """The SELECT behind `totals` (also for EXPLAIN in bench/web_bench.py): hours h with
    hour_of(start) <= h < end, read as whole days from the tenant's daily roll-up and the
    ragged ends (at most 23 hours each) from its hourly one; all time is one row per metric."""
    if start is None and end is None:
        return _rollup_sum(tenant_id, "all", None, None)
    first = hour_of(start) if start is not None else None
    stop = _ceil(end, hour_of, HOUR) if end is not None else None  # hours before `stop`
    day_from = _ceil(first, day_of, DAY) if first is not None else None
    day_to = day_of(stop) if stop is not None else None
    if first is not None and day_from is None:  # within the last day there is
        return _rollup_sum(tenant_id, "hour", first, stop)
    if day_from is not None and day_to is not None and day_from >= day_to:
        return _rollup_sum(tenant_id, "hour", first, stop)  # no whole day: at most 46 hours
    parts = [_rollup_sum(tenant_id, "day", day_from, day_to)]
    if first is not None and first < day_from:  # type: ignore[operator]
        parts.append(_rollup_sum(tenant_id, "hour", first, day_from))
    if day_to is not None and day_to < stop:  # type: ignore[operator]
        parts.append(_rollup_sum(tenant_id, "hour", day_to, stop))
    return parts[0] if len(parts) == 1 else union_all(*parts)


async def totals(
    conn: AsyncConnection,
    tenant_id: int | None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, int]:
    """metric → sum over [start, end) by hour (tenant None = every tenant)."""
    result = {m: 0 for m in METRICS}
    for metric, total in await conn.execute(totals_query(tenant_id, start, end)):
        result[metric] += int(total or 0)
    return result


def by_campaign_query(campaign_ids: list[int]) -> Any:
    """The SELECT behind `by_campaign` (also for EXPLAIN in bench/web_bench.py)."""
    r = stat_rollups.c
    return select(r.campaign_id, r.metric, r.count).where(
        r.campaign_id.in_(campaign_ids), r.span == "all"
    )


async def by_campaign(conn: AsyncConnection, campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    """campaign id → metric → all-time sum, for a page of campaigns (one row per metric)."""
    out: dict[int, dict[str, int]] = {c: {m: 0 for m in METRICS} for c in campaign_ids}
    if not campaign_ids:
        return out
    for campaign_id, metric, total in await conn.execute(by_campaign_query(campaign_ids)):
        out[int(campaign_id)][metric] += int(total or 0)
    return out


async def timeline(
    conn: AsyncConnection, campaign_id: int, bucket: str
) -> list[tuple[datetime, dict[str, int]]]:
    """(bucket start, metric → count) in time order; bucket is 'hour' (the hourly counters)
    or 'day' (the campaign's daily roll-up)."""
    if bucket == "hour":
        c = stat_counters.c
        query = select(c.bucket_start, c.metric, c.count).where(c.campaign_id == campaign_id)
    else:
        r = stat_rollups.c
        query = select(r.bucket_start, r.metric, r.count).where(
            r.campaign_id == campaign_id, r.span == "day"
        )
    series: dict[datetime, dict[str, int]] = {}
    for start, metric, count in await conn.execute(query):
        series.setdefault(start, {})
        series[start][metric] = series[start].get(metric, 0) + int(count)
    return sorted(series.items())


def rates(t: Mapping[str, int]) -> dict[str, float]:
    """Rates over delivered (opens, clicks) or sent (delivery, bounces), 0 when undefined."""

    def ratio(a: int, b: int) -> float:
        return round(a / b, 4) if b else 0.0

    return {
        "delivery": ratio(t["delivered"], t["sent"]),
        "bounce": ratio(t["bounced_hard"] + t["bounced_soft"], t["sent"]),
        "open": ratio(t["opened_unique"], t["delivered"]),
        "open_human": ratio(t["opened_unique_human"], t["delivered"]),
        "click": ratio(t["clicked_unique"], t["delivered"]),
        "click_human": ratio(t["clicked_unique_human"], t["delivered"]),
        "unsubscribe": ratio(t["unsubscribed"], t["delivered"]),
        "complaint": ratio(t["complained"], t["delivered"]),
    }
