"""`tollway simulate`: a fake upstream speaking OpenAI and Anthropic wire formats.

  POST /v1/chat/completions   OpenAI chat completions, JSON or SSE
  POST /v1/messages           Anthropic Messages, JSON or SSE
  POST /v1/embeddings         OpenAI embeddings: deterministic vectors of the model's
                              real size, float or base64 (`embeddings.py`)
  POST /v1/responses          OpenAI's Responses API, stateless, JSON or SSE
                              (`responses_wire.py`)
  POST /v1/messages/count_tokens  Anthropic's token count: the input_tokens /v1/messages
                              would bill for the same request (no faults, no rate limit)
  GET  /v1/models             the configured model names (any name is accepted)

Batches (`batches.py`, state in memory): OpenAI's Files and Batch APIs
(`openai_batches.py`: /v1/files, /v1/batches) and Anthropic's Message Batches
(`anthropic_batches.py`: /v1/messages/batches). Each line is answered as its endpoint
would answer it (`Simulator.answer_line`), over `batch_delay_s`; `batch_error_rate` of
them fail with a 500, a line for a model neither listed nor priced with a 404, and
what is not done `batch_expiry_s` after creation expires. `batches: false` turns the
routes off (404).

Replies are deterministic (`text.py`: a function of the last user message and the
choice index). Their length is drawn from the prompt (`length.py`: an acknowledgement
gets a line, a question a few paragraphs, "write a long …" or "repeat … N times" much
more) unless `output_tokens` pins it; either way the request's max tokens caps it.
Usage is the true token count, with the provider's prompt caching (`prefix.py`):
OpenAI's automatic prefix cache in `prompt_tokens_details.cached_tokens` (Responses:
`input_tokens_details.cached_tokens`), Anthropic's `cache_control` breakpoints in
`cache_read_input_tokens` / `cache_creation_input_tokens`, per model. Latency:
`ttft_ms` to the first token, then `token_ms` per token (a JSON reply waits for all
of it).

Embeddings have no output: their answer comes after `ttft_ms`, and a request's tokens
are its inputs'. They get the same faults, rate limit and stats (`stream_*` and
`drop_stream` act as on a JSON chat request).

Faults, one per request at most: the queued `next_faults` first, else one seeded draw
against the rates. 429/500/503 answer an error in the endpoint's format (429 with
Retry-After and retry-after-ms); `hang` never answers (until the caller leaves);
`reset` aborts the TCP connection; `drop_stream` aborts a stream after
`drop_after_tokens` tokens (half by default), and acts as `reset` on a JSON request;
`stall_stream` goes silent after as many tokens, the connection left open, and acts
as `hang` on a JSON request;
`bad_json` answers plain text where response_format asked for JSON (a model that
ignores it).

Rate limit (`rpm_limit`, `tpm_limit`; `limits.py`): a provider's per-minute limits over
a sliding 60 s window. Every chat answer then carries the provider's headers
(x-ratelimit-limit/remaining/reset-requests and -tokens in OpenAI's format on
/v1/chat/completions, anthropic-ratelimit-requests/tokens-limit/remaining/reset on
/v1/messages), and a request over the limit gets a 429 with Retry-After and
retry-after-ms saying when it would fit (it does not count against the window). A
request's tokens are its prompt plus the output it will get (per choice).

Control endpoints:
  GET  /_sim/config   the current config (next_faults shows what is still queued)
  PUT  /_sim/config   merge a JSON object into the config; 400 on invalid values.
                      Any PUT restarts the seeded fault draw.
  GET  /_sim/stats    requests (and requests_by_endpoint, requests_by_model),
                      rate_limited (429s for being over the limit), streams_started /
                      _completed / _cancelled, requests_cancelled (the caller left before
                      the answer was complete), tokens_generated (tokens actually written),
                      faults_injected per kind, last_cancel_at, and recent_requests: the
                      last 50 API request bodies with their headers, minus credentials;
                      by_model: per model, answered requests and the prompt, cached
                      (read from the prompt cache), cache_write and completion tokens
                      their usage reported (what a replay prices per model);
                      batches: created, lines, and lines succeeded / errored /
                      expired / canceled; batch_by_model: by_model for batch lines
                      (apart, to be priced at batch rates). The batch routes' own
                      calls are not counted in requests.
  POST /_sim/reset    zero the stats, clear queued faults, the rate-limit window and the
                      prompt cache, restart the fault draw; stop and forget the batches
                      and files
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson
from aiohttp import web

from tollway.accounting.tokens import count_text
from tollway.simulate.anthropic_batches import AnthropicBatches
from tollway.simulate.anthropic_wire import AnthropicDialect, count_tokens
from tollway.simulate.batch_http import Handler, answer_errors, error_response
from tollway.simulate.batches import LineResult, Runners
from tollway.simulate.embeddings import EmbeddingsDialect
from tollway.simulate.length import answer_length
from tollway.simulate.limits import Limiter
from tollway.simulate.models import known_model
from tollway.simulate.openai_batches import OpenAIBatches
from tollway.simulate.openai_wire import OpenAIDialect
from tollway.simulate.plan import ChoicePlan, SimRequest, plan_choices, response_id
from tollway.simulate.prefix import PrefixCache
from tollway.simulate.responses_wire import ResponsesDialect
from tollway.simulate.state import FaultPicker, ModelUsage, SimConfig, Stats
from tollway.simulate.wire import BadRequest, Dialect, ErrorSpec, ReplyContext, Step

_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache"}
_MODELS_CREATED = 1_700_000_000


@dataclass(slots=True)
class _Progress:
    """Per request: whether the stream is open (for cancel accounting), and whether we cut
    the connection ourselves (then it is a fault, not a cancellation)."""

    stream_open: bool = False
    aborted: bool = False


class Simulator:
    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.stats = Stats()
        self.limiter = Limiter(clock)
        self.faults = FaultPicker(config)
        self.prompt_cache = PrefixCache()
        self._counter = 0
        self._openai = OpenAIDialect()
        self._anthropic = AnthropicDialect()
        self._embeddings = EmbeddingsDialect()
        self._responses = ResponsesDialect()
        self._by_endpoint: dict[str, Dialect] = {
            d.endpoint: d for d in (self._openai, self._anthropic, self._embeddings,
                                    self._responses)}
        self.runners = Runners()
        self.openai_batches = OpenAIBatches(self, self.runners)
        self.anthropic_batches = AnthropicBatches(self, self.runners)

    # -- control endpoints -------------------------------------------------------------

    def config_view(self) -> SimConfig:
        return msgspec.structs.replace(self.config, next_faults=list(self.faults.queue))

    async def get_config(self, request: web.Request) -> web.Response:
        return _json(msgspec.json.encode(self.config_view()))

    async def put_config(self, request: web.Request) -> web.Response:
        try:
            patch = orjson.loads(await request.read())
        except orjson.JSONDecodeError as e:
            return _json(orjson.dumps({"error": f"invalid JSON: {e}"}), 400)
        if not isinstance(patch, dict):
            return _json(orjson.dumps({"error": "expected a JSON object"}), 400)
        try:
            self.configure(patch)
        except msgspec.ValidationError as e:
            return _json(orjson.dumps({"error": str(e)}), 400)
        return await self.get_config(request)

    async def get_stats(self, request: web.Request) -> web.Response:
        return _json(msgspec.json.encode(self.stats.snapshot()))

    async def reset(self, request: web.Request) -> web.Response:
        self.clear()
        return _json(b'{"ok":true}')

    # The control endpoints' work, also called in-process (`tollway.testing`), on the
    # simulator's loop.

    def configure(self, patch: dict[str, Any]) -> SimConfig:
        """Merge `patch` into the config (raises msgspec.ValidationError); restarts the
        seeded fault draw."""
        self.config = self.config_view().merged(patch)
        self.faults = FaultPicker(self.config)
        return self.config_view()

    def clear(self) -> None:
        """Zero the stats; clear queued faults, the rate-limit window, the prompt cache
        and the batches."""
        self.stats = Stats()
        self.limiter = Limiter(self.limiter.clock)
        self.config = msgspec.structs.replace(self.config, next_faults=[])
        self.faults = FaultPicker(self.config)
        self.prompt_cache = PrefixCache()
        self._counter = 0
        self.runners.stop()
        self.openai_batches.reset()
        self.anthropic_batches.reset()

    # -- API endpoints -----------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        self.stats.count("/v1/models")
        return _json(_model_list(self.config.models))

    async def count_tokens(self, request: web.Request) -> web.Response:
        cfg, endpoint = self.config, "/v1/messages/count_tokens"
        self._counter += 1
        rid = response_id("req_", cfg.seed, self._counter)
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.stats.record(endpoint, request.headers, raw.decode(errors="replace"))
            return _error(self._anthropic, 400, ErrorSpec(
                "invalid_request_error", "We could not parse the JSON body of your request."),
                rid)
        self.stats.record(endpoint, request.headers, body)
        if cfg.require_key is not None and _key(request) != cfg.require_key:
            return _error(self._anthropic, 401, self._anthropic.error_spec(401, 0), rid)
        try:
            n = count_tokens(body)
        except BadRequest as e:
            return _error(self._anthropic, 400, ErrorSpec("invalid_request_error", e.message,
                                                          param=e.param), rid)
        return _json(orjson.dumps({"input_tokens": n}))

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._openai)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._anthropic)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._embeddings)
    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._responses)

    async def _serve(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        cfg = self.config
        self._counter += 1
        rid = response_id(dialect.id_prefix, cfg.seed, self._counter)
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw.decode(errors="replace")
            self.stats.record(dialect.endpoint, request.headers, body)
            return _error(dialect, 400, ErrorSpec("invalid_request_error",
                                                  "We could not parse the JSON body of your "
                                                  "request."), rid)
        self.stats.record(dialect.endpoint, request.headers, body)
        if cfg.require_key is not None and _key(request) != cfg.require_key:
            # Echo the key in full, as some OpenAI-compatible servers do: the gateway
            # must keep its provider key out of what it passes on.
            spec = dialect.error_spec(401, 0)
            spec = ErrorSpec(spec.type, f"{spec.message} You sent: {_key(request)}", spec.code)
            return _error(dialect, 401, spec, rid)
        try:
            req = dialect.parse(body)
        except BadRequest as e:
            return _error(dialect, 400, ErrorSpec("invalid_request_error", e.message,
                                                  param=e.param), rid)
        headers: dict[str, str] = {}
        if cfg.rpm_limit is not None or cfg.tpm_limit is not None:
            wait = self.limiter.admit(cfg.rpm_limit, cfg.tpm_limit, _tokens_asked(req, cfg))
            headers = dialect.limit_headers(self.limiter.view(cfg.rpm_limit, cfg.tpm_limit),
                                            time.time())
            if wait is not None:
                self.stats.rate_limited += 1
                secs = math.ceil(wait * 1000) / 1000
                return _error(dialect, 429, dialect.error_spec(429, secs), rid,
                              retry_after=secs, extra=headers)
        progress = _Progress()
        try:
            return await self._answer(request, dialect, cfg, req, rid, progress, headers)
        except asyncio.CancelledError:
            if not progress.aborted:
                self.stats.cancelled(stream_open=progress.stream_open)
            raise

    async def _answer(self, request: web.Request, dialect: Dialect, cfg: SimConfig,
                      req: SimRequest, rid: str, progress: _Progress,
                      headers: dict[str, str]) -> web.StreamResponse:
        fault = self.faults.pick()
        if fault == "bad_json":
            self.stats.faults_injected[fault] += 1
            req, fault = dataclasses.replace(req, json_mode=False, json_schema=None), None
        if fault is not None:
            self.stats.faults_injected[fault] += 1
            if fault in ("429", "500", "503"):
                return _error(dialect, int(fault), dialect.error_spec(int(fault),
                                                                      cfg.retry_after),
                              rid, retry_after=cfg.retry_after if fault == "429" else None,
                              extra=headers)
            if fault == "hang" or (fault == "stall_stream" and not req.stream):
                await asyncio.get_running_loop().create_future()  # until the caller leaves
            if fault == "reset" or (fault == "drop_stream" and not req.stream):
                # drop_stream on a non-streaming request cuts it like a reset.
                return _abort(request, progress)
        req, plans = self._plan(dialect, cfg, req, self.stats.model(req.model))
        ctx = ReplyContext(rid, int(time.time()), req.model)
        if req.embedding is not None:  # no output: the whole answer after ttft_ms
            if cfg.ttft_ms > 0:
                await asyncio.sleep(cfg.ttft_ms / 1000)
            return web.Response(body=dialect.reply_body(ctx, req, []), headers={
                "Content-Type": _JSON, dialect.request_id_header: rid, **headers})
        if req.stream:
            return await self._stream(request, dialect, cfg, req, ctx, plans, progress,
                                      headers, cut=fault)
        longest = max(len(p.pieces) for p in plans)
        delay = (cfg.ttft_ms + longest * cfg.token_ms) / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        out = dialect.reply_body(ctx, req, plans)
        self.stats.generated(req.model, sum(p.tokens for p in plans))
        return web.Response(body=out, headers={"Content-Type": _JSON,
                                               dialect.request_id_header: rid, **headers})

    async def _stream(self, request: web.Request, dialect: Dialect, cfg: SimConfig,
                      req: SimRequest, ctx: ReplyContext, plans: list[ChoicePlan],
                      progress: _Progress, headers: dict[str, str], *,
                      cut: str | None) -> web.StreamResponse:
        steps = dialect.stream_steps(ctx, req, plans, cfg.ttft_ms / 1000, cfg.token_ms / 1000)
        resp = web.StreamResponse(headers={**_SSE_HEADERS, dialect.request_id_header: ctx.id,
                                           **headers})
        try:
            await resp.prepare(request)
            self.stats.streams_started += 1
            progress.stream_open = True
            if cut == "drop_stream":
                await self._write(resp, steps[:_drop_point(steps, cfg)], req.model)
                progress.stream_open = False
                return _abort(request, progress, resp)
            if cut == "stall_stream":
                await self._write(resp, steps[:_drop_point(steps, cfg)], req.model)
                await asyncio.get_running_loop().create_future()  # until the caller leaves
            await self._write(resp, steps, req.model)
        except ConnectionError:
            # The caller went away; with handler_cancellation this usually arrives as a
            # CancelledError instead, but a failed write can beat it.
            self.stats.cancelled(stream_open=progress.stream_open)
            return resp
        progress.stream_open = False
        self.stats.streams_completed += 1
        return resp

    async def _write(self, resp: web.StreamResponse, steps: list[Step], model: str) -> None:
        """Write the steps on their timeline, coalescing those with no delay between them
        into one write; a token counts as generated once its bytes are written."""
        buf: list[bytes] = []
        tokens = 0
        for step in steps:
            if step.delay > 0:
                if buf:
                    await resp.write(b"".join(buf))
                    self.stats.generated(model, tokens)
                    buf, tokens = [], 0
                await asyncio.sleep(step.delay)
            buf.append(step.data)
            tokens += step.tokens
        if buf:
            await resp.write(b"".join(buf))
            self.stats.generated(model, tokens)

    def _plan(self, dialect: Dialect, cfg: SimConfig, req: SimRequest,
              usage: ModelUsage) -> tuple[SimRequest, list[ChoicePlan]]:
        """The answer's plans (none for embeddings), the request counted in `usage`."""
        if req.embedding is not None:
            usage.requests += 1
            usage.prompt_tokens += req.prompt_tokens
            return req, []
        if cfg.ignore_max_tokens:
            req = dataclasses.replace(req, limit=None)
        req = _prompt_cached(self.prompt_cache, dialect is self._anthropic, req, usage)
        return req, plan_choices(req, cfg.output_tokens)

    def answer_line(self, endpoint: str, body: Any, fail: bool) -> LineResult:
        """A batch line, answered as `endpoint` would answer it interactively (the same
        reply, usage and prompt cache) but at once: no latency, faults or rate limit.
        `fail`: the batch's draw picked it for a 500. The usage is the caller's to count."""
        cfg = self.config
        dialect = self._by_endpoint[endpoint]
        self._counter += 1
        rid = response_id(dialect.id_prefix, cfg.seed, self._counter)

        def error(status: int, spec: ErrorSpec) -> LineResult:
            return LineResult(status, rid, dialect.error_body(status, spec, rid))

        try:
            req = dataclasses.replace(dialect.parse(body), stream=False)
        except BadRequest as e:
            return error(400, ErrorSpec("invalid_request_error", e.message, param=e.param))
        if not known_model(req.model, cfg.models):
            return error(404, dialect.model_not_found(req.model))
        if fail:
            return error(500, dialect.error_spec(500, 0))
        usage = ModelUsage()
        req, plans = self._plan(dialect, cfg, req, usage)
        usage.completion_tokens += sum(p.tokens for p in plans)
        body = dialect.reply_body(ReplyContext(rid, int(time.time()), req.model), req, plans)
        return LineResult(200, rid, body, req.model, usage)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app[SIMULATOR] = self
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_get("/v1/models", self.models)
        for api in (self.openai_batches, self.anthropic_batches):
            for method, path, handler in api.routes():
                app.router.add_route(method, path, _batch_route(self, handler, api.dialect))
        app.on_shutdown.append(_stop_batches)
        app.router.add_get("/_sim/config", self.get_config)
        app.router.add_put("/_sim/config", self.put_config)
        app.router.add_get("/_sim/stats", self.get_stats)
        app.router.add_post("/_sim/reset", self.reset)
        return app


