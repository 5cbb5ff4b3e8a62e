"""Errors in OpenAI's JSON shape, `{"error": {"message", "type", "param", "code"}}`.

Every failure the API reports goes through here, including FastAPI's own validation and
routing errors, so a client sees one shape and a 4xx for anything it sent wrong.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("lorag.serving")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


class APIError(Exception):
    """An error answered to the client with `status` and an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict:
        return error_body(self.status, self.message, param=self.param, code=self.code)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None):
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    message = printable(_shortened(message, MAX_MESSAGE_CHARS))
    param = printable(_shortened(param, MAX_PARAM_CHARS)) if param is not None else None
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


MAX_MESSAGE_CHARS = 2000  # an error echoing a client's 500 kB name need not send it back
MAX_PARAM_CHARS = 200


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + f"... ({len(text)} chars)"


def printable(text: str) -> str:
    """`text` made encodable as UTF-8 (a lone surrogate becomes `\\ud800`): an error that
    echoes a client's bad text must still render, or the client gets a 500 instead."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(404, message, param=param, code=code)


def conflict(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(409, message, param=param, code=code)


def _response(status: int, body: dict, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    errors = err.errors() or [{"msg": "invalid request", "loc": (), "type": "invalid"}]
    if errors[0].get("type") == "json_invalid":
        detail = errors[0].get("ctx", {}).get("error", "")
        return f"the request body is not valid JSON: {detail}", None
    # The deepest error: where the input matched a union member's shape and then failed.
    first = max(errors, key=lambda error: len(_field_path(error)))
    param = ".".join(_field_path(first)) or None
    message = _MESSAGES.get(first.get("type", ""), first.get("msg", "invalid request"))
    if param is None:
        message = _BODY_MESSAGES.get(first.get("type", ""), message)
    more = len(errors) - 1
    suffix = f" (and {more} more error{'s' * (more > 1)})" if more > 0 else ""
    return (f"{param}: {message}{suffix}" if param else f"{message}{suffix}"), param


_MESSAGES = {"missing": "field required", "extra_forbidden": "unknown field"}
_BODY_MESSAGES = {
    "missing": "a JSON object body is required",
    "model_attributes_type": "the request body must be a JSON object",
    "dict_type": "the request body must be a JSON object",
}
# FastAPI's words for a body its JSON parser failed on otherwise than on syntax.
_HTTP_MESSAGES = {
    "There was an error parsing the body": "the request body could not be read as JSON: it "
    "is not UTF-8, is nested too deeply, or holds a number too long to parse"
}
_SOURCES = ("body", "query", "path", "header", "cookie")
# How pydantic names a union's member in an error location: `content.str`,
# `stop.list[str]`, `content.TextPart`. Not a field the client sent, so not in `param`.
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|bytes|[a-z-]+\[.*\]|[A-Z]\w*)$")


def _field_path(error: dict) -> list[str]:
    """The error's location as the client's field path (`messages.0.content`)."""
    loc = [str(part) for part in error.get("loc", ())]
    if loc and loc[0] in _SOURCES:
        loc = loc[1:]  # where the field came from, not a field (`path` may be one, too)
    # An unknown field's own name is the client's, whatever it looks like.
    keep = len(loc) - 1 if error.get("type") == "extra_forbidden" else -1
    path = [part for n, part in enumerate(loc) if n == keep or not _UNION_TAG.match(part)]
    inner = error.get("ctx", {}).get("path") if error.get("type") == "invalid_utf8" else None
    return path + [inner] if inner else path  # down to the bad string (protocol.RequestModel)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error OpenAI-shaped: ours, FastAPI's validation errors, and routing errors
    (unexpected exceptions: `UnexpectedErrorMiddleware`)."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return _response(err.status, err.body(), err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(err)
        return _response(400, error_body(400, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = "request_too_large" if err.status_code == 413 else None
        message = _HTTP_MESSAGES.get(str(err.detail), str(err.detail))
        body = error_body(err.status_code, message, code=code)
        return _response(err.status_code, body, err.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        # The last resort, outside the middleware: Starlette re-raises after it.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _response(500, error_body(500, "internal server error; see the server log"))


class TrackedSend:
    """An ASGI `send` that remembers whether the response has started: after that, an
    error can no longer be answered, only the connection cut."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class UnexpectedErrorMiddleware:
    """Answer an unexpected exception with an OpenAI-shaped JSON 500 and keep the connection.

    Starlette's own last-resort handler answers and then re-raises, so the server logs the
    error twice and closes the keep-alive connection. This one logs once and returns
    normally. An error after the response started (a stream) cannot be answered: it is
    re-raised so that the server cuts the connection rather than end the body as complete.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if tracked.started:
                raise
            body = error_body(500, "internal server error; see the server log")
            await _response(500, body)(scope, receive, send)
