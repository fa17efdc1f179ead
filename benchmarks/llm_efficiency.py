"""Where the LLM spend pays: fixed ensemble weights vs the bandit, and whole rewrites vs diffs.

1. Bandit (``--bandit``, seconds). A simulation of the bandit's loop that calls ge's own
   ``tally``, ``choose`` and ``per_dollar`` (``guided_evolution.evolution.bandit``) the way the
   engine does: one frozen state per generation of 8 children, a reward of 1 when a child beats
   its parent (single objective: what ``RunData.improved`` rewards). The LLMs are a model of
   context, not per-arm constants: whether a reply improves its parent, and by how much, depends
   on the parent's quality q = value / ceiling and on the task. "strong" ($0.010 a call) improves
   with probability 0.55 (1 - q)^0.5, "weak" ($0.002) with 0.75 (1 - q)^3: weak is the better
   model on poor parents and nearly useless near the ceiling. Tasks: "easy" starts at q = 0.1,
   "hard" at q = 0.6. The outcome is not the bandit's reward: the best value found after 160
   calls, and after $0.50 of calls. For each policy (off = the configured equal weights,
   thompson, ucb1, thompson per dollar) over ``--sims`` RNG seeds it prints the median, the
   interquartile range and the range, and whether each policy's interquartile range overlaps
   that of fixed weights; the improvements per 100 calls (the bandit's reward) for contrast.
   The figures hold for this model of the LLMs only, not for real ones.
2. Tokens per valid child, whole segment vs SEARCH/REPLACE edits (``edit_mode`` never vs
   always), on the ExquisiteNetV2 seed with its largest segment (the network class) the only one
   evolved: the fake model makes a one-line change and answers with the whole segment or with one
   edit block; usage is counted with diff_tokens' tokenizer, and `ge status --json` reports the
   tokens per operator and mode and per valid child (a child is valid when model.py parses).
   Real `ge run`s against the fake OpenAI server, a minute or two.

    python benchmarks/llm_efficiency.py --bandit        # section 1 only: 40 seeds, seconds
    python benchmarks/llm_efficiency.py                 # both sections
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.diff_tokens import token_counter  # noqa: E402
from guided_evolution.evolution.bandit import Pull, choose, per_dollar, tally  # noqa: E402
from guided_evolution.evolution.diffedit import edit_block  # noqa: E402
from guided_evolution.evolution.operators import fence  # noqa: E402
from tests.support.cli import run_json  # noqa: E402
from tests.support.openai_server import Action, reply, serve  # noqa: E402
from tests.support.seeds import bump_first_integer, template_seed  # noqa: E402

_INT = re.compile(r"(?<![\w.])\d+(?![\w.])")
_FENCE = re.compile(r"(`{3,})(?:python)?\n(.*?)\1", re.S)
EXQUISITENET = ROOT / "seeds" / "exquisitenet_v2" / "model.py"
MARKER = "# --OPTION--"


def _digest(request: dict[str, Any]) -> int:
    key = json.dumps([request["messages"], request.get("temperature"), request["model"]])
    return int(hashlib.sha256(key.encode()).hexdigest(), 16)


def _user(request: dict[str, Any]) -> str:
    return [m for m in request["messages"] if m["role"] == "user"][-1]["content"]


def _usage(request: dict[str, Any], text: str, count: Callable[[str], int]) -> Action:
    prompt = sum(count(m["content"]) for m in request["messages"])
    return reply(text, prompt, count(text))


# -- 1. the bandit, simulated with ge's own tally/choose/per_dollar ------------------------------

CEILING = 100.0
CHILDREN = 8  # per generation: they share one frozen bandit state, as in ge
ELITES = 8
LLMS = {  # name: ($ per call, chance of improving a parent of quality q, largest gain share)
    "strong": (0.010, lambda q: 0.55 * (1 - q) ** 0.5, 0.30),
    "weak": (0.002, lambda q: 0.75 * (1 - q) ** 3, 0.20),
}
TASKS = {"easy": 0.1, "hard": 0.6}  # the seed's quality
POLICIES = (("fixed weights", "off", False), ("thompson", "thompson", False),
            ("ucb1", "ucb1", False), ("thompson/$", "thompson", True))  # fmt: skip
CALLS, DOLLARS = 160, 0.50


def simulate(
    task: str, kind: str, dollars: bool, budget: tuple[int, float], seed: int
) -> tuple[float, float]:
    """One run: (best value found within the budget of calls and dollars, improvements/100 calls)."""
    rng = random.Random(f"{task}:{seed}")
    population, pulls, spent, calls = [TASKS[task] * CEILING] * ELITES, [], 0.0, 0
    weights = dict.fromkeys(LLMS, 1.0)
    while calls < budget[0] and spent < budget[1]:
        state = tally(weights, per_dollar(pulls) if dollars else pulls)
        children = []
        for _ in range(CHILDREN):
            if calls >= budget[0] or spent >= budget[1]:
                break
            arm = rng.choice(list(LLMS)) if kind == "off" else choose(kind, state, rng)
            cost, chance, gain = LLMS[arm]
            parent = rng.choice(population)
            if rng.random() < chance(parent / CEILING):
                child = parent + (CEILING - parent) * rng.uniform(0, gain)
            else:
                child = parent - abs(rng.gauss(0, 2))
            calls, spent = calls + 1, spent + cost
            pulls.append(Pull(arm, 1.0 if child > parent else 0.0, cost))
            children.append(child)
        population = sorted(population + children, reverse=True)[:ELITES]
    improvements = sum(p.reward for p in pulls)
    return max(population), 100 * improvements / max(1, calls)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return q1, q2, q3


def _cell(values: list[float]) -> str:
    q1, q2, q3 = _quartiles(values)
    return f"{q2:5.1f} [{q1:5.1f}-{q3:5.1f}] ({min(values):5.1f}-{max(values):5.1f})"


def bandit_table(sims: int) -> None:
    """Per task and policy: best value after CALLS calls and after DOLLARS, improvements/100."""
    print(f"bandit (simulated LLMs, ge's tally/choose/per_dollar): {sims} seeds per cell; "
          "median [IQR] (range)")  # fmt: skip
    head = (f"{'task':5} {'policy':14} {'best after ' + str(CALLS) + ' calls':>34} "
            f"{'best after $' + format(DOLLARS, '.2f'):>34} {'improv./100 calls':>18}")  # fmt: skip
    print(head + "\n" + "-" * len(head))
    for task in TASKS:
        base: dict[str, tuple[float, float]] = {}
        for label, kind, dollars in POLICIES:
            by_calls = [simulate(task, kind, dollars, (CALLS, 1e9), s) for s in range(sims)]
            by_cost = [simulate(task, kind, dollars, (10**6, DOLLARS), s)[0] for s in range(sims)]
            best = [b for b, _ in by_calls]
            rate = statistics.median(r for _, r in by_calls)
            marks = []
            for name, values in (("calls", best), ("cost", by_cost)):
                q1, _, q3 = _quartiles(values)
                if kind == "off":
                    base[name] = (q1, q3)
                elif q3 < base[name][0] or q1 > base[name][1]:
                    marks.append(f"{name}: IQR apart")
                else:
                    marks.append(f"{name}: IQR overlaps")
            print(f"{task:5} {label:14} {_cell(best):>34} {_cell(by_cost):>34} {rate:>18.1f}  "
                  f"{'; '.join(marks)}")  # fmt: skip


def run(seed: Path, run_dir: Path) -> dict[str, Any]:
    """`ge run`, then `ge status --json` of the run."""
    env = {"OPENAI_API_KEY": "sk-benchmark"}
    run_json("run", str(seed), "--run-dir", str(run_dir), cwd=seed.parent, env=env, timeout=900)
    return run_json("status", str(run_dir), cwd=seed.parent)


def one_segment_seed(directory: Path, edit_mode: str, api_base: str) -> Path:
    """ExquiniteNetV2's model.py with only its largest segment evolved (the last one: the other
    markers are dropped, so their code becomes the fixed header); valid = model.py parses."""
    seed = template_seed(directory, generations=2, initial_population=8, population=8, elites=4,
                         eot_probability=0.0, edit_mode=edit_mode)  # fmt: skip
    text = EXQUISITENET.read_text()
    last = text.rindex(MARKER)
    (seed / "model.py").write_text(text[:last].replace(MARKER + "\n", "") + text[last:])
    (seed / "evaluate.py").write_text(
        "import ast, json, os\nfrom pathlib import Path\n"
        "n = sum(1 for _ in ast.walk(ast.parse(Path('model.py').read_text())))\n"
        "Path(os.environ.get('GE_METRICS', 'metrics.json')).write_text(json.dumps({'size': n}))\n"
    )
    llm = f'models = ["openai/writer"]\napi_base = "{api_base}"'
    text = (seed / "ge.toml").read_text().replace('models = ["offline"]', llm)
    text = text.replace('check = "python evaluate.py --check"\n', "")
    text = text.split("[[objectives]]")[0] + '[[objectives]]\nname = "size"\ndirection = "min"\n'
    (seed / "ge.toml").write_text(text)
    return seed


def segment_writer(count: Callable[[str], int]) -> Callable[[dict[str, Any]], Action]:
    """A one-line change of the segment, as the whole segment or as one edit block."""

    def respond(request: dict[str, Any]) -> Action:
        user = _user(request)
        blocks = [b for _, b in _FENCE.findall(user) if "class ExquisiteNetV2" in b]
        if not blocks:
            return _usage(request, "I cannot help with that.", count)
        code, digest = blocks[-1], _digest(request)
        lines = code.split("\n")
        numbered = [i for i, line in enumerate(lines) if _INT.search(line)]
        i = numbered[digest % len(numbered)]  # one line changes: an integer bumped, a note added
        lines[i] = bump_first_integer("\n" + lines[i], digest % 3)[1:] + f"  # v{digest % 9973}"
        new = "\n".join(lines)
        diff = any("SEARCH" in m["content"] for m in request["messages"])
        body = edit_block(code, new, context=1).render() if diff else fence(new.rstrip()) + "\n"
        return _usage(request, "This should help.\n\n" + body, count)

    return respond


def tokens_table(work: Path, count: Callable[[str], int]) -> None:
    print("\ntokens per valid child, ExquisiteNetV2's largest segment (class ExquisiteNetV2)")
    head = f"{'edit mode':10} {'calls':>6} {'prompt':>8} {'completion':>11} {'valid':>6} {'tokens/valid child':>19}"
    print(head + "\n" + "-" * len(head))
    with serve(responder=segment_writer(count)) as server:
        for mode in ("never", "always"):
            seed = one_segment_seed(work / f"seed-{mode}", mode, server.base_url)
            tokens = run(seed, work / f"run-{mode}")["tokens"]
            rows = tokens["by_operator"]
            prompt = sum(r["prompt_tokens"] for r in rows)
            completion = sum(r["completion_tokens"] for r in rows)
            calls = sum(r["calls"] for r in rows)
            label = "whole" if mode == "never" else "diff"
            print(f"{label:10} {calls:>6} {prompt:>8} {completion:>11} {tokens['valid_children']:>6} "
                  f"{tokens['tokens_per_valid_child']:>19}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=40, help="RNG seeds of the bandit section")
    parser.add_argument("--bandit", action="store_true", help="the bandit section only")
    args = parser.parse_args()
    bandit_table(args.sims)
    if args.bandit:
        return
    name, count = token_counter()
    print(f"\ntokens by {name}")
    with tempfile.TemporaryDirectory(prefix="ge-llm-eff-") as tmp:
        tokens_table(Path(tmp), count)


if __name__ == "__main__":
    main()
