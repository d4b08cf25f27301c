"""Tollway as a library: the gateway in-process, behind the official SDKs
(`inprocess.Gateway`, exported as `tollway.Gateway`; docs/library.md)."""

from tollway.library.attribution import Attribution, attribute
from tollway.library.inprocess import Gateway

__all__ = ["Attribution", "Gateway", "attribute"]
