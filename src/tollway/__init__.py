"""Tollway: a production LLM gateway."""

__version__ = "0.1.0"
