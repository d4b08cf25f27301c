"""Target (d): LiteLLM's proxy, latest from PyPI, in a virtualenv of its own
(bench/.litellm-venv, created on first use), one worker, the same model pointed at the
same simulator, spend logs off and nothing that needs a database or the network."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import harness
from harness import Server, Servers
from load import Auth
from procfs import cpu_seconds

VENV = harness.BENCH / ".litellm-venv"
BIN = VENV / "bin"
# Keep it offline and quiet: the bundled cost map instead of fetching one, no telemetry,
# errors only in its log (its per-request logging is not what we measure).
ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
       "LITELLM_LOG": "ERROR", "DISABLE_ADMIN_UI": "True"}


def ensure_venv() -> str:
    """Create the venv and install `litellm[proxy]` (latest) the first time; return the
    installed version. Later runs reuse it (delete the directory to upgrade)."""
    if not (BIN / "litellm").exists():
        print(f"bench: installing litellm[proxy] into {VENV}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(BIN / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "litellm[proxy]"], check=True)
    out = subprocess.run([str(BIN / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def config(work: Path, upstream_url: str, master_key: str) -> Path:
    # The proxy refuses to start without a strong master key; it is what clients send.
    path = work / "litellm.yaml"
    path.write_text(f"""model_list:
  - model_name: sim-model
    litellm_params:
      model: openai/sim-model
      api_base: {upstream_url}/v1
      api_key: x
litellm_settings:
  telemetry: false
  set_verbose: false
  json_logs: false
general_settings:
  master_key: {master_key}
  disable_spend_logs: true
  disable_error_logs: true
""")
    return path


def start(servers: Servers, upstream_url: str, port: int) -> tuple[Server, Auth]:
    key = "sk-" + secrets.token_hex(16)
    cfg = config(servers.work, upstream_url, key)
    argv = [str(BIN / "litellm"), "--config", str(cfg), "--host", "127.0.0.1", "--port",
            str(port), "--num_workers", "1"]
    server = servers.start("litellm", argv, ENV)
    # Its start-up imports a lot: allow two minutes.
    harness.wait_ready(server, "/health/liveliness", timeout=120)
    return server, Auth(key, "$LITELLM_KEY")


def quiesce(server: Server, limit: float = 20.0) -> float:
    """After an overloaded run, wait (up to `limit` s) until the proxy has stopped
    working off requests the load generator gave up on, so it does not steal CPU from
    the next target's run. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        c0 = cpu_seconds(server.pid)
        time.sleep(0.25)
        if cpu_seconds(server.pid) - c0 < 0.025:  # under 10 % of a core
            break
    return time.monotonic() - t0
