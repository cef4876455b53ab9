"""Non-ASCII addresses on a real aiosmtpd server: sent with SMTPUTF8 where offered; where
not, the delivery fails with 553 5.6.7 (permanent, and not a reason to suppress the address)."""

from __future__ import annotations

from relay.store.db import Database
from tests.peers import RecordingServer
from tests.test_scheduler import Clock, _deliveries, _queue, scheduler, smarthost_config


async def test_non_ascii_recipient_uses_smtputf8(db: Database) -> None:
    await _queue(db, "jörg@example.com", "plain@example.com")
    async with RecordingServer() as mx:
        s = scheduler(smarthost_config(mx.port), db, Clock())
        await s.run_until_idle()
        await s.transport.close()
    got = {m.rcpt_tos[0]: m for m in mx.messages}
    assert set(got) == {"jörg@example.com", "plain@example.com"}
    assert "SMTPUTF8" in got["jörg@example.com"].mail_options
    assert "SMTPUTF8" not in got["plain@example.com"].mail_options
    assert {r.state for r in (await _deliveries(db)).values()} == {"delivered"}


async def test_server_without_smtputf8_fails_the_delivery(db: Database) -> None:
    await _queue(db, "jörg@example.com")
    async with RecordingServer(enable_SMTPUTF8=False) as mx:
        s = scheduler(smarthost_config(mx.port), db, Clock())
        await s.run_until_idle()
        await s.transport.close()
    assert mx.messages == []
    row = (await _deliveries(db))["jörg@example.com"]
    assert row.state == "failed"  # not "bounced": the address itself may be fine
    assert row.last_reply.startswith("553 5.6.7")
