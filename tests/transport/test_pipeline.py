"""Mail transactions on real aiosmtpd servers, with and without PIPELINING (RFC 2920): what
reaches the wire in which chunks, each recipient's reply judged on its own, refusals at
MAIL, RCPT, DATA and after the message, dot-stuffing, and the reply deadline."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiosmtplib
import pytest
import trustme

from relay.store.db import Database
from relay.transport import trouble
from relay.transport.pipeline import Transaction, message_bytes, transact
from relay.transport.session import Endpoint, Session, SessionCache
from relay.transport.trouble import Scope
from tests.peers import RecordingServer
from tests.test_scheduler import Clock, _deliveries, _queue, scheduler, smarthost_config

BODY = b"From: shop@shop.example\r\nSubject: Hi\r\n\r\nHello\r\n.dot line\r\n"
MIXED = ["ok1@example.com", "gone@example.com", "busy@example.com", "ok2@example.com"]


def _cache(timeout_s: float = 5.0) -> SessionCache:
    return SessionCache("relay.test", 5.0, timeout_s, 100, 60.0)


async def _send(
    mx: RecordingServer, recipients: list[str], timeout_s: float = 5.0
) -> tuple[Transaction, Session, SessionCache]:
    cache = _cache(timeout_s)
    session = await cache.acquire(Endpoint("127.0.0.1", mx.port))
    tx = await transact(session.client, "shop@shop.example", recipients, BODY, timeout_s=timeout_s)
    return tx, session, cache


def _transaction_chunks(mx: RecordingServer) -> list[bytes]:
    """What the server read from MAIL on (after the greeting exchange)."""
    start = next(i for i, c in enumerate(mx.chunks) if c.startswith(b"MAIL"))
    return mx.chunks[start:]


def _script_mixed(mx: RecordingServer) -> None:
    mx.script_rcpt("gone@example.com", "550 5.1.1 No such user")
    mx.script_rcpt("busy@example.com", "452 4.2.2 Mailbox full, try later")


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_mixed_recipients_each_judged(pipelining: bool) -> None:
    async with RecordingServer(pipelining=pipelining) as mx:
        _script_mixed(mx)
        tx, session, cache = await _send(mx, MIXED)
        cache.give_back(Endpoint("127.0.0.1", mx.port), session, ok=True)
        await cache.close()
    assert tx.pipelined is pipelining
    assert [r.code for r in tx.rcpts] == [250, 550, 452, 250]
    assert tx.delivered and tx.accepted() == [0, 3]
    judged = trouble.judge(tx)
    assert [reply.code for reply, _ in judged] == [250, 550, 452, 250]
    assert [t.scope if t else None for _, t in judged] == [
        None, Scope.RECIPIENT, Scope.RECIPIENT, None
    ]  # fmt: skip
    assert str(judged[1][0]) == "550 5.1.1 No such user"
    assert [m.rcpt_tos for m in mx.messages] == [["ok1@example.com", "ok2@example.com"]]
    assert mx.messages[0].data == BODY  # dot-stuffing undone by the server: as sent
    chunks = _transaction_chunks(mx)
    if pipelining:  # MAIL, four RCPTs and DATA in one write; then the message
        assert chunks[0].count(b"\r\n") == 6 and chunks[0].endswith(b"DATA\r\n")
        assert chunks[1].startswith(b"From: shop") and chunks[1].endswith(b"\r\n.\r\n")
    else:  # one command per write
        assert chunks[0].startswith(b"MAIL") and chunks[0].count(b"\r\n") == 1
        assert [c[:4] for c in chunks[1:6]] == [b"RCPT"] * 4 + [b"DATA"]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_every_recipient_refused_sends_no_message(pipelining: bool) -> None:
    async with RecordingServer(pipelining=pipelining) as mx:
        mx.script_rcpt("a@example.com", "550 5.1.1 No such user")
        mx.script_rcpt("b@example.com", "450 4.2.1 Try later")
        tx, session, cache = await _send(mx, ["a@example.com", "b@example.com"])
        assert not tx.delivered and tx.final is None
        if pipelining:  # DATA went in the same group; aiosmtpd refuses it
            assert tx.data is not None and tx.data.code == 503
        else:
            assert tx.data is None
        judged = trouble.judge(tx)
        assert [(r.code, t.scope if t else None) for r, t in judged] == [
            (550, Scope.RECIPIENT), (450, Scope.RECIPIENT)
        ]  # fmt: skip
        endpoint = Endpoint("127.0.0.1", mx.port)
        cache.give_back(endpoint, session, ok=False)  # dirty: RSET, then the same session
        again = await cache.acquire(endpoint)
        assert again is session
        tx = await transact(again.client, "s@shop.example", ["c@example.com"], BODY, timeout_s=5)
        assert tx.delivered
        await cache.close()
    assert [m.rcpt_tos for m in mx.messages] == [["c@example.com"]]
    assert mx.connections == 1


@pytest.mark.parametrize(
    ("reply", "code", "scope"),
    [
        ("451 4.3.0 Queue trouble", 451, Scope.MESSAGE),
        ("554 5.6.0 Content rejected", 554, Scope.MESSAGE),
        ("421 4.3.2 Going down", 421, Scope.SITE),
    ],
)
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_refusal_after_the_message(
    pipelining: bool, reply: str, code: int, scope: Scope
) -> None:
    async with RecordingServer(pipelining=pipelining) as mx:
        mx.script_data(reply)
        tx, session, cache = await _send(mx, ["a@example.com", "b@example.com"])
        await cache.close()
    assert tx.data is not None and tx.data.code == 354
    assert tx.final is not None and tx.final.code == code and not tx.delivered
    judged = trouble.judge(tx)
    assert [(r.code, t.scope if t else None) for r, t in judged] == [(code, scope)] * 2
    assert mx.messages == []


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_refused_sender_concerns_the_message(pipelining: bool) -> None:
    async with RecordingServer(pipelining=pipelining) as mx:
        mx.script_mail("553 5.7.1 Sender not allowed")
        tx, session, cache = await _send(mx, ["a@example.com", "b@example.com"])
        endpoint = Endpoint("127.0.0.1", mx.port)
        cache.give_back(endpoint, session, ok=False)
        again = await cache.acquire(endpoint)  # RSET: the session is in step again
        assert (
            await transact(again.client, "s@shop.example", ["c@x.example"], BODY, timeout_s=5)
        ).delivered
        await cache.close()
    assert tx.mail.code == 553 and tx.final is None
    judged = trouble.judge(tx)
    assert [str(reply) for reply, _ in judged] == ["553 5.7.1 Sender not allowed"] * 2
    assert all(found is not None and found.scope is Scope.MESSAGE for _, found in judged)
    assert [m.rcpt_tos for m in mx.messages] == [["c@x.example"]]


async def test_a_stalled_server_misses_the_deadline() -> None:
    async with RecordingServer(pipelining=True) as mx:
        mx.data_delay_s = 2.0
        with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
            await _send(mx, ["a@example.com"], timeout_s=0.5)


async def test_dropped_connection_is_site_trouble() -> None:
    async with RecordingServer(pipelining=True) as mx:
        mx.script_data("DROP")
        with pytest.raises(aiosmtplib.SMTPException) as raised:
            await _send(mx, ["a@example.com"])
    assert trouble.from_exception(raised.value).scope is Scope.SITE


def test_message_bytes_stuffs_dots_and_ends_the_data() -> None:
    assert message_bytes(b"a\n.b\r\n..c") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert message_bytes(b".\r\n") == b"..\r\n.\r\n"


async def test_control_characters_in_an_address_are_refused_before_sending() -> None:
    async with RecordingServer(pipelining=True) as mx:
        with pytest.raises(ValueError, match="cannot be sent"):
            await _send(mx, ["a@example.com\r\nRCPT TO:<x@evil.example>"])
    assert not any(c.startswith(b"MAIL") for c in mx.chunks)


async def test_scheduler_pipelines_through_the_pool(db: Database) -> None:
    """Deliveries over one pipelined session: each outcome from its own replies."""
    await _queue(db, "ok1@example.com", "gone@example.com", "busy@example.com", "ok2@example.com")
    async with RecordingServer(pipelining=True) as mx:
        _script_mixed(mx)
        s = scheduler(smarthost_config(mx.port, workers=1), db, Clock())
        await s.run_until_idle()
        await s.transport.close()
    rows_ = await _deliveries(db)
    assert {k: r.state for k, r in rows_.items()} == {
        "ok1@example.com": "delivered",
        "gone@example.com": "bounced",
        "busy@example.com": "deferred",
        "ok2@example.com": "delivered",
    }
    assert rows_["gone@example.com"].last_reply == "550 5.1.1 No such user"
    assert mx.connections == 1
    groups = [c for c in mx.chunks if c.startswith(b"MAIL")]
    assert len(groups) == 4 and all(c.endswith(b"DATA\r\n") for c in groups)


def test_pipelining_under_uvloop() -> None:
    """`relay serve` runs on uvloop, whose transports are not asyncio's classes."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> Transaction:
        async with RecordingServer(pipelining=True) as mx:
            _script_mixed(mx)
            tx, session, cache = await _send(mx, MIXED)
            again = await transact(
                session.client, "s@shop.example", ["c@x.example"], BODY, timeout_s=5
            )
            assert again.delivered
            await cache.close()
        assert len(mx.messages) == 2
        return tx

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        tx = runner.run(main())
    assert tx.pipelined and [r.code for r in tx.rcpts] == [250, 550, 452, 250]


