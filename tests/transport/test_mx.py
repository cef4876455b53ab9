"""Direct MX delivery against a real DNS responder and real SMTP servers on loopback."""

from __future__ import annotations

import random
from datetime import datetime

from relay.model import Delivery
from relay.transport.mx import DirectTransport, DnsFailure, MxResolver
from relay.transport.session import SessionCache
from tests.peers import RecordingServer, free_port
from tests.transport.dnsstub import DnsStub


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _delivery(recipient: str) -> Delivery:
    domain = recipient.rpartition("@")[2]
    return Delivery(1, 1, 1, recipient, domain, "s@shop.example", 0, datetime(2026, 1, 1))


def _resolver(stub: DnsStub, clock: Clock | None = None, seed: int = 1) -> MxResolver:
    return MxResolver(
        ["127.0.0.1"], stub.port, 2.0, clock=clock or Clock(), rng=random.Random(seed)
    )


def _transport(resolver: MxResolver, port: int) -> DirectTransport:
    return DirectTransport(resolver, SessionCache("relay.test", 2.0, 5.0, 100, 60.0), port)


RECORDS = {
    ("example.com", "MX"): [
        "20 backup.example.com.",
        "10 mx-a.example.com.",
        "10 mx-b.example.com.",
    ],
    ("mx-a.example.com", "A"): ["127.0.0.1"],
    ("mx-b.example.com", "A"): ["127.0.0.1"],
    ("backup.example.com", "A"): ["127.0.0.1"],
    ("implicit.example", "A"): ["127.0.0.1"],
    ("nullmx.example", "MX"): ["0 ."],
}


async def test_priority_order_random_among_equals_and_ttl_cache() -> None:
    async with DnsStub(RECORDS, ttl=60) as stub:
        clock = Clock()
        resolver = _resolver(stub, clock)
        firsts = set()
        for _ in range(20):
            hosts = await resolver.hosts("example.com")
            assert hosts[-1] == "backup.example.com"
            assert set(hosts[:2]) == {"mx-a.example.com", "mx-b.example.com"}
            firsts.add(hosts[0])
        assert firsts == {"mx-a.example.com", "mx-b.example.com"}
        assert stub.queries[("example.com", "MX")] == 1  # cached within the TTL
        clock.t += 61
        await resolver.hosts("example.com")
        assert stub.queries[("example.com", "MX")] == 2


async def test_delivers_to_mx_and_implicit_mx() -> None:
    async with DnsStub(RECORDS) as stub, RecordingServer() as mx:
        transport = _transport(_resolver(stub), mx.port)
        ok = await transport.send(
            _delivery("a@example.com"), "s@shop.example", b"Subject: x\r\n\r\nhi\r\n"
        )
        implicit = await transport.send(
            _delivery("b@implicit.example"), "s@shop.example", b"Subject: y\r\n\r\nhi\r\n"
        )
        await transport.close()
    assert ok.delivered and ok.remote_host in ("mx-a.example.com", "mx-b.example.com")
    assert implicit.delivered and implicit.remote_host == "implicit.example"
    assert [m.rcpt_tos for m in mx.messages] == [["a@example.com"], ["b@implicit.example"]]


async def test_null_mx_nxdomain_hard_servfail_soft() -> None:
    async with DnsStub(RECORDS, nxdomain={"nope.example"}, servfail={"broken.example"}) as stub:
        transport = _transport(_resolver(stub), free_port())
        null = await transport.send(_delivery("a@nullmx.example"), "s@x", b"x")
        nx = await transport.send(_delivery("a@nope.example"), "s@x", b"x")
        broken = await transport.send(_delivery("a@broken.example"), "s@x", b"x")
        await transport.close()
    assert (null.reply.code, null.reply.enhanced) == (556, "5.1.10")
    assert (nx.reply.code, nx.reply.enhanced) == (550, "5.1.2")
    assert broken.reply.is_transient and broken.reply.enhanced == "4.4.3"


async def test_unreachable_mx_defers() -> None:
    async with DnsStub(RECORDS) as stub:
        transport = _transport(_resolver(stub), free_port())
        out = await transport.send(_delivery("a@example.com"), "s@x", b"x")
        await transport.close()
    assert not out.delivered and out.reply.code == 451
    assert out.remote_host == "backup.example.com"  # tried every MX, the backup last


async def test_resolver_errors_are_typed() -> None:
    async with DnsStub({}, nxdomain={"gone.example"}) as stub:
        resolver = _resolver(stub)
        try:
            await resolver.hosts("gone.example")
        except DnsFailure as e:
            assert e.reply.code == 550
        else:
            raise AssertionError("NXDOMAIN must fail")
