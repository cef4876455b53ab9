"""The configuration: one TOML file, overridden key by key from the environment.

Input: a TOML path (`--config` / `RELAY_CONFIG`, optional) and `RELAY_<SECTION>__<KEY>`
environment variables. Output: a validated, frozen `Config`. Errors are `ConfigError`s that
name the key, the bad value and what was expected. A leaf: imports nothing from relay but
`errors`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from relay.errors import ConfigError

ENV_PREFIX = "RELAY_"
SECRET_MARKERS = ("password", "secret")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> float:
    """'90s', '5m', '2h', '5d', '1w' or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '5m', '2h' or '5d'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNIT_S[m.group(2)]
    raise ValueError(f"expected a duration such as '30s', '5m', '2h' or '5d', got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT such as '127.0.0.1:2525', got {value!r}")
    return value


HostPort = Annotated[str, BeforeValidator(lambda v: _check_hostport(str(v)))]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class SmtpConfig(_Section):
    listen: list[HostPort] = ["127.0.0.1:2525"]
    tls_listen: list[HostPort] = []
    hostname: str = "localhost"
    tls_cert: str = ""
    tls_key: str = ""
    auth_require_tls: bool = True
    trusted_networks: list[str] = []
    trusted_tenant: str = ""  # the tenant that mail from trusted_networks without AUTH belongs to
    max_message_size: int = Field(26_214_400, gt=0)
    max_recipients: int = Field(1000, gt=0)
    max_line_length: int = Field(998, ge=78)
    max_header_size: int = Field(262_144, gt=0)
    max_connections: int = Field(1000, gt=0)
    max_connections_per_ip: int = Field(100, gt=0)
    idle_timeout: Duration = 300.0
    command_timeout: Duration = 60.0
    auth_failures_before_delay: int = Field(3, ge=1)
    auth_failures_before_block: int = Field(10, ge=1)
    auth_block_time: Duration = 900.0
    campaign_header: str = "X-Campaign-ID"

    @field_validator("trusted_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(
                    f"expected CIDR networks such as '10.0.0.0/8', got {net!r}"
                ) from None
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> SmtpConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be set together")
        if self.tls_listen and not self.tls_cert:
            raise ValueError("tls_listen needs tls_cert and tls_key")
        if self.trusted_networks and not self.trusted_tenant:
            raise ValueError("trusted_networks needs trusted_tenant (the tenant their mail uses)")
        return self


class HttpConfig(_Section):
    listen: HostPort = "127.0.0.1:8025"
    public_url: str = "http://127.0.0.1:8025"
    # Tracking events wait in memory and are written in batches (see relay.web.events).
    event_buffer_size: int = Field(50_000, ge=100)
    event_batch_size: int = Field(500, ge=1)
    event_flush_interval: Duration = 0.25
    # Privacy: keep the client IP of opens/clicks in full, truncated (/24, /48) or not at all.
    store_ip: Literal["full", "truncated", "none"] = "full"
    # A click this soon after delivery is a link scanner, not a person.
    machine_click_window: Duration = 5.0
    link_cache_size: int = Field(100_000, ge=0)

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(
                f"expected an http(s) URL such as 'https://t.example.com', got {value!r}"
            )
        return value.rstrip("/")


