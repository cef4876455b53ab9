"""The `relay` command as a user runs it: a real process, real files, exit codes, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay import passwords


def relay(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`relay ARGS` in a subprocess without the caller's RELAY_* variables; `stdin` is
    its standard input (none: /dev/null, as under CI)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    full_env.update(env or {})
    feed: dict[str, Any] = {"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        **feed,
    )


def test_help_lists_every_design_command(tmp_path: Path) -> None:
    out = relay("--help", cwd=tmp_path)
    assert out.returncode == 0
    for name in (
        "serve",
        "migrate",
        "check-config",
        "tenants",
        "credentials",
        "apikeys",
        "dkim",
        "queue",
        "suppressions",
        "history",
        "status",
        "bench",
    ):
        assert name in out.stdout


def test_admin_flow_on_both_databases(tmp_path: Path, db_url: str) -> None:
    env = {"RELAY_DATABASE__URL": db_url}
    assert relay("migrate", cwd=tmp_path, env=env).returncode == 0
    added = relay(
        "tenants", "add", "shop", "--domain", "shop.example", "--json", cwd=tmp_path, env=env
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["sender_domains"] == ["shop.example"]
    cred = relay("credentials", "add", "--tenant", "shop", "--json", cwd=tmp_path, env=env)
    secret = json.loads(cred.stdout)
    assert secret["username"].startswith("relay-") and len(secret["password"]) >= 24
    listed = relay("credentials", "list", cwd=tmp_path, env=env)
    assert secret["username"] in listed.stdout and secret["password"] not in listed.stdout
    key = json.loads(
        relay("apikeys", "create", "--tenant", "shop", "--json", cwd=tmp_path, env=env).stdout
    )
    assert passwords.api_key_prefix(key["key"]) == key["prefix"]
    missing = relay("credentials", "add", "--tenant", "nope", cwd=tmp_path, env=env)
    assert missing.returncode == 1 and "no tenant named 'nope'" in missing.stderr


def test_migrate_then_check_config_on_default_sqlite(tmp_path: Path) -> None:
    first = relay("migrate", cwd=tmp_path)
    assert first.returncode == 0 and "migrated from empty" in first.stdout
    assert (tmp_path / "var" / "relay.db").exists()
    again = relay("migrate", cwd=tmp_path)
    assert again.returncode == 0 and "already at revision" in again.stdout
    checked = relay("check-config", "--json", cwd=tmp_path)
    assert json.loads(checked.stdout)["delivery"]["mode"] == "sink"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[smtp]\nmax_recipients = 'x'\n", "smtp.max_recipients"),
        ("[smtp]\nbogus = 1\n", "smtp.bogus"),
        ("[database]\nurl = 'oracle://x'\n", "database.url"),
    ],
)
def test_broken_config_is_one_line_exit_2(tmp_path: Path, toml: str, key: str) -> None:
    (tmp_path / "relay.toml").write_text(toml)
    out = relay("--config", "relay.toml", "check-config", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and key in out.stderr
    assert "Traceback" not in out.stderr


def test_secrets_masked_in_check_config(tmp_path: Path) -> None:
    out = relay("check-config", cwd=tmp_path, env={"RELAY_TRACKING__SECRET": "s3cr3t-value"})
    assert out.returncode == 0 and "s3cr3t-value" not in out.stdout and "****" in out.stdout


def test_serve_refuses_unmigrated_database(tmp_path: Path) -> None:
    out = relay("serve", cwd=tmp_path)
    assert out.returncode == 1
    assert "relay migrate" in out.stderr and "Traceback" not in out.stderr


def test_usage_error_exit_2(tmp_path: Path) -> None:
    out = relay("tenants", "frobnicate", cwd=tmp_path)
    assert out.returncode == 2


def test_queue_tools_from_the_command_line(tmp_path: Path) -> None:
    assert relay("migrate", cwd=tmp_path).returncode == 0
    assert relay("tenants", "add", "shop", cwd=tmp_path).returncode == 0
    listed = relay("queue", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    missing = relay("queue", "show", "42", cwd=tmp_path)
    assert missing.returncode == 1 and "no message with id 42" in missing.stderr
    retried = relay("queue", "retry", "--all-deferred", "--json", cwd=tmp_path)
    assert json.loads(retried.stdout) == {"requeued": 0}
    usage = relay("history", cwd=tmp_path)
    assert usage.returncode == 2


def test_serve_with_missing_dkim_key_is_one_line_exit_2(tmp_path: Path) -> None:
    assert relay("migrate", cwd=tmp_path).returncode == 0
    (tmp_path / "relay.toml").write_text(
        '[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n'
        '[[dkim.keys]]\ndomain = "shop.example"\nselector = "s1"\nkey_file = "missing.key"\n'
    )
    out = relay("--config", "relay.toml", "serve", "--role", "delivery", cwd=tmp_path)
    assert out.returncode == 2
    assert "dkim.keys[0].key_file" in out.stderr and "Traceback" not in out.stderr


def test_account_password_env_in_check_config_and_serve(tmp_path: Path) -> None:
    """check-config shows the variable's name, never the password; `relay serve` with the
    variable unset stops before any port opens, with one line naming the key (exit 2)."""
    assert relay("migrate", cwd=tmp_path).returncode == 0
    (tmp_path / "relay.toml").write_text(
        '[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n'
        '[delivery]\nmode = "smarthost"\n'
        '[[delivery.accounts]]\nname = "primary"\nhost = "127.0.0.1"\nusername = "relay"\n'
        'password_env = "RELAY_TEST_PRIMARY_PASSWORD"\n'
    )
    env = {"RELAY_TEST_PRIMARY_PASSWORD": "pw-never-shown"}
    checked = relay("-c", "relay.toml", "check-config", "--json", cwd=tmp_path, env=env)
    assert checked.returncode == 0, checked.stderr
    assert "pw-never-shown" not in checked.stdout + checked.stderr
    (account,) = json.loads(checked.stdout)["delivery"]["accounts"]
    assert account["password_env"] == "RELAY_TEST_PRIMARY_PASSWORD"
    out = relay("-c", "relay.toml", "serve", "--role", "delivery", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "relay: config error: delivery.accounts.0.password_env: "
        "environment variable 'RELAY_TEST_PRIMARY_PASSWORD' is not set"
    )
    assert "Traceback" not in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[delivery.accounts]]\nname = "p"\nhost = "h"\npassword_env = "not a name"\n')
    out = relay("-c", str(bad), "check-config", cwd=tmp_path)
    assert out.returncode == 2 and "delivery.accounts[0].password_env" in out.stderr
