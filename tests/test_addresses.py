"""Address normalization: domain lowercased and IDNA-encoded, local part kept."""

from __future__ import annotations

import pytest

from relay.addresses import InvalidAddress, normalize


def test_domain_lowercased_local_kept() -> None:
    a = normalize("John.Doe@Example.COM")
    assert a.address == "John.Doe@example.com" and a.key == "john.doe@example.com"


def test_idna_domain_and_utf8_local() -> None:
    a = normalize("jörg@bücher.example")
    assert a.domain == "xn--bcher-kva.example" and a.local == "jörg" and not a.is_ascii


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "nobody",
        "@example.com",
        "a@",
        "a b@example.com",
        "a@-bad-.example",
        "a@localhost",
        "x" * 65 + "@example.com",
        "a..b@example.com",
    ],
)
def test_invalid(bad: str) -> None:
    with pytest.raises(InvalidAddress):
        normalize(bad)
