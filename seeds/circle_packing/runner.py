"""The candidate's side of the circle packing evaluation: run `pack(n)`, print the circles.

    python -I runner.py < REQUEST      # REQUEST: {"source": ..., "n": 26}; stdout: the result

evaluate.py starts this script in a process of its own, in an empty temporary directory, with no
GE_* variable in its environment, and sends it the candidate's source and n on stdin: nothing the
evaluator holds (its checker, its tolerance, the metrics path) exists here. The result is data
only: {"circles": [[x, y, r], ...]} or {"error": "..."}; the evaluator checks and scores the
circles itself, so a candidate that took this process over could only send other numbers.
"""

from __future__ import annotations

import json
import os
import sys
import types


def run(request: dict) -> dict:
    """The candidate's circles as lists of floats, or the error that stopped it."""
    module = types.ModuleType("packing")
    module.__dict__["__file__"] = "packing.py"
    try:
        exec(compile(request["source"], "packing.py", "exec"), module.__dict__)
        function = module.__dict__.get("pack")
        if not callable(function):
            return {"error": "packing.py defines no function pack(n)"}
        circles = [[float(value) for value in circle] for circle in function(request["n"])]
    except BaseException as exc:  # a broken candidate: one line, not a traceback
        return {"error": f"pack({request['n']}) raised {type(exc).__name__}: {exc}"[:500]}
    return {"circles": circles}


def main() -> int:
    request = json.loads(sys.stdin.read())
    result = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the candidate's prints go to stderr, the result alone to stdout
    result.write(json.dumps(run(request)))
    result.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
