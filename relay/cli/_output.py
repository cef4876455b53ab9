"""Printing for the CLI: aligned tables for people, JSON for scripts (`--json`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat() + ("Z" if isinstance(value, datetime) and not value.tzinfo else "")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def dumps(data: Any) -> str:
    return json.dumps(data, default=_default, ensure_ascii=False)


def print_json(data: Any) -> None:
    print(dumps(data))


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def emit(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """A list of records, as a table or as one JSON array."""
    if as_json:
        print_json(list(rows))
    else:
        print_table(rows, columns)


def emit_one(record: Mapping[str, Any], as_json: bool, lines: Iterable[str] = ()) -> None:
    """One record: JSON, or the given human lines (key: value when none are given)."""
    if as_json:
        print_json(record)
        return
    shown = list(lines) or [f"{k}: {cell(v)}" for k, v in record.items()]
    for line in shown:
        print(line)


def warn(message: str) -> None:
    print(message, file=sys.stderr)
