"""Pre-flight cost decisions: is the input too long, does the worst case fit the
per-request ceiling (lower max_tokens if that still leaves a useful answer), and what
to do with a model that has no price."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from tollway.accounting.prices import Price, format_usd, max_output_within, worst_case
from tollway.config import ModelConfig, ServerConfig
from tollway.errors import InvalidRequest
from tollway.types import ChatRequest


@dataclass(slots=True, frozen=True)
class Limits:
    """The pre-flight limits that apply to one alias (alias setting, else server)."""

    max_input_tokens: int | None
    max_cost_usd: float | None
    min_output_tokens: int

    @classmethod
    def of(cls, model: ModelConfig, server: ServerConfig) -> Limits:
        return cls(
            max_input_tokens=_first(model.max_input_tokens, server.max_input_tokens),
            max_cost_usd=_first(model.max_cost_usd, server.max_cost_usd),
            min_output_tokens=_first(model.min_output_tokens, server.min_output_tokens) or 1,
        )

    @property
    def need_count(self) -> bool:
        return self.max_input_tokens is not None or self.max_cost_usd is not None


T = TypeVar("T")


def _first(a: T | None, b: T | None) -> T | None:
    return a if a is not None else b


def check_input_length(input_tokens: int, limits: Limits, param: str = "messages") -> None:
    limit = limits.max_input_tokens
    if limit is not None and input_tokens > limit:
        what = "Message" if param == "messages" else "Input"
        raise InvalidRequest(f"{what} too long: {input_tokens} tokens (limit: {limit}).",
                             param=param, code="input_too_long")


def refuse_unpriced(model: str, policy: str, dollar_limit: bool) -> None:
    """Raise if a model without a price may not be used under `policy` (a dollar
    ceiling or a dollar budget applies when `dollar_limit`)."""
    if policy == "allow" or (policy == "refuse_if_dollar_limit" and not dollar_limit):
        return
    raise InvalidRequest(
        f"The model '{model}' has no price, so its cost cannot be checked against the "
        "dollar limit or budget. Give it one in tollway.yaml — under `prices:` (by model "
        "name, USD per 1M tokens) or as its deployment's `price:` — or set "
        "server.unpriced: allow.", param="model", code="unpriced_model")


@dataclass(slots=True)
class CeilingDecision:
    max_output: int  # output tokens that fit the ceiling
    clamped: bool  # max_tokens was lowered to fit
    worst_case_usd: float


def worst_output(req: ChatRequest) -> int:
    """The most output tokens a request can be billed for: max_tokens for each choice."""
    return (req.output_limit() or 0) * (req.n or 1)


def input_ceiling(input_tokens: int, worst: float, ceiling: float,
                  model: str) -> CeilingDecision:
    """A request with no output (embeddings) against the per-request ceiling: it fits,
    or it is refused (there is no max_tokens to lower)."""
    if worst > ceiling:
        raise InvalidRequest(
            f"Estimated cost ${format_usd(worst)} ({input_tokens} input tokens on {model}) "
            f"exceeds the per-request ceiling ${format_usd(ceiling)}. Send fewer or shorter "
            "inputs, or raise the ceiling.", param="input", code="cost_ceiling_exceeded")
    return CeilingDecision(max_output=0, clamped=False, worst_case_usd=worst)


def fit_ceiling(req: ChatRequest, input_tokens: int, price: Price, limits: Limits,
                model: str) -> CeilingDecision | None:
    """Lower max_tokens so the worst case fits the ceiling, or refuse when what is left
    is under min_output_tokens. None when no ceiling applies."""
    ceiling = limits.max_cost_usd
    if ceiling is None:
        return None
    choices = req.n or 1
    asked = worst_output(req)
    worst = worst_case(input_tokens, asked, price)
    fits = max_output_within(ceiling, input_tokens, price) // choices
    if worst <= ceiling:
        return CeilingDecision(max_output=fits, clamped=False, worst_case_usd=worst)
    if fits < limits.min_output_tokens:
        raise InvalidRequest(
            f"Estimated worst-case cost ${format_usd(worst)} ({input_tokens} input tokens + "
            f"{asked} output tokens on {model}) exceeds the per-request ceiling "
            f"${format_usd(ceiling)}, and only {max(fits, 0)} output tokens would fit "
            f"(minimum {limits.min_output_tokens}). Shorten the input or raise the ceiling.",
            param="max_tokens", code="cost_ceiling_exceeded")
    if req.max_completion_tokens is not None:
        req.max_completion_tokens = fits
    else:
        req.max_tokens = fits
    return CeilingDecision(max_output=fits, clamped=True,
                           worst_case_usd=worst_case(input_tokens, fits * choices, price))
