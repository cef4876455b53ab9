"""Traffic shaping per destination: a DNS responder and real SMTP servers on loopback."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime

from sqlalchemy import select

from relay.config import Config, DeliveryConfig, ShapeConfig
from relay.model import WAIT_DETAIL, Delivery, SmtpReply
from relay.scheduler import Scheduler, build_transport
from relay.store.db import Database
from relay.store.tables import deliveries
from relay.transport.mx import DirectTransport, MxResolver
from relay.transport.session import SessionCache
from relay.transport.shaping import DEFAULT, PROVIDERS, Shape, Shaper, is_throttle, shapes
from tests import rows
from tests.peers import RecordingServer, free_port
from tests.transport.dnsstub import DnsStub


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


RECORDS = {
    # Two customer domains hosted by Google, one elsewhere.
    ("a.example", "MX"): ["5 aspmx.l.google.com.", "10 alt1.aspmx.l.google.com."],
    ("b.example", "MX"): ["1 smtp.google.com."],
    ("c.example", "MX"): ["10 mx.c.example."],
    ("d.example", "MX"): ["10 mx.c.example."],  # same host set as c.example
    ("aspmx.l.google.com", "A"): ["127.0.0.1"],
    ("alt1.aspmx.l.google.com", "A"): ["127.0.0.1"],
    ("smtp.google.com", "A"): ["127.0.0.1"],
    ("mx.c.example", "A"): ["127.0.0.1"],
}
BODY = b"Subject: x\r\n\r\nhi\r\n"


def _delivery(i: int, recipient: str) -> Delivery:
    domain = recipient.rpartition("@")[2]
    return Delivery(i, 1, 1, recipient, domain, "s@shop.example", 0, datetime(2026, 1, 1))


def _transport(stub: DnsStub, port: int, shaper: Shaper, cap: int = 100) -> DirectTransport:
    resolver = MxResolver(["127.0.0.1"], stub.port, 2.0, rng=random.Random(1))
    cache = SessionCache("relay.test", 2.0, 5.0, cap, 60.0)
    return DirectTransport(resolver, cache, port, shaper)


def _shaper(shape: Shape, clock: Clock | None = None, **kw: float) -> Shaper:
    providers = {"gmail": (PROVIDERS["gmail"][0], shape)}
    return Shaper(providers, shape, clock=clock or Clock(), rng=random.Random(1), **kw)  # type: ignore[arg-type]


def test_destinations_are_keyed_on_the_mx_host_set() -> None:
    shaper = Shaper(*shapes(DeliveryConfig()))
    a = shaper.destination(["aspmx.l.google.com", "alt1.aspmx.l.google.com"])
    b = shaper.destination(["smtp.google.com"])
    c = shaper.destination(["mx.c.example"])
    d = shaper.destination(["MX.C.EXAMPLE."])
    assert a is b and a.key == "gmail" and a.shape == PROVIDERS["gmail"][1]
    assert c is d and c.key == "mx:mx.c.example" and c.shape == DEFAULT
    assert shaper.destination(["x.mail.protection.outlook.com"]).key == "outlook"
    assert shaper.destination(["mta5.am0.yahoodns.net"]).key == "yahoo"
    assert shaper.destination(["mx01.mail.icloud.com"]).key == "icloud"
    # A host set that only partly belongs to a provider is its own destination.
    assert shaper.destination(["aspmx.l.google.com", "mx.c.example"]).key.startswith("mx:")
    assert shaper.destination(["notgoogle.com"]).key == "mx:notgoogle.com"


def test_config_overrides_provider_defaults_and_adds_providers() -> None:
    config = DeliveryConfig(
        shaping={
            "gmail": ShapeConfig(max_connections=3),
            "corp": ShapeConfig(mx_suffixes=["corp.example"], messages_per_second=1),
            "default": ShapeConfig(max_connections=4),
        }
    )
    providers, default = shapes(config)
    gmail = providers["gmail"][1]
    assert gmail.max_connections == 3
    assert gmail.messages_per_second == PROVIDERS["gmail"][1].messages_per_second  # kept
    assert providers["corp"] == (("corp.example",), Shape(0, 0, 1.0, 0))
    assert default.max_connections == 4
    shaper = Shaper(providers, default)
    assert shaper.destination(["mx1.corp.example"]).key == "corp"


def test_throttle_replies_use_the_bounce_reasons() -> None:
    assert is_throttle(SmtpReply(421, "Too many concurrent connections from your IP", "4.7.0"))
    assert is_throttle(SmtpReply(451, "Rate limit exceeded, try again later", "4.7.1"))
    gmail = (
        "Our system has detected an unusual rate of unsolicited mail originating from your IP"
        " address. To protect our users from spam, mail sent from your IP address has been"
        " temporarily rate limited."
    )
    assert is_throttle(SmtpReply(421, gmail, "4.7.28"))
    assert not is_throttle(SmtpReply(550, "Too many connections", "5.7.1"))  # not temporary
    assert not is_throttle(SmtpReply(452, "Mailbox full", "4.2.2"))


def test_reputation_rate_limits_are_throttles() -> None:
    # Outlook.com's RP-00x and Microsoft's 4.7.650 are "badreputation": still slow down.
    outlook = "RP-001 (BAY004-MC1F24) Unfortunately, some messages from 192.0.2.1 weren't sent."
    assert is_throttle(SmtpReply(421, outlook, "4.7.0"))
    assert is_throttle(SmtpReply(451, "rate limited due to IP reputation (S775)", "4.7.650"))
    assert not is_throttle(SmtpReply(550, "SC-001 Mail rejected for policy reasons", "5.7.1"))


async def test_max_connections_shared_by_domains_of_one_provider() -> None:
    async with DnsStub(RECORDS) as stub, RecordingServer() as mx:
        mx.data_delay_s = 0.1
        transport = _transport(stub, mx.port, _shaper(Shape(max_connections=2), max_wait_s=10))
        recipients = [f"u{i}@{'a' if i % 2 else 'b'}.example" for i in range(8)]
        outs = await asyncio.gather(
            *(transport.send(_delivery(i, r), "s@x", BODY) for i, r in enumerate(recipients))
        )
        await transport.close()
    assert all(o.delivered for o in outs)
    assert mx.connections == 2  # 8 messages, two domains, one budget of 2 connections


async def test_connections_busy_too_long_postpones_without_an_attempt() -> None:
    async with DnsStub(RECORDS) as stub, RecordingServer() as mx:
        mx.data_delay_s = 0.5
        transport = _transport(stub, mx.port, _shaper(Shape(max_connections=1), max_wait_s=0.1))
        first, second = await asyncio.gather(
            transport.send(_delivery(1, "x@c.example"), "s@x", BODY),
            transport.send(_delivery(2, "y@d.example"), "s@x", BODY),
        )
        await transport.close()
    assert first.delivered
    assert WAIT_DETAIL in second.details and second.retry_after_s is not None
    assert second.reply.code == 451 and "mx:mx.c.example" in second.reply.text
    assert len(mx.messages) == 1


async def test_messages_per_second_spreads_sends_and_postpones_beyond_the_wait() -> None:
    clock = Clock()  # frozen: every slot is computed from the same instant
    shaper = _shaper(Shape(messages_per_second=2), clock, max_wait_s=0.0)
    dest = shaper.destination(["mx.c.example"])
    assert await shaper.admit(dest, 1) is None
    shaper.release(dest)
    later = await shaper.admit(dest, 2)
    latest = await shaper.admit(dest, 3)
    assert later is not None and later.wait_s == 0.5  # type: ignore[union-attr]
    assert latest is not None and latest.wait_s == 1.0  # type: ignore[union-attr]
    clock.t += 0.5
    assert await shaper.admit(dest, 2) is None  # its reserved slot, not the end of the line
    shaper.release(dest)

    async with DnsStub(RECORDS) as stub, RecordingServer() as mx:
        waiting = _shaper(Shape(messages_per_second=20), max_wait_s=5.0)
        waiting.clock = asyncio.get_running_loop().time
        transport = _transport(stub, mx.port, waiting)
        loop = asyncio.get_running_loop()
        started = loop.time()
        outs = await asyncio.gather(
            *(transport.send(_delivery(i, f"u{i}@c.example"), "s@x", BODY) for i in range(10))
        )
        elapsed = loop.time() - started
        await transport.close()
    assert all(o.delivered for o in outs)
    assert elapsed >= 9 / 20 - 0.05  # ten messages at 20/s cannot take less than 0.45 s


async def test_messages_and_new_connections_per_destination() -> None:
    async with DnsStub(RECORDS) as stub, RecordingServer() as mx:
        shaper = _shaper(Shape(messages_per_connection=2), max_wait_s=0.5)
        transport = _transport(stub, mx.port, shaper, cap=100)
        for i in range(5):
            assert (await transport.send(_delivery(i, f"u{i}@c.example"), "s@x", BODY)).delivered
        await transport.close()
        assert mx.connections == 3  # 2 + 2 + 1: the destination's cap, not the global 100

        clock = Clock()
        once = _shaper(Shape(connections_per_minute=1, messages_per_connection=1), clock)
        transport = _transport(stub, mx.port, once)
        assert (await transport.send(_delivery(10, "v@c.example"), "s@x", BODY)).delivered
        held = await transport.send(_delivery(11, "w@c.example"), "s@x", BODY)
        assert WAIT_DETAIL in held.details and held.retry_after_s == 60.0
        clock.t += 61
        assert (await transport.send(_delivery(11, "w@c.example"), "s@x", BODY)).delivered
        await transport.close()


async def test_throttle_backs_off_then_recovers_gradually() -> None:
    clock = Clock()
    shaper = _shaper(
        Shape(max_connections=8, messages_per_second=8),
        clock,
        throttle_backoff_s=60,
        throttle_recovery_s=300,
    )
    async with DnsStub(RECORDS) as stub, RecordingServer() as mx:
        transport = _transport(stub, mx.port, shaper)
        mx.script_data("451 4.7.1 Rate limit exceeded, try again later")
        first = await transport.send(_delivery(1, "u1@c.example"), "s@x", BODY)
        assert first.reply.code == 451 and WAIT_DETAIL not in first.details
        dest = shaper.destination(["mx.c.example"])
        assert dest.level == 1 and dest.effective().max_connections == 4
        held = await transport.send(_delivery(2, "u2@d.example"), "s@x", BODY)
        assert WAIT_DETAIL in held.details and held.details[WAIT_DETAIL] == "destination throttled"
        assert 60 <= (held.retry_after_s or 0) <= 61
        assert len(mx.messages) == 0

        mx.script_data("421 4.7.0 Too many connections from your IP")
        clock.t += 61
        again = await transport.send(_delivery(2, "u2@d.example"), "s@x", BODY)
        assert again.reply.code == 421
        assert dest.level == 2 and dest.effective().messages_per_second == 2
        assert dest.paused_until == clock.t + 120  # the pause doubles

        clock.t += 300  # quiet for one recovery period: one step back up
        assert (await transport.send(_delivery(3, "u3@c.example"), "s@x", BODY)).delivered
        assert dest.level == 1
        clock.t += 300
        assert (await transport.send(_delivery(4, "u4@c.example"), "s@x", BODY)).delivered
        assert dest.level == 0 and dest.effective() == dest.shape
        await transport.close()


async def test_dead_destination_defers_its_queue_then_probes_again() -> None:
    clock = Clock()
    shaper = _shaper(Shape(), clock, dead_after=2, dead_s=600)
    port = free_port()
    async with DnsStub(RECORDS) as stub:
        transport = _transport(stub, port, shaper)
        for i in range(2):
            out = await transport.send(_delivery(i, f"u{i}@c.example"), "s@x", BODY)
            assert out.reply.code == 451 and "cannot connect" in out.reply.text
        dead = await transport.send(_delivery(5, "u5@d.example"), "s@x", BODY)
        assert dead.reply.code == 451 and "suspended" in dead.reply.text
        assert dead.remote_host is None and dead.retry_after_s == 600  # nothing was tried
        assert WAIT_DETAIL not in dead.details  # counts as an attempt, like Postfix
        other = await transport.send(_delivery(6, "u6@a.example"), "s@x", BODY)
        assert "suspended" not in other.reply.text  # other destinations are not affected

        mx = RecordingServer()
        mx._controller.port = port  # noqa: SLF001 - the dead site comes back on its port
        await asyncio.to_thread(mx._controller.start)  # noqa: SLF001
        try:
            clock.t += 601
            back = await transport.send(_delivery(5, "u5@d.example"), "s@x", BODY)
            assert back.delivered
            assert shaper.destination(["mx.c.example"]).failures == 0
        finally:
            await transport.close()
            await asyncio.to_thread(mx.stop)


async def test_scheduler_puts_shaped_deliveries_back_untried(db: Database) -> None:
    msg = await rows.message(db, await rows.tenant(db))
    ids = [await rows.delivery(db, msg, f"u{i}@c.example") for i in range(3)]
    async with DnsStub(RECORDS) as stub, RecordingServer() as mx:
        config = Config(
            delivery=DeliveryConfig(
                mode="direct",
                mx_port=mx.port,
                dns_servers=["127.0.0.1"],
                dns_port=stub.port,
                shaping={"default": ShapeConfig(messages_per_second=0.5)},
                shaping_max_wait=0.0,
            )
        )
        s = Scheduler(config, db, build_transport(config), owner="w1")
        await s.run_until_idle()
        await s.transport.close()
    assert len(mx.messages) == 1
    async with db.read() as conn:
        found = list(await conn.execute(select(deliveries).where(deliveries.c.id.in_(ids))))
    waiting = sorted((r for r in found if r.state != "delivered"), key=lambda r: r.next_attempt_at)
    assert [(r.state, r.attempts) for r in waiting] == [("queued", 0), ("queued", 0)]
    gap = (waiting[1].next_attempt_at - waiting[0].next_attempt_at).total_seconds()
    assert 1.5 <= gap <= 2.5  # one every two seconds, each in its own slot
