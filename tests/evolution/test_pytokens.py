"""The fast Python tokens (the interpreter's tokenizer on 3.11) equal ``tokenize``'s, token for
token, or fail as ``tokenize`` fails: the code key and the diversity measures read them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from guided_evolution.engine.recorder import code_key
from guided_evolution.evolution import diversity
from guided_evolution.evolution.pytokens import code_tokens, pure_code_tokens

ROOT = Path(__file__).resolve().parents[2]

EDGES = {
    "empty": "",
    "no final newline": "x = 1",
    "ends indented": "def f():\n    if x:\n        return 1",
    "ends indented with a comment": "def f():\n    return 1\n    # done",
    "comments and blank lines": "# a\n\nx = (1 +  # b\n     2)\n\n\n# c\n",
    "tabs": "if x:\n\tif y:\n\t\tpass\n\telse:\n\t\tz = 1\n",
    "form feed": "x = 1\n\x0c\ndef f():\n    pass\n",
    "backslash continuation": "x = 1 + \\\n    2\n",
    "semicolons and ellipsis": "a = 1; b = ...; c = a if b else -1\n",
    "operators": "a @= b ** c // d -> e; f := g; h != i; j <<= k >> l; m, *n = o\n",
    "async": "async def f():\n    async with a as b:\n        await b\n    async for x in y:\n        pass\n",
    "async as a name": "async = 1\nawait = async + 1\n",
    "f-strings": "x = f'{a!r:>{w}}' + rb'\\x00' + F\"{b}\" + '''t\n'''\n",
    "numbers": "x = 1_000 + 0x_ff + 1e-3j + 1.5 + .5 + 0o7 + 0b1\n",
    "unicode names": "naïve = 1\nπ = naïve + 2\n",
    "a name with a combining mark": "x\U000e0100 = 3\nעִברִית = 1\n",
    "decorators and classes": "@d(1)\nclass A(B, metaclass=M):\n    x: int = 0\n",
    "stray dollar": "x = $y\n",
    "unterminated string": "x = 'abc\ny = 1\n",
    "unclosed bracket": "x = (1,\n",
    "unterminated triple quote": 'x = """abc\n',
    "bad dedent": "if x:\n        a = 1\n    b = 2\n",
    "carriage returns": "x = '''a\r\nb'''\r\ny = 1\r\n",
    "null byte": "x = 1\x00\n",
    "not-equal of python 2": "x = a <> b\n",
    "number then keyword": "x = 1if y else 2\n",
}


def _outcome(tokens_of, text: str) -> tuple[str, object]:
    try:
        return "tokens", list(tokens_of(text))
    except Exception as err:  # the kind of failure is what is compared
        return "raises", type(err)


@pytest.mark.parametrize("name", sorted(EDGES))
def test_edge_cases_tokenize_as_tokenize_does(name: str) -> None:
    text = EDGES[name]
    assert _outcome(code_tokens, text) == _outcome(pure_code_tokens, text)


def test_every_python_file_of_the_project_and_its_seeds_tokenizes_as_tokenize_does() -> None:
    files = [
        p
        for top in ("guided_evolution", "seeds", "tests", "benchmarks")
        for p in (ROOT / top).rglob("*.py")
    ]
    assert len(files) > 200
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert _outcome(code_tokens, text) == _outcome(pure_code_tokens, text), path


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="the fast path exists on Python 3.11 only"
)
def test_the_fast_path_is_taken_on_3_11(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a timing: the tokenize module is not called, and the C tokenizer's own operator
    types never reach the caller."""
    import tokenize

    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "seeds").rglob("*.py"))]
    texts += [EDGES["ends indented"], EDGES["operators"], EDGES["async"]]
    calls: list[object] = []
    real = tokenize.generate_tokens
    monkeypatch.setattr(tokenize, "generate_tokens", lambda *a: calls.append(a) or real(*a))
    found = [code_tokens(text) for text in texts]
    assert calls == []
    monkeypatch.undo()
    assert found == [list(pure_code_tokens(text)) for text in texts]


def test_the_code_key_still_ignores_comments_and_keeps_a_coding_line() -> None:
    plain = {"m.py": "def f(x):\n    return x + 1\n"}
    commented = {"m.py": "# about f\ndef f(x):  # the function\n\n    return x + 1  # one more\n"}
    coded = {"m.py": "# -*- coding: latin-1 -*-\ndef f(x):\n    return x + 1\n"}
    other = {"m.py": "def f(x):\n    return x + 2\n"}
    assert code_key(plain, ["m.py"]) == code_key(commented, ["m.py"])
    assert code_key(plain, ["m.py"]) != code_key(coded, ["m.py"])
    assert code_key(plain, ["m.py"]) != code_key(other, ["m.py"])


def test_diversity_tokens_are_unchanged_for_layout_and_comments() -> None:
    assert diversity.tokens("x = 1;  y = 2  # c\n") == ("x", "=", "1", "<newline>", "y", "=", "2")
    assert diversity.tokens("if a:\n\tb()\n") == (
        "if",
        "a",
        ":",
        "<newline>",
        "<indent>",
        "b",
        "(",
        ")",
        "<newline>",
        "<dedent>",
    )
    assert diversity.tokens("x = $y (") == (
        "x",
        "=",
        "$",
        "y",
        "(",
    )  # the fallback: words and symbols


MORE_EDGES = {
    "invalid numbers": "a = 1__0\nb = 0x\nc = 1e\nd = 09\ne = 1_\nf = 0b2\n",
    "a statement cut by a backslash at the end": "x = 1 + \\",
    "an indented first line": "    x = 1\n",
    "only comments": "# a\n   # b\n",
    "a dedent then an error on its line": "if x:\n    a = 1\nb = (\n",
    "question mark and backtick": "x = 1 ? `a`\n",
    "deep nesting": "".join("    " * i + "if x:\n" for i in range(30)) + "    " * 30 + "pass\n",
    "a dedent to no level": "if x:\n  a\n b\n",
    "a non-breaking space": "x = 1\n\xa0\ny = 2\n",
}


@pytest.mark.parametrize("name", sorted(MORE_EDGES))
def test_more_edge_cases_tokenize_as_tokenize_does(name: str) -> None:
    text = MORE_EDGES[name]
    assert _outcome(code_tokens, text) == _outcome(pure_code_tokens, text)


def test_mangled_project_files_tokenize_as_tokenize_does() -> None:
    """A random character deleted, doubled or inserted (brackets, quotes, backslashes,
    indentation, stray symbols) in the seeds' files, 600 times: the same tokens or the same
    failure. Deterministic (seeded)."""
    import random

    rng = random.Random(29)
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "seeds").rglob("*.py"))]
    tricky = [
        "(",
        ")",
        "[",
        "]",
        "'",
        '"',
        '"""',
        "\\",
        " ",
        "\t",
        "\n",
        "    ",
        "$",
        "#",
        ":",
        "<>",
        "1if",
    ]
    for _ in range(600):
        text = rng.choice(texts)
        at = rng.randrange(len(text) + 1)
        how = rng.randrange(3)
        if how == 0:
            text = text[:at] + text[at + 1 :]
        elif how == 1:
            text = text[:at] + text[at : at + 1] * 2 + text[at + 1 :]
        else:
            text = text[:at] + rng.choice(tricky) + text[at:]
        assert _outcome(code_tokens, text) == _outcome(pure_code_tokens, text), (at, how)


def test_tokenizing_warns_nothing() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code_tokens("x = 1if y else 2\n")
