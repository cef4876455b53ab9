"""Generated SMTP passwords are safe to paste after a command-line option."""

from __future__ import annotations

from relay.passwords import generate_password, hash_secret, verify_secret


def test_generated_passwords_never_start_with_a_dash() -> None:
    # Without the check, 1 in 64 would (token_urlsafe's alphabet has '-'): 2,000 draws
    # would almost surely hit one; swaks then reads the password as an unknown option.
    passwords = [generate_password() for _ in range(2000)]
    assert not [p for p in passwords if p.startswith("-")]
    assert {len(p) for p in passwords} == {32}
    assert len(set(passwords)) == len(passwords)


def test_a_generated_password_verifies_against_its_hash() -> None:
    password = generate_password()
    stored = hash_secret(password)
    assert verify_secret(stored, password)
    assert not verify_secret(stored, password + "x")
