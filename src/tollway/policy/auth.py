"""Who is calling: a virtual key (`tw-…`), the master key, or nobody (open mode).

Keys come as `Authorization: Bearer` (OpenAI SDK) or `x-api-key` (Anthropic SDK).
With a master key configured (auth.master_key or TOLLWAY_MASTER_KEY) keys are
required; without one the gateway is open, as a laptop's `make run` should be, but a
`tw-` key that is presented is still checked (a revoked key is never let through as
anonymous). The secret is dropped from the context as soon as it is checked, and
only a key's id or hint ever reaches an error, a log line or the ledger.

The console signs in once with a key and then sends a session (policy/sessions.py),
which stands for an `identity` — the key's id, or the master key's fingerprint — and
is checked again on every request (`authenticate_identity`) as the key itself would be.
"""

from __future__ import annotations

import hmac

import msgspec

from tollway.accounting.prices import undated
from tollway.config import AuthConfig
from tollway.config.wildcards import WILDCARD
from tollway.errors import Forbidden, Unauthorized
from tollway.keys import PREFIX, KeyRecord, hash_secret, hint
from tollway.store.base import KeyStore

MASTER_PREFIX = "master:"  # a console session's identity when the master key signed in


class Caller(msgspec.Struct, frozen=True):
    """Who is calling. Fixed once the key is checked, except the end user, which is
    settled once the body is read (`with_user`). (A Struct: made on every request,
    ~10x cheaper than a frozen dataclass.)"""

    key: KeyRecord | None = None
    master: bool = False
    team: str | None = None  # the key's team
    user: str | None = None  # x-tollway-user; then the body's `user`; then the key's owner
    feature: str | None = None  # x-tollway-feature, else the key's first feature tag
    ip: str | None = None  # the client's address (limits callers without a key)

    @property
    def lineage(self) -> str:
        """Whose spend and conversations: a key's lineage (it survives rotation), the
        master key, or `open` with no auth."""
        return self.key.lineage if self.key is not None else "master" if self.master else "open"

    @property
    def owner(self) -> str:
        """Who owns the conversations this caller makes: the lineage, and the end user
        when one is named (one owner never reads or extends another's)."""
        # (PostgreSQL text cannot hold NUL; a caller-supplied user name might.)
        return f"{self.lineage}/{self.user.replace(chr(0), '?')}" if self.user else self.lineage

    def with_user(self, body_user: str | None) -> Caller:
        """The end user once the body is read: the header's, else the body's `user`,
        else the key's owner."""
        if self.user is not None:
            return self
        user = body_user or (self.key.user if self.key is not None else None)
        return self if user is None else msgspec.structs.replace(self, user=user)


def keys_required(cfg: AuthConfig) -> bool:
    return cfg.require_keys == "always" or (cfg.require_keys == "auto" and bool(cfg.master_key))


def is_master(secret: str | None, cfg: AuthConfig) -> bool:
    master = cfg.master_key
    return bool(secret and master and hmac.compare_digest(secret.encode(), master.encode()))


async def authenticate(secret: str | None, keys: KeyStore, cfg: AuthConfig, now: float,
                       edge: Caller) -> Caller:
    """`edge` (what the request says of itself: user, feature, address) with the key
    checked; raises Unauthorized."""
    if is_master(secret, cfg):
        return msgspec.structs.replace(edge, master=True)
    if secret is None or not secret.startswith(PREFIX):
        if not keys_required(cfg):
            return edge
        if secret is None:
            raise Unauthorized("Missing API key: send your Tollway key as "
                               "'Authorization: Bearer tw-…' or in the 'x-api-key' header.")
        raise Unauthorized("Invalid API key: Tollway keys start with 'tw-'. Ask your "
                           "gateway admin for one (tollway keys create).")
    rec = await keys.by_hash(hash_secret(secret))
    if rec is None:
        raise Unauthorized(f"Invalid API key {hint(secret)}: no such key.")
    return _with_key(rec, now, edge)


def identity(caller: Caller, cfg: AuthConfig) -> str | None:
    """What a console session remembers of who signed in — never a secret: the key's
    id, or a fingerprint of the master key (so the session ends with that master key);
    None for nobody (open mode)."""
    if caller.master and cfg.master_key:
        return MASTER_PREFIX + hash_secret(cfg.master_key)[:16]
    return caller.key.id if caller.key is not None else None


async def authenticate_identity(who: str, keys: KeyStore, cfg: AuthConfig, now: float,
                                edge: Caller) -> Caller:
    """A console session's caller (`who` from `identity`), checked again on every
    request as its key would be: a key revoked, expired or disabled since is refused,
    and so is the master once its key is no longer the one configured."""
    if who.startswith(MASTER_PREFIX):
        current = identity(Caller(master=True), cfg)
        if current is not None and hmac.compare_digest(who, current):
            return msgspec.structs.replace(edge, master=True)
        raise Unauthorized("This console session was opened with a master key that is no "
                           "longer configured: sign in again.", code="session_ended")
    rec = await keys.by_id(who)
    if rec is None:
        raise Unauthorized("This console session's key no longer exists: sign in again.",
                           code="session_ended")
    return _with_key(rec, now, edge)


def _with_key(rec: KeyRecord, now: float, edge: Caller) -> Caller:
    why = rec.refusal(now)
    if why is not None:
        raise Unauthorized(f"API key {rec.hint} ({rec.id}) {why}.", code="key_refused")
    feature = edge.feature or (rec.features[0] if rec.features else None)
    return msgspec.structs.replace(edge, key=rec, team=rec.team, feature=feature)


def check_model(key: KeyRecord | None, asked: str, alias: str, served: str = "") -> None:
    """403 unless the key may use the model: its `models` empty, or one entry allowing
    the name asked, the alias serving it or the name a wildcard served it as
    (`served`, e.g. `openai/gpt-4o-2024-08-06`)."""
    if key is None or not key.models or asked in key.models or alias in key.models:
        return
    if any(allows(entry, (asked, served)) for entry in key.models):
        return
    raise Forbidden(f"API key {key.id} may not use the model '{asked}'. It may use: "
                    f"{', '.join(key.models)}.", param="model")


def allows(entry: str, names: tuple[str, ...]) -> bool:
    """Whether one allow-list entry admits any of `names`. `openai/*` (a trailing `*`)
    admits every name it prefixes; a plain model name admits its dated snapshots, with
    or without a provider prefix (`gpt-4o` admits `gpt-4o-2024-08-06` and
    `openai/gpt-4o-2024-08-06`, never `gpt-4o-mini`: the same model at the same price,
    not its family)."""
    qualified = "/" in entry  # names the provider: compare names with theirs
    for n in names:
        if not n:
            continue
        bare = n if qualified else n.rsplit("/", 1)[-1]
        if entry.endswith(WILDCARD):
            if n.startswith(entry[:-1]) or bare.startswith(entry[:-1]):
                return True
        elif entry in (n, bare, undated(n), undated(bare)):
            return True
    return False
