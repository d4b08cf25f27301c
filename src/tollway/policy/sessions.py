"""Console sessions: an opaque random token standing for who signed in to the console.

The browser holds the token in an HttpOnly cookie (server/console_session.py); the
store holds what it stands for — the identity `auth.identity` gives (a key's id or
the master key's fingerprint, never a secret) and when it ends — under the token's
SHA-256, in the store's cache part, so every replica of a fleet sees the same sessions
and a leaked store never yields a usable token. A session is only an identity: every
request made with it is authenticated again (`auth.authenticate_identity`), so a key
revoked since is refused at once.

The cache part may forget an entry under pressure (it is bounded, least recently used
first): that is a sign-out, never a sign-in as someone else.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

import msgspec

from tollway.store.base import CacheStore

SESSION_SECONDS = 12 * 3600.0
_KEY_PREFIX = "console-session:"


class _Stored(msgspec.Struct, frozen=True):
    who: str
    expires_at: float


class Sessions:
    def __init__(self, cache: CacheStore, clock: Callable[[], float],
                 seconds: float = SESSION_SECONDS) -> None:
        self.cache = cache
        self.clock = clock
        self.seconds = seconds

    async def open(self, who: str) -> str:
        """A new session for `who`; returns its token (shown to the browser alone)."""
        token = secrets.token_urlsafe(32)
        stored = _Stored(who=who, expires_at=self.clock() + self.seconds)
        await self.cache.put(_key(token), msgspec.json.encode(stored), self.seconds)
        return token

    async def who(self, token: str) -> str | None:
        """Who the session stands for; None once it ended, was closed or never was."""
        raw = await self.cache.get(_key(token))
        if not raw:  # unknown, or closed (an empty value)
            return None
        try:
            stored = msgspec.json.decode(raw, type=_Stored)
        except msgspec.DecodeError:
            return None
        return stored.who if stored.expires_at > self.clock() else None

    async def close(self, token: str) -> None:
        """Sign out: the cache part has no delete, so the entry is overwritten empty."""
        await self.cache.put(_key(token), b"", self.seconds)


def _key(token: str) -> str:
    return _KEY_PREFIX + hashlib.sha256(token.encode()).hexdigest()
