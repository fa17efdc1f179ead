"""Small seeds and a code-writing fake LLM for engine tests and benchmarks."""

from __future__ import annotations

import itertools
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guided_evolution import seedinit
from guided_evolution.config_moved import migrate
from tests.support.openai_server import Action, reply

_FENCE = re.compile(r"```(?:python)?\n(.*?)```", re.S)
_INT = re.compile(r"(?<![\w.])(\d+)(?![\w.])")


def toml_value(value: Any) -> str:
    """A TOML literal for a str / bool / number / list / dict (inline table) value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def evolution_lines(evolution: dict[str, Any]) -> list[str]:
    """`key = value` lines of an [evolution] table; a knob named by its flat key of earlier
    versions (``islands=2``) becomes its section, as an inline table (``config_moved.migrate``)."""
    moved = migrate({"evolution": evolution})["evolution"]
    return [f"{key} = {toml_value(value)}" for key, value in moved.items()]


def _table(name: str, values: dict[str, Any]) -> list[str]:
    """`[name]` with its plain keys, then each dict value as the table `[name.key]`."""
    lines = [f"[{name}]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    lines.append("")
    for key, sub in values.items():
        if isinstance(sub, dict):
            lines += _table(f"{name}.{key}", sub)
    return lines


def write_config(
    path: Path, sections: dict[str, dict[str, Any]], objectives: list[dict[str, Any]]
) -> None:
    """Write a ge.toml from plain dicts (dotted section names and nested tables allowed). A knob
    named by its flat key of earlier versions (``islands=2`` in "evolution", ``memory_mb`` in
    "evaluator") is written into its table (``config_moved.migrate``), so tests may name it
    the short way; the file itself is always in the current form."""
    lines: list[str] = []
    for name, values in migrate(sections).items():
        lines += _table(name, values)
    for obj in objectives:
        lines.append("[[objectives]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in obj.items()]
        lines.append("")
    path.write_text("\n".join(lines))


def template_seed(directory: Path, **evolution: Any) -> Path:
    """The `ge init` seed with a test-sized config (no GPU, quick generations)."""
    seedinit.write_template(directory)
    evo = {
        "initial_population": 4,
        "population": 4,
        "elites": 2,
        "hall_of_fame": 10,
        "generations": 2,
        "seed": 1,
    }
    evo.update(evolution)
    write_config(
        directory / "ge.toml",
        {
            "seed": {"files": ["model.py"]},
            "llm": {"models": ["offline"], "timeout_s": 10, "retries": 1, "backoff_s": 0.01},
            "evolution": evo,
            "evaluator": {
                "command": "python evaluate.py",
                "check": "python evaluate.py --check",
                "timeout_s": 60,
            },
            "executor": {"slots": 2, "gpus": []},
        },
        [{"name": "score", "direction": "max"}, {"name": "size", "direction": "min"}],
    )
    return directory


def copy_seed(src: Path, dest: Path) -> Path:
    """Copy a seed directory (without run output)."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    return dest


EXQUISITENET_SEED = Path(__file__).resolve().parents[2] / "seeds" / "exquisitenet_v2"


def cpu_exquisitenet_seed(directory: Path, **evolution: Any) -> Path:
    """The ExquisiteNetV2 seed sized for a CPU test: tiny CIFAR-format data in the seed's
    data folder (read through GE_SEED_DIR), one short epoch, one slot, no GPU; `evolution`
    keys are added to its [evolution] table."""
    from tests.support.cifar import write_cifar

    seed = copy_seed(EXQUISITENET_SEED, directory)
    write_cifar(seed / "data" / "cifar-10-batches-py", n_train=120, n_test=40)
    text = (seed / "ge.toml").read_text()
    text = text.replace("--recipe fast --seed 0", "--recipe fast --seed 0 --epochs 1 --batch-size 32 --device cpu")
    text = text.replace('slots = "auto"', "slots = 1").replace('gpus = "auto"', "gpus = []")
    text = text.replace('slots_per_gpu = "auto"', "slots_per_gpu = 1")
    extra = "".join(f"\n{line}" for line in evolution_lines(evolution))
    text = text.replace("[evolution]", f"[evolution]{extra}", 1)
    (seed / "ge.toml").write_text(text)
    return seed


def bump_first_integer(code: str, n: int) -> str:
    """CodeWriter's default edit: the first integer literal after the first line, raised; code
    without one gets a statement ``_revision = n`` at its first line's depth (a comment alone
    would not change the program: ge takes that child for its parent)."""
    match = _INT.search(code.split("\n", 1)[1] if "\n" in code else code)
    if match:
        offset = len(code.split("\n", 1)[0]) + 1 if "\n" in code else 0
        start, end = match.start(1) + offset, match.end(1) + offset
        return code[:start] + str(int(code[start:end]) + 1 + n % 3) + code[end:]
    return with_statement(code, f"_revision = {n}")


def with_statement(code: str, statement: str) -> str:
    """``code`` with ``statement`` appended at the depth of its first line: a change to the
    program itself (ge merges children that differ from a variant only in comments)."""
    first = code.lstrip("\n").split("\n", 1)[0]
    indent = first[: len(first) - len(first.lstrip(" \t"))]
    return f"{code.rstrip()}\n{indent}{statement}\n"


class CodeWriter:
    """A fake LLM that answers ge's prompts like a cooperative model would.

    Reasoning requests (EoT step one) get prose; every other request gets the first code block of
    the prompt back changed by ``edit(code, n)`` (n counts the requests; by default one integer
    literal changes), so each child really differs.
    """

    def __init__(self, edit: Callable[[str, int], str] = bump_first_integer) -> None:
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._edit = edit
        self.kinds: list[str] = []

    def __call__(self, request: dict[str, Any]) -> Action:
        user = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
        with self._lock:
            n = next(self._counter)
        if "Do not write any code" in user:
            self.kinds.append("reason")
            return reply(f"Lesson {n}: smaller steps helped because the loss surface is smooth.")
        blocks = _FENCE.findall(user)
        if not blocks:
            self.kinds.append("none")
            return reply("I cannot help with that.")
        code = self._edit(blocks[0], n)
        self.kinds.append("code")
        return reply(
            f"Here is the new version.\n\n```python\n{code.rstrip()}\n# revision {n}\n```\n",
            120,
            80,
        )
