"""Virtual keys: what a `tw-` key may do, and how it is made, stored and checked.

A key is shown once, at creation; the store keeps only its SHA-256. (A slow password
hash would buy nothing: the secret is 240 random bits, and the hash is computed on
every request.) Rotation issues a new key with the same settings and the same
`lineage`, so budgets and spend follow the key across rotations; the old one keeps
working until its grace period ends.
"""

from __future__ import annotations

import hashlib
import secrets

import msgspec

from tollway.config import Budget, GuardModes

PREFIX = "tw-"


class KeySettings(msgspec.Struct, kw_only=True):
    """What an admin sets on a key (at creation, or later)."""

    name: str = ""
    user: str | None = None  # the owner (the end user when a request names none)
    team: str | None = None
    features: list[str] = []  # the first is the default feature of its requests
    models: list[str] = []  # allowed aliases/models; empty: all
    rpm: int | None = None
    tpm: int | None = None
    budgets: list[Budget] = []
    guards: GuardModes | None = None  # overrides the alias's and the global guards


class KeyState(KeySettings, kw_only=True):
    """A key as anyone may see it: settings plus identity and lifecycle."""

    id: str  # public, safe to log: key_<hex>
    hint: str  # "tw-Ab3…x9Qz": enough to recognise, useless to an attacker
    created_at: float
    lineage: str  # the first key's id in a rotation chain
    expires_at: float | None = None
    disabled: bool = False
    revoked_at: float | None = None
    replaced_by: str | None = None  # set by rotation


class KeyRecord(KeyState, kw_only=True):
    """What the store keeps: the state plus the secret's hash."""

    hash: str  # sha256 hex of the secret

    def refusal(self, now: float) -> str | None:
        """Why this key cannot be used now, or None."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "has been revoked"
        if self.disabled:
            return "is disabled"
        if self.expires_at is not None and self.expires_at <= now:
            return ("was rotated and its grace period is over" if self.replaced_by
                    else "has expired")
        return None

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(30)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hint(secret: str) -> str:
    return f"{secret[:6]}…{secret[-4:]}"


def new_id() -> str:
    return "key_" + secrets.token_hex(6)


def mint(now: float, **settings: object) -> tuple[str, KeyRecord]:
    """A new key: (the secret, shown once; its record)."""
    secret = new_secret()
    kid = new_id()
    lineage = settings.pop("lineage", None) or kid
    rec = msgspec.convert({"id": kid, "hash": hash_secret(secret), "hint": hint(secret),
                           "created_at": now, "lineage": lineage, **settings}, KeyRecord)
    return secret, rec
