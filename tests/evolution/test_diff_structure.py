"""The diff fallback keeps the code's structure (issue 25 item 5): a SEARCH text that matches only
when indentation is ignored is applied when its lines sit at the same relative depths as the code's
(a uniform shift), else rejected by name; no statement ever changes block.

Before, the fallback ignored relative indentation and re-indented every replacement line by the
first line's offset: searching ``x = 1\\ny = 2`` in ``if c:\\n    x = 1\\ny = 2`` moved ``y`` into the
``if``, and the child compiled.

The property test draws random programs of nested blocks (if/else, for, with; 2 or 4 spaces or
tabs), a random run of lines as the search, mis-indented at random (a uniform shift, a flattening,
or each line's own indentation), and a replacement that changes the run's constants: every accepted
edit leaves each statement in the block it was in, every rejection is named. Seeded, so a failure
reproduces (the case's seed is in the message); hypothesis is not a dependency of the project.
"""

from __future__ import annotations

import ast
import random

import pytest

from guided_evolution.evolution import diffedit
from guided_evolution.evolution.diffedit import DiffError, apply_diff

CASES = 3000


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def test_the_issues_example_is_rejected_by_name() -> None:
    code = "if c:\n    x = 1\ny = 2\n"
    with pytest.raises(DiffError) as info:
        apply_diff(block("x = 1\ny = 2\n", "x = 3\ny = 2\n"), code)
    assert (info.value.reason, info.value.block) == (diffedit.REASON_INDENT, 1)
    assert "x = 1 | y = 2" in info.value.detail


def test_a_uniform_shift_is_applied_with_the_codes_indentation() -> None:
    code = "def f(c):\n    if c:\n        x = 1\n    y = 2\n    return x + y\n"
    result = apply_diff(block("if c:\n    x = 1\ny = 2\n", "if c:\n    x = 3\ny = 4\n"), code)
    assert result.code == "def f(c):\n    if c:\n        x = 3\n    y = 4\n    return x + y\n"
    assert result.tolerant == (1,)


def test_a_replacement_dedented_past_column_zero_is_rejected() -> None:
    code = "def f(c):\n    x = 1\n    return x\n"
    reply = block("        x = 1\n", "        x = 2\nz = 3\n")  # z at -8 relative to the place
    with pytest.raises(DiffError) as info:
        apply_diff(reply, code)
    assert info.value.reason == diffedit.REASON_INDENT and "column 0" in info.value.detail


def test_a_structure_preserving_place_is_chosen_over_a_textual_one() -> None:
    """Two places match the text; only one with the search's relative depths: it is applied."""
    code = "if a:\n    x = 1\ny = 2\nif b:\n    x = 1\n    y = 2\n"
    result = apply_diff(block("  x = 1\n  y = 2\n", "  x = 5\n  y = 6\n"), code)
    assert result.code == "if a:\n    x = 1\ny = 2\nif b:\n    x = 5\n    y = 6\n"


# --------------------------------------------------------------------------- property


class Program:
    """A random program: numbered statements in nested blocks, rendered with one indent unit."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.count = 0
        self.unit = rng.choice(["    ", "  ", "\t"])
        self.lines: list[str] = []
        self.body(0, 3)

    def body(self, depth: int, budget: int) -> None:
        for _ in range(self.rng.randint(1, 4)):
            self.count += 1
            n, pad = self.count, self.unit * depth
            kind = self.rng.choice(["stmt", "stmt", "if", "for", "with"]) if budget else "stmt"
            if kind == "stmt":
                self.lines.append(f"{pad}v{n} = {n}")
                continue
            header = {"if": f"if c{n}:", "for": f"for i{n} in r:", "with": f"with m{n}:"}[kind]
            self.lines.append(pad + header)
            self.body(depth + 1, budget - 1)
            if kind == "if" and self.rng.random() < 0.4:
                self.lines.append(pad + "else:")
                self.body(depth + 1, budget - 1)

    @property
    def code(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def places(code: str) -> dict[str, tuple[str, ...]]:
    """Each statement (its name) -> the chain of blocks it sits in (header name and branch)."""
    found: dict[str, tuple[str, ...]] = {}

    def name(node: ast.stmt) -> str:
        if isinstance(node, ast.Assign):
            return node.targets[0].id  # type: ignore[attr-defined]
        if isinstance(node, ast.If):
            return node.test.id  # type: ignore[attr-defined]
        if isinstance(node, ast.For):
            return node.target.id  # type: ignore[attr-defined]
        assert isinstance(node, ast.With)
        return node.items[0].context_expr.id  # type: ignore[attr-defined]

    def walk(body: list[ast.stmt], path: tuple[str, ...]) -> None:
        for node in body:
            key = name(node)
            found[key] = path
            walk(getattr(node, "body", []), (*path, key))
            walk(getattr(node, "orelse", []), (*path, key + ":else"))

    walk(ast.parse(code).body, ())
    return found


def misindent(lines: list[str], rng: random.Random) -> tuple[list[str], str]:
    """The run's lines with their indentation disturbed, and how."""
    how = rng.choice(["shift", "shift", "flatten", "each"])
    stripped = [line.lstrip(" \t") for line in lines]
    widths = [len(line.expandtabs(8)) - len(s) for line, s in zip(lines, stripped, strict=True)]
    if how == "shift":
        delta = rng.choice([-8, -4, -2, 2, 4, 8])
        delta = max(delta, -min(widths))
        return [" " * (w + delta) + s for w, s in zip(widths, stripped, strict=True)], how
    if how == "flatten":
        return stripped, how
    return [" " * rng.choice([0, 2, 4, 8]) + s for s in stripped], how


def test_no_edit_moves_a_statement_between_blocks() -> None:
    outcomes: dict[tuple[str, str], int] = {}
    for case in range(CASES):
        rng = random.Random(case)
        program = Program(rng)
        code = program.code
        lines = program.lines
        start = rng.randrange(len(lines))
        run = lines[start : start + rng.randint(1, 6)]
        search, how = misindent(run, rng)
        if search == run:
            continue  # an exact match: not the fallback
        replace = [line.replace(" = ", " = 1000 + ") for line in search]
        reply = block("".join(s + "\n" for s in search), "".join(r + "\n" for r in replace))
        before = places(code)
        try:
            result = apply_diff(reply, code)
        except DiffError as err:
            assert err.reason in (diffedit.REASON_INDENT, diffedit.REASON_AMBIGUOUS), (case, err)
            outcomes[how, "rejected"] = outcomes.get((how, "rejected"), 0) + 1
            continue
        if result.tolerant != (1,):  # the disturbed text is another place's exact text
            outcomes[how, "exact"] = outcomes.get((how, "exact"), 0) + 1
        after = places(result.code)  # parses: no block left empty or unexpectedly indented
        assert after == before, f"case {case}: a statement changed block\n{code}\n{result.code}"
        edited = [line.lstrip(" \t") for line in result.code.splitlines()]
        assert sum("1000 + " in line for line in edited) == sum(" = " in line for line in run)
        outcomes[how, "applied"] = outcomes.get((how, "applied"), 0) + 1
    # the test means something: uniform shifts are applied, other disturbances mostly rejected
    assert outcomes.get(("shift", "applied"), 0) > 0.9 * CASES / 2 * 0.5, outcomes
    assert outcomes.get(("flatten", "rejected"), 0) > 100, outcomes
    assert outcomes.get(("each", "rejected"), 0) > 100, outcomes
