"""Headless Chromium driven over the DevTools protocol, standard library only: Chromium started
with ``--remote-debugging-pipe`` reads commands on its fd 3 and writes replies and events on its
fd 4, each a JSON object ended by a NUL byte. Used by the `ge serve` tests and benchmarks."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium() -> str | None:
    """The Chromium binary here, or None."""
    for path in (os.environ.get("GE_CHROMIUM"), *CANDIDATES, shutil.which("chromium")):
        if path and os.access(path, os.X_OK):
            return path
    return None


def _high(*fds: int) -> tuple[int, ...]:
    """The pipe's ends moved above 100, so that the child's dup2 onto 3 and 4 overwrites none."""
    out = []
    for fd in fds:
        out.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100))
        os.close(fd)
    return tuple(out)


class Browser:
    """One headless Chromium with one page; `call` sends a command and waits for its reply."""

    def __init__(self, binary: str, width: int = 1280, height: int = 1000) -> None:
        self.profile = tempfile.mkdtemp(prefix="ge-cdp-")
        to_child, self._out = _high(*os.pipe())  # we write commands: its fd 3
        self._in, from_child = _high(*os.pipe())  # it writes replies: its fd 4
        flags = [
            "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-dev-shm-usage",
            f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip

        def fds() -> None:
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen(
            [binary, *flags], pass_fds=(3, 4), preexec_fn=fds,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_child)
        os.close(from_child)
        self._next = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._reader, daemon=True).start()
        self.session = self._attach()

    def _reader(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[-1] = {"error": "chromium closed its pipe"}
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                message = json.loads(raw)
                with self._cond:
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._cond.notify_all()

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = "page",
             timeout: float = 30.0) -> dict[str, Any]:  # fmt: skip
        """The result of one DevTools command (on the page's session unless ``session=None``)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session == "page":
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._next not in self._replies:
                if -1 in self._replies:
                    raise RuntimeError(self._replies[-1]["error"])
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to {method} in {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(self._next)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def _attach(self) -> str:
        targets = self.call("Target.getTargets", session=None)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        sid = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}, session=None)
        self.session = str(sid["sessionId"])
        self.call("Page.enable")
        self.call("Runtime.enable")
        return self.session

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, every: float = 0.02) -> tuple[Any, float]:
        """The first truthy value of ``expression`` and the seconds it took; TimeoutError."""
        start = time.monotonic()
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        while True:
            value = self.eval(guarded)
            if value:
                return value, time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{expression} stayed false for {timeout} s")
            time.sleep(every)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def click(self, x: float, y: float) -> None:
        """A real left click at page coordinates (CSS pixels of the viewport)."""
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def console_errors(self) -> list[str]:
        """What the page logged as an error or threw (from the events received so far)."""
        out = []
        with self._cond:
            for e in self.events:
                if e.get("method") == "Runtime.exceptionThrown":
                    out.append(json.dumps(e["params"]["exceptionDetails"])[:300])
                elif e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error":
                    out.append(json.dumps(e["params"]["args"])[:300])
        return out

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", session=None, timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._in, self._out):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def polling(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    """The first truthy ``check()``; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"nothing after {timeout} s")


def page_path(root: Path) -> str:
    """The page's path for a run directory served alone."""
    return "/run/" + root.name
