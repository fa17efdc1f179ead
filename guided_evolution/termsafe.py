"""Text made inert for a terminal: what a variant, its evaluator or the LLM wrote is shown, never
obeyed.

A raw ESC, BEL or C1 code in a metric name, an output tail or a failure reason would let the
variant write to the user's clipboard (OSC 52), retitle the window, clear the screen or move the
cursor to fake output; a bidirectional override or an invisible format character would disguise
the text around it. Every such character is shown escaped instead (``\\x1b``, ``\\u202e``), as a
Python string literal writes it. The stored value and ``--json`` (whose encoder escapes control
characters itself) keep the raw text. Rich markup is a separate matter: text printed with markup
on must also be ``rich.markup.escape``-d (or printed as a ``Text``).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_CANDIDATE = re.compile(r"[^\x20-\x7e]")  # printable ASCII is always safe: checked by category
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNSAFE = ("Cc", "Cf", "Cs", "Zl", "Zp")  # controls, format (bidi, zero-width), surrogates, breaks
_JOINERS = "\u200c\u200d"  # format characters that only join (emoji, Indic and Arabic scripts)


def _escaped(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def inert(value: Any, *, multiline: bool = False) -> str:
    """``str(value)`` with every control character (C0, DEL, C1), lone surrogate, line or
    paragraph separator and format character (bidirectional overrides and isolates, zero-width
    space, byte order mark, tag characters; the zero-width joiners excepted) shown escaped.

    ``multiline`` keeps newlines and tabs (a block of text: an output tail, a reply), with CRLF
    read as a newline; otherwise they are escaped too (one line: a name, a value, a reason).
    """
    text = str(value)
    keep = "\n\t" if multiline else ""
    if multiline:
        text = text.replace("\r\n", "\n")

    def replace(match: re.Match[str]) -> str:
        ch = match.group()
        if ch in keep or ch in _JOINERS or unicodedata.category(ch) not in _UNSAFE:
            return ch
        return _escaped(ch)

    return _CANDIDATE.sub(replace, text)
