"""Delivery benchmark: drain N queued 5 KB deliveries into a local SMTP sink; report msgs/s.

Input: --count, --per-message (recipients per stored message), --processes, --db (a
SQLAlchemy URL; default a fresh SQLite file), --no-tracking, --dkim rsa|ed25519. Each delivery
is rendered as the delivery role does (tracked links, open pixel, List-Unsubscribe, VERP;
DKIM when asked) and sent through the smarthost transport to Postfix's `smtp-sink`. Output:
one line of numbers (time to drain, msgs/s, peak RSS) and a JSON file in bench/results/.
Side effects: creates and deletes its own SQLite file (or empties the MariaDB tables).

    .venv/bin/python bench/delivery_bench.py --count 2000
    .venv/bin/python bench/delivery_bench.py --count 10000 --processes 2 \
        --db mysql+aiomysql://root@127.0.0.1/relay_bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import delete, insert  # noqa: E402

from relay import config as config_module  # noqa: E402
from relay.config import Config, DatabaseConfig  # noqa: E402
from relay.render import collect_links  # noqa: E402
from relay.rendering import DeliveryRenderer  # noqa: E402
from relay.scheduler import Scheduler, build_transport  # noqa: E402
from relay.store import deliveries as queue  # noqa: E402
from relay.store.db import Database, upgrade, utcnow  # noqa: E402
from relay.store.tables import deliveries as deliveries_table  # noqa: E402
from relay.store.tables import links, messages, metadata, recipients, tenants  # noqa: E402

SMTP_SINK = "/usr/sbin/smtp-sink"


def body(size: int, n: int) -> bytes:
    """A ~size-byte HTML newsletter (message n) with five tracked links and an unsubscribe."""
    head = (
        b"From: Shop <news@shop.example>\r\nTo: x@example.com\r\n"
        b"Subject: Weekly offers %d\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n" % n
    )
    links_html = b"".join(
        b'<p><a href="https://shop.example/offer/%d?n=%d">Offer %d</a></p>\r\n' % (i, n, i)
        for i in range(5)
    )
    tail = b"</body></html>\r\n"
    line = b"<p>" + b"x" * 70 + b"</p>\r\n"
    filler = line * max((size - len(head) - len(links_html) - len(tail)) // len(line), 0)
    return head + links_html + filler + tail


async def fill(url: str, count: int, size: int, per_message: int, config: Config) -> None:
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        await upgrade(db.engine)
        async with db.write() as conn:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(delete(table))
        now = utcnow()
        async with db.write() as conn:
            t = await conn.execute(
                insert(tenants).values(
                    name="bench", sender_domains=[], settings={}, hold=False, created_at=now
                )
            )
            tenant = t.inserted_primary_key[0]  # type: ignore[index]
            await conn.execute(
                insert(recipients),
                [
                    {
                        "tenant_id": tenant,
                        "email": f"r{i}@example.com",
                        "first_seen_at": now,
                        "last_seen_at": now,
                    }
                    for i in range(count)
                ],
            )
        rows: list[dict[str, object]] = []
        for first in range(0, count, per_message):
            async with db.write() as conn:
                raw = body(size, first)
                m = await conn.execute(
                    insert(messages).values(
                        tenant_id=tenant,
                        mail_from="news@shop.example",
                        size=len(raw),
                        raw=raw,
                        options={},
                        received_at=now,
                    )
                )
                message = m.inserted_primary_key[0]  # type: ignore[index]
                urls = collect_links(raw, config)
                await conn.execute(
                    insert(links),
                    [{"message_id": message, "position": i, "url": u} for i, u in enumerate(urls)],
                )
            rows.extend(
                {
                    "message_id": message,
                    "tenant_id": tenant,
                    "recipient": f"r{i}@example.com",
                    "recipient_key": f"r{i}@example.com",
                    "domain": "example.com",
                    "state": "queued",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(first, min(first + per_message, count))
            )
        async with db.write() as conn:
            for start in range(0, count, 2000):
                await conn.execute(insert(deliveries_table), rows[start : start + 2000])
    finally:
        await db.dispose()


def start_sink(port: int, pipelining: bool) -> subprocess.Popen[bytes] | None:
    if not os.path.exists(SMTP_SINK):
        return None
    no_pipelining = [] if pipelining else ["-p"]  # -p: do not announce PIPELINING
    return subprocess.Popen(
        [SMTP_SINK, "-u", "root", *no_pipelining, f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def drain_in_process(config: Config, profile: str) -> None:
    db = Database.from_config(config.database)
    try:
        scheduler = Scheduler(
            config, db, build_transport(config), render=DeliveryRenderer(config, db)
        )
        if profile:
            import cProfile

            with cProfile.Profile() as prof:
                await scheduler.run_until_idle()
            prof.dump_stats(profile)
        else:
            await scheduler.run_until_idle()
        await scheduler.transport.close()
    finally:
        await db.dispose()


def schedstat(pid: int | str) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of a process's main thread
    so far, from /proc/PID/schedstat: the second is CPU contention, not our own waiting."""
    try:
        run_ns, wait_ns, _slices = Path(f"/proc/{pid}/schedstat").read_text().split()
    except OSError:
        return (0.0, 0.0)
    return (int(run_ns) / 1e9, int(wait_ns) / 1e9)


