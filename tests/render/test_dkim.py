"""DKIM signatures of rendered mail, checked by independent verifiers: Perl Mail::DKIM (RSA)
and mailauth on Node (RSA and Ed25519), before and after a real SMTP hop."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import aiosmtplib
import pytest

from relay.config import Config
from relay.render import Renderer
from relay.render.dkim import generate_key
from tests.peers import RecordingServer
from tests.render import support as s

HERE = Path(__file__).parent
HAVE_PERL = shutil.which("perl") is not None and subprocess.run(
    ["perl", "-MMail::DKIM::Verifier", "-MNet::DNS", "-e1"], capture_output=True
).returncode == 0  # fmt: skip
HAVE_MAILAUTH = shutil.which("node") is not None and (HERE / "node_modules" / "mailauth").is_dir()
needs_perl = pytest.mark.skipif(not HAVE_PERL, reason="Perl Mail::DKIM (libmail-dkim-perl) missing")
needs_mailauth = pytest.mark.skipif(
    not HAVE_MAILAUTH, reason="mailauth not installed: run `npm install` in tests/render (Node 20)"
)
CORPUS = ["html_only.eml", "mixed_attachments.eml", "iso2022jp.eml", "eightbit_utf8.eml",
          "latin1_qp.eml", "long_lines.eml", "no_message_id.eml"]  # fmt: skip


def verify(tool: str, message: bytes, records: dict[str, str]) -> list[str]:
    args = [f"{name}={value}" for name, value in records.items()]
    cmd = ["perl", str(HERE / "dkim_verify.pl")] if tool == "perl" else [
        "node", str(HERE / "dkim_verify.mjs")]  # fmt: skip
    done = subprocess.run(cmd + args, input=message, capture_output=True, timeout=60, check=True)
    return done.stdout.decode().splitlines()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    out = {}
    folder = tmp_path_factory.mktemp("dkim")
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        private, txt = generate_key(algorithm)
        path = folder / f"{algorithm}.key"
        path.write_bytes(private)
        out[algorithm] = (path, txt)
    return out


IDN = "xn--exmple-cua.com"  # exämple.com, the From domain of eightbit_utf8.eml


def signing_renderer(keys: dict[str, tuple[Path, str]], domain: str, *algorithms: str) -> Renderer:
    selectors = {"rsa-sha256": "r1", "ed25519-sha256": "e1"}
    cfg = Config(
        http={"public_url": s.PUBLIC},
        bounce={"domain": "bounces.example.net"},
        dkim={"keys": [{"domain": d, "selector": selectors[a],
                        "key_file": str(keys[a][0]), "algorithm": a}
                       for a in algorithms for d in (domain, IDN)]},
    )  # fmt: skip
    return Renderer(cfg, s.KEYRING, Renderer.from_config(cfg)._dkim)


def records(keys: dict[str, tuple[Path, str]]) -> dict[str, str]:
    return {f"{sel}._domainkey.{domain}": keys[alg][1] for domain in ("example.com", IDN)
            for sel, alg in (("r1", "rsa-sha256"), ("e1", "ed25519-sha256"))}  # fmt: skip


def domain_of(name: str) -> str:
    return IDN if name == "eightbit_utf8.eml" else "example.com"


def rendered(renderer: Renderer, name: str) -> bytes:
    raw = (s.CORPUS / name).read_bytes()
    return renderer.render(s.job(raw, s.config())).data


@needs_perl
@pytest.mark.parametrize("name", CORPUS)
def test_rsa_signature_verified_by_mail_dkim(keys: dict, name: str) -> None:  # type: ignore[type-arg]
    renderer = signing_renderer(keys, "example.com", "rsa-sha256")
    data = rendered(renderer, name)
    d = domain_of(name)
    first = data.split(b"\r\n\r\n")[0].replace(b"\r\n ", b" ")
    assert first.startswith(
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={d};".encode()
    )
    lines = verify("perl", data, records(keys))
    assert lines == [f"{d} r1 rsa-sha256 pass", "result=pass"]


@needs_perl
def test_signed_headers_include_list_unsubscribe_and_oversigned_from(keys: dict) -> None:  # type: ignore[type-arg]
    data = rendered(signing_renderer(keys, "example.com", "rsa-sha256"), "html_only.eml")
    sig = s.parse(data)["DKIM-Signature"]
    h = [x.strip() for x in "".join(sig.split()).split("h=")[1].split(";")[0].split(":")]
    assert h.count("from") == 2
    assert {"to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post",
            "mime-version", "content-type"} <= set(h)  # fmt: skip
    tampered = data.replace(b"Subject: html", b"Subject: HTML!")
    assert verify("perl", tampered, records(keys))[-1] == "result=fail"


@needs_perl
def test_subdomain_uses_parent_key_and_unknown_domain_is_unsigned(keys: dict) -> None:  # type: ignore[type-arg]
    renderer = signing_renderer(keys, "example.com", "rsa-sha256")
    raw = (
        (s.CORPUS / "plain.eml").read_bytes().replace(b"news@example.com", b"news@mail.example.com")
    )
    data = renderer.render(s.job(raw, s.config())).data
    assert verify("perl", data, records(keys))[-1] == "result=pass"
    raw = raw.replace(b"news@mail.example.com", b"news@other.example")
    assert not renderer.render(s.job(raw, s.config())).data.startswith(b"DKIM-Signature")


@needs_mailauth
@pytest.mark.parametrize("name", CORPUS)
def test_dual_signature_verified_by_mailauth(keys: dict, name: str) -> None:  # type: ignore[type-arg]
    renderer = signing_renderer(keys, "example.com", "rsa-sha256", "ed25519-sha256")
    lines = verify("node", rendered(renderer, name), records(keys))
    d = domain_of(name)
    assert sorted(lines[:-1]) == [f"{d} e1 ed25519-sha256 pass", f"{d} r1 rsa-sha256 pass"]
    assert lines[-1] == "result=pass"


@needs_perl
async def test_signatures_survive_a_real_smtp_hop(keys: dict) -> None:  # type: ignore[type-arg]
    renderer = signing_renderer(keys, "example.com", "rsa-sha256", "ed25519-sha256")
    async with RecordingServer() as peer:
        for name in ("mixed_attachments.eml", "eightbit_utf8.eml"):
            raw = (s.CORPUS / name).read_bytes()
            out = renderer.render(s.job(raw, s.config()))
            await aiosmtplib.send(
                out.data, sender=out.mail_from, recipients=["ann@example.org"],
                hostname="127.0.0.1", port=peer.port, timeout=10,
            )  # fmt: skip
    assert len(peer.messages) == 2
    for got, d in zip(peer.messages, ("example.com", IDN), strict=True):
        assert got.mail_from.startswith("bounces+")
        perl = verify("perl", got.data, records(keys))
        assert f"{d} r1 rsa-sha256 pass" in perl  # Mail::DKIM 1.2023 cannot check ed25519
        if HAVE_MAILAUTH:
            assert verify("node", got.data, records(keys))[-1] == "result=pass"
