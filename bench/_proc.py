"""Process plumbing for the side-by-side harness: ports, /proc accounting, orphan reaping.

Input: process ids. Output: CPU seconds and memory of a process tree, read from /proc (Linux).
Side effects: `become_subreaper` makes this process the parent of orphaned descendants (the
Postfix master double-forks), so `reap_orphans` can collect them instead of leaving zombies.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PR_SET_CHILD_SUBREAPER = 36


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, alive: object = None) -> None:
    """Return once something accepts on 127.0.0.1:port; `alive()` False means it died."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if callable(alive) and not alive():
                raise RuntimeError(f"the server for port {port} exited during start") from None
            if time.monotonic() > deadline:
                problem = f"nothing listens on 127.0.0.1:{port} after {timeout_s}s"
                raise RuntimeError(problem) from None
            time.sleep(0.1)


def become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: orphans go to init, as usual


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def reap_orphans() -> None:
    """Collect zombie children that no Popen owns (descendants of a stopped Postfix)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields and fields[0] == "Z" and int(fields[1]) == me:
            try:
                os.waitpid(int(entry.name), os.WNOHANG)
            except ChildProcessError:
                pass


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree(roots: list[int]) -> list[int]:
    children = _children()
    seen: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo.extend(children.get(pid, []))
    return seen


def cpu_s(pids: list[int]) -> float:
    """User + system CPU of these processes and of the children they have reaped.

    Summed over a whole live tree this is exact even for short-lived processes (smtpd exits
    after 100 sessions): a child's time moves into its parent's cutime when it is reaped.
    """
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        if fields and fields[0] != "Z":
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLK_TCK


def find_pids(comm_names: tuple[str, ...]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm in comm_names:
                found.append(int(entry.name))
    return found


class MemorySampler:
    """Peak of the summed RSS and PSS of a process tree, sampled every `interval_s`.

    PSS divides shared pages among the processes sharing them, so it is the fair total for
    a multi-process MTA; RSS counts shared libraries once per process.
    """

    def __init__(self, roots: list[int], interval_s: float = 0.5) -> None:
        self.roots = roots
        self.interval_s = interval_s
        self.peak_rss = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        rss = pss = 0
        for pid in tree(self.roots):
            try:
                rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
            except (OSError, IndexError, ValueError):
                continue
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
