"""`tollway tokens`: what a text or a conversation would cost on each configured model,
before sending it anywhere."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from tollway.accounting.money import usd_column
from tollway.accounting.prices import PriceTable, load_table, price_from_config
from tollway.accounting.tokens import count_request, count_text, encoding_name_for
from tollway.config import Config, DeploymentConfig
from tollway.config.wildcards import Patterns, fill, is_pattern
from tollway.errors import InvalidRequest
from tollway.types import ChatRequest


@dataclass(slots=True)
class Row:
    model: str  # the name clients use
    deployment: str  # provider/upstream model
    encoding: str
    tokens: int
    input_usd: float | None  # None: the model has no price


def parse_input(raw: str) -> ChatRequest | str:
    """A messages JSON (an object with "messages", or a list of messages) or plain text."""
    stripped = raw.lstrip()
    if not stripped.startswith(("{", "[")):
        return raw
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # text that happens to start with a bracket
    if isinstance(data, list):
        data = {"messages": data}
    if not isinstance(data, dict) or "messages" not in data:
        return raw
    data = {**data, "model": data.get("model") or "-"}
    try:
        req = msgspec.convert({k: v for k, v in data.items()
                               if k in ChatRequest.__struct_fields__}, ChatRequest)
    except msgspec.ValidationError as e:
        raise InvalidRequest(f"not a valid messages file: {e}") from None
    return req


Served = tuple[str, DeploymentConfig, str]


def estimate(source: ChatRequest | str, config: Config, table: PriceTable | None = None,
             entries: Iterable[Served] | None = None) -> list[Row]:
    """A row per entry (default: every name served, per deployment): `entries` may be
    fewer, or wrapped in a progress bar."""
    table = table if table is not None else load_table(config.prices)
    rows: list[Row] = []
    for name, d, model in entries if entries is not None else served_by(config, table):
        tokens = (count_text(source, model) if isinstance(source, str)
                  else count_request(source, model))
        price = price_from_config(d.price) if d.price else table.get(model)
        usd = None if price is None else tokens * price.input / 1e6
        rows.append(Row(name, f"{d.provider}/{model}", encoding_name_for(model), tokens, usd))
    return rows


def served_by(config: Config, table: PriceTable) -> list[Served]:
    """(the name clients use, a deployment, its upstream model) for every configured
    alias, and for every model of the price table a wildcard alias serves."""
    out = [(alias, d, d.model) for alias, mc in sorted(config.models.items())
           if not is_pattern(alias) for d in mc.deployments]
    patterns = Patterns(config.models)
    for model in sorted(table.models()) if patterns else ():
        found = patterns.match_with(model, table.provider(model))
        if found is not None and model not in config.models:
            out += [(model, d, fill(d.model, found[1]))
                    for d in config.models[found[0]].deployments]
    return out


def render(rows: list[Row], source: ChatRequest | str) -> str:
    what = (f"text, {len(source)} characters" if isinstance(source, str)
            else f"{len(source.messages)} messages" + (f", {len(source.tools)} tools"
                                                        if source.tools else ""))
    head = ("model", "deployment", "encoding", "input tokens", "input cost")
    costs = iter(usd_column([r.input_usd for r in rows if r.input_usd is not None]))
    table = [head, *((r.model, r.deployment, r.encoding, str(r.tokens),
                      "unpriced" if r.input_usd is None else "$" + next(costs))
                     for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = [f"input: {what}"]
    for row in table:
        lines.append("  ".join(c.rjust(w) if i >= 3 else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)



