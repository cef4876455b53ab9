"""The README holds: its configuration reference matches the config schema (every key and no
other, each default as the schema has it, the SIGHUP column as relay.reloading applies it), and
its quick start runs as written, `relay serve` and swaks included."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from relay import config
from relay.reloading import RELOADABLE
from tests.peers import free_port

README = Path(__file__).resolve().parent.parent / "README.md"


def _reference() -> dict[str, tuple[str, str]]:
    text = README.read_text()
    start = text.index("### Configuration reference")
    rows: dict[str, tuple[str, str]] = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        m = re.match(r"^\| `([a-z_.\[\]]+)` \| (.+?) \| (reloads|restart) \|", line)
        if m:
            key, default, reload = m.groups()
            assert key not in rows, f"{key} listed twice"
            rows[key] = (default, reload)
    return rows


def _schema() -> dict[str, tuple[type[BaseModel], str]]:
    """'section.key' (or 'section.list[].key') → (the model that holds it, the field name)."""
    keys: dict[str, tuple[type[BaseModel], str]] = {"data_dir": (config.Config, "data_dir")}
    for section, field in config.Config.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, sub in model.model_fields.items():
            inner = getattr(sub.annotation, "__args__", (None,))[0]
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                for k in inner.model_fields:
                    keys[f"{section}.{name}[].{k}"] = (inner, k)
            else:
                keys[f"{section}.{name}"] = (model, name)
    return keys


def test_reference_lists_every_key_of_the_schema() -> None:
    assert sorted(_reference()) == sorted(_schema())


def test_reference_defaults_are_the_schema_defaults() -> None:
    schema = _schema()
    for key, (default, _) in _reference().items():
        model, name = schema[key]
        field = model.model_fields[name]
        if default == "required":
            assert field.is_required(), key
            continue
        literal = tomllib.loads(f"v = {default.strip('`')}")["v"]
        # Validate through the field's own type, so "5m" and 300.0 compare equal.
        parsed: Any = model.__pydantic_validator__.validate_assignment(
            model.model_construct(), name, literal
        )
        assert getattr(parsed, name) == field.get_default(call_default_factory=True), key


def test_reference_marks_exactly_the_reloadable_keys() -> None:
    marked = {k for k, (_, reload) in _reference().items() if reload == "reloads"}
    assert marked == set(RELOADABLE)


# The quick start, run as written: every command of its shell block, in order, in an empty
# directory, with only what the README itself tells a reader to change (the RELAY_* port
# overrides and those ports in swaks/curl; USERNAME/PASSWORD from `relay credentials add`).


def _quick_start() -> list[tuple[str, str]]:
    """(command, the comment after it) for each line of the quick start's shell block."""
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    section = section[: section.index("\n## ", 1)]
    block: list[str] = []
    for line in section.splitlines():
        if line.startswith("    "):
            block.append(line[4:])
        elif block and line.strip():
            break  # the first indented block is the quick start
    commands: list[tuple[str, str]] = []
    pending = ""
    for line in block:
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):  # output shown to the reader: belongs to the last
            command, note = commands[-1]
            commands[-1] = (command, (note + " " + line.lstrip("# ")).strip())
            continue
        command, _, note = line.partition("  #")
        if command.rstrip().endswith("\\"):
            pending += command.rstrip()[:-1].strip() + " "
            continue
        commands.append(((pending + command).strip(), note.strip()))
        pending = ""
    return commands


def test_quick_start_block_is_what_the_test_runs() -> None:
    firsts = [" ".join(command.split()[:2]) for command, _ in _quick_start()]
    assert firsts == [
        "relay migrate",
        "relay tenants",
        "relay credentials",
        "relay serve",
        "swaks --server",
        "ls var/sink/new/",
        "relay history",
        "relay status",
        "curl -s",
        "relay apikeys",
        "kill %1",
    ]


def _port_overrides() -> dict[str, str]:
    """The `export RELAY_…` the quick start gives for ports that are taken."""
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    line = re.search(r"`export (RELAY_[^`]+)`", section, re.S)
    assert line, "the quick start no longer says how to move the ports"
    return dict(word.split("=", 1) for word in shlex.split(line.group(1)))


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_quick_start_as_written(tmp_path: Path) -> None:
    smtp_port, http_port = free_port(), free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RELAY_") and k != "NOTIFY_SOCKET"
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # The README's own advice for ports that are taken, for every command of the session.
    for name, value in _port_overrides().items():
        value = value.replace(":2526", f":{smtp_port}").replace(":8026", f":{http_port}")
        env[name] = value
    assert env["RELAY_SMTP__LISTEN"] == f'["127.0.0.1:{smtp_port}"]'
    assert env["RELAY_HTTP__LISTEN"] == f"127.0.0.1:{http_port}"

    def run(command: str) -> str:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    login: dict[str, str] = {}
    sink = tmp_path / "var/sink/new"
    serve: subprocess.Popen[bytes] | None = None
    log = (tmp_path / "serve.log").open("wb")
    try:
        for command, note in _quick_start():
            command = command.replace("127.0.0.1:2525", f"127.0.0.1:{smtp_port}")
            command = command.replace("127.0.0.1:8025", f"127.0.0.1:{http_port}")
            if command == "relay serve &":
                serve = subprocess.Popen(
                    ["relay", "serve"], cwd=tmp_path, env=env, stdout=log, stderr=log
                )
                # A reader waits for it to start; so does the test.
                _wait_until(lambda: _accepts(smtp_port) and _accepts(http_port), "relay serve")
                continue
            if command == "kill %1":
                assert serve is not None
                serve.send_signal(signal.SIGTERM)
                assert serve.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()
                continue
            if command.startswith("swaks"):
                command = command.replace("USERNAME", login["username"])
                command = command.replace("PASSWORD", login["password"])
            if command.startswith("ls var/sink/new"):
                _wait_until(lambda: sink.is_dir() and any(sink.iterdir()), "the delivered file")
            out = run(command)
            if command.startswith("relay credentials add"):
                login = dict(re.findall(r"^\s+(username|password): (\S+)$", out, re.M))
                assert set(login) == {"username", "password"}, out
            elif command.startswith("swaks"):
                assert note.split("<-")[1].strip() in out  # 250 2.0.0 Ok: queued as 1
            elif command.startswith("ls var/sink/new"):
                (name,) = out.split()
                delivered = (sink / name).read_bytes()
                assert b"Subject: hello from relay" in delivered
                assert b"To: you@example.org" in delivered
                assert b"X-Campaign-ID" not in delivered  # read and stripped at intake
            elif command.startswith("relay history"):
                assert re.search(r"you@example\.org\s+delivered\s", out), out
                assert "welcome" in out and "250 " in out
            elif command.startswith("relay status"):
                assert "schema current" in out and "last hour: delivered 1" in out, out
            elif command.startswith("curl"):
                assert 'relay_deliveries_total{outcome="delivered"} 1.0' in out, out
            elif command.startswith("relay apikeys create"):
                assert re.search(r"\brk_\S+", out), out
        assert serve is not None and serve.returncode == 0
    finally:
        if serve is not None and serve.poll() is None:
            serve.kill()
            serve.wait()
        log.close()
