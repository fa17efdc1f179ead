"""The README's own layout inside the sandbox: a checkout that holds the virtual environment and
the `runs/` directory, on ge's `sys.path` (an editable install), in a place the sandbox hides (the
home directory or /tmp).

The variant's directory lies inside that checkout, so the checkout itself cannot be bound back
whole (its run directory would show); what the interpreter needs inside it (the venv) must be
bound back on its own, and Landlock alone must not re-open the run directory by granting the
checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guided_evolution.evaluation.sandbox.bwrap import BwrapRequest, HostPaths
from guided_evolution.evaluation.sandbox.confine_backend import (
    hidden_without_namespaces,
    readable_without_namespaces,
)
from guided_evolution.evaluation.sandbox.landlock import abi_version
from guided_evolution.fsutil import is_within
from tests.reliability.support import set_config
from tests.support.seeds import template_seed

EVALUATE = """\
import json, os, sys
lib = sys.argv[1]
with open(os.path.join(lib, "marker.txt")) as fh:  # what the interpreter needs in the checkout
    assert fh.read() == "needed"
json.dump({"score": 1.0, "size": 1}, open(os.environ["GE_METRICS"], "w"))
"""


def _backends() -> list[str]:
    found = []
    if shutil.which("bwrap"):
        found.append("bwrap")
    if abi_version() > 0:
        found.append("landlock")
    return found


@pytest.mark.parametrize("backend", ["bwrap", "landlock"])
def test_a_venv_inside_the_checkout_that_holds_the_run_is_seen_by_the_evaluator(
    tmp_path: Path, backend: str
) -> None:
    if backend not in _backends():
        pytest.skip(f"{backend} is not available on this machine")
    checkout = tmp_path / "checkout"  # under /tmp: hidden by the sandbox's private /tmp
    lib = checkout / ".venv" / "lib"
    lib.mkdir(parents=True)
    (lib / "marker.txt").write_text("needed")
    seed = template_seed(checkout / "seeds" / "mine", generations=0, initial_population=1)
    (seed / "evaluate.py").write_text(EVALUATE)
    set_config(
        seed, "evaluator", command=f"python evaluate.py {lib}", check="true", sandbox=backend
    )
    env = {
        **os.environ,
        "LITELLM_OFFLINE_MODE": "true",
        # ge's sys.path holds the checkout (an editable install) and the venv's directory in it.
        "PYTHONPATH": os.pathsep.join([str(checkout), str(lib), *sys.path]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "guided_evolution", "run", str(seed), "--json"],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (checkout / "runs").is_dir(), "the run went to the checkout's runs/, as in the README"


def test_landlock_alone_never_grants_the_run_directory_back_through_the_checkout(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    checkout = home / "checkout"
    venv = checkout / ".venv"
    run = checkout / "runs" / "r"
    work = run / "work" / "v1"
    for path in (venv, work, checkout / "seeds" / "mine", checkout / "src"):
        path.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    host = HostPaths(homes=[home], needed=[checkout, venv])  # an editable install and its venv
    req = BwrapRequest(
        workdir=work, writable=[], hide=[run], readable=[checkout / "seeds" / "mine"],
        uid=None, network=False, readonly_root=True, is_root=True,
    )  # fmt: skip
    hidden = hidden_without_namespaces(req, host)
    granted = readable_without_namespaces(req, host, hidden)
    assert not any(is_within(run, g) for g in granted), granted  # no rule covers the run
    assert any(is_within(venv, g) for g in granted), granted  # the venv stays readable
    assert any(is_within(checkout / "src", g) for g in granted), granted
