"""What the batch routes share: reading a request, answering JSON or a dialect's error.

A route raises `BadRequest` (400) or `Refused`; `answer_errors` answers either in the
route's dialect.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from tollway.simulate.wire import BadRequest, Dialect, ErrorSpec

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refused(Exception):
    """The request is refused with `status` (a 404, say)."""

    def __init__(self, status: int, spec: ErrorSpec) -> None:
        super().__init__(spec.message)
        self.status = status
        self.spec = spec


def answer_errors(handler: Handler, dialect: Dialect) -> Handler:
    async def route(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as e:
            return error_response(dialect, 400, ErrorSpec("invalid_request_error", e.message,
                                                          param=e.param))
        except Refused as e:
            return error_response(dialect, e.status, e.spec)

    return route


def json_response(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


def error_response(dialect: Dialect, status: int, spec: ErrorSpec) -> web.Response:
    rid = "req_" + secrets.token_hex(12)
    return web.Response(body=dialect.error_body(status, spec, rid), status=status,
                        content_type="application/json",
                        headers={dialect.request_id_header: rid})


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise BadRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def limit_param(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise BadRequest(f"Invalid 'limit': must be between 1 and {maximum}.", "limit")
    return limit
