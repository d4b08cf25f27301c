"""`POST /v1/messages/count_tokens`: a prompt's input tokens, for the model it names.

Routed as a chat request is (the tier, the alias or a wildcard, the key's allowed
models), then counted where the answer would be billed: by the upstream when the
route's first deployment's provider counts tokens itself (Anthropic's count_tokens,
with the deployment's key, over the gateway's transport), else here, the way the
pipeline counts input (`accounting/tokens.count_request`).

Nothing is generated, so nothing is billed, held on a budget or counted by rate
limits, and no ledger row is written (a row would add a zero-cost "request" to every
spend report); each call is counted in `tollway_count_tokens_requests`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollway.accounting import settlement, tokens
from tollway.accounting.settlement import Aborted, Releases
from tollway.gateway.routes import Route, Routes
from tollway.policy.auth import Caller
from tollway.providers.base import CountsTokens, Provider
from tollway.types import ChatRequest, Deployment


@dataclass(frozen=True, slots=True)
class TokenCount:
    input_tokens: int
    deployment: Deployment
    counted_by: str  # upstream | local


def counting_deployment(route: Route) -> Deployment:
    """The deployment that would take the call first: the lowest priority's first."""
    return min(route.deployments, key=lambda d: d.priority)


async def count_tokens(routes: Routes, providers: dict[str, Provider], req: ChatRequest,
                       caller: Caller, tier_header: str | None,
                       request_id: str) -> TokenCount:
    releases = Releases()
    route, _ = routes.choose(req.model, tier_header, caller.key, False, releases)
    try:
        dep = counting_deployment(route)
        provider = providers.get(dep.provider)
        if isinstance(provider, CountsTokens):
            return TokenCount(await provider.count_tokens(req, dep), dep, "upstream")
        return TokenCount(await tokens.count_request_async(req, dep.model), dep, "local")
    finally:
        await releases.unwind(Aborted(), settlement.ZERO, request_id)
