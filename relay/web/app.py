"""The web role: tracking endpoints, the REST API, health and metrics on one Starlette app.

Input: `Config` and `Database`. Output: `create_app` (an ASGI app; tests drive it directly)
and `run`, which serves it with uvicorn (httptools, uvloop) on http.listen until `stopping`
is set, then flushes the tracking event buffer and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from relay import log as relay_log
from relay import metrics
from relay.config import Config
from relay.errors import ConfigError, SchemaError, StoreUnavailable
from relay.intake import Intake, Settings
from relay.render import collect_links, stored_plan
from relay.render.tokens import Keyring, load_keyring
from relay.store.db import Database, check_schema, ping, utcnow
from relay.web import tracking
from relay.web.api import accounts as api_accounts
from relay.web.api import campaigns as api_campaigns
from relay.web.api import messages as api_messages
from relay.web.api import openapi as api_openapi
from relay.web.api import send as api_send
from relay.web.api import stats as api_stats
from relay.web.api import suppressions as api_suppressions
from relay.web.api import webhooks as api_webhooks
from relay.web.errors import EXCEPTION_HANDLERS, error_response
from relay.web.events import EventBuffer
from relay.web.pixel import PixelFastPath
from relay.web.state import Lru, WebState, state_of
from relay.webhooks import Dispatcher

log = relay_log.get(__name__)

API_ROUTES = [
    *api_stats.ROUTES,
    *api_campaigns.ROUTES,
    *api_send.ROUTES,
    *api_messages.ROUTES,
    *api_suppressions.ROUTES,
    *api_webhooks.ROUTES,
    *api_accounts.ROUTES,
    *api_openapi.ROUTES,
]


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database answers and its schema is at this code's head."""
    engine = state_of(request).db.engine
    try:
        await ping(engine)
        await check_schema(engine)
    except (StoreUnavailable, SchemaError) as e:
        return error_response(503, "not_ready", str(e))
    return JSONResponse({"status": "ready"})


async def prometheus(request: Request) -> Response:
    metrics.event_buffer_size.set(len(state_of(request).buffer))
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _api_not_found(_request: Request) -> Response:
    return error_response(404, "not_found", "no such API endpoint")


def create_app(
    config: Config,
    db: Database,
    keyring: Keyring | None = None,
    clock: Callable[[], datetime] = utcnow,
    buffer: EventBuffer | None = None,
) -> Starlette:
    """The ASGI app. Its lifespan runs the event buffer's flush loop and flushes on exit."""
    http = config.http
    buffer = buffer or EventBuffer(
        db,
        max_size=http.event_buffer_size,
        batch_size=http.event_batch_size,
        flush_interval_s=http.event_flush_interval,
        machine_click_window_s=http.machine_click_window,
    )
    state = WebState(
        config=config,
        db=db,
        keyring=keyring or load_keyring(config),
        buffer=buffer,
        # POST /api/v1/messages goes through the same intake as SMTP.
        intake=Intake(
            db,
            Settings(config.smtp.hostname, config.smtp.campaign_header),
            collect_links=functools.partial(collect_links, config=config),
            stored_plan=functools.partial(stored_plan, config=config),
        ),
        clock=clock,
        links=Lru(http.link_cache_size),
        delivery_messages=Lru(http.link_cache_size),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        flusher = asyncio.create_task(buffer.run(stop), name="relay.web.events")
        dispatcher = Dispatcher(db, clock)
        hooks = asyncio.create_task(dispatcher.run(stop), name="relay.webhooks")
        try:
            yield
        finally:
            stop.set()
            await flusher  # its `finally` writes what is left (and queues their webhooks)
            await hooks
            await dispatcher.flush(config.service.drain_timeout)
            await state.intake.close()

    routes = [
        *tracking.ROUTES,
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Mount("/api/v1", routes=[*API_ROUTES, Route("/{rest:path}", _api_not_found)]),
    ]
    # The open pixel skips routing and Starlette's request machinery (relay.web.pixel).
    pixel = Middleware(
        PixelFastPath,
        keyring=state.keyring,
        buffer=buffer,
        clock=clock,
        opens=config.tracking.opens,
        store_ip=http.store_ip,
    )
    app = Starlette(
        routes=routes,
        middleware=[pixel],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.relay = state
    return app


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = asyncio.Event()  # set once the app's startup has run and sockets serve

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()  # relay.service owns SIGTERM/SIGINT

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.up.set()


def bind(listen: str) -> socket.socket:
    """The listening socket; a bad or busy address is a ConfigError naming http.listen."""
    host, port = _host_port(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as e:
        raise ConfigError("http.listen", f"cannot listen on {listen!r}: {e.strerror}") from None


async def run(
    config: Config, db: Database, stopping: asyncio.Event, *, sock: socket.socket | None = None
) -> None:
    """Serve until `stopping`; then stop accepting, finish requests, flush events."""
    app = create_app(config, db)
    sock = sock or bind(config.http.listen)
    server = _Server(
        uvicorn.Config(
            app,
            loop="none",  # the service's loop (uvloop when installed there)
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="relay.web.uvicorn")
    # The service reports READY once every role waits on `stopping`: for this one, only after
    # uvicorn has run the app's startup (the socket alone is bound before it).
    up = asyncio.create_task(server.up.wait())
    await asyncio.wait({serving, up}, return_when=asyncio.FIRST_COMPLETED)
    up.cancel()
    host, port = sock.getsockname()[:2]
    log.info("web.listening", address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stop_wait.cancel()
        await serving  # graceful: finishes requests, then the lifespan flushes events
        sock.close()
    log.info("web.stopped")