def _batch_route(sim: Simulator, handler: Handler, dialect: Dialect) -> Handler:
    """A batch route: 404 while batches are off, else the key check first."""
    handler = answer_errors(handler, dialect)

    async def route(request: web.Request) -> web.StreamResponse:
        if not sim.config.batches:
            raise web.HTTPNotFound()
        if sim.config.require_key is not None and _key(request) != sim.config.require_key:
            return error_response(dialect, 401, dialect.error_spec(401, 0))
        return await handler(request)

    return route


async def _stop_batches(app: web.Application) -> None:
    app[SIMULATOR].runners.stop()


SIMULATOR = web.AppKey("simulator", Simulator)


def _prompt_cached(cache: PrefixCache, breakpoints: bool, req: SimRequest,
                   usage: ModelUsage) -> SimRequest:
    """Look the prompt up in (and add it to) the provider's prompt cache — Anthropic's
    by its breakpoints, OpenAI's automatically — and count the request in `usage`."""
    if breakpoints:
        use = cache.breakpoints(req.model, req.segments)
    else:
        use = cache.automatic(req.model, req.segments)
    usage.requests += 1
    usage.prompt_tokens += req.prompt_tokens
    usage.cached_tokens += use.read
    usage.cache_write_tokens += use.written
    return dataclasses.replace(req, cached_tokens=use.read, cache_write_tokens=use.written)


