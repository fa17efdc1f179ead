"""A scriptable OpenAI-compatible chat-completions server for tests.

Usage::

    from tests.support.openai_server import serve, reply, status, hang

    with serve([status(429, retry_after=0), reply("hello")]) as server:
        ...  # point a client at server.base_url ("http://127.0.0.1:PORT/v1")
        assert len(server.requests) == 2

``POST /v1/embeddings`` (or ``/embeddings``) answers each input with a deterministic vector
(:func:`bag_of_words`: similar text, similar vector; ``encoding_format`` ``base64`` honoured);
``embedding_status`` set to an HTTP code makes it fail instead. Those requests are kept in
``embedding_requests``, apart from the chat requests.

Each request to ``POST /v1/chat/completions`` (or ``/chat/completions``) takes the next action from
the script queue; once the queue is empty the ``responder`` (a callable ``request_json -> Action``)
decides, and without a responder the server replies ``"ok"``. Actions are built with :func:`reply`,
:func:`status`, :func:`hang`, :func:`malformed`, :func:`empty`, :func:`reset` and :func:`huge`.
The server runs on 127.0.0.1 with an ephemeral port in a daemon thread and stops (interrupting any
``hang``) when the ``with`` block exits.
"""

from __future__ import annotations

import base64
import collections
import json
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict[str, Any]], "Action"]
EMBEDDING_DIMENSIONS = 64
_WORD = re.compile(r"\w+|[^\w\s]")


