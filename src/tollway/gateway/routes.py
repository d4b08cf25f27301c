"""Where a model name leads: the tier it asks for (`tier:NAME` or the x-tollway-tier
header), the alias it resolves to, whether the key may use it, whether it answers the
endpoint asked (chat or embeddings: `serves`), and that alias's route —
its deployments with their prices, its pre-flight limits, and its pool followed by its
fallbacks' (the router's chain).

A configured alias's route is built once per configuration and found by one dict
lookup. Any other name is matched against the wildcard aliases (`openai/*`; see
config/wildcards.py): as written, then — without a provider prefix — as
`PROVIDER/name`, the provider being the price table's for the name or its family
(`gpt-4o-mini-2024-07-18` -> `openai/gpt-4o-mini-2024-07-18`). Its route is built on
first use, with the wildcard alias's settings (retry, breaker, pacing, limits,
fallbacks; guards, cache and rate limits are the alias's by its name), and kept in a
bounded cache: a request holds a lease on it until it is settled, and only routes no
request holds are evicted, so a deployment's breaker and pacing state never disappear
under a call. Names the configuration itself refers to (fallbacks, tiers) are built
at start and never evicted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from tollway.accounting import prices
from tollway.accounting.prices import Price
from tollway.accounting.settlement import Outcome, Releases, Settlement
from tollway.config import EMBEDDING_MODEL, Config, ModelConfig
from tollway.config.wildcards import Patterns, fill, is_pattern
from tollway.errors import InvalidRequest, ModelNotFound
from tollway.keys import KeyRecord
from tollway.policy import auth, cost, tiers
from tollway.routing.router import Pool, Router
from tollway.types import Deployment

# Wildcard-served names kept built; past it, the least recently used routes that no
# request holds are dropped (a quarter at a time, so the cost is paid rarely).
MAX_WILDCARD_ROUTES = 512


@dataclass(slots=True, frozen=True)
class Serves:
    """What a route's deployments answer, and why not the rest (the 400's message)."""

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


def serves(name: str, deps: list[Deployment], facts: list[Price | None]) -> Serves:
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
            no_chat = no_chat or (f"The model '{name}' is an embedding model ({dep.model}): "
                                  "send it to POST /v1/embeddings, not a chat endpoint.")
        elif dep.provider == "anthropic":
            no_embeddings = no_embeddings or (
                f"The model '{name}' is served by Anthropic, which has no embeddings API; "
                "use an OpenAI or OpenAI-compatible embedding model (or local-embed).")
        elif dep.provider == "local" or (fact is not None and fact.output > 0):
            no_embeddings = no_embeddings or (
                f"The model '{name}' is a chat model ({dep.model}) and has no embeddings; "
                "use an embedding model (local-embed is built in).")
    dims = {f.dimensions if f is not None else None for f in facts}
    dim = dims.pop() if len(dims) == 1 else None
    return Serves(no_chat, no_embeddings, dim,
                  dim is not None and all(f is not None and f.shortens for f in facts))


@dataclass(slots=True, eq=False)
class Route:
    alias: str  # the configured alias whose settings apply (a wildcard's: `openai/*`)
    model: ModelConfig
    deployments: list[Deployment]
    limits: cost.Limits
    prices: dict[Deployment, Price | None]
    pool: Pool
    chain: list[Pool] = field(default_factory=list)  # this pool, then its fallbacks'
    # What it serves: the alias, or the name a wildcard matched (`openai/gpt-4o`); the
    # response cache keys on it.
    name: str = ""
    wildcard: bool = False  # built for a wildcard match: leased, cached, evictable
    users: int = 0  # requests holding it now
    asked: list[str] = field(default_factory=list)  # the names that led here
    serves: Serves = CHAT_AND_EMBEDDINGS
    no_chat: str | None = field(init=False)  # serves.no_chat, one lookup nearer (chat's path)

    def __post_init__(self) -> None:
        self.no_chat = self.serves.no_chat

    def price(self, dep: Deployment) -> Price | None:
        return self.prices.get(dep)

    async def release(self, outcome: Outcome, s: Settlement) -> None:
        self.users -= 1


class Routes:
    def __init__(self, config: Config, router: Router,
                 forget: Callable[[], None] = lambda: None) -> None:
        """`forget`: drop what providers keep per deployment (called when wildcard
        routes are evicted)."""
        self.config = config
        self.router = router
        self.table = prices.load_table(config.prices)
        self.patterns = Patterns(config.models)
        self._forget = forget
        self._routes: dict[str, Route] = {}  # configured aliases, by their own name
        self._by_name: dict[str, Route] = {}  # every configured name (aliases too)
        self._pinned: dict[str, Route] = {}  # wildcard names the configuration names
        self._wild: dict[str, Route] = {}  # wildcard names asked for, oldest use first
        self._matched: dict[str, Route] = {}  # the same routes, by the name they matched
        self._uses: dict[Deployment, int] = {}  # wildcard routes holding each deployment
        self._prices: dict[Deployment, Price | None] = {}  # every deployment's
        for alias, mc in config.models.items():
            if is_pattern(alias):
                continue
            deps = [d.to_deployment(mc.prompt_cache) for d in mc.deployments]
            self._routes[alias] = self._route(alias, alias, mc, deps)
        for name in (*config.aliases, *self._routes):
            found = config.resolve(name)
            if found is not None and found[0] in self._routes:
                self._by_name[name] = self._routes[found[0]]
        for name in _referenced(config):
            if name not in self._by_name:
                self._wildcard_route(name, pin=True)
        for route in (*self._routes.values(), *set(self._pinned.values())):
            route.chain = self._chain(route)

    def _route(self, alias: str, name: str, mc: ModelConfig, deps: list[Deployment],
               *, wildcard: bool = False) -> Route:
        """A route over `deps` with `alias`'s settings; their upstreams added."""
        routing = self.config.routing
        own: dict[Deployment, Price | None] = {}
        for cfg, made in zip(mc.deployments, list(deps), strict=True):
            price = prices.price_from_config(cfg.price) if cfg.price else self.table.get(
                made.model)
            # The router may hand back an earlier configuration's equal deployment.
            dep = self.router.add(made, mc.breaker or routing.breaker, cfg.pacing, price, name)
            own[dep] = price
        deps = list(own)
        self._prices.update(own)
        return Route(alias, mc, deps, cost.Limits.of(mc, self.config.server), own,
                     Pool(name, deps, mc.retry or routing.retry), name=name,
                     wildcard=wildcard,
                     serves=serves(name, deps, [self.table.get(d.model) for d in deps]))

    def _chain(self, route: Route) -> list[Pool]:
        return [route.pool, *(self.resolve(f).pool for f in route.model.fallbacks)]

    def choose(self, model: str, tier_header: str | None, key: KeyRecord | None,
               internal: bool, releases: Releases) -> tuple[Route, tiers.TierChoice]:
        """The tier and route a chat request asks for; 404 for an unknown model, 400 for
        an embedding model, 403 when the key may not use it (the gateway's own calls use
        the models it configured). A wildcard route is leased until the request is
        settled (`releases`)."""
        choice = tiers.select(model, tier_header, self.config)
        route = self.resolve(choice.model)
        if route.no_chat is not None:
            raise InvalidRequest(route.no_chat, param="model", code="model_not_supported")
        if not internal:
            # What is served decides, not the body's name: a tier header must not open a
            # model the key may not use.
            auth.check_model(key, f"{tiers.PREFIX}{choice.tier}" if choice.tier else model,
                             route.alias, route.name)
        if route.wildcard:
            route.users += 1
            releases.push("wildcard route", route.release)
        return route, choice

    def choose_embeddings(self, model: str, tier_header: str | None, key: KeyRecord | None,
                          releases: Releases) -> tuple[Route, tiers.TierChoice]:
        """`choose`, for an embeddings request: 400 for a model that only chats."""
        choice = tiers.select(model, tier_header, self.config)
        route = self.resolve(choice.model)
        if route.serves.no_embeddings is not None:
            raise InvalidRequest(route.serves.no_embeddings, param="model",
                                 code="model_not_supported")
        auth.check_model(key, f"{tiers.PREFIX}{choice.tier}" if choice.tier else model,
                         route.alias, route.name)
        if route.wildcard:
            route.users += 1
            releases.push("wildcard route", route.release)
        return route, choice

    def resolve(self, name: str) -> Route:
        """The route serving `name`, or 404 naming what is served."""
        route = self._by_name.get(name)
        if route is not None:
            return route
        route = self.find(name)
        if route is None:
            known = ", ".join(self.config.public_models()) or "(none configured)"
            raise ModelNotFound(f"The model '{name[:256]}' does not exist on this gateway. "
                                f"Available models: {known}.", param="model")
        return route

    def find(self, name: str) -> Route | None:
        """The route serving `name`, built and cached if a wildcard serves it; None
        when nothing does."""
        route = self._by_name.get(name) or self._pinned.get(name)
        if route is not None:
            return route
        route = self._wild.pop(name, None)
        if route is None:
            route = self._wildcard_route(name)
            if route is None or not route.wildcard:  # nothing, or a pinned one
                return route
            route.asked.append(name)
        self._wild[name] = route  # the most recently used last
        return route

    def _wildcard_route(self, name: str, *, pin: bool = False) -> Route | None:
        """The route a wildcard gives `name`: the one already built for the name it
        matches as, else a new one — pinned (kept for good, no lease) or cached."""
        if not self.patterns:
            return None
        found = self.patterns.match_with(name, self.table.provider(name))
        if found is None:
            return None
        alias, matched, qualified = found
        route = self._pinned.get(qualified) or self._matched.get(qualified)
        if route is not None:
            if pin:
                self._pinned[name] = route
            return route
        if not pin and len(self._matched) >= MAX_WILDCARD_ROUTES:
            self._evict(MAX_WILDCARD_ROUTES // 4)
        mc = self.config.models[alias]
        deps = [dataclasses.replace(d.to_deployment(mc.prompt_cache),
                                    model=fill(d.model, matched))
                for d in mc.deployments]
        route = self._route(alias, qualified, mc, deps, wildcard=not pin)
        if pin:  # its chain is made once every pinned route exists
            self._pinned[name] = self._pinned[qualified] = route
            return route
        route.chain = self._chain(route)
        self._matched[qualified] = route
        for dep in route.deployments:
            self._uses[dep] = self._uses.get(dep, 0) + 1
        return route

    def _evict(self, n: int) -> None:
        """Drop up to `n` of the least recently used wildcard routes no request holds,
        and their deployments' upstream state."""
        gone: dict[Route, None] = {}  # in order, each once
        for route in self._wild.values():
            if len(gone) >= n:
                break
            if route.users == 0:
                gone[route] = None
        for route in gone:
            for name in route.asked:
                self._wild.pop(name, None)
            self._matched.pop(route.name, None)
            for dep in route.deployments:
                self._uses[dep] -= 1
                if self._uses[dep] == 0:
                    del self._uses[dep]
                    self.router.drop(dep)
                    self._prices.pop(dep, None)
        if gone:
            self._forget()

    def servable(self, name: str) -> bool:
        """Whether a request for `name` would find a route (builds none)."""
        if name in self._by_name or name in self._pinned or name in self._wild:
            return True
        return bool(self.patterns) and self.patterns.match_with(
            name, self.table.provider(name)) is not None

    def listed(self) -> list[str]:
        """What GET /v1/models lists: the configured names (not the patterns), tiers,
        and every model of the price table a wildcard serves, by its plain name."""
        names = {n for n in self.config.public_models() if not is_pattern(n)}
        if self.patterns:
            for model in self.table.models():
                if model not in names and self.patterns.match_with(
                        model, self.table.provider(model)) is not None:
                    names.add(model)
        return sorted(names)

    def price(self, dep: Deployment) -> Price | None:
        return self._prices.get(dep)

    def dimensions_of(self, name: str) -> int | None:
        """An embedding model's vector size, for /v1/models: a configured name's route's,
        else the price table's (a wildcard serves a model by its own name)."""
        route = self._by_name.get(name) or self._pinned.get(name)
        if route is not None:
            return route.serves.dimensions
        fact = self.table.get(name) if self.patterns else None
        return fact.dimensions if fact is not None else None

    def deployments(self) -> dict[str, list[Deployment]]:
        """Per alias (and per wildcard-served name built so far), its deployments."""
        out = {alias: r.deployments for alias, r in self._routes.items()}
        for r in (*self._pinned.values(), *self._matched.values()):
            out[r.name] = r.deployments  # a pinned one is listed once, by its name
        return out

    def models(self) -> list[str]:
        """Every model deployed, for warming the tokenizers."""
        return sorted({d.model for r in (*self._routes.values(), *self._pinned.values())
                       for d in r.deployments})


def _referenced(config: Config) -> list[str]:
    """Names the configuration routes to by itself: fallbacks and tiers' models."""
    return [*(f for mc in config.models.values() for f in mc.fallbacks),
            *(t.model for t in config.tiers.values())]
