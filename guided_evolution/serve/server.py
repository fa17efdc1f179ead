"""The HTTP side of `ge serve`: a `ThreadingHTTPServer` that answers GET only.

Routes: ``/`` (the runs, or the one run), ``/run/NAME`` (the page), ``/static/*`` (its script
and style), ``/api/runs``, ``/api/run/NAME/live?epoch=E&cursor=N`` (the state and the points
after the first N) and ``/api/run/NAME/variant/ID`` (`ge show`, the diffs against each parent
and the seed, `ge lineage`).

What a variant wrote is data, never markup: the pages are static files that build their DOM with
``textContent``; the JSON escapes ``<``, ``>`` and ``&`` and is pure ASCII; every response forbids
inline script and any other origin (``Content-Security-Policy``) and sniffing. Requests naming
another host are refused (a page elsewhere cannot rebind its name to this server), and a
server bound beyond the loopback interface asks for its access token.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import socket
import sqlite3
import sys
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from guided_evolution.errors import GeError
from guided_evolution.serve.live import LiveRun
from guided_evolution.serve.runs import Target
from guided_evolution.serve.views import run_rows, variant_view
from guided_evolution.termsafe import inert

STATIC = Path(__file__).parent / "static"
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
COOKIE = "ge_serve_token"
_RUN = re.compile(r"/run/([^/]+)/?")
_API = re.compile(r"/api/run/([^/]+)/(live|variant/([^/]+))")


def plain(value: Any) -> Any:
    """``value`` with every non-finite float written as a string (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def encode(value: Any) -> bytes:
    """JSON that no HTML parser mistakes for markup: ASCII only, ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(plain(value), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


@dataclass
class App:
    """What the handlers share: the target, the access rule and one `LiveRun` per run."""

    target: Target
    port: int = 0
    token: str | None = None  # required when bound beyond the loopback interface
    quiet: bool = True
    lives: dict[Path, LiveRun] = field(default_factory=dict)
    briefs: dict[Path, tuple[Any, dict[str, Any]]] = field(default_factory=dict)  # `run_rows`
    lock: threading.Lock = field(default_factory=threading.Lock)
    static: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path in STATIC.iterdir():
            if path.suffix in TYPES:
                self.static[path.name] = path.read_bytes()

    def live(self, root: Path) -> LiveRun:
        with self.lock:
            return self.lives.setdefault(root, LiveRun(root))

    def host_allowed(self, host: str | None) -> bool:
        """A loopback server answers only requests for its own loopback names (DNS rebinding)."""
        if self.token is not None:
            return True
        names = {f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]")}
        return (host or "").strip().lower() in names


class Handler(BaseHTTPRequestHandler):
    """GET and HEAD only: nothing a request says is ever written."""

    server_version = "ge-serve"
    protocol_version = "HTTP/1.1"  # kept-alive connections: a poll is not a new connection
    timeout = 120  # an idle kept-alive connection is closed after this
    app: App  # set on the class `make_server` builds

    def log_message(self, format: str, *args: Any) -> None:
        if not self.app.quiet:
            sys.stderr.write(inert(f"{self.address_string()} {format % args}") + "\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self.app.host_allowed(self.headers.get("Host")):
            return self._text(HTTPStatus.FORBIDDEN, "this server answers only on 127.0.0.1 and localhost")
        if self.app.token is not None and not self._authorised(url.path, query):
            return None
        try:
            self._route(url.path, query)
        except GeError as err:
            self._json({"error": err.one_line()}, HTTPStatus.NOT_FOUND)
        except sqlite3.Error as err:  # e.g. an index being rebuilt: the page asks again
            self._json({"error": f"cannot read the run's index now ({err})"}, HTTPStatus.SERVICE_UNAVAILABLE)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _not_allowed(self) -> None:
        self._text(HTTPStatus.METHOD_NOT_ALLOWED, "ge serve is read-only: GET only")

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _authorised(self, path: str, query: dict[str, list[str]]) -> bool:
        """The access token, from the query (then kept in a cookie) or the cookie."""
        token = self.app.token or ""
        given = (query.get("token") or [""])[0]
        if given and hmac.compare_digest(given.encode(), token.encode()):
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", quote(path))
            self.send_header("Set-Cookie", f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/")
            self.send_header("Content-Length", "0")
            self._common_headers()
            self.end_headers()
            return False
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie") or "")
        except CookieError:  # a malformed cookie is no token
            cookie = SimpleCookie()
        held = cookie[COOKIE].value if COOKIE in cookie else ""
        if held and hmac.compare_digest(held.encode(), token.encode()):
            return True
        self._text(HTTPStatus.UNAUTHORIZED, "access token required: open the address ge serve printed")
        return False

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        runs = self.app.target.runs()
        if path == "/":
            if self.app.target.single and runs:
                return self._redirect("/run/" + quote(next(iter(runs)), safe=""))
            return self._static("page.html")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        if _RUN.fullmatch(path):
            return self._static("page.html")
        if path == "/api/runs":
            return self._json({"dir": str(self.app.target.root), "single": self.app.target.single,
                               "runs": run_rows(runs, self.app.briefs)})
        api = _API.fullmatch(path)
        if api is None:
            return self._text(HTTPStatus.NOT_FOUND, "not found")
        name = unquote(api.group(1))
        root = runs.get(name)
        if root is None:
            raise GeError(f"no run {name!r} in {self.app.target.root}", "pick one on the first page")
        if api.group(2) == "live":
            number = lambda key: int(v) if (v := (query.get(key) or [""])[0]).isdigit() else None  # noqa: E731
            view = self.app.live(root).view(number("cursor") or 0, (query.get("epoch") or [None])[0])
            return self._json(view)
        return self._json(variant_view(root, unquote(api.group(3))))

    # ------------------------------------------------------------------ responses

    def _common_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = HTTPStatus.OK) -> None:
        self._send(status, encode(value), "application/json")

    def _text(self, status: int, message: str) -> None:
        self._send(status, (message + "\n").encode(), "text/plain; charset=utf-8")

    def _static(self, name: str) -> None:
        body = self.app.static.get(name)
        if body is None:
            return self._text(HTTPStatus.NOT_FOUND, "not found")
        self._send(HTTPStatus.OK, body, TYPES[Path(name).suffix] + "; charset=utf-8")

    def _redirect(self, where: str) -> None:
        self.send_response(HTTPStatus.FOUND)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self._common_headers()
        self.end_headers()


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(target: Target, host: str, port: int, token: str | None, quiet: bool = True) -> ThreadingHTTPServer:
    """A server for ``target`` bound to ``host:port`` (port 0: any free port), not yet serving."""
    app = App(target, token=token, quiet=quiet)
    handler = type("BoundHandler", (Handler,), {"app": app})
    kind = _Server6 if ":" in host else ThreadingHTTPServer
    server = kind((host, port), handler)
    server.daemon_threads = True
    app.port = server.server_address[1]
    return server
