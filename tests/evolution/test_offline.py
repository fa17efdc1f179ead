"""The offline (no-LLM) genetic-programming operators."""

from __future__ import annotations

import ast
import random
import re
import textwrap

import pytest

from guided_evolution.evolution.operators.offline import (
    OfflineEdit,
    offline_crossover,
    offline_mutate,
)
from guided_evolution.evolution.segments import Genome, Segment, parse_genome
from guided_evolution.evolution.splice import SpliceError, splice

CNN = '''"""A small CNN (text only: nothing here imports torch)."""

import torch
import torch.nn.functional as F
from torch import nn


# --OPTION--
class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)  # normalise
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2, 2)
        self.drop = nn.Dropout(0.25)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.pool(self.act(self.bn1(self.conv1(x))))
        x = F.relu(x)
        x = self.drop(x)
        x = self.gap(x).flatten(1)
        return self.head(x)


# --OPTION--
def get_optimizer(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)


# --OPTION--
def schedule(epochs=20, warmup=0.1):
    steps = []
    for e in range(epochs):
        steps.append(min(1.0, (e + 1) / (warmup * epochs)))
    return steps
'''


def cnn_genome(text: str = CNN) -> Genome:
    return parse_genome({"model.py": text, "evaluate.py": "from model import Net\n"}, ["model.py"])


def segment(code: str) -> Segment:
    return parse_genome({"m.py": "# --OPTION--\n" + code}, ["m.py"]).segments[0]


def mutations(seg: Segment, operators: tuple[str, ...], n: int = 40) -> list[OfflineEdit]:
    return [offline_mutate(seg, random.Random(i), operators=operators) for i in range(n)]


def test_deterministic_for_a_seed() -> None:
    g = cnn_genome()
    for seg in g.segments:
        for seed in range(5):
            first = offline_mutate(seg, random.Random(seed))
            assert offline_mutate(seg, random.Random(seed)) == first
    outcomes = {offline_mutate(g.segments[0], random.Random(s)).code for s in range(10)}
    assert len(outcomes) > 3


def test_every_mutation_parses_differs_and_splices() -> None:
    g = cnn_genome()
    for seg in g.segments:
        for seed in range(40):
            edit = offline_mutate(seg, random.Random(seed), strength=1.5)
            assert edit.code != seg.code
            assert edit.description
            ast.parse(textwrap.dedent(edit.code))
            child = parse_genome(splice(g, seg.key, edit.code), ["model.py"])
            assert child.segment(seg.key).code == edit.code


def test_nudge_changes_numbers_only() -> None:
    seg = cnn_genome().segments[0]
    for edit in mutations(seg, ("nudge",)):
        assert edit.description.startswith("nudged")
        old_tokens = re.split(r"[\d.e+-]+", seg.code)
        new_tokens = re.split(r"[\d.e+-]+", edit.code)
        assert old_tokens == new_tokens  # only numeric literals changed
        assert "super().__init__()" in edit.code and "# normalise" in edit.code


def test_nudge_keeps_positive_ints_positive_and_probabilities_below_one() -> None:
    seg = segment("layer = Block(1, 2, p=0.9, q=0.01)\n")
    for edit in mutations(seg, ("nudge",), n=60):
        call = ast.parse(edit.code).body[0].value  # type: ignore[attr-defined]
        ints = [a.value for a in call.args]
        floats = [k.value.value for k in call.keywords]
        assert all(isinstance(v, int) and v >= 1 for v in ints)
        assert all(0 < v < 1 for v in floats)


def test_dimension_and_index_literals_are_left_alone() -> None:
    seg = segment("y = x.view(x.size(0), -1).mean(dim=2)[0] + torch.cat([a, b], 1).sum()\n")
    with pytest.raises(SpliceError, match="no applicable offline edit"):
        offline_mutate(seg, random.Random(0), operators=("nudge",))


def _swaps(code: str, n: int = 30) -> list[OfflineEdit]:
    return mutations(segment(code), ("swap",), n)


def test_swaps_on_the_cnn_cover_every_family() -> None:
    g = cnn_genome()
    swapped = set()
    for seg in g.segments[:2]:
        for edit in mutations(seg, ("swap",), n=60):
            assert edit.description.startswith("swapped ")
            swapped.add(edit.description.split()[1])
            splice(g, seg.key, edit.code)
    assert swapped == {"ReLU", "relu", "MaxPool2d", "AdaptiveAvgPool2d", "BatchNorm2d", "SGD"}


def test_swap_activation_module_drops_unsupported_kwargs() -> None:
    for edit in _swaps("act = nn.ReLU(inplace=True)\n"):
        (target,) = re.findall(r"nn\.(\w+)\(", edit.code)
        assert target in {"GELU", "SiLU", "ELU", "LeakyReLU", "Tanh", "Hardswish", "Mish"}
        has_inplace = "inplace=True" in edit.code
        assert has_inplace == (target not in {"GELU", "Tanh"})
        assert edit.description.startswith(f"swapped ReLU -> {target}")


def test_swap_functional_and_torch_activations() -> None:
    for edit in _swaps("y = F.relu(self.conv(x))\n"):
        assert re.fullmatch(r"y = F\.(\w+)\(self\.conv\(x\)\)\n", edit.code)
        assert "relu(" not in edit.code.replace("leaky_relu(", "")
    for edit in _swaps("y = torch.tanh(x)\n", n=10):
        assert edit.code.startswith("y = torch.nn.functional.")
    for edit in _swaps("block = Block(act=nn.GELU)\n", n=10):
        assert (
            re.fullmatch(r"block = Block\(act=nn\.\w+\)\n", edit.code) and "GELU" not in edit.code
        )