async def drain_processes(
    config_path: Path,
    url: str,
    count: int,
    processes: int,
    sched: list[tuple[float, float]],
    startup: list[tuple[float, float]],
) -> list[float]:
    """Run N `relay serve --role delivery` until `count` are delivered; each one's CPU s.
    `sched` gets each one's (on-CPU s, waiting-for-a-CPU s) from start to the last delivery,
    `startup` the same up to the first delivery seen."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 - started once, before timing matters
            [sys.executable, "-m", "relay", "-c", str(config_path), "serve", "--role", "delivery"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    db = Database.from_config(DatabaseConfig(url=url))
    started: list[tuple[float, float]] = []
    try:
        while (done := (await queue.state_counts(db)).get("delivered", 0)) < count:
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a delivery process exited early")
            if done and not started:  # start-up (imports, migrations check) is behind them
                started = [schedstat(p.pid) for p in procs]
                startup.extend(started)
            await asyncio.sleep(0.25)  # the count itself costs the database some work
        sched.extend(schedstat(p.pid) for p in procs)
    finally:
        await db.dispose()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        cpu: list[float] = []
        for p in procs:
            _pid, _status, usage = os.wait4(p.pid, 0)  # noqa: ASYNC222 - they are stopping
            p.returncode = 0  # reaped here, so Popen does not wait again
            cpu.append(round(usage.ru_utime + usage.ru_stime, 2))
    return cpu


_LOCK_STATUS = ("Innodb_row_lock_waits", "Innodb_row_lock_time", "Innodb_deadlocks")


async def lock_counters(url: str) -> dict[str, int]:
    """MariaDB's row-lock waits, total wait ms and deadlocks so far (empty on SQLite)."""
    if not url.startswith("mysql"):
        return {}
    from sqlalchemy import text

    db = Database.from_config(DatabaseConfig(url=url))
    try:
        async with db.read() as conn:
            found = await conn.execute(text("SHOW GLOBAL STATUS LIKE 'Innodb_%'"))
            return {name: int(value) for name, value in found if name in _LOCK_STATUS}
    finally:
        await db.dispose()


def server_cpu_s() -> float | None:
    """CPU seconds of the local mariadbd so far (None when there is none to see)."""
    for name in ("mariadbd", "mysqld"):
        found = subprocess.run(["pidof", name], capture_output=True, text=True).stdout.split()
        if found:
            fields = Path(f"/proc/{found[0]}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def write_config(tmp: Path, args: argparse.Namespace, url: str) -> Path:
    """The TOML the benchmark runs with (in-process and `relay serve` alike)."""
    dkim = ""
    if args.dkim:
        from relay.render.dkim import generate_key

        algorithm = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}[args.dkim]
        key, _txt = generate_key(algorithm)
        (tmp / "dkim.key").write_bytes(key)
        dkim = (
            f'[[dkim.keys]]\ndomain = "shop.example"\nselector = "s1"\n'
            f'key_file = "{tmp}/dkim.key"\nalgorithm = "{algorithm}"\n'
        )
    track = "true" if args.tracking else "false"
    path = tmp / "relay.toml"
    path.write_text(
        f'data_dir = "{tmp}"\n[log]\nlevel = "{args.log_level}"\n'
        f'[database]\nurl = "{url}"\n'
        f'[http]\npublic_url = "https://t.shop.example"\n'
        f'[tracking]\nopens = {track}\nclicks = {track}\nsecret = "bench-secret-0123456789"\n'
        f'[bounce]\ndomain = "bounces.shop.example"\n'
        f'[delivery]\nmode = "smarthost"\nworkers = {args.workers}\n'
        f"batch_size = {args.batch_size}\n"
        f'[[delivery.accounts]]\nname = "sink"\nhost = "127.0.0.1"\n'
        f'port = {args.port}\ntls = "none"\n' + dkim
    )
    return path


