"""The ``ge serve`` command: `serve` (typer reads its arguments and help from the signature;
the CLI registers it) and `main` for ``python -m guided_evolution.serve``."""

from __future__ import annotations

import errno
import ipaddress
import secrets
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from guided_evolution.errors import GeError
from guided_evolution.termsafe import inert

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind_error(err: OSError, host: str, port: int) -> GeError:
    if err.errno == errno.EADDRINUSE:
        return GeError(f"port {port} is in use", "pass --port 0 for any free port, or another --port")
    if err.errno == errno.EACCES:
        return GeError(f"not allowed to listen on port {port}", "pass a port above 1023, or --port 0")
    return GeError(f"cannot listen on {host}:{port} ({err.strerror or err})", "pass --host 127.0.0.1")


def serve(
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="RUN|RUNS_DIR",
            help="A run directory (runs/NAME), or a directory of runs to list (default: the runs "
            "of the current directory: ./runs, or \\[run] dir of ./ge.toml).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="The address to listen on. Any other than 127.0.0.1, ::1 or localhost shows your "
            "runs (code, prompts, replies) to the network: ge warns and requires an access token.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The port (0: any free port).")] = 8765,
) -> None:
    """Watch runs in a browser: a local, read-only web page per run (its state, Pareto front,
    best so far, failures, isolation; click a point for its diff, prompt and reply) that updates
    while the run is live. Never writes to a run, never takes its lock."""
    from guided_evolution.runstore.rundir import runs_dir_of
    from guided_evolution.serve.runs import target_of
    from guided_evolution.serve.server import make_server

    if not 0 <= port <= 65535:
        raise GeError(f"--port {port} is not a port", "pass 1-65535, or 0 for any free port")
    if target is not None and not target.strip():
        raise GeError("the run directory is empty", "pass a run directory, e.g. runs/NAME")
    where = target_of(Path(target) if target is not None else runs_dir_of(Path(".")))
    token = None if is_loopback(host) else secrets.token_urlsafe(24)
    try:
        server = make_server(where, host, port, token)
    except (OSError, socket.gaierror) as err:
        raise _bind_error(err, host, port) from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_address[1]}/" + (f"?token={token}" if token else "")
    what = f"run {where.root}" if where.single else f"the runs in {where.root}"
    if token:
        sys.stderr.write(
            f"warning: --host {inert(host)} is not the loopback interface: anyone who can reach "
            "this address and has the token can read these runs (code, prompts, replies)\n"
        )
    sys.stdout.write(f"ge serve: {inert(what)} at {url} (read-only; Ctrl-C stops)\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    """``python -m guided_evolution.serve``: user errors are one line on stderr, exit code 2."""
    import click
    import typer.main

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(serve)
    try:
        typer.main.get_command(app).main(standalone_mode=False)
    except click.ClickException as err:
        sys.stderr.write(f"error: {inert(err.format_message())}\n")
        sys.exit(2)
    except GeError as err:
        sys.stderr.write(f"error: {inert(err.one_line())}\n")
        sys.exit(err.exit_code)
