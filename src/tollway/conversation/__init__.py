"""Conversation memory: server-side conversations and history policies."""
