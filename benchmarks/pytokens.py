"""The fast Python tokens (``evolution/pytokens.py``) against ``tokenize``: the same tokens on
every Python file of the standard library, this project and its virtual environment, and the CPU
each takes.

    python benchmarks/pytokens.py                 # every file; prints the first differences
    python benchmarks/pytokens.py --limit 2000    # the first 2,000 files only

Printed: files compared, how many gave other tokens (or failed otherwise) than ``tokenize``, and
the CPU seconds of each path over all files (process time). The per-child figures (the code key
of each seed's evolvable file) are ``python benchmarks/code_key.py``.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guided_evolution.evolution.pytokens import code_tokens, pure_code_tokens  # noqa: E402


def _outcome(tokens_of: Callable[[str], Iterable[object]], text: str) -> tuple[str, object, float]:
    start = time.process_time()
    try:
        found: tuple[str, object] = ("tokens", list(tokens_of(text)))
    except Exception as err:  # the kind of failure is what is compared
        found = ("raises", type(err).__name__)
    return found[0], found[1], time.process_time() - start


def _files() -> Iterable[Path]:
    yield from sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    yield from sorted(p for p in ROOT.rglob("*.py") if ".venv" not in p.parts)
    yield from sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.py"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="compare this many files at most")
    args = parser.parse_args()
    compared = differ = 0
    fast_s = pure_s = 0.0
    for path in _files():
        if args.limit and compared >= args.limit:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        compared += 1
        *fast, took_fast = _outcome(code_tokens, text)
        *pure, took_pure = _outcome(pure_code_tokens, text)
        fast_s, pure_s = fast_s + took_fast, pure_s + took_pure
        if fast != pure:
            differ += 1
            if differ <= 10:
                print(f"differs: {path} ({fast[0]} / {pure[0]})")
    print(f"{compared:,} files, {differ:,} with other tokens than tokenize's; "
          f"CPU: fast {fast_s:.1f} s, tokenize {pure_s:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
