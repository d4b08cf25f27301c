"""The `auth` section: the master key, and whether virtual keys are required."""

from __future__ import annotations

from typing import Literal

import msgspec


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Guards /admin and may call every model; also read from TOLLWAY_MASTER_KEY.
    master_key: str | None = None
    # "auto": virtual keys are required once a master key is set (with none, the
    # gateway is open, as `make run` on a laptop should be).
    require_keys: Literal["auto", "always", "never"] = "auto"
