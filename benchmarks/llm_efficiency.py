"""Where the LLM spend pays: fixed ensemble weights vs the bandit, and whole rewrites vs diffs.

1. Bandit. Real `ge run`s against the fake OpenAI server, on a seed whose one segment holds
   ``VALUE`` (the score, maximised). Two scripted models: ``strong`` raises VALUE (an
   improvement over the parent) for 60 % of its replies and lowers it otherwise, at $5/$20 per
   million prompt/completion tokens; ``weak`` improves 20 % of the time at $1/$4 (three times
   less often, five times cheaper: the better model per call, the worse per dollar). Which replies
   improve is drawn from a hash of the request, so a run is reproducible. For each policy
   (``[llm.bandit] kind`` off = the configured equal weights, thompson, ucb1, thompson per dollar) and
   each RNG seed, it counts the children that improved on a parent (``RunData.improved``: what
   the bandit rewards) per 100 LLM calls and per dollar, and prints the median and the range.
2. Tokens per valid child, whole segment vs SEARCH/REPLACE edits (``edit_mode`` never vs
   always), on the ExquisiteNetV2 seed with its largest segment (the network class) the only one
   evolved: the fake model makes a one-line change and answers with the whole segment or with one
   edit block; usage is counted with diff_tokens' tokenizer, and `ge status --json` reports the
   tokens per operator and mode and per valid child (a child is valid when model.py parses).

    python benchmarks/llm_efficiency.py            # 5 seeds, a few minutes
    python benchmarks/llm_efficiency.py --seeds 7 --generations 6
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
from guided_evolution.evolution.diffedit import edit_block  # noqa: E402
from guided_evolution.evolution.operators import fence  # noqa: E402
from tests.support.cli import run_json  # noqa: E402
from tests.support.openai_server import Action, reply, serve  # noqa: E402
from tests.support.seeds import bump_first_integer, template_seed  # noqa: E402

_VALUE = re.compile(r"VALUE = (-?\d+)")
_INT = re.compile(r"(?<![\w.])\d+(?![\w.])")
_FENCE = re.compile(r"(`{3,})(?:python)?\n(.*?)\1", re.S)
MODELS = {  # name: (share of improving replies, $ per prompt token, $ per completion token)
    "strong": (0.60, 5e-6, 20e-6),
    "weak": (0.20, 1e-6, 4e-6),
}
POLICIES = (("fixed weights", "off", False), ("thompson", "thompson", False),
            ("ucb1", "ucb1", False), ("thompson/$", "thompson", True))  # fmt: skip
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


def counter_model(count: Callable[[str], int]) -> Callable[[dict[str, Any]], Action]:
    """The scripted pair: improves VALUE with its model's probability, else lowers it."""

    def respond(request: dict[str, Any]) -> Action:
        user = _user(request)
        blocks = [b for _, b in _FENCE.findall(user) if "VALUE" in b]
        if "Do not write any code" in user or not blocks:
            return _usage(request, "Larger values helped.", count)
        digest = _digest(request)
        better = digest % 100 < 100 * MODELS[request["model"]][0]
        step = (1 + digest // 100 % 3) * (1 if better else -1)
        code = _VALUE.sub(lambda m: f"VALUE = {int(m.group(1)) + step}", blocks[0])
        return _usage(
            request, f"Changed it.\n\n{fence(code.rstrip() + f'  # {digest % 9973}')}\n", count
        )

    return respond


def _llm_section(api_base: str, bandit: str, per_dollar: bool) -> str:
    models = ", ".join(
        f'{{ model = "openai/{name}", weight = 1, input_cost_per_token = {p:g}, '
        f"output_cost_per_token = {c:g} }}"
        for name, (_, p, c) in MODELS.items()
    )
    return (
        f'models = [{models}]\napi_base = "{api_base}"\n'
        f'bandit = {{ kind = "{bandit}", per_dollar = {"true" if per_dollar else "false"} }}'
    )


def counter_seed(directory: Path, llm: str, **evolution: Any) -> Path:
    seed = template_seed(directory, **evolution)
    (seed / "model.py").write_text(f'"""A counter."""\n\n\n{MARKER}\nVALUE = 10\n')
    (seed / "evaluate.py").write_text(
        "import json, os, re\nfrom pathlib import Path\n"
        "v = int(re.search(r'VALUE = (-?\\d+)', Path('model.py').read_text()).group(1))\n"
        "Path(os.environ.get('GE_METRICS', 'metrics.json')).write_text(json.dumps({'score': v}))\n"
    )
    text = (seed / "ge.toml").read_text().replace('models = ["offline"]', llm)
    text = text.replace('check = "python evaluate.py --check"\n', "")
    text = text.split("[[objectives]]")[0] + '[[objectives]]\nname = "score"\ndirection = "max"\n'
    (seed / "ge.toml").write_text(text)
    return seed


def run(seed: Path, run_dir: Path) -> dict[str, Any]:
    """`ge run`, then `ge status --json` of the run."""
    env = {"OPENAI_API_KEY": "sk-benchmark"}
    run_json("run", str(seed), "--run-dir", str(run_dir), cwd=seed.parent, env=env, timeout=900)
    return run_json("status", str(run_dir), cwd=seed.parent)


def bandit_table(work: Path, seeds: int, generations: int, count: Callable[[str], int]) -> None:
    print(f"bandit: {seeds} seeds, 8 + {generations} x 8 children per run")
    head = (
        f"{'policy':14} {'improvements/100 calls':>26} {'improvements/$':>24} {'strong share':>14}"
    )
    print(head + "\n" + "-" * len(head))
    with serve(responder=counter_model(count)) as server:
        for label, bandit, per_dollar in POLICIES:
            per_call, per_usd, share = [], [], []
            for s in range(1, seeds + 1):
                name = f"{bandit}-{int(per_dollar)}-{s}"
                seed = counter_seed(
                    work / f"seed-{name}", _llm_section(server.base_url, bandit, per_dollar),
                    seed=s, generations=generations, initial_population=8, population=8,
                    elites=4, eot_probability=0.0,
                )  # fmt: skip
                status = run(seed, work / f"run-{name}")
                arms = status["bandit"]["models"]
                found = sum(a["improvements"] for a in arms)
                calls = sum(r["calls"] for r in status["tokens"]["by_operator"])
                per_call.append(100 * found / calls)
                per_usd.append(found / status["cost_usd"])
                share.append(arms[0]["pulls"] / max(1, sum(a["pulls"] for a in arms)))
            print(
                f"{label:14} {_spread(per_call):>26} {_spread(per_usd, 0):>24} {_spread(share, 2):>14}"
            )


def _spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


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
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--generations", type=int, default=5)
    args = parser.parse_args()
    name, count = token_counter()
    print(f"tokens by {name}\n")
    with tempfile.TemporaryDirectory(prefix="ge-llm-eff-") as tmp:
        bandit_table(Path(tmp), args.seeds, args.generations, count)
        tokens_table(Path(tmp), count)


if __name__ == "__main__":
    main()
