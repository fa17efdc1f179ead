"""A Python text's tokens without comments and blank lines, as ``tokenize`` gives them, from the
interpreter's own C tokenizer where one can be used.

On Python 3.11 ``tokenize`` is pure Python: ~0.25 ms for the 843-byte template seed, ~2 ms for
ExquisiteNetV2's model, paid once per new child by the duplicate check (``engine.recorder``'s
code key) and the diversity measures. The interpreter's tokenizer (``_tokenize.TokenizerIter``)
gives the same tokens ~10x faster, so it is used there, its operator types mapped back to
``OP``, ``async`` and ``await`` to ``NAME``, and ``ENDMARKER`` added, as ``tokenize`` has them.
``tokenize`` itself is used where the two could differ: another Python (3.12 and later:
``tokenize`` already runs the C tokenizer; 3.10 has none), text with a carriage return (the C
tokenizer translates newlines inside strings), a name with a combining mark (``tokenize`` cuts
it in two), and text that is not Python where the C tokenizer raises, stops without an error
(3.11's does at an unclosed bracket or a bad dedent) or gives a token ``tokenize`` has not
(``<>``, ``$``): ``tokenize`` then tokenizes what it can or raises as it does.
``tests/evolution/test_pytokens.py`` compares the two on the project's files, edge cases and 600
mangled seed files; ``python benchmarks/pytokens.py`` on every Python file of the standard
library, the project and its environment (29,033 files: the same tokens in each).
"""

from __future__ import annotations

import io
import re
import sys
import token
import tokenize
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

Token = tuple[int, str]  # (tokenize type, string); "" for NEWLINE, INDENT, DEDENT, ENDMARKER
_SKIPPED = frozenset({tokenize.COMMENT, tokenize.NL, tokenize.ENCODING})
_NO_STRING = frozenset({tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER})
_OPERATORS = frozenset(token.EXACT_TOKEN_TYPES.values())
_NAMES = frozenset({token.ASYNC, token.AWAIT})  # NAME to tokenize
_WORD = re.compile(r"\w+")  # tokenize's NAME: it splits a name at a combining mark


def _c_tokenizer() -> Callable[[str], Iterable[Any]] | None:
    """The interpreter's tokenizer over a str, where it gives what 3.11's does; else None."""
    if sys.version_info[:2] != (3, 11):
        return None
    try:
        from _tokenize import TokenizerIter  # type: ignore[import-not-found]
    except ImportError:
        return None
    return TokenizerIter  # type: ignore[no-any-return]


_C_TOKENIZER = _c_tokenizer()


def code_tokens(text: str) -> list[Token]:
    """``text``'s tokens as ``tokenize.generate_tokens`` gives them, without COMMENT, NL and
    ENCODING tokens, as (type, string) with no string for NEWLINE, INDENT, DEDENT and ENDMARKER
    (their text is layout). Raises ``tokenize.TokenError`` or ``SyntaxError`` as ``tokenize``
    does on text it cannot tokenize."""
    if _C_TOKENIZER is not None and "\r" not in text:
        try:
            with warnings.catch_warnings():  # "invalid decimal literal" (1if): tokenize is silent
                warnings.simplefilter("ignore")
                found = _from_c(_C_TOKENIZER(text), text)
        except (SyntaxError, ValueError, TypeError):
            found = None
        if found is not None:
            return found
    return list(pure_code_tokens(text))


def pure_code_tokens(
    text: str, keep_comment: Callable[[tokenize.TokenInfo], bool] | None = None
) -> Iterator[Token]:
    """:func:`code_tokens` from ``tokenize`` alone (the reference the fast path must equal);
    with ``keep_comment``, the COMMENT tokens it accepts too."""
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in _SKIPPED or (
            keep_comment is not None and tok.type == tokenize.COMMENT and keep_comment(tok)
        ):
            yield tok.type, "" if tok.type in _NO_STRING else tok.string


def _from_c(found: Iterable[Any], text: str) -> list[Token] | None:
    """The C tokenizer's tokens as ``tokenize`` types them; None where ``tokenize`` may give
    others: a character Python has no token for (``tokenize``: ERRORTOKEN), ``<>``, a name with
    a combining mark (``tokenize`` cuts it: "\\w" does not match the mark), or an end before the
    text's end (3.11's C tokenizer stops without an error at an unclosed bracket or a bad
    dedent, where ``tokenize`` raises)."""
    out: list[Token] = []
    last: Any = None
    for last in found:
        string, kind = last[0], last[1]
        if kind in _OPERATORS:
            if string == "<>":
                return None
            out.append((tokenize.OP, string))
        elif kind in _NAMES:
            out.append((tokenize.NAME, string))
        elif kind == tokenize.OP or (
            kind == tokenize.NAME and not string.isascii() and not _WORD.fullmatch(string)
        ):
            return None
        else:
            out.append((kind, "" if kind in _NO_STRING else string))
    if not _ended(last, text):
        return None
    out.append((tokenize.ENDMARKER, ""))
    return out


def _ended(last: Any, text: str) -> bool:
    """Whether the C tokenizer read all of ``text``: its last token ends a statement or a block,
    and only blank and comment lines follow it (``last``: the tokenizer's last tuple, None when
    it gave none)."""
    if last is None:
        rest = 0
    elif last[1] == tokenize.NEWLINE:
        rest = last[3]  # the lines after the statement's end
    elif last[1] == tokenize.DEDENT:  # at the text's end (column -1): the lines after its line;
        rest = last[2] if last[4] < 0 else last[2] - 1  # else its own line on (read at its start)
    else:
        return False
    return all(not line.strip(" \t\x0c") or line.lstrip(" \t\x0c").startswith("#")
               for line in text.split("\n")[rest:])  # fmt: skip
