"""py-spy on relay during a run, and where its CPU went: busy share by module and function.

Input: the speedscope JSON that `python -m bench --profile` records. Output: plain dicts for
the result JSON (and `python -m bench.profile FILE` prints them). Samples whose innermost
frame is the event loop waiting in epoll are idle and left out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

# Frames every busy sample passes through (the loop, threads, the entry point) say nothing.
PLUMBING = {"asyncio", "threading", "concurrent", "<frozen runpy>", "relay.__main__", "relay.cli"}
IDLE = {"select", "EpollSelector.select", "poll", "wait", "_wait_for_tstate_lock", "Condition.wait"}


def module_of(path: str) -> str:
    """relay.store, sqlalchemy, email … from a frame's file name."""
    if m := re.search(r"site-packages/([^/]+)", path):
        return m.group(1).removesuffix(".py")
    if m := re.search(r"/relay/([^/]+)", path):
        return "relay." + m.group(1).removesuffix(".py")
    if m := re.search(r"/lib/python3\.\d+/([^/]+)", path):
        return m.group(1).removesuffix(".py")
    return path.rsplit("/", 1)[-1] or "?"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    total = busy = 0.0
    by_module: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    for profile in doc["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            total += weight
            if not stack or frames[stack[-1]]["name"] in IDLE:
                continue
            busy += weight
            leaf = frames[stack[-1]]
            by_module[module_of(leaf["file"])] += weight
            self_fn[f"{leaf['name']} ({module_of(leaf['file'])})"] += weight
            seen = {
                f"{frames[i]['name']} ({module_of(frames[i]['file'])})"
                for i in stack
                if module_of(frames[i]["file"]) not in PLUMBING
            }
            for name in seen:
                incl_fn[name] += weight

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[k, round(100 * v / busy, 1)] for k, v in counter.most_common(top)] if busy else []

    return {
        "file": str(path),
        "sampled_s": round(total, 2),
        "busy_s": round(busy, 2),
        "self_by_module_pct": share(by_module),
        "self_by_function_pct": share(self_fn),
        "inclusive_by_function_pct": share(incl_fn),
    }


def render(summary: dict[str, Any]) -> str:
    lines = [f"{summary['file']}: busy {summary['busy_s']} s of {summary['sampled_s']} s sampled"]
    for key, title in (
        ("self_by_module_pct", "self time by module"),
        ("self_by_function_pct", "self time by function"),
        ("inclusive_by_function_pct", "inclusive time by function"),
    ):
        lines.append(f"  {title}:")
        lines += [f"    {pct:5.1f}%  {name}" for name, pct in summary[key]]
    return "\n".join(lines)


class Profiler:
    """py-spy attached to a running relay for the measured phase; speedscope output."""

    def __init__(self, pid: int, out: Path) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not os.path.exists(exe):
            raise RuntimeError("--profile needs py-spy: pip install -e '.[bench]'")
        self.out = out
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--format", "speedscope", "--nonblocking",
             "--rate", "100", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(0.5)  # let it attach before the traffic starts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