def bag_of_words(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic embedding: counts of the text's words and symbols hashed (crc32) into
    ``dimensions`` buckets, so texts that share most words have a cosine similarity near 1."""
    vector = [0.0] * dimensions
    for word in _WORD.findall(text):
        vector[zlib.crc32(word.encode()) % dimensions] += 1.0
    return vector


def embeddings_json(request: dict[str, Any]) -> dict[str, Any]:
    """The body of an embeddings response for ``request`` (one vector per input)."""
    inputs = request.get("input", [])
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    data = []
    for i, text in enumerate(inputs):
        vector: Any = bag_of_words(str(text))
        if request.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(len(_WORD.findall(str(t))) for t in inputs)
    return {
        "object": "list",
        "data": data,
        "model": str(request.get("model", "test-embedding")),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@dataclass(frozen=True)
class Action:
    """What the server does with one request. Build it with the helper functions below."""

    kind: str  # reply | status | hang | malformed | reset
    text: str | None = "ok"
    prompt_tokens: int = 10
    completion_tokens: int = 5
    code: int = 200
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    then: Action | None = None


def reply(text: str = "ok", prompt_tokens: int = 10, completion_tokens: int = 5) -> Action:
    """A normal chat.completion with ``text`` as the assistant message and the given usage."""
    return Action(
        "reply", text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )


def empty(prompt_tokens: int = 10, completion_tokens: int = 0) -> Action:
    """A chat.completion whose message content is ``null``."""
    return Action(
        "reply", text=None, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )


def huge(
    size: int = 1_000_000, prompt_tokens: int = 10, completion_tokens: int = 250_000
) -> Action:
    """A chat.completion with a ``size``-character reply (1 MB by default)."""
    return reply("x" * size, prompt_tokens, completion_tokens)


def status(code: int, body: str | dict | None = None, retry_after: float | None = None) -> Action:
    """An HTTP error ``code`` with an OpenAI-style error body (or ``body``) and optional Retry-After."""
    if body is None:
        body = {"error": {"message": f"scripted HTTP {code}", "type": "server_error", "code": code}}
    text = body if isinstance(body, str) else json.dumps(body)
    headers = (("Retry-After", f"{retry_after:g}"),) if retry_after is not None else ()
    return Action("status", code=code, body=text, headers=headers)


def hang(seconds: float, then: Action | None = None) -> Action:
    """Sleep ``seconds`` (interrupted when the server stops), then do ``then`` (default: reply "ok")."""
    return Action("hang", seconds=seconds, then=then or reply())


def malformed() -> Action:
    """HTTP 200 with ``Content-Type: application/json`` and a body that is not JSON."""
    return Action("malformed", code=200, body='{"id": "chatcmpl-broken", "choices": [')


def reset() -> Action:
    """Close the connection abruptly (TCP RST) without sending any response."""
    return Action("reset")


def completion_json(
    model: str, text: str | None, prompt_tokens: int, completion_tokens: int
) -> dict:
    """The body of a standard (non-streaming) chat.completion response."""
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class OpenAIServer:
    """State of a running server: its URL, what it received, and its script."""

    def __init__(self, script: Iterable[Action] = (), responder: Responder | None = None) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []  # JSON bodies, in arrival order
        self.request_headers: list[dict[str, str]] = []  # lower-cased headers, same order
        self.in_flight = 0
        self.max_in_flight = 0
        self.embedding_requests: list[dict[str, Any]] = []  # embeddings bodies, in order
        self.embedding_status: int | None = None  # an HTTP code: embeddings fail with it
        self._script: collections.deque[Action] = collections.deque(script)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _make_handler(self))
        self.port: int = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def push(self, *actions: Action) -> None:
        """Append actions to the script queue."""
        with self._lock:
            self._script.extend(actions)

    @property
    def pending(self) -> int:
        """Number of scripted actions not consumed yet."""
        with self._lock:
            return len(self._script)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Interrupt hangs, stop serving and close the listening socket."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next_action(self, request: dict[str, Any]) -> Action:
        with self._lock:
            self.requests.append(request)
            if self._script:
                return self._script.popleft()
        return self.responder(request) if self.responder else reply()

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that give up (timeouts, cancellations) are expected: stay quiet."""


EMBEDDINGS = ("/v1/embeddings", "/embeddings")  # the routes of embedding requests


def _make_handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            route = self.path.rstrip("/")
            if route not in (*EMBEDDINGS, "/v1/chat/completions", "/chat/completions"):
                self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
                return
            try:
                request = json.loads(raw or b"{}")
            except ValueError:
                self._send(400, json.dumps({"error": {"message": "request body is not JSON"}}))
                return
            if route in EMBEDDINGS:
                self._embeddings(request)
                return
            with server._lock:
                server.request_headers.append({k.lower(): v for k, v in self.headers.items()})
            server._enter()
            try:
                self._act(server._next_action(request), request)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away: nothing to do
            finally:
                server._leave()

        def _embeddings(self, request: dict[str, Any]) -> None:
            with server._lock:
                server.embedding_requests.append(request)
                failing = server.embedding_status
            if failing is not None:
                self._send(failing, status(failing).body)
                return
            self._send(200, json.dumps(embeddings_json(request)))

        def _act(self, action: Action, request: dict[str, Any]) -> None:
            if action.kind == "hang":
                if server._stopping.wait(action.seconds):
                    self.close_connection = True
                    return
                self._act(action.then or reply(), request)
            elif action.kind == "reply":
                body = completion_json(
                    str(request.get("model", "test-model")),
                    action.text,
                    action.prompt_tokens,
                    action.completion_tokens,
                )
                self._send(200, json.dumps(body))
            elif action.kind in ("status", "malformed"):
                self._send(action.code, action.body, action.headers)
            elif action.kind == "reset":
                # SO_LINGER(on, 0): close() sends RST instead of FIN.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
            else:
                raise ValueError(f"unknown action kind {action.kind!r}")

        def _send(self, code: int, body: str, headers: Iterable[tuple[str, str]] = ()) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def serve(
    script: Iterable[Action] = (), responder: Responder | None = None
) -> Iterator[OpenAIServer]:
    """Run an :class:`OpenAIServer` for the duration of the ``with`` block."""
    server = OpenAIServer(script, responder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
