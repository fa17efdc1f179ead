"""Talking to LLMs: settings, the client (retries, deadline, budget, cache), call records, errors.

litellm is imported only when a call is made (see :mod:`guided_evolution.llm.provider`).
"""
