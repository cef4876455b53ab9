"""GET /api/v1/openapi.json: the OpenAPI 3.1 document of everything the web role serves.

The REST API (under /api/v1, bearer key) from a compact table; the tracking endpoints,
health and metrics (no key) written out below it. tests/web/test_openapi.py checks that it
lists exactly the routes the app serves and that schemathesis finds no server errors.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from relay.store.webhooks import EVENT_TYPES

_Q = {"in": "query", "required": False}
_TIME = {"type": "string", "format": "date-time"}
PARAMS: dict[str, dict[str, Any]] = {
    "from": {**_Q, "name": "from", "schema": _TIME},
    "to": {**_Q, "name": "to", "schema": _TIME},
    "tenant": {
        **_Q,
        "name": "tenant",
        "schema": {"type": "integer", "minimum": 1},
        "description": "admin keys only: limit to one tenant",
    },
    "limit": {**_Q, "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    "cursor": {**_Q, "name": "cursor", "schema": {"type": "string"}},
    "email_q": {**_Q, "name": "email", "schema": {"type": "string", "format": "email"}},
    "campaign_q": {**_Q, "name": "campaign", "schema": {"type": "string"}},
    "status": {
        **_Q,
        "name": "status",
        "schema": {
            "type": "string",
            "enum": [
                "queued",
                "deferred",
                "sending",
                "delivered",
                "bounced",
                "failed",
                "suppressed",
                "cancelled",
                "held",
            ],
        },
    },
    "bucket": {**_Q, "name": "bucket", "schema": {"type": "string", "enum": ["hour", "day"]}},
    "format": {**_Q, "name": "format", "schema": {"type": "string", "enum": ["csv"]}},
    "id_q": {
        "in": "query",
        "required": True,
        "name": "id",
        "schema": {"type": "integer", "minimum": 1},
    },
    "email_required": {
        "in": "query",
        "required": True,
        "name": "email",
        "schema": {"type": "string", "format": "email"},
    },
    "campaign": {
        "in": "path",
        "required": True,
        "name": "campaign",
        "schema": {"type": "string"},
        "description": "the X-Campaign-ID name",
    },
    "message": {"in": "path", "required": True, "name": "id", "schema": {"type": "integer"}},
    "email": {
        "in": "path",
        "required": True,
        "name": "email",
        "schema": {"type": "string", "format": "email"},
    },
    "account": {"in": "path", "required": True, "name": "name", "schema": {"type": "string"}},
}

_OBJ = {"type": "object"}
_RCPT = ("to", "cc", "bcc")
_PAGE = {
    "type": "object",
    "required": ["items", "next_cursor"],
    "properties": {
        "items": {"type": "array", "items": _OBJ},
        "next_cursor": {"type": ["string", "null"]},
    },
}
_BODIES = {
    "suppression": {
        "type": "object",
        "required": ["email"],
        "properties": {
            "email": {"type": "string", "format": "email"},
            "reason": {
                "type": "string",
                "enum": ["hard_bounce", "soft_bounce", "complaint", "unsubscribe", "manual"],
            },
            "expires_at": _TIME,
        },
    },
    "webhook": {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "events": {
                "type": "array",
                "items": {
                    "type": "string",
                    "enum": sorted(EVENT_TYPES),
                },
            },
        },
    },
    "pause": {"type": "object", "properties": {"reason": {"type": "string"}}},
    "send": {
        "type": "object",
        "required": ["from"],
        "additionalProperties": False,
        "properties": {
            "from": {"type": "string", "description": "'a@example.com' or 'Name <a@example.com>'"},
            **{f: {"type": ["string", "array"], "items": {"type": "string"}} for f in _RCPT},
            "subject": {"type": "string"},
            "text": {"type": "string"},
            "html": {"type": "string"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "campaign": {"type": "string", "description": "as X-Campaign-ID"},
        },
    },
}

# (method, path, summary, parameter names, body schema name, response schema)
ENDPOINTS: list[tuple[str, str, str, list[str], str | None, dict[str, Any]]] = [
    (
        "get",
        "/stats/overview",
        "Tenant stats over a time range",
        ["from", "to", "tenant"],
        None,
        _OBJ,
    ),
    ("get", "/campaigns", "Campaigns with stats", ["tenant", "limit", "cursor"], None, _PAGE),
    ("get", "/campaigns/{campaign}", "One campaign's stats", ["campaign", "tenant"], None, _OBJ),
    (
        "get",
        "/campaigns/{campaign}/timeline",
        "Stats per hour or day",
        ["campaign", "tenant", "bucket"],
        None,
        _OBJ,
    ),
    ("get", "/campaigns/{campaign}/links", "Clicks per URL", ["campaign", "tenant"], None, _OBJ),
    (
        "post",
        "/campaigns/{campaign}/pause",
        "Hold unsent deliveries",
        ["campaign", "tenant"],
        None,
        _OBJ,
    ),
    (
        "post",
        "/campaigns/{campaign}/resume",
        "Queue held deliveries",
        ["campaign", "tenant"],
        None,
        _OBJ,
    ),
    (
        "post",
        "/campaigns/{campaign}/cancel",
        "Cancel unsent deliveries",
        ["campaign", "tenant"],
        None,
        _OBJ,
    ),
    ("post", "/messages", "Send a message (202: queued)", ["tenant"], "send", _OBJ),
    (
        "get",
        "/messages",
        "Search messages (newest first)",
        ["campaign_q", "email_q", "status", "from", "to", "tenant", "limit", "cursor"],
        None,
        _PAGE,
    ),
    (
        "get",
        "/messages/{id}",
        "A message with deliveries and events",
        ["message", "tenant"],
        None,
        _OBJ,
    ),
    (
        "post",
        "/messages/{id}/release",
        "Send a held message (tenant or credential on hold)",
        ["message", "tenant"],
        None,
        _OBJ,
    ),
    ("get", "/recipients/{email}", "An address's history", ["email", "tenant"], None, _OBJ),
    (
        "get",
        "/recipients/{email}/summary",
        "An address's engagement",
        ["email", "tenant"],
        None,
        _OBJ,
    ),
    (
        "get",
        "/suppressions",
        "Suppression list",
        ["email_q", "tenant", "limit", "cursor"],
        None,
        _PAGE,
    ),
    ("post", "/suppressions", "Suppress an address", ["tenant"], "suppression", _OBJ),
    ("delete", "/suppressions", "Remove a suppression", ["email_required", "tenant"], None, _OBJ),
    (
        "get",
        "/suppressions/export",
        "Suppression list as CSV",
        ["format", "tenant"],
        None,
        {"type": "string"},
    ),
    ("get", "/webhooks", "Registered webhooks", ["tenant", "limit", "cursor"], None, _PAGE),
    ("post", "/webhooks", "Register a webhook (secret shown once)", ["tenant"], "webhook", _OBJ),
    ("delete", "/webhooks", "Delete a webhook", ["id_q", "tenant"], None, _OBJ),
    ("get", "/accounts", "Pool accounts (admin)", [], None, _PAGE),
    ("post", "/accounts/{name}/pause", "Pause a pool account (admin)", ["account"], "pause", _OBJ),
    ("post", "/accounts/{name}/resume", "Resume a pool account (admin)", ["account"], None, _OBJ),
]

_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            }
        }
    },
}


API = "/api/v1"


def _operation_id(method: str, path: str) -> str:
    words = path.strip("/").replace("{", "").replace("}", "").replace("/", "_").replace(".", "_")
    return f"{method}_{words}"


def _answer(description: str, media: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


_TOKEN = {
    "in": "path",
    "required": True,
    "name": "token",
    "schema": {"type": "string"},
    "description": "HMAC-signed token from a sent message (a bad one is refused)",
}
_TEXT = {"type": "string"}
_HTML = _answer("page", "text/html", _TEXT)
_NOT_VALID_HTML = _answer("invalid or expired token: a plain page", "text/html", _TEXT)
_NOT_VALID_TEXT = _answer("invalid token: a plain page, never a redirect", "text/plain", _TEXT)
_GIF = _answer("43-byte transparent 1×1 GIF (also for a bad token)", "image/gif", _TEXT)
_ONE_CLICK = {
    "type": "object",
    "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}},
}
_STATUS = {"type": "object", "required": ["status"], "properties": {"status": _TEXT}}
# (method, path, summary, parameters, request body, responses): no key needed.
PUBLIC: list[tuple[str, str, str, list[dict[str, Any]], dict[str, Any] | None, dict[str, Any]]] = [
    ("get", "/track/open/{token}", "Open pixel", [_TOKEN], None, {"200": _GIF}),
    (
        "get",
        "/track/click/{token}",
        "Click: redirect to the link's stored URL",
        [_TOKEN],
        None,
        {"302": {"description": "to the stored URL"}, "404": _NOT_VALID_TEXT},
    ),
    (
        "get",
        "/unsubscribe/{token}",
        "Unsubscribe confirmation page (never unsubscribes by itself)",
        [_TOKEN],
        None,
        {"200": _HTML, "404": _NOT_VALID_HTML},
    ),
    (
        "post",
        "/unsubscribe/{token}",
        "Unsubscribe: the page's button or RFC 8058 one-click (List-Unsubscribe=One-Click)",
        [_TOKEN],
        {
            "required": False,
            "content": {"application/x-www-form-urlencoded": {"schema": _ONE_CLICK}},
        },
        {"200": _HTML, "404": _NOT_VALID_HTML, "503": _ERROR},
    ),
    (
        "get",
        "/healthz",
        "Liveness",
        [],
        None,
        {"200": _answer("alive", "application/json", _STATUS)},
    ),
    (
        "get",
        "/readyz",
        "Readiness: database reachable, schema at this code's head",
        [],
        None,
        {"200": _answer("ready", "application/json", _STATUS), "503": _ERROR},
    ),
    (
        "get",
        "/metrics",
        "Prometheus metrics",
        [],
        None,
        {"200": _answer("text exposition format", "text/plain", _TEXT)},
    ),
    (
        "get",
        API + "/openapi.json",
        "This document",
        [],
        None,
        {"200": _answer("OpenAPI 3.1", "application/json", _OBJ)},
    ),
]


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, params, body, schema in ENDPOINTS:
        media = "text/csv" if path.endswith("/export") else "application/json"
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": _operation_id(method, path),
            "parameters": [PARAMS[p] for p in params],
            "responses": {
                "200": {"description": "ok", "content": {media: {"schema": schema}}},
                **{code: _ERROR for code in ("400", "401", "403", "404", "503")},
            },
        }
        if body:
            op["requestBody"] = {
                "required": body != "pause",
                "content": {"application/json": {"schema": _BODIES[body]}},
            }
            if body == "send":
                del op["responses"]["200"]
                op["responses"]["202"] = {
                    "description": "accepted: committed and queued",
                    "content": {"application/json": {"schema": _OBJ}},
                }
                op["responses"]["413"] = _ERROR
            elif method == "post" and body != "pause":
                op["responses"]["201"] = {
                    "description": "created",
                    "content": {"application/json": {"schema": _OBJ}},
                }
        paths.setdefault(API + path, {})[method] = op
    for method, path, summary, parameters, request, responses in PUBLIC:
        op = {
            "summary": summary,
            "operationId": _operation_id(method, path),
            "security": [],
            "parameters": parameters,
            "responses": responses,
        }
        if request:
            op["requestBody"] = request
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "relay: tracking endpoints and REST API", "version": "1"},
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
        "security": [{"apiKey": []}],
        "paths": paths,
    }


async def openapi(_request: Request) -> JSONResponse:
    return JSONResponse(document())


ROUTES = [Route("/openapi.json", openapi, methods=["GET"])]