def _model_list(models: Iterable[str]) -> bytes:
    """OpenAI's list shape, with Anthropic's fields too so either SDK can read it."""
    data = [{"id": m, "object": "model", "created": _MODELS_CREATED, "owned_by": "tollway",
             "type": "model", "display_name": m, "created_at": "2023-11-14T22:13:20Z"}
            for m in models]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return orjson.dumps({"object": "list", "data": data, "has_more": False,
                         "first_id": first, "last_id": last})


def _drop_point(steps: list[Step], cfg: SimConfig) -> int:
    """How many steps drop_stream / stall_stream send: the configured token count,
    else half the tokens; never the closing step, so the stream is always left
    unfinished."""
    token_steps = len(steps) - 1
    k = cfg.drop_after_tokens if cfg.drop_after_tokens is not None else max(1, token_steps // 2)
    return min(k, token_steps)


def _abort(request: web.Request, progress: _Progress,
           resp: web.StreamResponse | None = None) -> web.StreamResponse:
    """Cut the TCP connection with no (further) response. aiohttp's attempt to finish the
    returned response then fails quietly on the closed transport."""
    progress.aborted = True
    if request.transport is not None:
        request.transport.abort()
    return resp if resp is not None else web.Response()


def _tokens_asked(req: SimRequest, cfg: SimConfig) -> int:
    """What the request counts against tpm_limit: its prompt and the output it asks for."""
    if req.embedding is not None:
        return req.prompt_tokens
    limit = None if cfg.ignore_max_tokens else req.limit
    out, _ = answer_length(req.prompt_key, cfg.output_tokens, limit)
    return req.prompt_tokens + req.n * out


def _key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization")
    if auth is not None and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key") or request.headers.get("api-key")


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers={"Content-Type": _JSON})


