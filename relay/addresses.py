"""Email address normalization, shared by intake, suppressions, bounces and the API.

An address keeps its local part as given (RFC 5321: it may be case-sensitive) and gets its
domain lowercased and IDNA-encoded; `key` is the fully lowercased form used to match
recipients and suppressions case-insensitively. A leaf: imports nothing from relay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Dot-atom or quoted local part; we only reject what can never be delivered.
_LOCAL_OK = re.compile(r'^(?:[^\s"@<>()\[\],;:\\]+|"(?:[^"\\\r\n]|\\.)*")$')
_LABEL_OK = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class InvalidAddress(ValueError):
    """The sentence says what is wrong, fit for an SMTP reply or an API error."""


@dataclass(frozen=True, slots=True)
class Address:
    local: str
    domain: str  # lowercase, ASCII (IDNA)

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def key(self) -> str:
        return f"{self.local.lower()}@{self.domain}"

    @property
    def is_ascii(self) -> bool:
        return self.local.isascii()


def normalize(raw: str) -> Address:
    """Parse and normalize one bare address (no display name, no angle brackets)."""
    text = raw.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text:
        raise InvalidAddress("the address is empty")
    if len(text) > 320:
        raise InvalidAddress("the address is longer than 320 characters")
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise InvalidAddress(f"{text!r} has no local part and domain (expected user@example.com)")
    if len(local.encode()) > 64:
        raise InvalidAddress("the local part is longer than 64 octets")
    if not _LOCAL_OK.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidAddress(f"the local part {local!r} is not a valid mailbox name")
    return Address(local, normalize_domain(domain))


def normalize_domain(domain: str) -> str:
    d = domain.strip().rstrip(".").lower()
    if d.startswith("[") and d.endswith("]"):  # address literal, e.g. [127.0.0.1]
        return d
    try:
        ascii_domain = d.encode("idna").decode("ascii") if not d.isascii() else d
    except UnicodeError:
        raise InvalidAddress(
            f"the domain {domain!r} is not a valid internationalized name"
        ) from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or len(labels) < 2 or not all(_LABEL_OK.match(x) for x in labels):
        raise InvalidAddress(f"the domain {domain!r} is not a valid domain name")
    return ascii_domain


def key_of(raw: str) -> str:
    """The matching key of an address, or its lowercased text when it does not parse."""
    try:
        return normalize(raw).key
    except InvalidAddress:
        return raw.strip().lower()
