"""`ge lineage` of a variant hundreds of generations deep (issue 29): its ancestry is listed,
newest first, each variant with its parents, instead of a tree as deep as the run (drawing one
1,500 generations deep recursed past Python's limit); a small ancestry is still a tree."""

from __future__ import annotations

import io
import re

from rich.console import Console

from guided_evolution.inspection.terminal import TREE_NODES, print_lineage
from guided_evolution.inspection.view_models import LineageNode, LineageView, MissingNode


def _chain(depth: int) -> LineageView:
    """A first-parent chain ``depth`` generations deep, each variant crossed with a side one."""
    nodes: list[LineageNode | MissingNode] = []
    for gen in range(depth, 0, -1):
        parents = [f"v{gen - 1:05d}", f"s{gen - 1:05d}"] if gen > 1 else ["seed0000"]
        nodes.append(LineageNode(f"v{gen:05d}", gen, "offline-crossover", None, "offline", None,
                                 "evaluated", parents, {"score": gen / 10}, None, gen % 2 == 0))  # fmt: skip
        if gen > 1:
            nodes.append(MissingNode(f"s{gen - 1:05d}"))
    nodes.append(LineageNode("seed0000", 0, "seed", None, None, None, "evaluated", [],
                             {"score": 0.0}, None, False))  # fmt: skip
    return LineageView("run", f"v{depth:05d}", "seed0000", [], nodes)


def _printed(view: LineageView) -> str:
    out = io.StringIO()
    print_lineage(Console(file=out, width=120, color_system=None), view)
    return out.getvalue()


def test_a_deep_ancestry_is_listed_newest_first_with_parents() -> None:
    view = _chain(1500)
    text = _printed(view)
    lines = text.splitlines()
    assert lines[0].startswith("v01500  gen 1500  offline-crossover  score=150")
    assert lines[0].endswith("<- v01499, s01499")
    listed = [line.split()[0] for line in lines[:-1]]
    assert sorted(listed) == sorted(n.id for n in view.nodes)  # every ancestor, once
    gens = [int(m.group(1)) for line in lines if (m := re.search(r"  gen (\d+)  ", line))]
    assert gens == sorted(gens, reverse=True)
    assert "(not in the index)" in text
    assert lines[-1].startswith(f"{len(view.nodes)} variants in the ancestry")


def test_a_small_ancestry_is_still_a_tree() -> None:
    view = _chain(TREE_NODES // 4)
    text = _printed(view)
    assert "└── " in text and "<- " not in text
