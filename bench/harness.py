"""Side-by-side benchmark: smtp-sink alone, Postfix and relay under the same smtp-source load.

Input: the command line (`python -m bench --help`). Output: a table on stdout, and
bench/results/<timestamp>.json plus a PNG of throughput versus concurrency. Side effects:
starts, on loopback only and under a scratch directory, one smtp-sink per run, a private
Postfix instance, `relay serve` (SQLite file or a fresh MariaDB database), optionally py-spy;
stops all of them when a run ends, on errors and on Ctrl-C/SIGTERM.

Runs are interleaved (run 1 of every case, then run 2 …) so that the machine's changing load
falls on every system alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import _mta, _proc, _profile, _report, _traffic

REPO = Path(__file__).resolve().parent.parent
MYSQL_URL = os.environ.get("RELAY_BENCH_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1/")


@dataclass(frozen=True)
class Case:
    system: str  # loopback | postfix | relay
    size: int
    sessions: int
    database: str = ""  # relay: sqlite | mysql
    dkim: bool = False
    processes: int = 1  # relay: 1 = `relay serve`; 2 = smtp,web and delivery apart

    @property
    def label(self) -> str:
        if self.system == "loopback":
            return "smtp-sink alone (loopback limit)"
        if self.system == "postfix":
            return "postfix"
        split = " 2 proc" if self.processes == 2 else ""
        return f"relay {self.database}{split}" + (" +dkim" if self.dkim else "")

    @property
    def key(self) -> str:
        parts = [self.system, self.database, "p2" if self.processes == 2 else "",
                 "dkim" if self.dkim else "", str(self.size)]  # fmt: skip
        return "-".join(p for p in parts if p) + f"-s{self.sessions}"


def _ints(option: str, minimum: int, maximum: int | None = None) -> Any:
    def parse(value: str) -> list[int]:
        try:
            items = [int(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected integers, got {value!r}") from None
        if not items or min(items) < minimum:
            raise argparse.ArgumentTypeError(f"each value must be ≥ {minimum}")
        if maximum is not None and max(items) > maximum:
            raise argparse.ArgumentTypeError(f"each value must be ≤ {maximum}")
        return items

    return parse


def _choices(option: str, allowed: tuple[str, ...]) -> Any:
    def parse(value: str) -> list[str]:
        items = [x.strip() for x in value.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"expected some of {','.join(allowed)}, got {value!r}"
            )
        return items

    return parse


def _positive(option: str, kind: type) -> Any:
    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        return number

    return parse


def parser(prog: str = "python -m bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Measure relay against Postfix on this machine, in one run: smtp-source → "
        "smtp-sink (the loopback limit), smtp-source → Postfix → smtp-sink, and smtp-source → "
        "relay serve → smtp-sink.",
    )
    p.add_argument("--count", type=_positive("--count", int), default=10000,
                   help="messages per run (default 10000)")
    p.add_argument("--runs", type=_positive("--runs", int), default=3,
                   help="runs per case; the table shows the median and min–max (default 3)")
    p.add_argument("--sessions", type=_ints("--sessions", 1), default=[10, 50],
                   help="concurrent SMTP sessions, comma-separated (default 10,50)")
    p.add_argument("--sizes", type=_ints("--sizes", 500), default=[5000, 50000],
                   help="message sizes in bytes (default 5000,50000); relay runs every "
                   "database/DKIM variant at the first size, the base variant at the others")
    p.add_argument("--systems", type=_choices("--systems", ("loopback", "postfix", "relay")),
                   default=["loopback", "postfix", "relay"])
    p.add_argument("--databases", type=_choices("--databases", ("sqlite", "mysql")),
                   default=["sqlite", "mysql"], help="relay's databases (default sqlite,mysql)")
    p.add_argument("--dkim", type=_choices("--dkim", ("off", "on")), default=["off", "on"],
                   help="relay without and/or with DKIM RSA-2048 signing (default off,on)")
    p.add_argument("--relay-processes", type=_ints("--relay-processes", 1, 2), default=[1],
                   help="relay layouts: 1 = one `relay serve` with every role, 2 = `serve "
                   "--role smtp,web` beside `serve --role delivery` on the same database, as "
                   "relay@.service runs them (default 1; 1,2 measures both)")
    p.add_argument("--timeout", type=_positive("--timeout", float), default=600.0,
                   help="seconds one run may take, acceptance and draining (default 600)")
    p.add_argument("--mysql-url", default=MYSQL_URL,
                   help="MariaDB server for relay (a fresh database per run, dropped after)")
    p.add_argument("--relay-log-level", default="info",
                   choices=("debug", "info", "warning", "error"),
                   help="relay's log level (default info: one line per state change, like "
                   "Postfix's maillog)")
    p.add_argument("--profile", action="store_true",
                   help="record relay under py-spy (speedscope JSON in the output directory, "
                   "one per relay case, first run)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                   help="where the JSON result and the PNG go (default bench/results)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--no-install", action="store_true",
                   help="do not apt-get install postfix when smtp-source/smtp-sink are missing")
    return p  # fmt: skip


def cases(args: argparse.Namespace) -> list[Case]:
    found = []
    for n, size in enumerate(args.sizes):
        for sessions in args.sessions:
            if "loopback" in args.systems:
                found.append(Case("loopback", size, sessions))
            if "postfix" in args.systems:
                found.append(Case("postfix", size, sessions))
            if "relay" not in args.systems:
                continue
            for database in args.databases if n == 0 else args.databases[:1]:
                for dkim in args.dkim if n == 0 else args.dkim[:1]:
                    for processes in args.relay_processes:
                        found.append(
                            Case("relay", size, sessions, database, dkim == "on", processes)
                        )
    return found


def measure(
    case: Case, args: argparse.Namespace, scratch: Path, message_file: Path, profile: Path | None
) -> dict[str, Any]:
    """One run: fresh sink and MTA, smtp-source's load, wait until the sink has everything."""
    sink_port, port = _proc.free_port(), _proc.free_port()
    result: dict[str, Any] = {
        "ports": {"sink": sink_port}, "messages": args.count,
        "loadavg_1m": round(os.getloadavg()[0], 2),  # the machine's load as this run began
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        sink = _mta.Sink(sink_port)
        stack.callback(sink.stop)
        mta: _mta.Postfix | _mta.Relay | None = None
        if case.system == "postfix":
            mta = _mta.Postfix(scratch / "postfix", port, sink_port)
        elif case.system == "relay":
            mta = _mta.Relay(
                scratch / "relay", port, sink_port, case.database, case.dkim, args.mysql_url,
                args.relay_log_level, case.processes,
            )  # fmt: skip
        if mta is not None:
            stack.callback(mta.stop)  # before start: a half-started server is stopped too
            mta.start()
        else:
            port = sink_port
        result["ports"]["mta"] = port
        roots = mta.pids() if mta else []
        db_pids = _proc.find_pids(("mariadbd", "mysqld")) if case.database == "mysql" else []
        if profile is not None and roots:
            profiler = _profile.Profiler(roots[0], profile)
            stack.callback(profiler.stop)
        cpu0 = _proc.cpu_s(_proc.tree(roots)) if roots else 0.0
        db0 = _proc.cpu_s(db_pids)
        deadline = time.monotonic() + args.timeout
        with _proc.MemorySampler(roots) as memory:
            started = time.perf_counter()
            sent = _traffic.send(port, args.count, case.sessions, message_file, args.timeout)
            arrived = sent.ok and sink.wait_for(args.count, deadline)
            e2e = time.perf_counter() - started
            cpu = _proc.cpu_s(_proc.tree(roots)) - cpu0 if roots else None
        db_cpu = _proc.cpu_s(db_pids) - db0 if db_pids else None
        error = sent.error or ("" if arrived else f"the sink had {sink.count} of {args.count} "
                               f"messages after {args.timeout:g}s")  # fmt: skip
        if error and mta is not None:
            error += f"; {type(mta).__name__.lower()} log: {mta.log_tail(3)}"
        result.update(
            complete=sent.ok and arrived,
            accepted=args.count if sent.ok else None,
            delivered=sink.count,
            accept_s=round(sent.seconds, 3),
            e2e_s=round(e2e, 3) if arrived else None,
            accept_per_s=round(args.count / sent.seconds, 1) if sent.ok else None,
            e2e_per_s=round(args.count / e2e, 1) if arrived else None,
            cpu_s=round(cpu, 2) if cpu is not None else None,
            cpu_s_per_1000=round(cpu / args.count * 1000, 3) if cpu is not None else None,
            db_server_cpu_s=round(db_cpu, 2) if db_cpu is not None else None,
            peak_rss_mb=round(memory.peak_rss / 2**20, 1) if roots else None,
            peak_pss_mb=round(memory.peak_pss / 2**20, 1) if roots else None,
            error=error or None,
        )
    return result


@contextlib.contextmanager
def _signals_as_exit() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` stops what it started."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: started in the background by a shell, a process inherits SIGINT ignored.
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _git_commit() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip()


def run(args: argparse.Namespace) -> dict[str, Any]:
    _proc.become_subreaper()
    _mta.ensure_postfix(not args.no_install)  # smtp-source and smtp-sink serve every case
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    all_cases = cases(args)
    records: list[dict[str, Any]] = [
        {"key": c.key, "label": c.label, "system": c.system, "database": c.database or None,
         "dkim": c.dkim, "tracking": c.system == "relay", "size": c.size,
         "processes": c.processes if c.system == "relay" else None,
         "sessions": c.sessions, "runs": [], "skipped": None}
        for c in all_cases
    ]  # fmt: skip
    document: dict[str, Any] = {
        "schema": 1,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "kernel": platform.release(), "python": platform.python_version(),
            "postfix": _mta.postfix_version(), "relay_commit": _git_commit(),
        },
        "params": {
            "count": args.count, "runs": args.runs, "sizes": args.sizes,
            "sessions": args.sessions, "timeout_s": args.timeout,
            "relay_log_level": args.relay_log_level, "profile": args.profile,
        },
        "cases": records, "profiles": [], "plot": None, "interrupted": False,
    }  # fmt: skip
    path = args.out / f"{stamp}.json"
    try:
        with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp, _signals_as_exit():
            _run_all(args, all_cases, document, Path(tmp), stamp, path)
    except KeyboardInterrupt:  # everything was stopped on the way out; keep what was measured
        document["interrupted"] = True
    _finish(document, args, path, stamp)
    document["path"] = str(path)
    return document


def _run_all(
    args: argparse.Namespace, all_cases: list[Case], document: dict[str, Any], scratch_root: Path,
    stamp: str, path: Path,
) -> None:  # fmt: skip
    records = document["cases"]
    os.chmod(scratch_root, 0o755)  # Postfix daemons run as the postfix user
    files = {}
    for size in args.sizes:
        files[size] = scratch_root / f"message-{size}.eml"
        files[size].write_bytes(_traffic.message(size))
    for n in range(args.runs):
        for case, record in zip(all_cases, records, strict=True):
            if record["skipped"]:
                continue
            scratch = scratch_root / f"{case.key}-{n}"
            profile = None
            if args.profile and case.system == "relay" and n == 0:
                profile = args.out / f"{stamp}-{case.key}.speedscope.json"
            print(f"run {n + 1}/{args.runs}  {case.label:32} {case.size // 1000:>3} KB "
                  f"{case.sessions:>3} sessions … ", end="", flush=True)  # fmt: skip
            try:
                result = measure(case, args, scratch, files[case.size], profile)
            except Exception as e:  # recorded with the run; the other cases go on
                if case.database == "mysql" and "2003" in str(e):
                    record["skipped"] = "MariaDB unreachable"
                result = {"complete": False, "error": f"{type(e).__name__}: {e}"}
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            record["runs"].append(result)
            if profile is not None and profile.exists():
                document["profiles"].append(_profile.summarize(profile))
            print(_progress(result), flush=True)
            # A checkpoint after every run: a long benchmark cut short still leaves its data.
            path.write_text(json.dumps(document, indent=1) + "\n")


def _finish(document: dict[str, Any], args: argparse.Namespace, path: Path, stamp: str) -> None:
    records = document["cases"]
    document["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    document["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    _report.summarize(records)
    if not args.no_plot and any(c["runs"] for c in records):
        png = args.out / f"{stamp}.png"
        title = (f"relay vs Postfix, {args.count} messages × {args.runs} runs, "
                 f"{document['started_at']}, load {document['machine']['loadavg_start'][0]}")
        if _report.plot(records, png, title):
            document["plot"] = str(png)  # fmt: skip
        else:
            print("no plot: matplotlib is missing (pip install -e '.[bench]')", file=sys.stderr)
    path.write_text(json.dumps(document, indent=1) + "\n")


def _progress(result: dict[str, Any]) -> str:
    if not result.get("complete"):
        return f"FAILED: {result.get('error')}"
    line = f"accepted {result['accept_per_s']:>7}/s  end-to-end {result['e2e_per_s']:>7}/s"
    if result.get("cpu_s_per_1000") is not None:
        line += f"  CPU {result['cpu_s_per_1000']:.2f} s/1000  PSS {result['peak_pss_mb']} MB"
    return line


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> int:
    args = parser(prog).parse_args(argv)
    try:
        document = run(args)
    except RuntimeError as e:  # a missing tool or similar: one line, no traceback
        print(f"bench: {e}", file=sys.stderr)
        return 1
    print()
    print(_report.table(document["cases"]))
    for summary in document["profiles"]:
        print("\n" + _profile.render(summary))
    print(f"\nresult: {document['path']}" + (f"\nplot: {document['plot']}" if document["plot"]
                                              else ""))  # fmt: skip
    if document["interrupted"]:
        print("interrupted: everything started was stopped; the result holds the runs done",
              file=sys.stderr)  # fmt: skip
        return 130
    failed = [c["key"] for c in document["cases"] if any(not r.get("complete") for r in c["runs"])]
    return 1 if failed else 0
