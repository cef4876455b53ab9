"""`relay suppressions import FILE|-`: load a suppression list, e.g. one `export` wrote.

Reads CSV (a header row with at least `email`) or JSON (an array, or one object per line),
with the columns `relay suppressions export` writes: scope, email, reason, source, created_at,
expires_at (id is ignored). Rows are written in batches, each its own transaction; a bad row is
named by its line and skipped, never a traceback. Prints one summary line.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from relay.addresses import InvalidAddress, normalize
from relay.cli._args import command, positive_int
from relay.cli._context import Context
from relay.cli._output import emit_one, warn
from relay.cli._progress import progress
from relay.config import parse_duration
from relay.model import SuppressionReason
from relay.store import suppressions as store
from relay.store.db import utcnow
from relay.store.suppression_import import Entry, write_batch
from relay.store.tenants import get_tenant, list_tenants

REASONS = [r.value for r in SuppressionReason]
EXIT_FAILURE, EXIT_USAGE = 1, 2
SHOWN_PROBLEMS = 20  # bad rows named one by one on stderr; the rest only counted


class InputError(Exception):
    """The input as a whole cannot be read (no email column, not JSON, not UTF-8)."""


def register(s: Any) -> None:
    p = command(
        s,
        "import",
        suppressions_import,
        "load suppressions from CSV or JSON (as `export` writes them)",
        json=True,
    )
    p.add_argument("file", metavar="FILE", help="the file to read, or - for stdin")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--tenant", metavar="NAME", help="put every row on this tenant's list")
    who.add_argument(
        "--global",
        dest="global_",
        action="store_true",
        help="put every row on the installation-wide list (default: each row's scope "
        "column, global when there is none)",
    )
    p.add_argument(
        "--reason",
        choices=REASONS,
        default="manual",
        help="for rows without a reason (default: manual)",
    )
    p.add_argument("--source", default="import", help="for rows without a source")
    p.add_argument(
        "--ttl",
        metavar="DURATION",
        help="lifetime for rows without an expires_at column, like 30d; 0 = forever "
        "(default: [bounce] <reason>_ttl)",
    )
    p.add_argument(
        "--format", choices=["auto", "csv", "json"], default="auto", help="default: by content"
    )
    p.add_argument(
        "--batch", type=positive_int, default=500, help="rows per transaction (default 500)"
    )


@dataclass
class Summary:
    rows: int = 0
    added: int = 0
    updated: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, str]] = field(default_factory=list)

    def skip(self, why: str, where: str = "", problem: str = "") -> None:
        self.skipped[why] += 1
        if problem:
            self.problems.append({"where": where, "problem": problem})
            if len(self.problems) <= SHOWN_PROBLEMS:
                warn(f"relay suppressions import: {where}: {problem}")

    def line(self) -> str:
        skipped = sum(self.skipped.values())
        why = ", ".join(f"{n} {k}" for k, n in sorted(self.skipped.items()))
        return (
            f"imported {self.rows} rows: {self.added} added, {self.updated} updated, "
            f"{skipped} skipped" + (f" ({why})" if why else "")
        )


async def suppressions_import(args: argparse.Namespace, ctx: Context) -> int:
    ttl_s: float | None = None
    if args.ttl is not None:
        try:
            ttl_s = parse_duration(args.ttl)
        except ValueError as e:
            warn(f"relay suppressions import: --ttl {args.ttl!r}: {e}")
            return EXIT_USAGE
    try:
        stream = _open(args.file)
    except OSError as e:
        warn(f"relay suppressions import: {args.file}: {e.strerror}")
        return EXIT_USAGE
    summary = Summary()
    try:
        async with ctx.database() as db:
            override: tuple[bool, int | None] = (False, None)  # (scope given, its tenant)
            if args.tenant:
                override = (True, (await get_tenant(db, args.tenant)).id)
            elif args.global_:
                override = (True, None)
            tenant_ids = {t.name: t.id for t in await list_tenants(db)}
            seen: dict[tuple[int, str], str] = {}
            batch: list[Entry] = []

            async def flush() -> None:
                async with db.write() as conn:
                    done = await write_batch(conn, batch)
                summary.added += len(done.added)
                summary.updated += len(done.updated)
                if done.unchanged:
                    summary.skipped["unchanged"] += len(done.unchanged)
                batch.clear()
                refresh()

            with progress(lambda: summary.line(), enabled=not args.json) as refresh:
                now = utcnow()
                for where, record in _records(stream, args.format):
                    summary.rows += 1
                    if isinstance(record, str):
                        summary.skip("invalid", where, record)
                        continue
                    try:
                        entry = _entry(record, args, ctx, tenant_ids, override, ttl_s)
                    except ValueError as e:
                        summary.skip("invalid", where, str(e))
                        continue
                    if entry.expires_at is not None and entry.expires_at <= now:
                        summary.skip("expired")
                        continue
                    key = (store.scope_of(entry.tenant_id), entry.email)
                    if key in seen:
                        summary.skip(
                            "duplicate", where, f"{entry.email} again (first: {seen[key]})"
                        )
                        continue
                    seen[key] = where
                    batch.append(entry)
                    if len(batch) >= args.batch:
                        await flush()
                if batch:
                    await flush()
    except InputError as e:
        warn(f"relay suppressions import: {args.file}: {e}")
        return EXIT_USAGE
    finally:
        if stream is not sys.stdin:
            stream.close()
    if len(summary.problems) > SHOWN_PROBLEMS:
        warn(f"relay suppressions import: … and {len(summary.problems) - SHOWN_PROBLEMS} more")
    record = {
        "rows": summary.rows,
        "added": summary.added,
        "updated": summary.updated,
        "skipped": dict(summary.skipped),
        "problems": summary.problems,
    }
    emit_one(record, args.json, [summary.line()])
    return EXIT_FAILURE if summary.skipped["invalid"] else 0


def _open(name: str) -> IO[str]:
    """The input: stdin for '-'. (The CLI does nothing else meanwhile, so plain reads.)"""
    if name == "-":
        return sys.stdin
    return open(name, encoding="utf-8", newline="")  # noqa: SIM115 - closed by the caller


def _records(stream: IO[str], fmt: str) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """(where, the row as a dict, or what is wrong with it), in input order."""
    lines = iter(stream)
    try:
        head: list[str] = []
        for line in lines:  # leading blank lines, then the first with content
            head.append(line)
            if line.strip():
                break
        if fmt == "auto":
            fmt = "json" if "".join(head).lstrip()[:1] in ("[", "{") else "csv"
        rows = itertools.chain(head, lines)
        yield from (_json(rows) if fmt == "json" else _csv(rows))
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text") from None


def _csv(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any] | str]]:
    reader = csv.DictReader(lines)
    if reader.fieldnames is None:
        return
    if "email" not in reader.fieldnames:
        raise InputError(f"no 'email' column in the CSV header {reader.fieldnames!r}")
    try:
        for row in reader:
            if None in row:
                yield f"line {reader.line_num}", "more fields than the header names"
            else:
                yield f"line {reader.line_num}", dict(row)
    except csv.Error as e:
        raise InputError(f"line {reader.line_num}: {e}") from None


def _json(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any] | str]]:
    numbered = enumerate(lines, 1)
    for number, line in numbered:  # noqa: B007 - used after the loop
        if line.strip():
            break
    else:
        return
    if line.lstrip().startswith("["):  # one array, as `export --format json` writes it
        yield from _json_array(line + "".join(rest for _, rest in numbered), number)
        return
    yield from _json_line(number, line)  # else JSON lines: one object per line
    for number, line in numbered:
        yield from _json_line(number, line)


def _json_array(text: str, first_line: int) -> Iterator[tuple[str, dict[str, Any] | str]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        line = e.lineno + first_line - 1
        raise InputError(f"not a JSON array: {e.msg} (line {line})") from None
    if not isinstance(items, list):
        raise InputError("expected a JSON array of objects")
    for i, item in enumerate(items, 1):
        yield f"item {i}", item if isinstance(item, dict) else "not a JSON object"


def _json_line(number: int, line: str) -> Iterator[tuple[str, dict[str, Any] | str]]:
    if not line.strip():
        return
    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        yield f"line {number}", f"not JSON: {e.msg}"
        return
    yield f"line {number}", item if isinstance(item, dict) else "not a JSON object"


def _entry(
    record: dict[str, Any],
    args: argparse.Namespace,
    ctx: Context,
    tenant_ids: dict[str, int],
    override: tuple[bool, int | None],
    ttl_s: float | None,
) -> Entry:
    """One row as an Entry; ValueError with a sentence when it cannot be."""
    raw = record.get("email")
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("no email")
    try:
        key = normalize(raw).key
    except InvalidAddress as e:
        raise ValueError(f"email {raw!r}: {e}") from None
    reason = _text(record, "reason") or args.reason
    if reason not in REASONS:
        raise ValueError(f"reason {reason!r}: expected one of {', '.join(REASONS)}")
    given, tenant_id = override
    scope = _text(record, "scope")
    if not given and scope and scope != "global":
        if scope not in tenant_ids:
            raise ValueError(f"scope {scope!r}: no such tenant (`relay tenants list`)")
        tenant_id = tenant_ids[scope]
    if "expires_at" in record:
        expires_at = _time(record, "expires_at")
    else:
        lifetime = ctx.config.bounce.ttl_s(reason) if ttl_s is None else ttl_s
        expires_at = store.expiry(lifetime)
    source = _text(record, "source") or args.source
    return Entry(tenant_id, key, reason, source, expires_at, _time(record, "created_at"))


def _text(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} {value!r}: expected text")
    return value.strip()


def _time(record: dict[str, Any], name: str) -> datetime | None:
    """An ISO-8601 time as naive UTC (the stored form); empty or null = none."""
    text = _text(record, name)
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} {text!r}: expected an ISO-8601 time") from None
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at