def _error(dialect: Dialect, status: int, spec: ErrorSpec, rid: str, *,
           retry_after: float | None = None,
           extra: dict[str, str] | None = None) -> web.Response:
    headers = {"Content-Type": _JSON, dialect.request_id_header: rid, **(extra or {})}
    if retry_after is not None:
        # Retry-After takes whole seconds; retry-after-ms (OpenAI's SDK reads it) is exact.
        headers["Retry-After"] = str(math.ceil(retry_after))
        headers["retry-after-ms"] = str(math.ceil(round(retry_after * 1000, 6)))
    return web.Response(body=dialect.error_body(status, spec, rid), status=status,
                        headers=headers)


# -- running it ---------------------------------------------------------------------------


async def start(host: str, port: int, config: SimConfig | None = None,
                clock: Callable[[], float] = time.monotonic) -> tuple[web.AppRunner, int]:
    """Start serving in the running loop; returns the runner (call `.cleanup()` to stop)
    and the bound port (useful with port=0). The Simulator is `runner.app[SIMULATOR]`;
    `clock` times its rate-limit window."""
    # Load both tokenizers now, not on the first request (they take ~1 s).
    count_text("warm-up", "gpt-4o")
    count_text("warm-up", "gpt-4")
    sim = Simulator(config or SimConfig(), clock)
    # handler_cancellation: a caller that disconnects cancels its handler, which is how
    # hangs end and how streams_cancelled is counted. No access log: it costs throughput.
    # A short shutdown_timeout: hung requests must not hold up stopping for a minute.
    runner = web.AppRunner(sim.app(), handler_cancellation=True, access_log=None,
                           shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    await site.start()
    return runner, int(runner.addresses[0][1])


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    d = SimConfig()
    a = parser.add_argument
    a("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    a("--port", type=int, default=9000, help="port to listen on, 0 for any (default: %(default)s)")
    a("--ttft-ms", type=float, default=d.ttft_ms, help="delay before the first token")
    a("--token-ms", type=float, default=d.token_ms, help="delay between tokens")
    a("--output-tokens", type=int, default=d.output_tokens,
      help="pin every reply's length in tokens, capped by the request's max tokens "
           "(default: as long as the prompt suggests)")
    for kind in ("429", "500", "503", "hang", "reset", "drop-stream", "stall-stream"):
        a(f"--rate-{kind}", type=float, default=0.0, metavar="P",
          help=f"probability of a {kind} fault per request (0..1)")
    a("--retry-after", type=float, default=d.retry_after,
      help="Retry-After seconds sent with 429s (default: %(default)s)")
    a("--seed", type=int, default=d.seed, help="seed for the fault draw")
    a("--require-key", default=None, help="answer 401 unless the request carries this key")
    a("--drop-after-tokens", type=int, default=None,
      help="tokens a dropped stream sends before the cut (default: half)")
    a("--rpm-limit", type=int, default=None,
      help="emulate a provider's requests-per-minute limit (headers and 429s)")
    a("--tpm-limit", type=int, default=None,
      help="emulate a provider's tokens-per-minute limit (headers and 429s)")
    a("--no-batches", dest="batches", action="store_false", default=None,
      help="answer the batch APIs and /v1/files with 404, as a server without them")
    a("--batch-delay-s", type=float, default=d.batch_delay_s,
      help="seconds a batch takes to answer its lines (default: %(default)s)")
    a("--batch-error-rate", type=float, default=d.batch_error_rate, metavar="P",
      help="fraction of batch lines answered with a 500 (0..1)")
    a("--batch-expiry-s", type=float, default=d.batch_expiry_s,
      help="a batch not done this long after its creation expires (default: 24 h)")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    fields = {f: getattr(args, f) for f in SimConfig.__struct_fields__ if hasattr(args, f)}
    return msgspec.convert({k: v for k, v in fields.items() if v is not None}, SimConfig)


async def serve(host: str, port: int, config: SimConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    runner, actual = await start(host, port, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"tollway simulate: listening on http://{host}:{actual}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(args: argparse.Namespace) -> None:
    try:
        config = config_from_args(args)
    except msgspec.ValidationError as e:
        sys.exit(f"tollway simulate: invalid option: {e}")
    import uvloop

    uvloop.run(serve(args.host, args.port, config))


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="tollway simulate", description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli_args(_parser)
    main(_parser.parse_args())