def _cpu_s() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--per-message", type=int, default=100, help="recipients per message")
    ap.add_argument("--processes", type=int, default=0, help="0 = one scheduler in this process")
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--no-tracking", dest="tracking", action="store_false")
    ap.add_argument(
        "--no-pipelining",
        dest="pipelining",
        action="store_false",
        help="the sink does not announce PIPELINING (one command per round trip)",
    )
    ap.add_argument("--dkim", choices=["rsa", "ed25519"], default="")
    ap.add_argument("--log-level", default="info", help="of the delivery processes")
    ap.add_argument("--profile", default="", help="cProfile output file (in-process only)")
    ap.add_argument("--db", default="")
    ap.add_argument("--port", type=int, default=42525)
    args = ap.parse_args()

    from relay import log

    # In-process, log as the processes do but to /dev/null: the formatting cost is counted.
    log.setup(level=args.log_level, fmt="json")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    url = args.db or f"sqlite+aiosqlite:///{tmp}/bench.db"
    sink = start_sink(args.port, args.pipelining)
    if sink is None:
        sys.exit(f"{SMTP_SINK} not found: install postfix (it provides smtp-sink)")
    stdout = sys.stdout
    try:
        time.sleep(0.3)
        path = write_config(tmp, args, url)
        config = config_module.load(str(path), env={})
        asyncio.run(fill(url, args.count, args.size, args.per_message, config))
        locks_before = asyncio.run(lock_counters(url))
        server_before = server_cpu_s()
        load_before = os.getloadavg()[0]
        cpu_before = _cpu_s()
        started = time.monotonic()
        per_process: list[float] = []
        sched: list[tuple[float, float]] = []
        startup: list[tuple[float, float]] = []
        if args.processes:
            per_process = asyncio.run(
                drain_processes(path, url, args.count, args.processes, sched, startup)
            )
        else:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the log lines go nowhere
            log.setup(level=args.log_level, fmt="json")
            before = schedstat("self")
            asyncio.run(drain_in_process(config, args.profile))
            after = schedstat("self")
            sched.append((after[0] - before[0], after[1] - before[1]))
        elapsed = time.monotonic() - started
        cpu = _cpu_s() - cpu_before  # the relay's own CPU (children: the `serve` processes)
        load_after = os.getloadavg()[0]
        server_after = server_cpu_s()
        locks_after = asyncio.run(lock_counters(url))
    finally:
        sys.stdout = stdout
        sink.terminate()
        sink.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    rss_mb = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    result = {
        "bench": "delivery",
        "count": args.count,
        "size": args.size,
        "per_message": args.per_message,
        "processes": args.processes or 1,
        "workers": args.workers,
        "database": url.split(":")[0],
        "seconds": round(elapsed, 2),
        "msgs_per_s": round(args.count / elapsed, 1),
        "peak_rss_mb": round(rss_mb, 1),
        "cpu_s": round(cpu, 2),
        "msgs_per_cpu_s": round(args.count / cpu, 1) if cpu else None,
        "tracking": args.tracking,
        "dkim": args.dkim or False,
        "load_1m": [round(load_before, 1), round(load_after, 1)],
        "pipelining": args.pipelining,
        "cpu_s_per_process": per_process,
        "cpu_share_per_process": [round(c / elapsed, 2) for c in per_process],
        # Share of the drain each process (main thread) spent on a CPU / runnable but
        # waiting for one (CPU contention) / asleep (waiting on the database, the sink).
        "on_cpu_wait_cpu_asleep": [
            [round(r / elapsed, 2), round(w / elapsed, 2), round(1 - (r + w) / elapsed, 2)]
            for r, w in sched
        ],
    }
    if startup:  # CPU each `serve` used before the first delivery (start-up), excluded here
        drain_cpu = sum(r - s for (r, _), (s, _) in zip(sched, startup, strict=True))
        result["startup_cpu_s"] = [round(s, 2) for s, _ in startup]
        result["msgs_per_drain_cpu_s"] = round(args.count / drain_cpu, 1) if drain_cpu else None
    if url.startswith("mysql"):
        result["lock_waits"] = {k: locks_after[k] - locks_before.get(k, 0) for k in locks_after}
        if server_before is not None and server_after is not None:
            result["mariadb_cpu_s"] = round(server_after - server_before, 2)
    print(json.dumps(result))
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"delivery-{int(time.time())}.json").write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
