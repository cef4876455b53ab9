"""Tracking tokens: round trips, tampering, foreign secrets, rotation, kinds."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import config
from relay.errors import ConfigError
from relay.render.tokens import InvalidToken, Keyring, TokenData, TokenKind, load_keyring

KEYS = Keyring(b"a-current-secret-of-some-length")


@given(st.sampled_from(list(TokenKind)), st.integers(0, 2**62), st.integers(0, 2**40))
def test_round_trip(kind: TokenKind, delivery_id: int, link_id: int) -> None:
    token = KEYS.sign(TokenData(kind, delivery_id, link_id))
    assert token.replace("-", "").replace("_", "").isalnum()
    assert KEYS.verify(token) == TokenData(kind, delivery_id, link_id)


def test_compact() -> None:
    assert len(KEYS.sign(TokenData(TokenKind.CLICK, 123_456_789, 42))) <= 28


@given(st.integers(0, 2**40), st.data())
def test_any_single_character_change_is_rejected(delivery_id: int, data: st.DataObject) -> None:
    token = KEYS.sign(TokenData(TokenKind.OPEN, delivery_id))
    i = data.draw(st.integers(0, len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    c = data.draw(st.sampled_from(alphabet).filter(lambda ch: ch != token[i]))
    tampered = token[:i] + c + token[i + 1 :]
    try:
        decoded = KEYS.verify(tampered)
    except InvalidToken:
        return
    # The last character carries padding bits that base64 ignores: same bytes, same data.
    assert i == len(token) - 1 and decoded == KEYS.verify(token)


def test_foreign_secret_and_garbage_rejected() -> None:
    other = Keyring(b"someone-elses-secret-entirely")
    token = other.sign(TokenData(TokenKind.CLICK, 5, 1))
    for bad in (token, "", "x" * 10, "%%%%%%%%%%", token + "AAAA", "A" * 100):
        with pytest.raises(InvalidToken):
            KEYS.verify(bad)


def test_kind_is_checked() -> None:
    token = KEYS.sign(TokenData(TokenKind.OPEN, 7))
    with pytest.raises(InvalidToken, match="open token, not click"):
        KEYS.verify(token, TokenKind.CLICK)


def test_rotation_keeps_old_tokens_valid() -> None:
    old = Keyring(b"the-old-secret-1234567")
    token = old.sign(TokenData(TokenKind.CLICK, 9, 3))
    rotated = Keyring(b"the-new-secret-7654321", [b"the-old-secret-1234567"])
    assert rotated.verify(token) == TokenData(TokenKind.CLICK, 9, 3)
    assert rotated.verify(rotated.sign(TokenData(TokenKind.OPEN, 1))).delivery_id == 1
    with pytest.raises(InvalidToken):
        Keyring(b"the-new-secret-7654321").verify(token)


def test_generated_secret_is_private_and_stable(tmp_path: Path) -> None:
    cfg = config.load(None, env={"RELAY_DATA_DIR": str(tmp_path)})
    first = load_keyring(cfg)
    path = tmp_path / "tracking.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_keyring(cfg)
    token = first.sign(TokenData(TokenKind.OPEN, 1))
    assert again.verify(token).delivery_id == 1


def _secret_seen_by_a_starting_process(data_dir: str, start: Any) -> str:
    start.wait()
    cfg = config.load(None, env={"RELAY_DATA_DIR": data_dir})
    try:
        return load_keyring(cfg).current.decode()
    except ConfigError as e:  # returned, not raised: ConfigError does not pickle
        return f"refused: {e}"


def test_processes_starting_together_share_one_whole_secret(tmp_path: Path) -> None:
    # Two `relay serve` processes of a split layout start at the same moment: neither may read
    # the secret file before the other has written all of it (it was rejected as too short).
    ctx = multiprocessing.get_context("spawn")
    for n in range(5):
        data_dir = tmp_path / str(n)
        with ctx.Manager() as manager:
            start = manager.Barrier(4)
            with ctx.Pool(4) as pool:
                seen = pool.starmap(
                    _secret_seen_by_a_starting_process, [(str(data_dir), start)] * 4
                )
        assert len(set(seen)) == 1 and len(seen[0]) >= 16
        assert (data_dir / "tracking.secret").read_text().strip() == seen[0]
        assert [p.name for p in data_dir.iterdir()] == ["tracking.secret"]  # no drafts left