class DatabaseConfig(_Section):
    url: str = "sqlite+aiosqlite:///var/relay.db"
    auto_migrate: bool = False
    pool_size: int = Field(10, ge=1)
    pool_recycle: Duration = 3600.0
    busy_timeout: Duration = 30.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^(sqlite\+aiosqlite://.*|mysql\+aiomysql://\S+)$", value):
            raise ValueError(
                "expected 'sqlite+aiosqlite:///PATH' or 'mysql+aiomysql://USER:PASS@HOST/DB', "
                f"got {_mask_url(value)!r}"
            )
        return value


class AccountConfig(_Section):
    name: str
    host: str
    port: int = Field(587, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str = ""
    password: str = ""
    password_file: str = ""
    password_env: str = ""  # the name of an environment variable holding the password
    weight: int = Field(1, ge=1)
    daily_limit: int = Field(0, ge=0)  # 0 = unlimited
    per_minute: int = Field(0, ge=0)  # 0 = unlimited
    warmup: list[int] = []  # day 1, day 2 … daily limits; the last value holds afterwards
    pool: str = "default"  # pools are chosen by [[delivery.routes]]

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if value and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
            raise ValueError(
                "expected the name of an environment variable such as 'RELAY_PRIMARY_PASSWORD'"
                f", got {value!r}"
            )
        return value


# --- delivery limits and shaping (README "Limits and shaping") ---
class ShapeConfig(_Section):
    """Budget of one destination (MX host set); 0 = unlimited / the global default."""

    mx_suffixes: list[str] = []  # MX host name endings that identify a provider
    max_connections: int = Field(0, ge=0)
    connections_per_minute: int = Field(0, ge=0)
    messages_per_second: float = Field(0.0, ge=0)
    messages_per_connection: int = Field(0, ge=0)


class TenantLimitConfig(_Section):
    per_minute: int = Field(0, ge=0)
    per_hour: int = Field(0, ge=0)
    per_day: int = Field(0, ge=0)


class RouteConfig(_Section):
    tenant: str = ""  # tenant name; empty = any
    sender_domain: str = ""  # envelope sender domain; empty = any
    transport: Literal["sink", "smarthost", "direct"]
    pool: str = "default"  # smarthost: the accounts with this `pool`


class DeliveryConfig(_Section):
    mode: Literal["sink", "smarthost", "direct"] = "sink"
    sink_dir: str = "var/sink"
    max_age: Duration = 5 * 86400.0
    strategy: Literal["round-robin", "random", "weighted"] = "round-robin"
    helo_name: str = ""
    workers: int = Field(50, ge=1)
    batch_size: int = Field(200, ge=1)
    lease_time: Duration = 300.0
    retry_schedule: list[Duration] = [300.0, 600.0, 1200.0, 2400.0, 3600.0]
    retry_jitter: float = Field(0.2, ge=0, le=1)
    connect_timeout: Duration = 30.0
    command_timeout: Duration = 120.0
    messages_per_connection: int = Field(100, ge=1)
    idle_connection_timeout: Duration = 60.0
    account_pause_after_failures: int = Field(5, ge=1)
    account_pause: Duration = 300.0
    mx_port: int = Field(25, ge=1, le=65535)
    dns_servers: list[str] = []
    dns_port: int = Field(53, ge=1, le=65535)
    dns_timeout: Duration = 10.0
    accounts: list[AccountConfig] = []
    # Limits and shaping (README "Limits and shaping").
    account_bounce_rate: float = Field(0.0, ge=0, le=1)  # 0 = never pause for bounces
    account_bounce_window: Duration = Field(3600.0, gt=0, le=86400)
    account_bounce_min: int = Field(100, ge=1)
    account_bounce_pause: Duration = 6 * 3600.0
    shaping: dict[str, ShapeConfig] = {}
    shaping_max_wait: Duration = 2.0
    throttle_backoff: Duration = 60.0
    throttle_recovery: Duration = 300.0
    dead_after_failures: int = Field(5, ge=1)
    dead_time: Duration = 600.0
    tenant_limits: dict[str, TenantLimitConfig] = {}
    routes: list[RouteConfig] = []

    @model_validator(mode="after")
    def _accounts(self) -> DeliveryConfig:
        pools = {a.pool for a in self.accounts}
        if self.mode == "smarthost" and "default" not in pools:
            raise ValueError(
                "mode 'smarthost' needs at least one [[delivery.accounts]] entry in pool 'default'"
            )
        for route in self.routes:
            if route.transport == "smarthost" and route.pool not in pools:
                raise ValueError(f"route to pool {route.pool!r}: no account has that pool")
        names = [a.name for a in self.accounts]
        if len(names) != len(set(names)):
            raise ValueError(f"account names must be unique, got {names}")
        return self


class TrackingConfig(_Section):
    opens: bool = True
    clicks: bool = True
    secret: str = ""  # generated into the data directory when empty
    secret_file: str = ""
    previous_secrets: list[str] = []  # still accepted, so old mail keeps working after rotation
    exclude_domains: list[str] = []
    rewrite_text_links: bool = False
    feedback_id: str = ""  # Feedback-ID header value added when the message has none


class BounceConfig(_Section):
    domain: str = ""
    local_prefix: str = "bounces"
    verp: bool = True
    # Soft bounces for one address: this many within the window suppress it (0 = never).
    soft_bounce_limit: int = Field(default=5, ge=0)
    soft_bounce_window: Duration = 7 * 86400.0
    # Suppression lifetime per reason; 0 = forever.
    hard_bounce_ttl: Duration = 90 * 86400.0
    soft_bounce_ttl: Duration = 14 * 86400.0
    complaint_ttl: Duration = 0.0
    unsubscribe_ttl: Duration = 0.0
    manual_ttl: Duration = 0.0
    # How often a process re-reads the suppression change counter to refresh its cache.
    suppression_refresh: Duration = 10.0

    def ttl_s(self, reason: str) -> float:
        """The lifetime of a suppression for this reason, in seconds; 0 = forever."""
        return float(getattr(self, f"{reason}_ttl", 0.0))


class BounceMailboxConfig(_Section):
    """An IMAP mailbox to poll for bounces, for operators whose bounces land in one."""

    host: str = ""  # empty = no polling
    port: int = Field(default=993, ge=1, le=65535)
    tls: Literal["ssl", "starttls", "none"] = "ssl"
    user: str = ""
    password: str = ""
    password_file: str = ""
    folder: str = "INBOX"
    move_to: str = ""  # processed messages go here; empty = mark them seen and leave them
    interval: Duration = 300.0
    timeout: Duration = 60.0


class DkimKeyConfig(_Section):
    domain: str
    selector: str
    key_file: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"


class DkimConfig(_Section):
    keys: list[DkimKeyConfig] = []


class RetentionConfig(_Section):
    messages_days: int = Field(30, ge=1)
    events_days: int = Field(365, ge=1)


class ServiceConfig(_Section):
    drain_timeout: Duration = 30.0  # after SIGTERM: how long roles may drain before cancel
    metrics_listen: str = ""  # HOST:PORT for /metrics without the web role; empty = none

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen(cls, value: str) -> str:
        return _check_hostport(value) if value else value


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console", "keyvalue"] = "auto"


class Config(_Section):
    data_dir: str = "var"
    smtp: SmtpConfig = SmtpConfig()
    http: HttpConfig = HttpConfig()
    database: DatabaseConfig = DatabaseConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    tracking: TrackingConfig = TrackingConfig()
    bounce: BounceConfig = BounceConfig()
    bounce_mailbox: BounceMailboxConfig = BounceMailboxConfig()
    dkim: DkimConfig = DkimConfig()
    retention: RetentionConfig = RetentionConfig()
    service: ServiceConfig = ServiceConfig()
    log: LogConfig = LogConfig()


TOP_LEVEL_SCALARS = frozenset({"data_dir"})


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read the TOML file (if any), apply environment overrides, validate."""
    env = os.environ if env is None else env
    if path is None and env.get("RELAY_CONFIG"):
        path = env["RELAY_CONFIG"]
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("--config", f"file {str(path)!r} does not exist") from None
        except OSError as e:
            raise ConfigError("--config", f"cannot read {str(path)!r}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("--config", f"{str(path)!r} is not valid TOML: {e}") from None
    _apply_env(data, env)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise _config_error(e, data) from None


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    """RELAY_SMTP__MAX_RECIPIENTS=50 sets data['smtp']['max_recipients'] = 50."""
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if len(path) == 1 and path[0] not in TOP_LEVEL_SCALARS:
            continue  # RELAY_CONFIG and other variables that are not config keys
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    ".".join(path), f"cannot override inside a {type(child).__name__}"
                )
            node = child
        node[path[-1]] = _parse_env_value(raw)


def _parse_env_value(raw: str) -> Any:
    """Read an env value as a TOML/JSON literal when it is one (lists, numbers, booleans)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _config_error(e: ValidationError, data: Mapping[str, Any]) -> ConfigError:
    err = e.errors(include_url=False)[0]
    key = _dotted(err["loc"])
    if err["type"] == "extra_forbidden":
        return ConfigError(
            key, "unknown key (check the spelling against config/relay.example.toml)"
        )
    if err["type"] == "missing":
        return ConfigError(key, "is required")
    message = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, dict):  # model-level validators get the whole section
        return ConfigError(key or "config", message)
    shown = "****" if is_secret_key(key) else repr(value)
    return ConfigError(key, f"{message} (got {shown})" if "got" not in message else message)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def is_secret_key(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    # password_file / password_env name where the secret is, they are not secrets themselves
    return any(marker in last for marker in SECRET_MARKERS) and not last.endswith(
        ("_file", "_env")
    )


def _mask_url(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1****@", url)


def masked(config: Config) -> dict[str, Any]:
    """The effective config as plain data, with every secret replaced by '****'."""

    def walk(node: Any, key: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{key}.{k}" if key else k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if isinstance(node, str) and node and is_secret_key(key):
            return "****"
        if key == "database.url" and isinstance(node, str):
            return _mask_url(node)
        return node

    result: dict[str, Any] = walk(config.model_dump(mode="json"), "")
    return result


def read_secret(
    value: str,
    file: str,
    key: str,
    env_name: str = "",
    env: Mapping[str, str] | None = None,
) -> str:
    """A secret given in a file (trailing newline stripped), else in the environment variable
    named `env_name`, else inline: the first of them that is set wins."""
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"{key}_file", f"cannot read {file!r}: {e.strerror}") from None
    if env_name:
        found = (os.environ if env is None else env).get(env_name, "")
        if not found:
            raise ConfigError(f"{key}_env", f"environment variable {env_name!r} is not set")
        return found
    return value


def account_password(account: AccountConfig, index: int) -> str:
    """A pool account's password: password_file, password_env or password."""
    key = f"delivery.accounts.{index}.password"
    return read_secret(account.password, account.password_file, key, account.password_env)
