"""Who is calling: a virtual key (`tw-…`), the master key, or nobody (open mode).

Keys come as `Authorization: Bearer` (OpenAI SDK) or `x-api-key` (Anthropic SDK).
With a master key configured (auth.master_key or TOLLWAY_MASTER_KEY) keys are
required; without one the gateway is open, as a laptop's `make run` should be, but a
`tw-` key that is presented is still checked (a revoked key is never let through as
anonymous). The secret is dropped from the context as soon as it is checked, and
only a key's id or hint ever reaches an error, a log line or the ledger.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from tollway.config import AuthConfig
from tollway.errors import Forbidden, Unauthorized
from tollway.policy.keys import PREFIX, KeyRecord, hash_secret, hint
from tollway.store.base import KeyStore


@dataclass(frozen=True, slots=True)
class Caller:
    key: KeyRecord | None = None
    master: bool = False


ANONYMOUS = Caller()
MASTER = Caller(master=True)


def keys_required(cfg: AuthConfig) -> bool:
    return cfg.require_keys == "always" or (cfg.require_keys == "auto" and bool(cfg.master_key))


def is_master(secret: str | None, cfg: AuthConfig) -> bool:
    master = cfg.master_key
    return bool(secret and master and hmac.compare_digest(secret.encode(), master.encode()))


async def authenticate(secret: str | None, keys: KeyStore, cfg: AuthConfig,
                       now: float) -> Caller:
    if is_master(secret, cfg):
        return MASTER
    if secret is None or not secret.startswith(PREFIX):
        if not keys_required(cfg):
            return ANONYMOUS
        if secret is None:
            raise Unauthorized("Missing API key: send your Tollway key as "
                               "'Authorization: Bearer tw-…' or in the 'x-api-key' header.")
        raise Unauthorized("Invalid API key: Tollway keys start with 'tw-'. Ask your "
                           "gateway admin for one (tollway keys create).")
    rec = await keys.by_hash(hash_secret(secret))
    if rec is None:
        raise Unauthorized(f"Invalid API key {hint(secret)}: no such key.")
    why = rec.refusal(now)
    if why is not None:
        raise Unauthorized(f"API key {rec.hint} ({rec.id}) {why}.", code="key_refused")
    return Caller(key=rec)


def check_model(key: KeyRecord | None, asked: str, alias: str) -> None:
    if key is None or key.allows(asked) or key.allows(alias):
        return
    raise Forbidden(f"API key {key.id} may not use the model '{asked}'. It may use: "
                    f"{', '.join(key.models)}.", param="model")
