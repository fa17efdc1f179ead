"""Talking to LLMs: settings, the client (retries, deadline, budget, cache), call records, errors.

OpenAI and OpenAI-compatible endpoints go through the openai client (:mod:`.direct`); litellm is
imported only for other providers, and only when a model needs it (:mod:`.provider`).
"""
