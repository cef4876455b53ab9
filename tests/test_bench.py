"""The side-by-side harness end to end at a tiny count: real smtp-source, smtp-sink, a private
Postfix and `relay serve`. Checks the result's shape and that every message reached the sink,
never timing (performance lives in bench/, not in tests)."""

from __future__ import annotations

import email
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench import _report, _traffic

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TOOLS = all(shutil.which(t) or shutil.which(t, path="/usr/sbin") for t in
            ("smtp-source", "smtp-sink", "postfix"))  # fmt: skip


def relay_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return subprocess.run(
        [sys.executable, "-m", "relay", "bench", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_tiny_run_delivers_every_message_and_stops_everything(tmp_path: Path) -> None:
    if not TOOLS:
        if IN_CI:
            pytest.fail("Debian's postfix (smtp-source, smtp-sink) is required under CI")
        pytest.skip("postfix (smtp-source, smtp-sink) not installed")
    systems = "loopback,postfix,relay" if os.geteuid() == 0 else "loopback,relay"
    out = relay_bench(
        "--count", "50", "--runs", "1", "--sessions", "5", "--sizes", "5000",
        "--systems", systems, "--databases", "sqlite", "--dkim", "off", "--timeout", "120",
        "--relay-processes", "1,2",
        "--no-plot", "--no-install", "--out", str(tmp_path / "results"), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    [result] = (tmp_path / "results").glob("*.json")
    doc = json.loads(result.read_text())
    assert doc["schema"] == 1 and doc["params"]["count"] == 50 and doc["plot"] is None
    assert {"cpus", "loadavg_start", "loadavg_end", "postfix", "relay_commit"} <= set(
        doc["machine"]
    )
    by_system = {c["system"]: c for c in doc["cases"]}
    assert set(by_system) == set(systems.split(","))
    for case in doc["cases"]:
        [run] = case["runs"]
        assert run["complete"] and run["error"] is None, run
        assert run["accepted"] == run["delivered"] == 50  # every message reached the sink
        assert run["e2e_s"] >= run["accept_s"] > 0
        assert case["summary"]["complete_runs"] == 1
        assert case["summary"]["e2e_per_s"]["min"] <= case["summary"]["e2e_per_s"]["median"]
        for port in run["ports"].values():
            assert port_free(port), f"something still listens on {port} after the run"
    # Both layouts: one `relay serve`, and smtp,web beside delivery (two processes' CPU).
    assert sorted(c["processes"] for c in doc["cases"] if c["system"] == "relay") == [1, 2]
    relay = by_system["relay"]
    assert relay["database"] == "sqlite" and relay["tracking"] and not relay["dkim"]
    assert relay["runs"][0]["cpu_s_per_1000"] > 0 and relay["runs"][0]["peak_rss_mb"] > 10
    assert by_system["loopback"]["runs"][0]["cpu_s"] is None  # no MTA to account for
    if "postfix" in by_system:
        assert set(relay["vs_postfix"]) == {"accept", "e2e"}
        # Measured (not None), but not necessarily above zero: 50 messages cost Postfix a few
        # clock ticks, and a process that exited and is not yet reaped takes its ticks out of
        # the tree's sum until its parent reaps it (seen once in CI: 0.0).
        assert by_system["postfix"]["runs"][0]["cpu_s_per_1000"] is not None
    assert "| relay sqlite |" in out.stdout and "| relay sqlite 2 proc |" in out.stdout


def test_bad_option_is_one_line_naming_it(tmp_path: Path) -> None:
    out = relay_bench("--count", "0", cwd=tmp_path)
    assert out.returncode == 2
    assert "--count" in out.stderr and "must be > 0" in out.stderr
    assert "Traceback" not in out.stderr
    out = relay_bench("--databases", "oracle", cwd=tmp_path)
    assert out.returncode == 2 and "--databases" in out.stderr
    out = relay_bench("--relay-processes", "3", cwd=tmp_path)
    assert out.returncode == 2 and "--relay-processes" in out.stderr and "≤ 2" in out.stderr
    assert "Traceback" not in out.stderr


def test_message_is_the_size_asked_with_links_to_track() -> None:
    for size in (5000, 50000):
        raw = _traffic.message(size)
        assert abs(len(raw) - size) < size * 0.1
        msg = email.message_from_bytes(raw)
        html = [p for p in msg.walk() if p.get_content_type() == "text/html"]
        assert msg.is_multipart() and html and b'<a href="https://' in raw


def test_summary_medians_and_ratio_to_postfix() -> None:
    def runs(*rates: float) -> list[dict[str, object]]:
        return [
            {"complete": True, "accept_per_s": r, "e2e_per_s": r / 2, "cpu_s_per_1000": 1.0,
             "peak_rss_mb": 50.0, "peak_pss_mb": 40.0}
            for r in rates
        ]  # fmt: skip

    cases = [
        {"system": "postfix", "size": 5000, "sessions": 10, "runs": runs(400, 300, 500)},
        {"system": "relay", "size": 5000, "sessions": 10,
         "runs": [*runs(600, 800, 1000), {"complete": False, "error": "timed out"}]},
        {"system": "relay", "size": 5000, "sessions": 50, "runs": runs(10)},  # no Postfix peer
    ]  # fmt: skip
    _report.summarize(cases)
    assert cases[0]["summary"]["accept_per_s"] == {"median": 400, "min": 300, "max": 500}
    assert cases[1]["summary"]["complete_runs"] == 3  # the failed run is not averaged in
    assert cases[1]["vs_postfix"] == {"accept": 2.0, "e2e": 2.0}
    assert cases[2]["vs_postfix"] is None


def test_profile_summary_leaves_out_idle_and_plumbing(tmp_path: Path) -> None:
    from bench import _profile

    frames = [
        {"name": "BaseEventLoop.run_forever", "file": "/x/lib/python3.11/asyncio/base_events.py"},
        {"name": "EpollSelector.select", "file": "/x/lib/python3.11/selectors.py"},
        {"name": "commit", "file": "/v/site-packages/aiosqlite/core.py"},
        {"name": "submit", "file": "/w/relay/intake.py"},
    ]
    doc = {
        "shared": {"frames": frames},
        "profiles": [{"samples": [[0, 1], [0, 3, 2], [0, 3, 2], [0, 3]],
                      "weights": [0.5, 0.01, 0.01, 0.01]}],
    }  # fmt: skip
    path = tmp_path / "p.speedscope.json"
    path.write_text(json.dumps(doc))
    summary = _profile.summarize(path)
    assert summary["busy_s"] == 0.03 and summary["sampled_s"] == 0.53
    assert summary["self_by_module_pct"] == [["aiosqlite", 66.7], ["relay.intake", 33.3]]
    names = [name for name, _ in summary["inclusive_by_function_pct"]]
    assert names == ["submit (relay.intake)", "commit (aiosqlite)"]
