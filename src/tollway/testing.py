"""For your own tests: an in-process gateway in front of Tollway's upstream simulator
(`tollway simulate`), with faults on demand.

    from tollway.testing import simulated

    def test_my_code_survives_an_outage():
        with simulated({"budgets": {...}}) as gw:    # your settings on top, if any
            gw.simulator.fail_next("500", "503")    # the next two upstream calls fail
            client = gw.openai()
            client.chat.completions.create(model="sim", messages=[...])  # retried: ok
            assert gw.simulator.stats()["faults_injected"]["503"] == 1

Models: `sim` (an OpenAI-compatible upstream), `sim-claude` (an Anthropic one),
`sim-embed` (OpenAI's text-embedding-3-small, for embeddings) and any model your
settings add without `deployments` (served as `sim` is), priced (`PRICES`, dollars per
million tokens) so budgets and the ledger see real costs; answers are `output_tokens`
long (16) and deterministic. The simulator runs on a loop of its own thread, on a
loopback port; the gateway's store is a temporary directory unless your settings say
otherwise. Closing closes both.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from tollway import config as config_mod
from tollway.library.inprocess import Gateway
from tollway.library.loop import OwnedLoop
from tollway.simulate.server import SIMULATOR, Simulator, start
from tollway.simulate.state import SimConfig

# Dollars per million tokens: what OpenAI's and Anthropic's mid-size models cost.
PRICES = {"sim-model": {"input": 2.5, "output": 10.0},
          "claude-sim": {"input": 3.0, "output": 15.0}}


class SimulatorControl:
    """The simulator behind a `simulated` gateway: faults, settings, what it saw. Every
    call runs on the simulator's loop, so any thread may make it."""

    def __init__(self, loop: OwnedLoop, sim: Simulator, url: str) -> None:
        self._loop = loop
        self._sim = sim
        self.url = url  # http://127.0.0.1:PORT

    def fail_next(self, *faults: str) -> None:
        """The next upstream calls fail, one fault each, in order: "429", "500", "503",
        "hang", "reset", "drop_stream", "stall_stream", "bad_json"."""
        self.configure(next_faults=[*self._run(self._view).next_faults, *faults])

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change its settings (`tollway simulate --help`: ttft_ms, token_ms,
        output_tokens, rate_429, rate_500, …, rpm_limit, tpm_limit, require_key); the
        settings now. Raises ValueError on an invalid one."""
        try:
            got = self._run(self._configure, changes)
        except msgspec.ValidationError as e:
            raise ValueError(str(e)) from None
        out: dict[str, Any] = msgspec.to_builtins(got)
        return out

    def stats(self) -> dict[str, Any]:
        """What it saw: requests (by endpoint, by model), streams started / completed /
        cancelled, faults_injected, tokens, recent_requests (bodies and headers)."""
        # (Plain values, as /_sim/stats would give them: recorded requests are structs.)
        out: dict[str, Any] = msgspec.to_builtins(self._run(self._snapshot))
        return out

    def reset(self) -> None:
        """Zero the stats and clear the queued faults (the settings stay)."""
        self._run(self._clear)

    def _run(self, fn: Any, *args: Any) -> Any:
        async def on_loop() -> Any:
            return fn(*args)
        return self._loop.run(on_loop())

    def _view(self) -> SimConfig:
        return self._sim.config_view()

    def _configure(self, changes: dict[str, Any]) -> SimConfig:
        return self._sim.configure(changes)

    def _snapshot(self) -> dict[str, Any]:
        return self._sim.stats.snapshot()

    def _clear(self) -> None:
        self._sim.clear()


class SimulatedGateway(Gateway):
    """A `tollway.Gateway` in front of the simulator (`simulator`); made by `simulated`."""

    def __init__(self, config: config_mod.Config, *, sim_loop: OwnedLoop,
                 runner: web.AppRunner, url: str, tmp: str | None,
                 access_log: bool = False) -> None:
        self._sim_loop, self._sim_runner, self._tmp = sim_loop, runner, tmp
        self.simulator = SimulatorControl(sim_loop, runner.app[SIMULATOR], url)
        super().__init__(config, access_log=access_log)

    def close(self) -> None:
        try:
            super().close()
        finally:
            _stop(self._sim_loop, self._sim_runner, self._tmp)


def _stop(sim_loop: OwnedLoop, runner: web.AppRunner | None, tmp: str | None) -> None:
    try:
        if runner is not None and not sim_loop.loop.is_closed():
            sim_loop.run(runner.cleanup())
    finally:
        sim_loop.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def simulated(settings: Mapping[str, Any] | None = None, *, output_tokens: int | None = 16,
              seed: int = 1, env: Mapping[str, str] | None = None, access_log: bool = False,
              **sim: Any) -> SimulatedGateway:
    """A gateway in front of a fresh simulator. `settings`: tollway.yaml's settings
    (as a mapping) laid over the defaults — models, budgets, cache, guards, …; `sim`:
    the simulator's settings (ttft_ms=…, rate_500=…; see `SimulatorControl.configure`).
    `env`: what `${VAR}`s read (none by default, nor TOLLWAY_MASTER_KEY: a test's
    gateway does not depend on the shell it runs in). Use it with `with`, or close it."""
    sim_loop = OwnedLoop("tollway-simulator")
    runner: web.AppRunner | None = None
    given = dict(settings or {})
    tmp = None if "store" in given else tempfile.mkdtemp(prefix="tollway-test-")
    try:
        sim_cfg = msgspec.convert({"output_tokens": output_tokens, "seed": seed, **sim},
                                  SimConfig)
        runner, port = sim_loop.run(start("127.0.0.1", 0, sim_cfg))
        url = f"http://127.0.0.1:{port}"
        sim_openai = {"provider": "openai", "model": "sim-model", "api_base": f"{url}/v1",
                      "api_key": "sim-key"}
        # A model given without deployments is the simulator's (its settings, e.g. a
        # cache or guards of its own, apply): the port is not known before this.
        mine = {name: {"deployments": [sim_openai], **m} if "deployments" not in m else m
                for name, m in dict(given.pop("models", {})).items()}
        raw: dict[str, Any] = {
            "models": {
                "sim": {"deployments": [sim_openai]},
                "sim-claude": {"deployments": [{"provider": "anthropic",
                                                "model": "claude-sim", "api_base": url,
                                                "api_key": "sim-key"}]},
                "sim-embed": {"deployments": [{"provider": "openai",
                                               "model": "text-embedding-3-small",
                                               "api_base": f"{url}/v1", "api_key": "sim-key"}]},
                **mine,
            },
            "prices": {**PRICES, **given.pop("prices", {})},
            **({"store": {"path": tmp}} if tmp is not None else {}),
            **given,
        }
        cfg = config_mod.parse(raw, env=dict(env or {}))
        return SimulatedGateway(cfg, sim_loop=sim_loop, runner=runner, url=url, tmp=tmp,
                                access_log=access_log)
    except BaseException:
        _stop(sim_loop, runner, tmp)
        raise


__all__ = ["PRICES", "SimulatedGateway", "SimulatorControl", "simulated"]
