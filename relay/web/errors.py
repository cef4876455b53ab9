"""Errors at the web edge: every failure becomes JSON `{"error": {"code", "message"}}`.

Input: exceptions raised by handlers (ApiError, relay errors, Starlette HTTP errors, bugs).
Output: JSON responses with a fitting status (the database unreachable: 503); bugs are
logged with an id and answered 500 without a traceback.
"""

from __future__ import annotations

import uuid

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from relay import log as relay_log
from relay.errors import Conflict, NotFound, StoreUnavailable
from relay.store.availability import UNAVAILABLE
from relay.store.db import describe_error

log = relay_log.get(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_param(name: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{name}: {problem}")


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    response = error_response(exc.status, exc.code, exc.message)
    if headers:
        response.headers.update(headers)
    return response


async def _not_found(_request: Request, exc: Exception) -> Response:
    return error_response(404, "not_found", str(exc))


async def _conflict(_request: Request, exc: Exception) -> Response:
    return error_response(409, "conflict", str(exc))


async def _unavailable(_request: Request, exc: Exception) -> Response:
    """Our own trouble, not the caller's: 503, so clients (and RFC 8058 senders) retry."""
    log.warning("web.store_unavailable", error=describe_error(exc))  # no path: it holds tokens
    return error_response(503, "unavailable", "the database is unavailable; try again later")


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


async def _http(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def _bug(request: Request, exc: Exception) -> Response:
    error_id = uuid.uuid4().hex[:12]
    log.error("web.bug", error_id=error_id, path=request.url.path, exc_info=exc)
    return error_response(500, "internal", f"internal error (id {error_id}); see the server log")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    NotFound: _not_found,
    Conflict: _conflict,
    StoreUnavailable: _unavailable,
    **dict.fromkeys(UNAVAILABLE, _unavailable),  # a driver's "cannot reach" is not a bug
    HTTPException: _http,
    Exception: _bug,
}
