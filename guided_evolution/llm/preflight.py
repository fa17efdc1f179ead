"""Checks of the configured models before a run directory exists: their API keys, and what an
``api_base`` server says it serves. Cheap (no litellm, no openai client: both take seconds to
import) and bounded: at most one ``GET {api_base}/models`` per server, within ``PROBE_S``.

A server that does not answer in time, or answers ``/models`` with anything but a model list,
passes: the run's own retries deal with a slow server. Only what is certainly wrong fails: a
missing key variable, a bare model name litellm cannot route (no ``provider/``, no ``api_base``,
not in litellm's model table), an ``api_base`` whose host does not resolve or whose port refuses
the connection, a key the server refuses, a model the server does not list.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from guided_evolution.errors import ConfigError
from guided_evolution.llm.prices import price_file
from guided_evolution.llm.settings import ModelSpec

PROBE_S = 1.5
"""Time for all the ``/models`` probes together."""

OFFLINE = "offline"

_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "together_ai": ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY", "TOGETHER_AI_TOKEN"),
    "cohere": ("COHERE_API_KEY",),
    "fireworks_ai": ("FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY"),
    "xai": ("XAI_API_KEY",),
    "perplexity": ("PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"),
    "azure": ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY"),
}
"""The variables litellm and the openai client read a provider's key from."""

_KEYLESS = frozenset(
    {"ollama", "ollama_chat", "hosted_vllm", "vllm", "lm_studio", "llamafile", "custom_openai"}
)
"""Local servers that need no key."""

_BARE = (
    (("gpt-", "chatgpt-", "o1", "o3", "o4", "ft:gpt-", "text-"), "openai"),
    (("claude-",), "anthropic"),
    (("gemini-",), "gemini"),
    (("mistral-", "codestral", "open-mistral"), "mistral"),
    (("command-",), "cohere"),
    (("deepseek-",), "deepseek"),
)
"""Bare model names (no ``provider/``) and the provider litellm sends them to."""

_ENV_BASES = ("OPENAI_BASE_URL", "OPENAI_API_BASE")
"""Variables that point OpenAI-style models at another server (then no OpenAI key is needed)."""


@dataclass(frozen=True)
class Check:
    """What one model needs: its provider, the key variables it may use, its server."""

    model: ModelSpec
    provider: str | None
    keys: tuple[str, ...]
    base: str | None

    @property
    def served(self) -> str:
        """The name the server knows the model by (the provider prefix removed)."""
        name = self.model.model
        return (
            name.split("/", 1)[1]
            if self.provider and name.startswith(f"{self.provider}/")
            else name
        )

    def key(self) -> str | None:
        """The key the model would be sent with, if one is set."""
        return next((os.environ[k] for k in self.keys if os.environ.get(k)), None)


def provider_of(model: str) -> str | None:
    """The provider of a litellm model string (``openai/…``, ``gpt-4o``, ``claude-…``), or None."""
    if "/" in model:
        return model.split("/", 1)[0].lower()
    lower = model.lower()
    return next((p for prefixes, p in _BARE if lower.startswith(prefixes)), None)


def is_local(url: str) -> bool:
    """Whether ``url`` is on this machine or a private network (a server that may need no key)."""
    host = urlparse(url).hostname or ""
    if host in ("localhost", "host.docker.internal") or host.endswith(".local"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def plan(model: ModelSpec) -> Check:
    """What ``model`` needs."""
    provider = provider_of(model.model)
    if model.api_key_env:
        keys: tuple[str, ...] = (model.api_key_env,)
    else:
        keys = _KEYS.get(provider or "", ())
    base = model.api_base
    if base is None and provider in (None, "openai"):
        base = next((os.environ[v] for v in _ENV_BASES if os.environ.get(v)), None)
    return Check(model, provider, keys, base)


def key_problem(check: Check) -> ConfigError | None:
    """A missing key variable: one named by ``api_key_env``, or the provider's own when the model
    goes to the provider itself (an ``api_base`` server or a local one may need none)."""
    model = check.model
    if model.api_key_env and not os.environ.get(model.api_key_env):
        return ConfigError(
            f"{model.label}: environment variable {model.api_key_env} is not set",
            f"export {model.api_key_env}=<your key>, or set api_key_env in [[llm.models]]",
        )
    if check.base is not None or check.provider in _KEYLESS or not check.keys or check.key():
        return None
    return ConfigError(
        f"{model.label}: no API key ({' or '.join(check.keys)} is not set)",
        f"export {check.keys[0]}=<your key>, set api_key_env in [[llm.models]], "
        "or use --model offline",
    )


@dataclass(frozen=True)
class Probe:
    """What ``GET {base}/models`` gave: the HTTP status (0: no answer), the model ids it lists,
    and why nothing answered when that is certain (the host is unknown, the port refuses)."""

    code: int
    ids: list[str] | None = None
    unreachable: str | None = None


def route_problem(check: Check, table: Path | None = None) -> ConfigError | None:
    """A bare model name (no ``provider/``) without an ``api_base`` that litellm's model table
    (``table``, default litellm's own) does not list: litellm cannot tell where to send it."""
    name = check.model.model
    if check.base is not None or "/" in name or name.startswith("ft:"):
        return None
    known = _table_names(table or price_file())
    if not known or name in known:
        return None
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    guess = f"did you mean --model {close[0]}? Otherwise " if close else ""
    return ConfigError(
        f"{check.model.label}: litellm cannot route model {name!r} (no provider/ prefix, no "
        "api_base, and not a model name litellm knows)",
        f"{guess}name the provider (--model PROVIDER/{name}) or the server (--api-base URL, "
        "api_base in [[llm.models]])",
    )


def _table_names(path: Path | None) -> list[str]:
    """The bare model names of litellm's model table (empty when it cannot be read)."""
    if path is None:
        return []
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return []
    return (
        [k for k in data if isinstance(k, str) and "/" not in k] if isinstance(data, dict) else []
    )


def listed_models(base: str, key: str | None, timeout_s: float) -> Probe:
    """``GET {base}/models`` within ``timeout_s`` (the name lookup included: it runs on a thread
    that is given up on, so a DNS server that does not answer cannot hold the start)."""
    found: list[Probe] = []
    thread = threading.Thread(target=lambda: found.append(_ask(base, key, timeout_s)), daemon=True)
    thread.start()
    thread.join(timeout_s + 0.05)
    return found[0] if found else Probe(0)


def _ask(base: str, key: str | None, timeout_s: float) -> Probe:
    request = urllib.request.Request(base.rstrip("/") + "/models", method="GET")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    handlers = [urllib.request.ProxyHandler({})] if is_local(base) else []  # no proxy for local
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout_s) as response:
            data = json.loads(response.read(1 << 20))
    except urllib.error.HTTPError as err:
        return Probe(err.code)
    except urllib.error.URLError as err:
        return Probe(0, None, _unreachable(base, err.reason))
    except (OSError, ValueError) as err:
        return Probe(0, None, _unreachable(base, err))
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return Probe(200)
    return Probe(200, [str(r["id"]) for r in rows if isinstance(r, dict) and "id" in r])


