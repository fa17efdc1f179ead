"""A new run probes its sandbox once and verifies the preloading worker once, though
its seed is evaluated (in the run's temporary directory) by an executor of its own before the
run's executor starts; the isolation event is recorded as before."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from guided_evolution.engine.session import start_run
from guided_evolution.errors import GeError
from guided_evolution.evaluation.sandbox import wrap
from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
from guided_evolution.evaluation.workers import preload
from guided_evolution.runstore.run_index import RunIndex
from tests.support.seeds import template_seed


def _count(monkeypatch: pytest.MonkeyPatch, module: object, counts: Counter[str], name: str) -> None:
    """Count the one-off sandboxed commands (``run_to_end``) that ``module`` runs."""
    real = module.run_to_end  # type: ignore[attr-defined]

    def counted(*args: object, **kwargs: object) -> object:
        counts[name] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "run_to_end", counted)


def test_a_new_run_probes_once_per_policy_and_verifies_preload_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = template_seed(tmp_path / "seed", generations=1, initial_population=2, population=2)
    counts: Counter[str] = Counter()
    _count(monkeypatch, wrap, counts, "probe")
    _count(monkeypatch, preload, counts, "verify")
    policies: list[SandboxPolicy] = []
    real_init = Sandbox.__init__

    def init(self: Sandbox, policy: SandboxPolicy) -> None:
        policies.append(policy)
        real_init(self, policy)

    monkeypatch.setattr(Sandbox, "__init__", init)
    monkeypatch.chdir(tmp_path)
    start_run(seed, None, tmp_path / "runs" / "r", {})
    with RunIndex.open(tmp_path / "runs" / "r" / "index.sqlite") as index:
        isolation = index.events("isolation")
    assert isolation and isolation[-1].data["summary"]
    # Without a GPU query the start-up check, the seed's executor and the run's share one
    # policy, so one probe: as many trials as one probe of a new policy takes here (the backends
    # tried in turn).
    assert len(set(policies)) == 1, policies
    trials = counts["probe"]
    Sandbox(SandboxPolicy(readable=(str(tmp_path / "elsewhere"),))).probe()
    assert trials == counts["probe"] - trials > 0, counts
    boxed = "a pid, mount and ipc namespace per stage" in isolation[-1].data["layers"]
    assert counts["verify"] == (1 if boxed else 0), (counts, isolation[-1].data)

def test_a_failed_probe_is_tried_again_and_a_changed_policy_probes_anew(tmp_path: Path) -> None:
    broken = SandboxPolicy(backend="bwrap", readable=(str(tmp_path),))
    bwrap_missing = wrap.shutil.which("bwrap") is None
    for _ in range(2):
        sandbox = Sandbox(broken)
        if bwrap_missing:
            with pytest.raises(GeError, match="bwrap not installed"):
                sandbox.probe()
    policy = SandboxPolicy(readable=(str(tmp_path),))
    first = Sandbox(policy).probe()
    assert Sandbox(policy).probe() is first  # the same findings, not a second probe
    other = Sandbox(SandboxPolicy(readable=(str(tmp_path),), max_processes=99)).probe()
    assert other is not first