def test_swap_pooling() -> None:
    assert {e.code for e in _swaps("p = nn.MaxPool2d(2, 2, 0, 1, False, True)\n", 5)} == {
        "p = nn.AvgPool2d(2, 2, 0)\n"
    }
    assert {e.code for e in _swaps("p = nn.AdaptiveAvgPool2d((1, 1))\n", 5)} == {
        "p = nn.AdaptiveMaxPool2d((1, 1))\n"
    }
    assert {e.code for e in _swaps("y = F.max_pool2d(x, 2, ceil_mode=True)\n", 5)} == {
        "y = F.avg_pool2d(x, 2, ceil_mode=True)\n"
    }


def test_swap_normalisation_keeps_call_semantics() -> None:
    targets = set()
    for edit in _swaps("n = nn.BatchNorm2d(48, eps=1e-3)\n"):
        code = edit.code
        if "InstanceNorm2d" in code:
            assert code == "n = nn.InstanceNorm2d(48, eps=1e-3, affine=True)\n"
        else:
            groups, channels = map(int, re.findall(r"GroupNorm\((\d+), (\d+)", code)[0])
            assert channels == 48 and 48 % groups == 0
        targets.add(code.split("(")[0])
    assert targets == {"n = nn.InstanceNorm2d", "n = nn.GroupNorm"}
    assert {e.code for e in _swaps("n = nn.InstanceNorm3d(c, affine=True)\n", 5)} == {
        "n = nn.BatchNorm3d(c)\n"
    }


def test_swap_optimiser_drops_incompatible_kwargs_and_rescales_lr() -> None:
    seen = set()
    for edit in _swaps("opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)\n"):
        call = ast.parse(edit.code).body[0].value  # type: ignore[attr-defined]
        name = call.func.attr
        kwargs = {k.arg: k.value.value for k in call.keywords}
        seen.add(name)
        if name in {"Adam", "AdamW"}:
            assert kwargs == {"lr": 0.01}
        else:
            assert name == "RMSprop" and kwargs == {"lr": 0.01, "momentum": 0.9}
    assert seen == {"Adam", "AdamW", "RMSprop"}


def test_statement_duplicate_and_drop() -> None:
    seg = cnn_genome().segments[0]
    actions = set()
    for edit in mutations(seg, ("statement",)):
        action = edit.description.split()[0]
        actions.add(action)
        old_lines, new_lines = seg.code.splitlines(), edit.code.splitlines()
        assert len(new_lines) == len(old_lines) + (1 if action == "duplicated" else -1)
        assert "return self.head(x)" in edit.code and "super().__init__()" in edit.code
        assert edit.code.count("def ") == 2
    assert actions == {"duplicated", "dropped"}


def test_indented_segment_stays_indented() -> None:
    text = "class Net:\n    # --OPTION--\n    def forward(self, x):\n        x = F.relu(x)\n        return x * 2\n"
    g = parse_genome({"m.py": text}, ["m.py"])
    seg = g.segments[0]
    for seed in range(20):
        edit = offline_mutate(seg, random.Random(seed))
        assert edit.code.startswith("    def forward(self, x):\n        ")
        splice(g, seg.key, edit.code)


def test_bracketed_fragment_segment() -> None:
    text = "layers = [\n    # --OPTION--\n    nn.Conv2d(3, 16, 3),\n    nn.ReLU(),\n]\n"
    g = parse_genome({"m.py": text}, ["m.py"])
    seg = g.segments[0]
    for seed in range(10):
        edit = offline_mutate(seg, random.Random(seed))
        new = splice(g, seg.key, edit.code)["m.py"]
        assert new != text and edit.description, f"seed {seed}: the edit changed nothing"
        # still a two-element list literal; only the segment's lines changed
        (stmt,) = ast.parse(new).body
        assert isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.List), new
        assert len(stmt.value.elts) == 2, new
        assert new.startswith("layers = [\n    # --OPTION--\n    nn.") and new.endswith("\n]\n")
        assert parse_genome({"m.py": new}, ["m.py"]).segments[0].code != seg.code


def test_nothing_applicable_raises() -> None:
    with pytest.raises(SpliceError, match="no applicable offline edit"):
        offline_mutate(segment("def f(x):\n    return x\n"), random.Random(0))
    with pytest.raises(ValueError):
        offline_mutate(segment("x = 2\n"), random.Random(0), operators=("bogus",))


# ------------------------------------------------------------------------------ crossover


def _variant(a: Genome, rng: random.Random) -> Genome:
    files = dict(a.files)
    genome = a
    for seg in a.segments:
        files = splice(genome, seg.key, offline_mutate(seg, rng, operators=("nudge",)).code)
        genome = parse_genome(files, a.evolvable, a.marker)
    return genome


def test_crossover_mixes_whole_segments() -> None:
    a = cnn_genome()
    b = _variant(a, random.Random(1))
    mixed = set()
    for seed in range(20):
        files, description = offline_crossover(a, b, random.Random(seed))
        assert offline_crossover(a, b, random.Random(seed)) == (files, description)
        child = parse_genome(files, a.evolvable, a.marker)
        sources = []
        for seg in child.segments:
            if seg.code == a.segment(seg.key).code:
                sources.append("a")
            else:
                assert seg.code == b.segment(seg.key).code
                sources.append("b")
        assert "a" in sources and "b" in sources  # three differing segments: both parents give
        assert description.startswith("uniform crossover")
        header = a.files["model.py"][: a.segments[0].start]
        assert files["model.py"].startswith(header)
        mixed.add(tuple(sources))
    assert len(mixed) > 2


def test_crossover_of_identical_parents_copies_the_first() -> None:
    a = cnn_genome()
    files, description = offline_crossover(a, a, random.Random(0))
    assert files == a.files
    assert "identical" in description
