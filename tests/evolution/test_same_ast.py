"""``splice.same_ast`` says what comparing ``ast.dump`` strings says, for code that differs in
the ways a child's code differs from its parent's."""

from __future__ import annotations

import ast
import itertools

import pytest

from guided_evolution.evolution.splice import same_ast

CODES = [
    "x = 1",
    "x = 1  # a comment",
    "x  =  1\n\n",
    "x = 1.0",
    "x = True",
    "x = -0.0",
    "x = 0.0",
    "x = 'a'",
    'x = "a"',
    "x = b'a'",
    "y = 1",
    "x: int = 1",
    "def f(a, b=2):\n    return a + b",
    "def f(a, b=2):\n    '''doc'''\n    return a + b",
    "def f(a, b=3):\n    return a + b",
    "def f(a, *, b=2):\n    return a + b",
    "async def f(a, b=2):\n    return a + b",
    "import torch.nn as nn",
    "from torch import nn",
    "class A(B):\n    pass",
    "class A(B, metaclass=M):\n    pass",
    "x = [i for i in range(3) if i]",
    "x = [i for i in range(3)]",
    "x = {1: 2}",
    "x = {1, 2}",
    "f(x)[0].y = z",
    "del x",
    "",
]


@pytest.mark.parametrize(("a", "b"), list(itertools.product(CODES, repeat=2)))
def test_same_ast_agrees_with_ast_dump(a: str, b: str) -> None:
    left, right = ast.parse(a), ast.parse(b)
    assert same_ast(left, right) == (ast.dump(left) == ast.dump(right))
