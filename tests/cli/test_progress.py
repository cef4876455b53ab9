"""Long CLI work shows progress on a terminal's stderr, and never on stdout or in pipes."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.test_cli import relay


def _with_tty_stderr(*args: str, cwd: Path) -> tuple[str, str]:
    """Run relay with stderr on a pseudo-terminal and stdout on a pipe."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(COLUMNS="100", TERM="xterm")
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=follower,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.stdout is not None
    with proc.stdout:
        stdout = proc.stdout.read().decode()
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    return stdout, b"".join(chunks).decode(errors="replace")


def test_export_and_prune_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    assert relay("migrate", cwd=tmp_path).returncode == 0
    assert relay("tenants", "add", "shop", "--domain", "shop.example", cwd=tmp_path).returncode == 0
    addresses = [f"u{i}@x.example" for i in range(30)]
    added = relay("suppressions", "add", "--tenant", "shop", *addresses, cwd=tmp_path)
    assert added.returncode == 0, added.stderr

    stdout, terminal = _with_tty_stderr("suppressions", "export", cwd=tmp_path)
    assert "email" in stdout.splitlines()[0]
    assert len(stdout.splitlines()) == 31 and "\x1b" not in stdout
    assert "read 30 suppressions" in terminal

    stdout, terminal = _with_tty_stderr("prune", cwd=tmp_path)
    assert stdout.startswith("pruned 0 message bodies") and "\x1b" not in stdout
    assert "pruned 0 bodies, 0 events" in terminal

    piped = relay("suppressions", "export", cwd=tmp_path)  # no terminal: no progress at all
    assert piped.stderr == ""
