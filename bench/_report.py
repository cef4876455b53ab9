"""Summaries of a side-by-side run: medians with min–max, relay/Postfix ratios, table, plot.

Input: the cases with their runs (plain dicts, as written to JSON). Output: a `summary` and a
`vs_postfix` entry per case, a Markdown table, and optionally a matplotlib PNG.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

METRICS = ("accept_per_s", "e2e_per_s", "cpu_s_per_1000", "peak_rss_mb", "peak_pss_mb")


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def summarize(cases: list[dict[str, Any]]) -> None:
    """Fill each case's `summary` (complete runs only) and relay's ratios to Postfix."""
    for case in cases:
        good = [r for r in case["runs"] if r.get("complete")]
        case["summary"] = {
            "complete_runs": len(good),
            **{m: spread([r[m] for r in good if r.get(m) is not None]) for m in METRICS},
        }
    postfix = {(c["size"], c["sessions"]): c for c in cases if c["system"] == "postfix"}
    for case in cases:
        if case["system"] != "relay":
            continue
        ref = postfix.get((case["size"], case["sessions"]))
        case["vs_postfix"] = None
        if ref is None:
            continue
        ratios = {}
        for key, metric in (("accept", "accept_per_s"), ("e2e", "e2e_per_s")):
            mine, theirs = case["summary"][metric], ref["summary"][metric]
            ratios[key] = round(mine["median"] / theirs["median"], 2) if mine and theirs else None
        case["vs_postfix"] = ratios


def _cell(s: dict[str, float] | None, digits: int = 0) -> str:
    if not s:
        return "–"
    fmt = f"{{:.{digits}f}}"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def table(cases: list[dict[str, Any]]) -> str:
    rows = [
        "| case | size | sessions | accepted msg/s | end-to-end msg/s | × Postfix accept "
        "| × Postfix e2e | CPU s / 1000 msg | peak RSS MB | peak PSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cases:
        s = c.get("summary", {})
        vs = c.get("vs_postfix") or {}
        note = f" ({c['skipped']})" if c.get("skipped") else ""
        if not c.get("skipped") and s.get("complete_runs", 0) < len(c["runs"]):
            note = f" ({len(c['runs']) - s.get('complete_runs', 0)} run(s) incomplete)"
        rows.append(
            f"| {c['label']}{note} | {c['size'] // 1000} KB | {c['sessions']} "
            f"| {_cell(s.get('accept_per_s'))} | {_cell(s.get('e2e_per_s'))} "
            f"| {_ratio(vs.get('accept'))} | {_ratio(vs.get('e2e'))} "
            f"| {_cell(s.get('cpu_s_per_1000'), 2)} | {_cell(s.get('peak_rss_mb'))} "
            f"| {_cell(s.get('peak_pss_mb'))} |"
        )
    return "\n".join(rows)


def plot(cases: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Throughput versus concurrency, one panel per (size, accepted | end-to-end)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = sorted({c["size"] for c in cases})
    fig, axes = plt.subplots(
        len(sizes), 2, figsize=(11, 4 * len(sizes)), squeeze=False, sharex=True
    )
    for row, size in enumerate(sizes):
        for col, (metric, name) in enumerate(
            (("accept_per_s", "accepted"), ("e2e_per_s", "end-to-end"))
        ):
            ax = axes[row][col]
            for c in cases:
                if c["size"] != size:
                    continue
                points = [
                    (x["sessions"], x["summary"][metric])
                    for x in cases
                    if x["label"] == c["label"] and x["size"] == size and x["summary"].get(metric)
                ]
                if not points or c["sessions"] != points[0][0]:
                    continue  # one line per label, drawn at its first case
                xs = [p[0] for p in points]
                med = [p[1]["median"] for p in points]
                err = [
                    [p[1]["median"] - p[1]["min"] for p in points],
                    [p[1]["max"] - p[1]["median"] for p in points],
                ]
                ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=c["label"])
            ax.set_title(f"{size // 1000} KB, {name}")
            ax.set_xlabel("concurrent SMTP sessions")
            ax.set_ylabel("messages/s (median, min–max)")
            ax.set_yscale("log")  # the loopback limit is an order of magnitude above the MTAs
            ax.set_xticks(sorted({c["sessions"] for c in cases}))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
