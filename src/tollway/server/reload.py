"""Hot reload: the configuration read again and swapped in without a restart, on
SIGHUP or `POST /admin/reload` (the master key's).

The file is read and validated first, off the event loop; only a configuration that
passes every check is handed to `Gateway.reload`, which builds the new rules and swaps
them in at once (gateway/assembly.py) — requests under way finish on the pipeline they
began on. A bad file changes nothing: the log says why, and the admin endpoint answers
422 with the same message. Reloads run one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from tollway import config as config_mod
from tollway.errors import ConfigError, InvalidRequest, TollwayError
from tollway.gateway import Gateway
from tollway.gateway.assembly import Reloaded
from tollway.server.admin import Result
from tollway.server.asgi import Receive, Scope

log = logging.getLogger("tollway")


class NotReloadable(TollwayError):
    status = 409


@dataclass(frozen=True, slots=True)
class Source:
    """Where the configuration was read: a file, or (None) the embedded default — read
    again as `config.load` would, so a tollway.yaml written since is found."""

    path: str | None


class Reloader:
    def __init__(self, gateway: Gateway, source: Source | None) -> None:
        """`source`: None for a configuration given in code (nothing to read again)."""
        self.gateway = gateway
        self.source = source
        self._lock = asyncio.Lock()
        self._previous: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def reload(self, via: str) -> Reloaded:
        """Read, validate and swap in the configuration; ConfigError (nothing changed)
        when it is not valid. Logged either way."""
        source = self.source
        if source is None:
            raise NotReloadable("This gateway's configuration was given in code, not read "
                                "from a file: there is nothing to read again.",
                                code="not_reloadable", status=409)
        async with self._lock:
            try:
                new = await asyncio.to_thread(config_mod.load, source.path)
                done = self.gateway.reload(new)
            except ConfigError as e:
                log.error("config reload (%s) refused; still serving the previous "
                          "configuration: %s", via, e)
                raise
            log.warning("config reloaded from %s (%s): %s%s", source.path or "defaults", via,
                        f"changed {', '.join(done.changed)}" if done.changed
                        else "nothing changed",
                        f"; needs a restart to apply: {', '.join(done.needs_restart)}"
                        if done.needs_restart else "")
            return done

    async def answer(self, scope: Scope, receive: Receive) -> Result:
        """POST /admin/reload: 200 with what changed, or 422 with why not."""
        try:
            done = await self.reload("POST /admin/reload")
            source = self.source
            assert source is not None  # else NotReloadable
        except ConfigError as e:
            raise InvalidRequest(f"The configuration was not reloaded (the previous one is "
                                 f"still served): {e}", code="invalid_config",
                                 status=422) from None
        return Result(200, {"reloaded": True, "source": source.path,
                            "changed": done.changed, "needs_restart": done.needs_restart})

    def watch_signal(self) -> None:
        """SIGHUP reloads. Called from the running server (as the drain's handlers are)."""
        loop = asyncio.get_running_loop()
        self._previous = signal.signal(signal.SIGHUP, _on(loop, self._hup))

    def unwatch(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hup(self) -> None:
        task = asyncio.create_task(self._quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self) -> None:
        try:
            await self.reload("SIGHUP")
        except ConfigError:
            pass  # logged: a signal has no one to answer
        except NotReloadable as e:
            log.error("config reload (SIGHUP): %s", e.message)
        except Exception:
            log.exception("config reload (SIGHUP) failed; still serving the previous "
                          "configuration")


def _on(loop: asyncio.AbstractEventLoop, then: Callable[[], None]
        ) -> Callable[[int, FrameType | None], None]:
    def handler(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(then)

    return handler
