"""The request path. Every chat request, from HTTP or from Python, goes through
`Gateway.chat`, top to bottom:

    resolve the model alias -> cap the output -> route to a deployment (in order,
    moving on only on failures that another deployment could fix) -> shape the reply

Each step is one call into a module with a small interface. Steps for budgets,
caching, guards and the ledger slot into this same sequence as they land.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollway.config import Config, ModelConfig
from tollway.errors import ModelNotFound, TollwayError, Unavailable
from tollway.providers.base import Provider
from tollway.providers.registry import build_providers
from tollway.types import (
    CallContext,
    ChatRequest,
    Deployment,
    Reply,
    ReplyStream,
)


@dataclass(slots=True)
class Answer:
    """What the caller gets: a full reply or a stream of chunks, and who answered."""

    deployment: Deployment
    reply: Reply | None = None
    stream: ReplyStream | None = None

    @property
    def model(self) -> str:
        return self.deployment.model


class Gateway:
    def __init__(self, config: Config, providers: dict[str, Provider] | None = None) -> None:
        self.config = config
        self.providers = providers if providers is not None else build_providers(config)
        self._deployments = {alias: [d.to_deployment() for d in mc.deployments]
                             for alias, mc in config.models.items()}

    async def chat(self, req: ChatRequest, ctx: CallContext) -> Answer:
        alias, model = self._resolve(req.model)
        ctx.alias = alias
        cap_output(req, model, self.config, ctx)
        answer = await self._route(req, model, self._deployments[alias])
        if answer.stream is not None:
            # Usage is always requested upstream (it is what we bill on); the client
            # sees the usage event only if it asked for it.
            answer.stream.emit_usage = wants_usage(req)
        return answer

    def _resolve(self, name: str) -> tuple[str, ModelConfig]:
        found = self.config.resolve(name)
        if found is None:
            known = ", ".join(self.config.public_models()) or "(none configured)"
            raise ModelNotFound(f"The model '{name}' does not exist on this gateway. "
                                f"Available models: {known}.", param="model")
        return found

    async def _route(self, req: ChatRequest, model: ModelConfig,
                     deployments: list[Deployment]) -> Answer:
        last: TollwayError | None = None
        for dep in deployments:
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
        if len(model.deployments) > 1:
            raise Unavailable(f"Every deployment failed; last error: {last.message}",
                              retry_after=last.retry_after) from last
        raise last


def worth_another_deployment(e: TollwayError) -> bool:
    """Rate limits, server errors and timeouts may not recur elsewhere; client errors
    (bad request, content policy) would, so they go straight back to the caller."""
    return e.status in (429, 502, 503, 504) or (e.upstream_status or 0) >= 500


def cap_output(req: ChatRequest, model: ModelConfig, config: Config, ctx: CallContext) -> None:
    """No limit -> the default; above the hard cap -> clamped (reported in a header)."""
    default = model.default_max_tokens or config.server.default_max_tokens
    cap = model.max_tokens_cap or config.server.max_tokens_cap
    asked = req.output_limit()
    if asked is None:
        limit = default
    elif asked > cap:
        limit, ctx.max_tokens_clamped = cap, True
    else:
        return
    if req.max_completion_tokens is not None:
        req.max_completion_tokens = limit
    else:
        req.max_tokens = limit


def wants_usage(req: ChatRequest) -> bool:
    return req.stream_options is not None and req.stream_options.include_usage
