"""Tollway: a production LLM gateway.

`tollway.Gateway` runs it in-process behind the official SDKs (docs/library.md);
`tollway.attribute` attributes the requests sent in a block to a user or feature.
Both are imported on first use, so `import tollway` stays cheap (the CLI and every
server worker import this package).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollway.version import __version__

if TYPE_CHECKING:
    from tollway.library import Attribution, Gateway, attribute

__all__ = ["Attribution", "Gateway", "__version__", "attribute"]


def __getattr__(name: str) -> Any:
    if name in ("Gateway", "attribute", "Attribution"):
        import tollway.library

        return getattr(tollway.library, name)
    raise AttributeError(f"module 'tollway' has no attribute {name!r}")
