"""A splice's "did the code change?" check: comparing ``ast.dump`` strings vs ``splice.same_ast``.

    python benchmarks/splice_compare.py

On the seeds' evolvable files: the tree of the file against an equal tree (a child whose edit
touched only comments or layout) and against one whose last integer literal differs (most
children differ somewhere); median ms per comparison.
"""

from __future__ import annotations

import ast
import statistics
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guided_evolution.evolution.splice import same_ast

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
FILES = ["exquisitenet_v2/model.py", "tiny_cnn/model.py", "fast_exp/approx.py"]


def per_call_ms(call: object, number: int = 50, repeat: int = 7) -> float:
    """Median ms of one call of ``call`` over ``repeat`` rounds of ``number`` calls."""
    return 1000 * statistics.median(timeit.repeat(call, number=number, repeat=repeat)) / number


def main() -> None:
    for name in FILES:
        path = SEEDS / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        a, b = ast.parse(text), ast.parse(text)
        changed = ast.parse(text)
        for node in ast.walk(changed):  # the last integer literal of the file, raised by one
            if isinstance(node, ast.Constant) and type(node.value) is int:
                last = node
        last.value += 1
        for label, other in (("equal", b), ("changed", changed)):
            dump = per_call_ms(lambda a=a, other=other: ast.dump(a) == ast.dump(other))
            walk = per_call_ms(lambda a=a, other=other: same_ast(a, other))
            print(f"{name:28} {label:8} ast.dump {dump:6.2f} ms   same_ast {walk:6.2f} ms")


if __name__ == "__main__":
    main()
