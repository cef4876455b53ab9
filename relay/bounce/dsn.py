"""RFC 3464 delivery status notifications: per-recipient Action, Status, Diagnostic-Code.

Input: a parsed `email.message.Message`; output: the per-recipient field blocks found in its
message/delivery-status part (or, for MTAs that mislabel it, in any text that carries
Final-Recipient blocks). Pure.
"""

from __future__ import annotations

import re
from email.message import Message

ADDRESS_IN = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
BLOCK_START = re.compile(r"^(final-recipient|original-recipient)\s*:", re.IGNORECASE | re.M)


def status_blocks(msg: Message) -> list[dict[str, str]]:
    """Per-recipient DSN fields (lower-case names), in order; [] when there are none."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            blocks = _blocks(_part_text(part))
            if blocks:
                return blocks
    for part in msg.walk():
        if part.get_content_maintype() == "text" or not part.is_multipart():
            text = _part_text(part)
            if BLOCK_START.search(text):
                blocks = _blocks(text)
                if blocks:
                    return blocks
    return []


def _part_text(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parsed the field blocks as messages
        return "\n\n".join(
            "\n".join(f"{k}: {v}" for k, v in sub.items())
            for sub in payload
            if isinstance(sub, Message)
        )
    raw = part.get_payload(decode=True)
    if isinstance(raw, bytes):
        return raw.decode(part.get_content_charset() or "utf-8", "replace")
    return str(payload or "")


def _blocks(text: str) -> list[dict[str, str]]:
    fields: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            if current:
                fields.append(current)
            current, last = {}, ""
            continue
        if line[0] in " \t" and last:
            current[last] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep or " " in key.strip():
            continue
        last = key.strip().lower()
        if last in current and last in ("final-recipient", "original-recipient"):
            fields.append(current)
            current = {}
        current[last] = value.strip()
    if current:
        fields.append(current)
    return [f for f in fields if "final-recipient" in f or "original-recipient" in f]


def address_of(value: str) -> str:
    """`rfc822; <a@b>` → `a@b`."""
    _, sep, rest = value.partition(";")
    addr = (rest if sep else value).strip().strip("<>").strip()
    if " " in addr or addr.startswith("|"):  # "|/bin/prog a@b ~/.forward": the address in it
        m = ADDRESS_IN.search(addr)
        return m.group(0) if m else ""
    return addr if "@" in addr else ""


def diagnostic_of(value: str) -> str:
    """`smtp; 550 5.1.1 ...` → `550 5.1.1 ...`."""
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and " " not in kind.strip() else value.strip()
