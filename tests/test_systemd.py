"""The shipped systemd units pass `systemd-analyze verify` (with ExecStart pointing here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"


@pytest.mark.parametrize(
    ("unit", "name"),
    [
        ("relay.service", "relay.service"),
        ("relay@.service", "relay@smtp-web.service"),
        ("relay-prune.service", "relay-prune.service"),
        ("relay-prune.service", "relay-prune.timer"),
    ],
)
def test_units_verify(tmp_path: Path, unit: str, name: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    relay_bin = Path(sys.executable).parent / "relay"
    text = (UNITS / unit).read_text().replace("/opt/relay/.venv/bin/relay", str(relay_bin))
    (tmp_path / unit).write_text(text)
    timer = UNITS / unit.replace(".service", ".timer")
    if timer.exists():
        (tmp_path / timer.name).write_text(timer.read_text())
    if "@" in name:  # an instance of a template unit
        (tmp_path / name).symlink_to(tmp_path / unit)
    out = subprocess.run(
        [analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


@pytest.mark.parametrize("unit", ["relay.service", "relay@.service"])
def test_unit_is_hardened(unit: str) -> None:
    text = (UNITS / unit).read_text()
    for line in (
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "Restart=on-failure",
        "LimitNOFILE=",
        "User=relay",
        "StateDirectory=relay",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text
    # systemd waits longer than relay drains (service.drain_timeout, 30 s by default).
    assert int(text.split("TimeoutStopSec=")[1].split()[0]) > 30


def test_timer_runs_prune_daily() -> None:
    timer = (UNITS / "relay-prune.timer").read_text()
    assert "OnCalendar=daily" in timer and "Persistent=true" in timer
    assert (
        "ExecStart=/opt/relay/.venv/bin/relay prune" in (UNITS / "relay-prune.service").read_text()
    )
