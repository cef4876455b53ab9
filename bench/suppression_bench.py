"""Suppression cache and bounce parsing costs: what intake and the scheduler pay per check.

Input: sizes from the command line. Output: a table (or --json): time to load N suppressions
into a `SuppressionCache`, an idle refresh (counters only), an incremental refresh after 100
additions, a full reload after a removal, `contains` (address, normalized) and `among` (keys)
lookups per second, and `relay.bounce.parse`
messages per second over the shared bounce corpus. Side effects: a temporary SQLite database
(or the given MySQL/MariaDB database, whose suppressions table it empties).
Run: .venv/bin/python bench/suppression_bench.py [--rows 100000] [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import delete  # noqa: E402

from relay.bounce import parse  # noqa: E402
from relay.config import DatabaseConfig  # noqa: E402
from relay.store import suppressions  # noqa: E402
from relay.store.db import Database, upgrade, utcnow  # noqa: E402
from relay.store.suppressions import SuppressionCache  # noqa: E402
from relay.store.tables import change_counters  # noqa: E402
from relay.store.tables import suppressions as table  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "bounces" / "eml" / "lf"


async def measure(url: str, n: int) -> dict[str, float]:
    db = Database.from_config(DatabaseConfig(url=url))
    out: dict[str, float] = {}
    try:
        await upgrade(db.engine)
        old = utcnow() - timedelta(days=1)  # the list as it stands, not just written
        async with db.write() as conn:
            await conn.execute(delete(table))
            await conn.execute(delete(change_counters))
            for start in range(0, n, 5000):
                await conn.execute(
                    table.insert(),
                    [
                        {"scope": 0, "email": f"user{i}@example.com", "reason": "hard_bounce",
                         "source": "bench", "created_at": old, "expires_at": None}
                        for i in range(start, min(n, start + 5000))
                    ],
                )  # fmt: skip
            await suppressions.bump_counter(conn, suppressions.COUNTER)
        t = time.perf_counter()
        cache = await SuppressionCache.start(db)
        out["full_load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        await cache.refresh()
        out["idle_refresh_ms"] = (time.perf_counter() - t) * 1000
        async with db.write() as conn:
            for i in range(100):
                await suppressions.add(conn, None, f"new{i}@example.com", "complaint")
        t = time.perf_counter()
        await cache.refresh()
        out["refresh_after_100_adds_ms"] = (time.perf_counter() - t) * 1000
        async with db.write() as conn:
            await suppressions.remove(conn, None, "user1@example.com")
        t = time.perf_counter()
        await cache.refresh()
        out["reload_after_removal_s"] = time.perf_counter() - t
        assert cache.reloads == 2 and len(cache) == n + 99
        lookups = [f"User{i}@Example.com" for i in range(0, 2 * n, 7)][:100_000]
        t = time.perf_counter()
        hits = sum(cache.contains(1, a) for a in lookups)
        out["contains_per_s"] = len(lookups) / (time.perf_counter() - t)
        assert hits
        keys = [a.lower() for a in lookups]
        t = time.perf_counter()
        found = cache.among(1, keys)
        out["among_keys_per_s"] = len(keys) / (time.perf_counter() - t)
        assert len(found) == hits
    finally:
        await db.dispose()
    return out


def parse_rate() -> float:
    raws = [p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))]
    t = time.process_time()
    for raw in raws:
        parse(raw)
    return len(raws) / (time.process_time() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="suppressions to load")
    parser.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite+aiosqlite:///{tmp}/bench.db"
        result = asyncio.run(measure(url, args.rows))
    if CORPUS.is_dir():
        result["bounce_parse_msgs_per_cpu_s"] = parse_rate()
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'measurement':40} value")
    for key, value in result.items():
        print(f"{key:40} {value:,.2f}")


if __name__ == "__main__":
    main()
