"""The request path. Every chat request, from HTTP or from Python, goes through
`Gateway.chat`, top to bottom:

    pick the tier -> resolve the alias -> cap the output -> count the input (when a
    limit needs it) -> maybe downgrade a short input -> pre-flight cost checks
    (input length, worst case vs the ceiling, unpriced models) -> route to a
    deployment (in order, moving on only on failures another deployment could fix)
    -> meter the stream against the ceiling

and, once the answer is complete, `Gateway.settle` prices the reported usage.
Each step is one call into a module with a small interface. Budgets, caching,
guards and the ledger slot into this same sequence as they land.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollway.accounting import prices
from tollway.accounting.meter import StreamMeter
from tollway.accounting.tokens import count_request_async
from tollway.config import Config, ModelConfig
from tollway.errors import ModelNotFound, TollwayError, Unavailable
from tollway.policy import cost
from tollway.providers.base import Provider
from tollway.providers.registry import build_providers
from tollway.routing import tiers
from tollway.types import CallContext, ChatRequest, Deployment, Reply, ReplyStream, Usage


@dataclass(slots=True)
class Answer:
    """What the caller gets: a full reply or a stream, who answered, and what the
    gateway knew before sending (input tokens counted, worst case)."""

    deployment: Deployment
    reply: Reply | None = None
    stream: ReplyStream | None = None
    input_tokens: int | None = None  # our count, when a limit needed it
    worst_case_usd: float | None = None
    meter: StreamMeter | None = None

    @property
    def model(self) -> str:
        return self.deployment.model


@dataclass(slots=True)
class Settlement:
    """The priced outcome of a finished answer."""

    usage: Usage | None
    cost_usd: float | None  # None: the model has no price
    estimated: bool  # usage is our count (stream cut, or the provider reported none)
    cut: bool = False


@dataclass(slots=True)
class _Route:
    alias: str
    model: ModelConfig
    deployments: list[Deployment]
    limits: cost.Limits


class Gateway:
    def __init__(self, config: Config, providers: dict[str, Provider] | None = None) -> None:
        self.config = config
        self.providers = providers if providers is not None else build_providers(config)
        table = prices.load_table(config.prices)
        self._routes: dict[str, _Route] = {}
        # Per deployment (identity-hashed), looked up on every request.
        self._prices: dict[Deployment, prices.Price | None] = {}
        for alias, mc in config.models.items():
            deps = [d.to_deployment() for d in mc.deployments]
            self._routes[alias] = _Route(alias, mc, deps, cost.Limits.of(mc, config.server))
            for cfg, dep in zip(mc.deployments, deps, strict=True):
                self._prices[dep] = (prices.price_from_config(cfg.price) if cfg.price
                                     else table.get(dep.model))

    async def chat(self, req: ChatRequest, ctx: CallContext) -> Answer:
        choice = tiers.select(req.model, ctx.tier_header, self.config)
        route = self._resolve(choice.model)
        cap_output(req, route.model, self.config, ctx, choice.max_tokens)
        input_tokens = None
        if route.limits.need_count or (choice.tier and self.config.auto_downgrade.enabled):
            input_tokens = await count_request_async(req, route.deployments[0].model)
            lower = tiers.downgrade(choice, input_tokens, self.config)
            if lower is not None:
                ctx.downgraded_from, choice = choice.tier, lower
                route = self._resolve(choice.model)
                cap_output(req, route.model, self.config, ctx, choice.max_tokens)
        ctx.alias, ctx.tier = route.alias, choice.tier
        ceiling = None
        if input_tokens is not None:
            ceiling = self._preflight(req, route, input_tokens, ctx)
        answer = await self._send(req, route)
        answer.input_tokens = input_tokens
        if ceiling is not None:
            answer.worst_case_usd = ceiling.worst_case_usd
        if answer.stream is not None:
            # Usage is always requested upstream (it is what we bill on); the client
            # sees the usage event only if it asked for it.
            answer.stream.emit_usage = wants_usage(req)
            if ceiling is not None and input_tokens is not None:
                meter = StreamMeter(answer.stream, ceiling.max_output, input_tokens,
                                    answer.model)
                answer.stream.frames = meter.frames(answer.stream.frames)
                answer.meter = meter
        return answer

    def settle(self, answer: Answer) -> Settlement:
        """Price what was used: the provider's reported usage, never our estimate when
        usage exists."""
        source = answer.reply if answer.reply is not None else answer.stream
        usage = source.usage if source is not None else None
        cut = answer.meter is not None and answer.meter.cut
        estimated = cut
        if usage is None and answer.input_tokens is not None:
            usage, estimated = Usage(prompt_tokens=answer.input_tokens,
                                     total_tokens=answer.input_tokens), True
        price = self._prices.get(answer.deployment)
        usd = prices.cost(usage, price) if usage is not None and price is not None else None
        if usd is None and price is not None:
            usd = 0.0
        return Settlement(usage=usage, cost_usd=usd, estimated=estimated, cut=cut)

    def _resolve(self, name: str) -> _Route:
        found = self.config.resolve(name)
        if found is None:
            known = ", ".join(self.config.public_models()) or "(none configured)"
            raise ModelNotFound(f"The model '{name}' does not exist on this gateway. "
                                f"Available models: {known}.", param="model")
        return self._routes[found[0]]

    def _preflight(self, req: ChatRequest, route: _Route, input_tokens: int,
                   ctx: CallContext) -> cost.CeilingDecision | None:
        limits = route.limits
        cost.check_input_length(input_tokens, limits)
        # The worst case must hold for whichever deployment ends up answering.
        worst: tuple[float, prices.Price, Deployment] | None = None
        for dep in route.deployments:
            price = self._prices[dep]
            if price is None:
                cost.refuse_unpriced(dep.model, self.config.server.unpriced, limits)
                continue
            w = prices.worst_case(input_tokens, req.output_limit() or 0, price)
            if worst is None or w > worst[0]:
                worst = (w, price, dep)
        if worst is None:
            return None
        decision = cost.fit_ceiling(req, input_tokens, worst[1], limits, worst[2].model)
        if decision is not None and decision.clamped:
            ctx.max_tokens_clamped = "cost_ceiling"
        return decision

    async def _send(self, req: ChatRequest, route: _Route) -> Answer:
        last: TollwayError | None = None
        for dep in route.deployments:
            provider = self.providers[dep.provider]
            try:
                if req.stream:
                    return Answer(dep, stream=await provider.stream(req, dep))
                return Answer(dep, reply=await provider.complete(req, dep))
            except TollwayError as e:
                if not worth_another_deployment(e):
                    raise
                last = e
        assert last is not None
        if len(route.deployments) > 1:
            raise Unavailable(f"Every deployment failed; last error: {last.message}",
                              retry_after=last.retry_after) from last
        raise last


def worth_another_deployment(e: TollwayError) -> bool:
    """Rate limits, server errors and timeouts may not recur elsewhere; client errors
    (bad request, content policy) would, so they go straight back to the caller."""
    return e.status in (429, 502, 503, 504) or (e.upstream_status or 0) >= 500


def cap_output(req: ChatRequest, model: ModelConfig, config: Config, ctx: CallContext,
               tier_cap: int | None = None) -> None:
    """No limit -> the default; above the hard cap (or the tier's cap) -> clamped, and
    the reply says so in a header."""
    default = model.default_max_tokens or config.server.default_max_tokens
    cap = model.max_tokens_cap or config.server.max_tokens_cap
    reason = "cap"
    if tier_cap is not None and tier_cap < cap:
        cap, reason = tier_cap, "tier"
    asked = req.output_limit()
    if asked is None:
        limit = min(default, cap)
    elif asked > cap:
        limit, ctx.max_tokens_clamped = cap, reason
    else:
        return
    if req.max_completion_tokens is not None:
        req.max_completion_tokens = limit
    else:
        req.max_tokens = limit


def wants_usage(req: ChatRequest) -> bool:
    return req.stream_options is not None and req.stream_options.include_usage
