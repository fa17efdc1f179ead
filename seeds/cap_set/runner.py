"""The candidate's side of the cap set evaluation: the priority of every vector of Z_3^n.

    python -I runner.py < REQUEST      # REQUEST: {"source": ..., "n": 8}; stdout: the result

evaluate.py starts this script in a process of its own, in an empty temporary directory, with no
GE_* variable in its environment, and sends it the candidate's source and n on stdin: nothing the
evaluator holds (its greedy construction, its check, the metrics path) exists here. The result is
data only: {"priorities": [...]} (one float per vector, in the lexicographic order of
itertools.product(range(3), repeat=n)) or {"error": "..."}. The evaluator builds and checks the
cap set itself, so a candidate that took this process over could only send other priorities.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import types


def run(request: dict) -> dict:
    """The candidate's priority of each vector, or the error that stopped it."""
    n = request["n"]
    module = types.ModuleType("priority")
    module.__dict__["__file__"] = "priority.py"
    try:
        exec(compile(request["source"], "priority.py", "exec"), module.__dict__)
        function = module.__dict__.get("priority")
        if not callable(function):
            return {"error": "priority.py defines no function priority(vector, n)"}
        values = [float(function(v, n)) for v in itertools.product(range(3), repeat=n)]
    except BaseException as exc:  # a broken candidate: one line, not a traceback
        return {"error": f"priority raised {type(exc).__name__}: {exc}"[:500]}
    return {"priorities": values}


def main() -> int:
    request = json.loads(sys.stdin.read())
    result = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the candidate's prints go to stderr, the result alone to stdout
    result.write(json.dumps(run(request)))
    result.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
