"""Maintained stats counters: per tenant × campaign × hour × metric, never full scans.

Writers (intake, outcome, the tracking event flush) call `bump`/`bump_many` inside their own
transaction; readers (`totals`, `timeline`) sum the few counter rows of a time range, so
stats cost the same with a thousand deliveries or a hundred million.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.store.tables import stat_counters

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


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


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


async def bump_many(conn: AsyncConnection, counts: Mapping[CounterKey, int]) -> None:
    """Add many counters at once (one executemany upsert), in the caller's transaction."""
    await conn.run_sync(bump_many_sync, counts)


def bump_many_sync(conn: Connection, counts: Mapping[CounterKey, int]) -> None:
    """`bump_many` on a synchronous connection (a transaction run by `Database.run_write`)."""
    merged: Counter[tuple[int, int, datetime, str]] = Counter()
    for (tenant_id, campaign_id, at, metric), n in counts.items():
        if metric not in METRICS:
            raise ValueError(f"unknown stats metric {metric!r}")
        merged[(tenant_id, campaign_id or 0, hour_of(at), metric)] += n
    rows = [
        {"tenant_id": t, "campaign_id": c, "bucket_start": b, "metric": m, "count": n}
        for (t, c, b, m), n in sorted(merged.items())
        if n
    ]
    if not rows:
        return
    # Sorted rows: concurrent writers take row locks in one order, so they cannot deadlock.
    stmt = _counters_upsert(conn.dialect.name)
    conn.execute(stmt, rows)


@functools.cache
def _counters_upsert(dialect: str) -> Any:
    """Built once: making `excluded`/`inserted` copies the column collection every time."""
    if dialect == "sqlite":
        ins = sqlite_insert(stat_counters)
        return ins.on_conflict_do_update(
            index_elements=["tenant_id", "campaign_id", "bucket_start", "metric"],
            set_={"count": stat_counters.c.count + ins.excluded.count},
        )
    mins = mysql_insert(stat_counters)
    return mins.on_duplicate_key_update(count=stat_counters.c.count + mins.inserted.count)


def _scope(query: Any, tenant_id: int | None, campaign_ids: Iterable[int] | None) -> Any:
    if tenant_id is not None:
        query = query.where(stat_counters.c.tenant_id == tenant_id)
    if campaign_ids is not None:
        query = query.where(stat_counters.c.campaign_id.in_(list(campaign_ids)))
    return query


def totals_query(
    tenant_id: int | None,
    start: datetime | None = None,
    end: datetime | None = None,
    campaign_ids: Iterable[int] | None = None,
) -> Any:
    """The SELECT behind `totals` (also for EXPLAIN in bench/web_bench.py)."""
    query = select(stat_counters.c.metric, func.sum(stat_counters.c.count)).group_by(
        stat_counters.c.metric
    )
    query = _scope(query, tenant_id, campaign_ids)
    if start is not None:
        query = query.where(stat_counters.c.bucket_start >= hour_of(start))
    if end is not None:
        query = query.where(stat_counters.c.bucket_start < end)
    return query


async def totals(
    conn: AsyncConnection,
    tenant_id: int | None,
    start: datetime | None = None,
    end: datetime | None = None,
    campaign_ids: Iterable[int] | None = None,
) -> dict[str, int]:
    """metric → sum over [start, end) by hour (tenant None = every tenant)."""
    result = {m: 0 for m in METRICS}
    for metric, total in await conn.execute(totals_query(tenant_id, start, end, campaign_ids)):
        result[metric] = int(total or 0)
    return result


def by_campaign_query(campaign_ids: list[int]) -> Any:
    """The SELECT behind `by_campaign` (also for EXPLAIN in bench/web_bench.py)."""
    return (
        select(stat_counters.c.campaign_id, stat_counters.c.metric, func.sum(stat_counters.c.count))
        .where(stat_counters.c.campaign_id.in_(campaign_ids))
        .group_by(stat_counters.c.campaign_id, stat_counters.c.metric)
    )


async def by_campaign(conn: AsyncConnection, campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    """campaign id → metric → all-time sum, for a page of campaigns."""
    out: dict[int, dict[str, int]] = {c: {m: 0 for m in METRICS} for c in campaign_ids}
    if not campaign_ids:
        return out
    for campaign_id, metric, total in await conn.execute(by_campaign_query(campaign_ids)):
        out[int(campaign_id)][metric] = int(total or 0)
    return out


async def timeline(
    conn: AsyncConnection, campaign_id: int, bucket: str
) -> list[tuple[datetime, dict[str, int]]]:
    """(bucket start, metric → count) in time order; bucket is 'hour' or 'day'."""
    query = (
        select(stat_counters.c.bucket_start, stat_counters.c.metric, stat_counters.c.count)
        .where(stat_counters.c.campaign_id == campaign_id)
        .order_by(stat_counters.c.bucket_start)
    )
    series: dict[datetime, dict[str, int]] = {}
    for start, metric, count in await conn.execute(query):
        key = start if bucket == "hour" else start.replace(hour=0)
        series.setdefault(key, {})
        series[key][metric] = series[key].get(metric, 0) + int(count)
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


HOUR = timedelta(hours=1)
