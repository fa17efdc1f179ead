"""Names that the seed's non-evolvable files use from the evolvable ones survive every child.

The protection is checked through ``ge run`` with a fake LLM that renames a class ``evaluate.py``
imports: the child must be rejected at splice time (a ``proposal_rejected`` event with the reason)
and never be committed or evaluated.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from guided_evolution.evolution.segments import kept_names, parse_genome
from guided_evolution.evolution.splice import SpliceError, splice
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.run_index import RunIndex
from tests.reliability.support import llm_config
from tests.support.cli import here_json
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, bump_first_integer, template_seed

pytestmark = pytest.mark.timeout(240)

SCALER = "\n\n# --OPTION--\nclass Scaler:\n    factor = 1.0\n"
REASON = "removed class Scaler used elsewhere in evaluate.py"


def _rename_scaler(code: str, n: int) -> str:
    """The fake LLM's edit: rename the class evaluate.py imports, else bump an integer."""
    if "class Scaler" in code:
        return code.replace("class Scaler", "class Rescaler")
    return bump_first_integer(code, n)


def _seed(directory: Path) -> Path:
    """The template seed with a class in model.py that evaluate.py (not evolvable) imports."""
    seed = template_seed(directory, initial_population=8, population=4, generations=1)
    (seed / "model.py").write_text((seed / "model.py").read_text() + SCALER)
    evaluate = (seed / "evaluate.py").read_text()
    imported = "    import model\n    from model import Scaler\n\n    assert Scaler.factor > 0\n"
    (seed / "evaluate.py").write_text(evaluate.replace("    import model\n", imported, 1))
    return seed


def test_a_child_that_renames_a_class_evaluate_imports_is_rejected(tmp_path: Path) -> None:
    seed = _seed(tmp_path / "seed")
    writer = CodeWriter(_rename_scaler)
    with serve(responder=writer) as server:
        llm_config(seed, server.base_url, concurrency=2)
        summary = here_json(
            "run",
            str(seed),
            "--run-dir",
            str(tmp_path / "run"),
            cwd=tmp_path,
            env={"OPENAI_API_KEY": "sk-x"},
        )
    assert summary["finished"], summary
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        reasons = [str(e.data.get("reason", "")) for e in index.events("proposal_rejected")]
        variants = [v for v in index.variants() if v.commit_sha is not None]
        failed = index.variants(status="failed")
    finally:
        index.close()
    assert any(REASON in r for r in reasons), reasons
    with GitStore.open(tmp_path / "run" / "repo.git") as store:
        models = [store.read_files(v.commit_sha).get("model.py", b"").decode() for v in variants]
    assert len(models) > 1, "the run made children from the other segments"
    assert all("class Scaler:" in m and "Rescaler" not in m for m in models), "a renamed child"
    assert failed == [], "no child reached an evaluation that fails on the missing class"


def test_kept_names_come_from_imports_and_attribute_uses() -> None:
    model = "# --OPTION--\nclass A:\n    pass\n# --OPTION--\ndef b():\n    pass\n"
    model += "# --OPTION--\ndef free():\n    pass\n# --OPTION--\nclass Net:\n    pass\n"
    others = {
        "loader.py": "import importlib\nmodule = importlib.import_module('model')\n"
        "assert hasattr(module, 'Net')\n",  # loaded dynamically, like ExquisiteNetV2's evaluator
        "run.py": "import pkg.model as m\nfrom pkg.model import A\nprint(m.b)\n",
        "other.py": "def free():\n    return 1\n",  # its own `free`: not a use of the model's
        "notes.txt": "A b free",
    }
    kept = kept_names({"pkg/model.py": model, **others}, ["pkg/model.py"])
    assert kept == {"A": "run.py", "b": "run.py", "Net": "loader.py"}
    g = parse_genome({"pkg/model.py": model}, ["pkg/model.py"], kept=kept)
    with pytest.raises(SpliceError, match=r"removed function b used elsewhere in run\.py"):
        splice(g, "pkg/model.py#1", "def c():\n    pass\n")
    assert "def g" in splice(g, "pkg/model.py#2", "def g():\n    pass\n")["pkg/model.py"]