def _unreachable(base: str, reason: object) -> str | None:
    """Why ``base`` certainly cannot be reached (None: maybe later, e.g. a timeout)."""
    parsed = urlparse(base)
    if isinstance(reason, socket.gaierror):
        return f"its host {parsed.hostname!r} is unknown (name lookup failed: {reason.strerror})"
    if isinstance(reason, ConnectionRefusedError):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return f"nothing listens on {parsed.hostname}:{port} (connection refused)"
    return None


def server_problem(check: Check, timeout_s: float, reach: bool = True) -> ConfigError | None:
    """What the model's server says against it: a refused key, or a list without the model."""
    assert check.base is not None
    probe = listed_models(check.base, check.key(), timeout_s)
    code, ids = probe.code, probe.ids
    label = check.model.label
    if probe.unreachable and reach:
        where = label if check.model.api_base else f"{label} (api_base {check.base})"
        fix = (
            "fix the host"
            if "unknown" in probe.unreachable
            else "start the server, or fix the port"
        )
        return ConfigError(
            f"{where}: the server cannot be reached: {probe.unreachable}",
            f"{fix} in --api-base / api_base of [[llm.models]], then run the command again",
        )
    if code in (401, 403):
        var = check.model.api_key_env or (check.keys[0] if check.keys else "the key variable")
        return ConfigError(
            f"{label}: the server refuses the key (HTTP {code} from {check.base}/models)",
            f"set {var} to a key this server accepts, or set api_key_env in [[llm.models]]",
        )
    served = check.served
    if (
        not ids
        or served in ids
        or f"{served}:latest" in ids
        or any(i.endswith(f"/{served}") for i in ids)
    ):
        return None
    shown = ", ".join(ids[:8]) + (", …" if len(ids) > 8 else "")
    prefix = (
        f"{check.provider}/"
        if check.provider and check.model.model.startswith(f"{check.provider}/")
        else ""
    )
    return ConfigError(
        f"{label}: the server does not serve model {served!r} (it serves: {shown})",
        f'use one of them, e.g. model = "{prefix}{ids[0]}" in [[llm.models]] or --model {prefix}{ids[0]}',
    )


def preflight(models: Sequence[ModelSpec], probe: bool = True, reach: bool = True) -> None:
    """Raise the first certain problem of the configured models (a ``ConfigError``: one line
    with the fix) before anything is written; ``probe`` also asks each ``api_base`` server;
    ``reach``: a server that cannot be reached is a problem too (`ge run`; a resumed run may
    replay its cached replies while the server is down, and its api_base is frozen)."""
    checks = [plan(m) for m in models if m.model != OFFLINE]
    for check in checks:
        problem = route_problem(check) or key_problem(check)
        if problem is not None:
            raise problem
    if not probe:
        return
    deadline = time.monotonic() + PROBE_S
    asked: set[tuple[str, str]] = set()
    for check in checks:
        left = deadline - time.monotonic()
        if check.base is None or left <= 0.05 or (check.base, check.served) in asked:
            continue
        asked.add((check.base, check.served))
        problem = server_problem(check, left, reach)
        if problem is not None:
            raise problem
