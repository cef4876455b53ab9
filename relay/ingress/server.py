"""The SMTP role: listeners from [smtp], serving until `stopping` is set, then draining.

Input: Config, Database, the stopping event. Output: none. Side effects: listens on
smtp.listen (STARTTLS when a cert is configured) and smtp.tls_listen (implicit TLS); on stop
refuses new connections with 421, lets sessions in DATA finish (bounded), then returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import ssl

from relay import log, reloading
from relay.config import Config, split_hostport
from relay.errors import ConfigError, NotFound
from relay.ingress import replies
from relay.ingress.auth import Authenticator, AuthThrottle
from relay.ingress.handler import Shared, SubmissionSMTP
from relay.ingress.tls import server_context
from relay.intake import Intake, Settings
from relay.render import collect_links, stored_plan
from relay.render.tokens import load_keyring
from relay.store.db import Database
from relay.store.tenants import get_tenant

logger = log.get("relay.ingress")
DRAIN_S = 30.0  # default of service.drain_timeout


async def build_shared(config: Config, db: Database) -> Shared:
    smtp = config.smtp
    trusted_tenant = None
    if smtp.trusted_networks:
        if not smtp.trusted_tenant:
            raise ConfigError("smtp.trusted_tenant", "required when smtp.trusted_networks is set")
        try:
            trusted_tenant = await get_tenant(db, smtp.trusted_tenant)
        except NotFound as e:
            raise ConfigError("smtp.trusted_tenant", str(e)) from None
    return Shared(
        config=smtp,
        db=db,
        intake=Intake(
            db,
            Settings(smtp.hostname, smtp.campaign_header),
            collect_links=functools.partial(collect_links, config=config),
            stored_plan=functools.partial(stored_plan, config=config),
        ),
        authenticator=Authenticator(db),
        throttle=AuthThrottle(
            smtp.auth_failures_before_delay,
            smtp.auth_failures_before_block,
            smtp.auth_block_time,
        ),
        bounce_domain=config.bounce.domain.lower().rstrip("."),
        trusted_tenant=trusted_tenant,
        trusted=[ipaddress.ip_network(n, strict=False) for n in smtp.trusted_networks],
        keyring=load_keyring(config),
        bounce=config.bounce,
    )


async def start(config: Config, db: Database) -> tuple[Shared, list[asyncio.Server]]:
    """Bind every listener; returns the shared state and the servers (for tests and run)."""
    shared = await build_shared(config, db)
    smtp = config.smtp
    context: ssl.SSLContext | None = None
    if smtp.tls_cert:
        context = server_context(smtp.tls_cert, smtp.tls_key)
    loop = asyncio.get_running_loop()

    def factory(tls_context: ssl.SSLContext | None) -> SubmissionSMTP:
        return SubmissionSMTP(
            shared,
            hostname=smtp.hostname,
            data_size_limit=shared.config.max_message_size,  # reloadable
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=tls_context,
            timeout=smtp.idle_timeout,
            auth_require_tls=False,  # we apply the rule ourselves (loopback is exempt)
            loop=loop,
        )

    servers: list[asyncio.Server] = []
    try:
        for address in smtp.listen:
            host, port = split_hostport(address)
            servers.append(await loop.create_server(lambda: factory(context), host, port))
        for address in smtp.tls_listen:
            host, port = split_hostport(address)
            servers.append(await loop.create_server(lambda: factory(None), host, port, ssl=context))
    except OSError as e:
        for server in servers:
            server.close()
        raise ConfigError("smtp.listen", f"cannot listen: {e.strerror or e}") from None
    logger.info("ingress.listening", listen=list(smtp.listen), tls_listen=list(smtp.tls_listen))
    return shared, servers


async def stop(shared: Shared, servers: list[asyncio.Server], drain_s: float = DRAIN_S) -> None:
    """Refuse new sessions (421), send idle ones away (421), wait up to `drain_s` for
    sessions in DATA to get their reply, then close everything."""
    shared.stopping = True
    for session in list(shared.sessions):
        if not session.in_data:
            _send_away(session)
    if shared.in_data:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(shared.no_data.wait(), drain_s)
    for server in servers:
        server.close()
    for session in list(shared.sessions):
        _send_away(session)  # answered during the drain (421); still in DATA past it: cut
    for server in servers:
        await server.wait_closed()
    await shared.intake.close()
    logger.info("ingress.stopped")


def _send_away(session: SubmissionSMTP) -> None:
    transport = session.transport
    if transport is None or transport.is_closing():
        return
    if not session.in_data:  # RFC 5321 3.8: 421 may come at any time; the client retries
        transport.write(replies.SHUTTING_DOWN.encode() + b"\r\n")  # type: ignore[attr-defined]
    transport.close()


def reload(shared: Shared, config: Config) -> None:
    """SIGHUP (relay.reloading): limits and trusted networks apply to the next command."""
    shared.config = config.smtp
    shared.trusted = [ipaddress.ip_network(n, strict=False) for n in config.smtp.trusted_networks]
    shared.trusted_ips.clear()


async def run(config: Config, db: Database, stopping: asyncio.Event) -> None:
    shared, servers = await start(config, db)
    reloading.on_reload(functools.partial(reload, shared))
    try:
        await stopping.wait()
    finally:
        await stop(shared, servers, config.service.drain_timeout)
