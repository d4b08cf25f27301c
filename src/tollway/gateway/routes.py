"""Where a model name leads: the tier it asks for (`tier:NAME` or the x-tollway-tier
header), the alias it resolves to, whether the key may use it, and that alias's route —
its deployments with their prices, its pre-flight limits, and its pool followed by its
fallbacks' (the router's chain). Built once per configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from tollway.accounting import prices
from tollway.accounting.prices import Price
from tollway.config import Config, ModelConfig
from tollway.errors import ModelNotFound
from tollway.keys import KeyRecord
from tollway.policy import auth, cost, tiers
from tollway.routing.router import Pool, Router
from tollway.types import Deployment


@dataclass(slots=True, eq=False)
class Route:
    alias: str
    model: ModelConfig
    deployments: list[Deployment]
    limits: cost.Limits
    prices: dict[Deployment, Price | None]
    pool: Pool
    chain: list[Pool] = field(default_factory=list)  # this pool, then its fallbacks'

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
                                        own, Pool(alias, deps, mc.retry or routing.retry))
        for route in self._routes.values():
            route.chain = [route.pool, *(self.resolve(f).pool for f in route.model.fallbacks)]

    def choose(self, model: str, tier_header: str | None, key: KeyRecord | None,
               internal: bool) -> tuple[Route, tiers.TierChoice]:
        """The tier and route a request asks for; 404 for an unknown model, 403 when
        the key may not use it (the gateway's own calls use the models it configured)."""
        choice = tiers.select(model, tier_header, self.config)
        route = self.resolve(choice.model)
        if not internal:
            # What is served decides, not the body's name: a tier header must not open a
            # model the key may not use.
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

    def models(self) -> list[str]:
        """Every model deployed, for warming the tokenizers."""
        return sorted({d.model for r in self._routes.values() for d in r.deployments})
