"""Config loading: defaults, TOML, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay import config
from relay.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_defaults_are_safe() -> None:
    cfg = config.load(None, env={})
    assert cfg.smtp.listen == ["127.0.0.1:2525"]
    assert cfg.http.listen.startswith("127.0.0.1:")
    assert cfg.database.url == "sqlite+aiosqlite:///var/relay.db"
    assert cfg.delivery.mode == "sink"
    assert cfg.smtp.trusted_networks == [] and cfg.smtp.auth_require_tls


def test_example_config_is_valid_and_documents_every_key() -> None:
    example = REPO / "config" / "relay.example.toml"
    cfg = config.load(example, env={})
    text = example.read_text()
    for section, model in config.Config.model_fields.items():
        if model.annotation is str:
            assert f"{section} =" in text
            continue
        assert f"[{section}]" in text, section
        sub = getattr(cfg, section)
        for key in type(sub).model_fields:
            if key in ("accounts", "keys", "routes"):
                assert f"[[{section}.{key}]]" in text
                continue
            if key in ("shaping", "tenant_limits"):  # tables named by the operator
                assert f"[{section}.{key}." in text, f"{section}.{key} undocumented"
                continue
            assert f"{key} =" in text or f"# {key} =" in text, f"{section}.{key} undocumented"


def test_env_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[smtp]\nmax_recipients = 10\nhostname = "a.example"\n')
    env = {
        "RELAY_SMTP__MAX_RECIPIENTS": "50",
        "RELAY_SMTP__LISTEN": '["0.0.0.0:587", "[::1]:587"]',
        "RELAY_DELIVERY__MAX_AGE": "2d",
        "RELAY_TRACKING__OPENS": "false",
        "UNRELATED": "x",
    }
    cfg = config.load(path, env=env)
    assert cfg.smtp.max_recipients == 50
    assert cfg.smtp.hostname == "a.example"
    assert cfg.smtp.listen == ["0.0.0.0:587", "[::1]:587"]
    assert cfg.delivery.max_age == 2 * 86400
    assert cfg.tracking.opens is False


def test_relay_config_env_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[http]\npublic_url = "https://t.example.com/"\n')
    assert config.load(None, env={"RELAY_CONFIG": str(path)}).http.public_url == (
        "https://t.example.com"
    )


@pytest.mark.parametrize(
    ("toml", "env", "key", "words"),
    [
        ("[smtp]\nmax_recipients = 'lots'\n", {}, "smtp.max_recipients", "integer"),
        ("[smtp]\nlistne = []\n", {}, "smtp.listne", "unknown key"),
        ("[smtpp]\n", {}, "smtpp", "unknown key"),
        ("", {"RELAY_DATABASE__URL": "postgres://x/y"}, "database.url", "mysql+aiomysql"),
        ("[delivery]\nmax_age = 'forever'\n", {}, "delivery.max_age", "duration"),
        ("[delivery]\nmode = 'carrier-pigeon'\n", {}, "delivery.mode", "'sink'"),
        ("[smtp]\nlisten = ['nohost']\n", {}, "smtp.listen[0]", "HOST:PORT"),
        ("[smtp]\ntrusted_networks = ['10.0.0.0/33']\n", {}, "smtp.trusted_networks", "CIDR"),
        (
            "[[delivery.accounts]]\nname = 'a'\nhost = 'h'\nport = 70000\n",
            {},
            "delivery.accounts[0].port",
            "65535",
        ),
        ("[[delivery.accounts]]\nhost = 'h'\n", {}, "delivery.accounts[0].name", "required"),
        ("[delivery]\nmode = 'smarthost'\n", {}, "delivery", "accounts"),
        ("[smtp]\nlisten = [", {}, "--config", "not valid TOML"),
    ],
)
def test_errors_name_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], key: str, words: str
) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        config.load(path, env=env)
    assert info.value.key == key
    assert words in info.value.problem
    assert "\n" not in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml", env={})


def test_masked_hides_secrets() -> None:
    cfg = config.load(
        None,
        env={
            "RELAY_TRACKING__SECRET": "topsecret",
            "RELAY_DATABASE__URL": "mysql+aiomysql://u:hunter2@db/relay",
            "RELAY_DELIVERY__ACCOUNTS": '[{"name": "p", "host": "h", "password": "pw1"}]',
        },
    )
    shown = str(config.masked(cfg))
    assert "topsecret" not in shown and "hunter2" not in shown and "pw1" not in shown
    assert "u:****@db" in shown


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30s", 30), ("5m", 300), ("2h", 7200), ("5d", 432000), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == seconds