@pytest.fixture
def ca(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> trustme.CA:
    """A test CA the client trusts (OpenSSL reads SSL_CERT_FILE when a context is made)."""
    authority = trustme.CA()
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    return authority


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.mark.parametrize("mode", ["starttls", "opportunistic", "implicit"])
async def test_pipelining_over_tls(ca: trustme.CA, mode: str) -> None:
    """The reader is swapped onto the TLS transport too (STARTTLS upgraded or implicit)."""
    context = _server_context(ca)
    if mode == "implicit":
        server = RecordingServer(pipelining=True, ssl_context=context)
    else:
        server = RecordingServer(pipelining=True, tls_context=context, require_starttls=True)
    async with server as mx:
        _script_mixed(mx)
        cache = _cache()
        endpoint = Endpoint("127.0.0.1", mx.port, mode)
        session = await cache.acquire(endpoint)
        assert session.client.get_transport_info("sslcontext") is not None
        tx = await transact(session.client, "s@shop.example", MIXED, BODY, timeout_s=5)
        cache.give_back(endpoint, session, ok=True)
        again = await cache.acquire(endpoint)
        assert again is session  # still usable after the swapped reader gave it back
        assert (
            await transact(again.client, "s@shop.example", ["c@x.example"], BODY, timeout_s=5)
        ).delivered
        cache.give_back(endpoint, again, ok=True)
        await cache.close()
    assert tx.pipelined and [r.code for r in tx.rcpts] == [250, 550, 452, 250]
    assert [m.rcpt_tos for m in mx.messages] == [
        ["ok1@example.com", "ok2@example.com"],
        ["c@x.example"],
    ]
    assert len({m.peer for m in mx.messages}) == 1  # one connection (same client port)


class _LatencyProxy:
    """A TCP proxy on loopback that delays every chunk by `one_way_s` in each direction,
    like a network path with a round trip of twice that (order kept)."""

    def __init__(self, target_port: int, one_way_s: float) -> None:
        self.target_port = target_port
        self.one_way_s = one_way_s
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> _LatencyProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._writers), return_exceptions=True)
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(due - loop.time(), 0))
                if not chunk:
                    dst.close()
                    return
                dst.write(chunk)

        sender = asyncio.create_task(deliver())
        self._tasks.add(sender)
        while chunk := await src.read(65536):
            queue.put_nowait((loop.time() + self.one_way_s, chunk))
        queue.put_nowait((loop.time() + self.one_way_s, b""))


