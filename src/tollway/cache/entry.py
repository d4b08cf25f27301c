"""A cached answer, as stored: an OpenAI `chat.completion` object, whichever way it
arrived (a streamed answer is assembled from its events), or an embeddings `list`,
with what it cost. It is
replayed as JSON or as a stream by `wire/replay.py`, so a client cannot tell a hit from
a fast model except by the `x-tollway-cache` header.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tollway.types import Usage


class CachedAnswer(msgspec.Struct, kw_only=True):
    model: str  # the upstream model that answered
    provider: str
    body: dict[str, Any]  # an OpenAI chat.completion (or embeddings list) object
    usage: Usage | None
    cost_usd: float  # what the original call cost: each hit saves it
    expires_at: float  # checked on read, against the gateway's clock


encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder(CachedAnswer).decode
