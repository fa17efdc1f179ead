"""Evaluate the seed in the current directory and write metrics as JSON to $GE_METRICS.

`score` is the negative validation error (higher is better); `size` counts syntax nodes of
model.py (smaller is simpler). `--check` only imports the model and runs one prediction.
"""

import argparse
import ast
import json
import math
import os
import random
import sys
from pathlib import Path


def target(x):
    """The function the seed learns to predict (kept here so evolution cannot change it)."""
    return math.sin(2 * x) + 0.3 * x


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--metrics", default=os.environ.get("GE_METRICS", "metrics.json"))
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    import model

    if args.check:
        value = model.predict(0.5, [0.0] * len(model.features(0.5)))
        return 0 if isinstance(value, (int, float)) and math.isfinite(value) else 1
    rng = random.Random(0)
    xs = [rng.uniform(-2, 2) for _ in range(60)]
    val = [rng.uniform(-2, 2) for _ in range(40)]
    weights = model.fit(xs, [target(x) for x in xs])
    mse = sum((model.predict(x, weights) - target(x)) ** 2 for x in val) / len(val)
    size = sum(1 for _ in ast.walk(ast.parse(Path("model.py").read_text())))
    metrics = {"score": -mse if math.isfinite(mse) else -1e9, "size": size}
    Path(args.metrics).write_text(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
