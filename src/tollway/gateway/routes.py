"""Where a model name leads: the tier it asks for (`tier:NAME` or the x-tollway-tier
header), the alias it resolves to, whether the key may use it, whether it answers the
endpoint asked (chat or embeddings), and that alias's route — its deployments with
their prices, its pre-flight limits, and its pool followed by its fallbacks' (the
router's chain). Built once per configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from tollway.accounting import prices
from tollway.accounting.prices import Price
from tollway.config import EMBEDDING_MODEL, Config, ModelConfig
from tollway.errors import InvalidRequest, ModelNotFound
from tollway.keys import KeyRecord
from tollway.policy import auth, cost, tiers
from tollway.routing.router import Pool, Router
from tollway.types import Deployment


@dataclass(slots=True, frozen=True)
class Serves:
    """What an alias's deployments answer, and why not the rest (the 400's message)."""

    no_chat: str | None = None
    no_embeddings: str | None = None
    dimensions: int | None = None  # an embedding model's vector size, when known
    shortens: bool = False  # a request may ask for fewer dimensions

    def check_dimensions(self, asked: int | None, alias: str) -> None:
        """`dimensions` within what the model gives: at most its size for one that
        shortens (text-embedding-3), exactly it otherwise; unknown models decide."""
        size = self.dimensions
        if asked is None or size is None or asked == size or (self.shortens and asked < size):
            return
        allowed = f"from 1 to {size}" if self.shortens else f"only {size}"
        raise InvalidRequest(f"Invalid value for 'dimensions': '{alias}' gives {allowed} "
                             f"dimensions, got {asked}.", param="dimensions",
                             code="invalid_value")


CHAT_AND_EMBEDDINGS = Serves()


def serves(alias: str, deps: list[Deployment], facts: list[Price | None]) -> Serves:
    """Chat, embeddings or either, from what each deployment is: Anthropic and the
    bundled chat model only chat; a model the price table gives `dimensions` (or whose
    name says "embed") only embeds; a model priced for output chats; another model of an
    OpenAI-compatible server may do either (its server decides)."""
    no_chat = no_embeddings = None
    for dep, fact in zip(deps, facts, strict=True):
        embeds = ((fact is not None and fact.dimensions is not None)
                  or (dep.provider == "local" and dep.model == EMBEDDING_MODEL)
                  or (dep.provider == "openai" and "embed" in dep.model.lower()))
        if embeds:
            no_chat = no_chat or (f"The model '{alias}' is an embedding model ({dep.model}): "
                                  "send it to POST /v1/embeddings, not a chat endpoint.")
        elif dep.provider == "anthropic":
            no_embeddings = no_embeddings or (
                f"The model '{alias}' is served by Anthropic, which has no embeddings API; "
                "use an OpenAI or OpenAI-compatible embedding model (or local-embed).")
        elif dep.provider == "local" or (fact is not None and fact.output > 0):
            no_embeddings = no_embeddings or (
                f"The model '{alias}' is a chat model ({dep.model}) and has no embeddings; "
                "use an embedding model (local-embed is built in).")
    dims = {f.dimensions if f is not None else None for f in facts}
    dim = dims.pop() if len(dims) == 1 else None
    return Serves(no_chat, no_embeddings, dim,
                  dim is not None and all(f is not None and f.shortens for f in facts))


@dataclass(slots=True, eq=False)
class Route:
    alias: str
    model: ModelConfig
    deployments: list[Deployment]
    limits: cost.Limits
    prices: dict[Deployment, Price | None]
    pool: Pool
    chain: list[Pool] = field(default_factory=list)  # this pool, then its fallbacks'
    serves: Serves = CHAT_AND_EMBEDDINGS
    no_chat: str | None = field(init=False)  # serves.no_chat, one lookup nearer (chat's path)

    def __post_init__(self) -> None:
        self.no_chat = self.serves.no_chat

    def price(self, dep: Deployment) -> Price | None:
        return self.prices.get(dep)


class Routes:
    def __init__(self, config: Config, router: Router) -> None:
        self.config = config
        self.router = router
        table = prices.load_table(config.prices)
        self._routes: dict[str, Route] = {}
        self._prices: dict[Deployment, Price | None] = {}  # every deployment's
        routing = config.routing
        for alias, mc in config.models.items():
            deps = [d.to_deployment() for d in mc.deployments]
            own = {dep: (prices.price_from_config(cfg.price) if cfg.price
                         else table.get(dep.model))
                   for cfg, dep in zip(mc.deployments, deps, strict=True)}
            for cfg, dep in zip(mc.deployments, deps, strict=True):
                router.add(dep, mc.breaker or routing.breaker, cfg.pacing, own[dep])
            self._prices.update(own)
            self._routes[alias] = Route(alias, mc, deps, cost.Limits.of(mc, config.server),
                                        own, Pool(alias, deps, mc.retry or routing.retry),
                                        serves=serves(alias, deps,
                                                      [table.get(d.model) for d in deps]))
        for route in self._routes.values():
            route.chain = [route.pool, *(self.resolve(f).pool for f in route.model.fallbacks)]

    def choose(self, model: str, tier_header: str | None, key: KeyRecord | None,
               internal: bool) -> tuple[Route, tiers.TierChoice]:
        """The tier and route a chat request asks for; 404 for an unknown model, 400 for
        an embedding model, 403 when the key may not use it (the gateway's own calls
        use the models it configured)."""
        choice = tiers.select(model, tier_header, self.config)
        route = self.resolve(choice.model)
        if route.no_chat is not None:
            raise InvalidRequest(route.no_chat, param="model", code="model_not_supported")
        if not internal:
            # What is served decides, not the body's name: a tier header must not open a
            # model the key may not use.
            auth.check_model(key, f"{tiers.PREFIX}{choice.tier}" if choice.tier else model,
                             route.alias)
        return route, choice

    def choose_embeddings(self, model: str, tier_header: str | None, key: KeyRecord | None
                          ) -> tuple[Route, tiers.TierChoice]:
        """`choose`, for an embeddings request: 400 for a model that only chats."""
        choice = tiers.select(model, tier_header, self.config)
        route = self.resolve(choice.model)
        if route.serves.no_embeddings is not None:
            raise InvalidRequest(route.serves.no_embeddings, param="model",
                                 code="model_not_supported")
        auth.check_model(key, f"{tiers.PREFIX}{choice.tier}" if choice.tier else model,
                         route.alias)
        return route, choice

    def resolve(self, name: str) -> Route:
        found = self.config.resolve(name)
        if found is None:
            known = ", ".join(self.config.public_models()) or "(none configured)"
            raise ModelNotFound(f"The model '{name}' does not exist on this gateway. "
                                f"Available models: {known}.", param="model")
        return self._routes[found[0]]

    def price(self, dep: Deployment) -> Price | None:
        return self._prices.get(dep)

    def deployments(self) -> dict[str, list[Deployment]]:
        return {alias: r.deployments for alias, r in self._routes.items()}

    def dimensions(self) -> dict[str, int]:
        """The embedding models' vector sizes, by alias (for /v1/models)."""
        return {alias: r.serves.dimensions for alias, r in self._routes.items()
                if r.serves.dimensions is not None}

    def models(self) -> list[str]:
        """Every model deployed, for warming the tokenizers."""
        return sorted({d.model for r in self._routes.values() for d in r.deployments})
