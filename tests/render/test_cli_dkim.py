"""`relay dkim keygen` as a user runs it: key file mode, the TXT record, and a usable key."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from relay.config import Config
from relay.render import Renderer
from tests.test_cli import relay


def test_rsa_keygen_writes_0600_key_and_prints_record(tmp_path: Path) -> None:
    out = relay("dkim", "keygen", "Example.COM", "--selector", "s1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    key = tmp_path / "var" / "dkim" / "example.com.s1.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert out.stdout.splitlines()[-1].startswith(
        's1._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p='
    )
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert private.key_size == 2048  # type: ignore[union-attr]
    record = "".join(out.stdout.splitlines()[-1].split('"')[1::2])
    public = base64.b64decode(record.split("p=")[1])
    assert public == private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_ed25519_keygen_json_and_key_loads(tmp_path: Path) -> None:
    out = relay("dkim", "keygen", "example.com", "--selector", "e1", "--algorithm", "ed25519",
                "--out", "k/e1.key", "--json", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["algorithm"] == "ed25519-sha256" and data["dns_name"] == "e1._domainkey.example.com"
    assert data["txt"].startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(data["txt"].split("p=")[1])) == 32
    cfg = Config(dkim={"keys": [{"domain": "example.com", "selector": "e1",
                                 "key_file": str(tmp_path / "k" / "e1.key"),
                                 "algorithm": "ed25519-sha256"}]})  # fmt: skip
    assert Renderer.from_config(cfg.model_copy(update={"data_dir": str(tmp_path)})) is not None


def test_keygen_refuses_to_overwrite_and_bad_input(tmp_path: Path) -> None:
    assert relay("dkim", "keygen", "example.com", "--selector", "s1", "--out", "a.key",
                 cwd=tmp_path).returncode == 0  # fmt: skip
    before = (tmp_path / "a.key").read_bytes()
    out = relay("dkim", "keygen", "example.com", "--selector", "s1", "--out", "a.key", cwd=tmp_path)
    assert out.returncode == 1 and "not overwriting" in out.stderr and "Traceback" not in out.stderr
    assert (tmp_path / "a.key").read_bytes() == before
    out = relay("dkim", "keygen", "example.com", cwd=tmp_path)
    assert out.returncode == 2 and "--selector" in out.stderr
    out = relay(
        "dkim", "keygen", "example.com", "--selector", "s", "--algorithm", "dsa", cwd=tmp_path
    )
    assert out.returncode == 2 and "--algorithm" in out.stderr
    out = relay("dkim", "keygen", "nodot", "--selector", "s", cwd=tmp_path)
    assert out.returncode == 1 and "not a domain name" in out.stderr
