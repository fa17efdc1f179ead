"""Tokens of a whole-segment reply vs a SEARCH/REPLACE reply, on ExquisiteNetV2's largest segment.

For typical small changes (1 to 3 lines) of the seed's network class, prints the characters and
tokens of the reply each mode needs (the same one-line explanation, then the whole segment in a
fenced block, or the edit blocks with 0 or 1 line of context), and the prompt of each mode
(``mutate_tune_concise`` vs ``mutation_diff``, rendered for that segment). Tokens come from
tiktoken's o200k_base when it loads (offline: from litellm's bundled cache), else chars / 4.
Every reply is checked to apply back to the intended code. Counts are deterministic; the last
row gives the medians over the changes.

    python benchmarks/diff_tokens.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
from collections.abc import Callable
from pathlib import Path

from guided_evolution.evolution.diffedit import apply_diff, edit_block
from guided_evolution.evolution.operators import fence, file_context
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import Genome, Segment, parse_genome

SEED = Path(__file__).resolve().parents[1] / "seeds" / "exquisitenet_v2" / "model.py"
EXPLANATION = "This change should raise the validation accuracy at a similar parameter count.\n\n"
CHANGES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("dropout 0.5 -> 0.3 (1 line)", (("nn.Dropout(0.5)", "nn.Dropout(0.3)"),)),
    ("GELU before pooling (1 line)", (("x = self.DW(x)", "x = F.gelu(self.DW(x))"),)),
    (
        "SE gates in stages 4-5 (2 lines)",
        (
            ("DFSEBV2(192, 3, True)", "DFSEBV2(192, 3, False)"),
            ("(384, 3, True)", "(384, 3, False)"),
        ),
    ),
    (
        "narrower last stage (3 lines)",
        (("ME(192, 384)", "ME(192, 320)"), ("DFSEBV2(384", "DFSEBV2(320"), ("DW(384", "DW(320")),
    ),
    (
        "skip connection in forward (3 lines)",
        (
            ("        x = self.DFSEB3(self.ME3(x))\n", "        x = self.DFSEB3(self.ME3(x))\n"),
            ("        x = self.DFSEB4(self.ME4(x))\n", "        y = self.ME4(x)\n"),
            ("        x = self.DFSEB5", "        x = self.DFSEB4(y) + y\n        x = self.DFSEB5"),
        ),
    ),
)


def token_counter() -> tuple[str, Callable[[str], int]]:
    """(name, count) of the tokenizer: o200k_base if tiktoken loads offline, else chars / 4."""
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.origin and "TIKTOKEN_CACHE_DIR" not in os.environ:
        cache = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
        if cache.is_dir():
            os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("o200k_base")
    except Exception:  # not installed, or its file cannot be fetched offline
        return "chars/4", lambda text: round(len(text) / 4)
    return "tiktoken o200k_base", lambda text: len(encoding.encode(text))


def prompt_values(genome: Genome, seg: Segment) -> dict[str, str]:
    """The placeholder values a segment prompt is rendered with (as the operators fill them)."""
    return {
        "segment": seg.name,
        "key": seg.key,
        "file": seg.file,
        "code": fence(seg.code),
        "notes": seg.notes.strip() or "(none)",
        "context": fence(file_context(genome, seg)),
        "feedback": "",  # no evaluator feedback: the prompt as a first mutation sees it
    }


def edited(code: str, replacements: tuple[tuple[str, str], ...]) -> str:
    for old, new in replacements:
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output-price",
        type=float,
        default=4.0,
        help="price of an output token in input tokens (GPT-4o: $10 vs $2.50 per million = 4)",
    )
    args = parser.parse_args()
    genome = parse_genome({"model.py": SEED.read_text(encoding="utf-8")}, ["model.py"])
    seg = max(genome.segments, key=lambda s: len(s.code))
    name, count = token_counter()
    print(f"segment {seg.key} ({seg.name}): {len(seg.code)} chars, {count(seg.code)} tokens;")
    print(f"tokens by {name}; a reply = one line of explanation + the code or the blocks\n")
    lib = PromptLibrary.load()
    values = prompt_values(genome, seg)
    prompts = {
        mode: sum(count(m["content"]) for m in lib.render(prompt, **values))
        for mode, prompt in (("whole", "mutate_tune_concise"), ("diff", "mutation_diff"))
    }
    head = f"{'change':38} {'whole':>12} {'diff ctx0':>12} {'diff ctx1':>12} {'ctx1/whole':>10}"
    print(head + "\n" + "-" * len(head))
    columns: list[list[float]] = [[], [], [], [], [], [], []]
    for label, replacements in CHANGES:
        new = edited(seg.code, replacements)
        whole = EXPLANATION + fence(new) + "\n"
        diffs = [EXPLANATION + edit_block(seg.code, new, context=c).render() for c in (0, 1)]
        for reply in diffs:
            assert apply_diff(reply, seg.code).code == new, label
        row = [len(whole), count(whole), len(diffs[0]), count(diffs[0])]
        row += [len(diffs[1]), count(diffs[1]), count(diffs[1]) / count(whole)]
        for column, value in zip(columns, row, strict=True):
            column.append(value)
        print(_row(label, row))
    print(_row("median", [statistics.median(c) for c in columns]))
    print(
        f"\nprompt tokens (system + user): whole {prompts['whole']}, diff {prompts['diff']} "
        f"(+{prompts['diff'] - prompts['whole']} for the edit-block instructions)"
    )
    whole_call = prompts["whole"] + statistics.median(columns[1])
    diff_call = prompts["diff"] + statistics.median(columns[5])
    print(
        f"median tokens per call (prompt + reply, ctx1): whole {whole_call:.0f}, diff {diff_call:.0f}"
    )
    whole_cost = prompts["whole"] + args.output_price * statistics.median(columns[1])
    diff_cost = prompts["diff"] + args.output_price * statistics.median(columns[5])
    print(
        f"median price per call in input-token units (output x{args.output_price:g}): "
        f"whole {whole_cost:.0f}, diff {diff_cost:.0f} ({diff_cost / whole_cost:.2f}x)"
    )


def _row(label: str, row: list[float]) -> str:
    cells = [f"{row[i]:>5.0f}c {row[i + 1]:>4.0f}t" for i in (0, 2, 4)]
    return f"{label:38} {' '.join(cells)} {row[6]:>10.2f}"


if __name__ == "__main__":
    main()