async def _seconds_for(mx: RecordingServer, n: int) -> float:
    async with _LatencyProxy(mx.port, one_way_s=0.02) as proxy:  # a 40 ms round trip
        cache = _cache()
        endpoint = Endpoint("127.0.0.1", proxy.port)
        session = await cache.acquire(endpoint)
        started = asyncio.get_running_loop().time()
        for i in range(n):
            tx = await transact(
                session.client, "s@shop.example", [f"r{i}@x.example"], BODY, timeout_s=5
            )
            assert tx.delivered
        elapsed = asyncio.get_running_loop().time() - started
        cache.discard(session)
    return elapsed


async def test_pipelining_halves_round_trips_on_a_slow_path() -> None:
    """Over a 40 ms round trip: four round trips per message one by one, two pipelined."""
    n = 8
    async with RecordingServer(pipelining=False) as plain:
        lockstep = await _seconds_for(plain, n)
    async with RecordingServer(pipelining=True) as fast:
        pipelined = await _seconds_for(fast, n)
    assert len(plain.messages) == len(fast.messages) == n
    assert lockstep / n >= 4 * 0.04 * 0.95  # MAIL, RCPT, DATA, the message: 4 round trips
    # MAIL+RCPT+DATA together, then the message: 2 (≈ 90 ms against ≈ 170 ms measured).
    assert pipelined < 0.7 * lockstep
