"""SIGHUP reload: which config keys a running process applies, and who applies them.

Input: the running `Config` and a freshly loaded one. Output: the config to run with (the
old one with only the reloadable keys taken from the new) and the keys that still need a
restart. Roles register an applier with `on_reload` while they run; `relay.service` calls
`apply`. A leaf beside config: imports only `relay.config`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from relay.config import Config
from relay.errors import ConfigError

# Keys read per session or per refill: safe to swap under running sessions. Everything
# else (listeners, TLS files, database, transports, DKIM keys, secrets) needs a restart.
RELOADABLE = frozenset(
    {
        "log.level",
        "smtp.max_message_size",
        "smtp.max_recipients",
        "smtp.max_line_length",
        "smtp.max_header_size",
        "smtp.max_connections",
        "smtp.max_connections_per_ip",
        "smtp.auth_require_tls",
        "smtp.trusted_networks",
        "delivery.workers",
    }
)

Applier = Callable[[Config], None]
_appliers: list[Applier] = []


def on_reload(applier: Applier) -> None:
    """Call `applier(config)` after every successful reload while this process runs."""
    _appliers.append(applier)


def clear() -> None:
    _appliers.clear()


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'smtp': {'listen': [...]}} → {'smtp.listen': [...]} (lists stay values)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def changed_keys(old: Config, new: Config) -> list[str]:
    a, b = flatten(old.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def merge(old: Config, new: Config) -> tuple[Config, list[str], list[str]]:
    """(config to run with, keys applied, keys that need a restart)."""
    changed = changed_keys(old, new)
    applied = [k for k in changed if k in RELOADABLE]
    restart = [k for k in changed if k not in RELOADABLE]
    data = old.model_dump()
    fresh = new.model_dump()
    for key in applied:
        section, name = key.split(".", 1)
        data[section][name] = fresh[section][name]
    # Validated again: a reloadable key may depend on one that is not (trusted_tenant).
    try:
        return Config.model_validate(data), applied, restart
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(key, str(err["msg"]).removeprefix("Value error, ")) from None


def apply(config: Config) -> None:
    for applier in list(_appliers):
        applier(config)
