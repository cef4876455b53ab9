"""Transport per tenant and per sender domain, end to end through the scheduler."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import AccountConfig, Config, DeliveryConfig, RouteConfig, load
from relay.errors import ConfigError
from relay.scheduler import Scheduler, build_transport
from relay.store import accounts
from relay.store.db import Database, utcnow
from tests import rows
from tests.peers import RecordingServer


async def test_routes_pick_pool_sink_or_default(db: Database, tmp_path: Path) -> None:
    acme = await rows.tenant(db, name="acme")
    other = await rows.tenant(db, name="other")
    m_acme = await rows.message(db, acme, mail_from="news@acme.example")
    m_b = await rows.message(db, other, mail_from="info@b.example")
    m_other = await rows.message(db, other, mail_from="info@other.example")
    await rows.delivery(db, m_acme, "x@example.com")
    await rows.delivery(db, m_b, "y@example.com")
    await rows.delivery(db, m_other, "z@example.com")
    async with RecordingServer() as main, RecordingServer() as bulk:
        config = Config(
            delivery=DeliveryConfig(
                mode="smarthost",
                sink_dir=str(tmp_path / "sink"),
                connect_timeout=2.0,
                accounts=[
                    AccountConfig(name="main", host="127.0.0.1", port=main.port, tls="none"),
                    AccountConfig(
                        name="bulk", host="127.0.0.1", port=bulk.port, tls="none", pool="bulk"
                    ),
                ],
                routes=[
                    RouteConfig(tenant="acme", transport="smarthost", pool="bulk"),
                    RouteConfig(sender_domain="B.example", transport="sink"),
                ],
            )
        )
        s = Scheduler(config, db, build_transport(config), owner="w1")
        await s.run_until_idle()
        await s.transport.close()
    assert [m.rcpt_tos for m in bulk.messages] == [["x@example.com"]]
    assert [m.rcpt_tos for m in main.messages] == [["z@example.com"]]
    assert len(list((tmp_path / "sink" / "new").iterdir())) == 1
    names = {r.name for r in await accounts.read_all(db, utcnow())}
    assert names == {"main", "bulk"}  # both pools share their state through the database


def test_route_to_a_pool_without_accounts_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(
        '[delivery]\nmode = "sink"\n[[delivery.routes]]\ntenant = "a"\ntransport = "smarthost"\n'
        'pool = "nope"\n'
    )
    with pytest.raises(ConfigError) as e:
        load(path, env={})
    assert "pool 'nope'" in str(e.value)
