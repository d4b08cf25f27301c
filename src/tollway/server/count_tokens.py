"""POST /v1/messages/count_tokens, as Anthropic's API has it: a Messages request
without max_tokens in, `{"input_tokens": N}` out, errors in Anthropic's shape. The key
is checked as for chat (and its allowed models apply); the counting itself is
`gateway/counting.py`'s."""

from __future__ import annotations

import logging

from tollway.errors import TollwayError
from tollway.gateway import Gateway
from tollway.policy.auth import Caller
from tollway.server.asgi import (
    ClientGone,
    Receive,
    Scope,
    Send,
    check_json_content_type,
    edge,
    json_bytes,
    read_body,
    send_json,
)
from tollway.server.chat import ANTHROPIC
from tollway.wire.anthropic import parse_count_tokens_request

log = logging.getLogger("tollway")


class CountTokensEndpoint:
    dialect = ANTHROPIC  # its errors' shape, 405 included (server/app.py)

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        e, gateway = edge(scope), self.gateway
        rid = [(b"x-request-id", e.request_id.encode())]
        asked = "-"
        client = scope.get("client")
        try:
            caller = await gateway.authenticate(
                e.api_key, Caller(user=e.user, feature=e.feature,
                                  ip=client[0] if client else None), e.session)
            check_json_content_type(scope)
            body = await read_body(scope, receive, gateway.config.server.max_body_bytes)
            req = parse_count_tokens_request(body)
            asked = req.model
            got = await gateway.count_tokens(req, caller, e.tier, e.request_id)
        except TollwayError as err:
            err = gateway.scrub(err)
            gateway.observer.token_count(asked, "-", "-", err.status)
            await send_json(send, err.status, self.dialect.error(err), [*rid, *err.headers()])
            return
        except ClientGone:
            return
        except Exception:  # a bug: a 500 in Anthropic's shape, with the request id
            log.exception("internal error (%s)", e.request_id)
            bug = TollwayError(f"Internal error; the request id is {e.request_id}.")
            gateway.observer.token_count(asked, "-", "-", 500)
            await send_json(send, 500, self.dialect.error(bug), rid)
            return
        dep = got.deployment
        gateway.observer.token_count(dep.model, dep.provider, got.counted_by, 200)
        await send_json(send, 200, json_bytes({"input_tokens": got.input_tokens}),
                        [*rid, (b"x-tollway-model", dep.model.encode()),
                         (b"x-tollway-provider", dep.provider.encode()),
                         (b"x-tollway-counted-by", got.counted_by.encode())])
