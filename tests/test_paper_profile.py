"""`--profile paper` against GE's own code (issue 25 item 2).

Each value the paper profile takes from GE is pinned to where GE's code sets it: the repository
github.com/clint-kristopher-morris/llm-guided-evolution at commit efc58def ("cleaned code and
made loop robust"), file and line. The paper's sizes are those of its code. What GE did that
`--profile paper` does not do is listed, with its reason, in README.md's "Differences from the GE
paper" table; the second test checks that the table names each of them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from guided_evolution.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ("exquisitenet_v2", "fast_exp")

# (ge setting under [evolution], GE's value, where GE's code at efc58def sets it)
GE_VALUES: tuple[tuple[str, object, str], ...] = (
    ("initial_population", 144, "src/cfg/constants.py:24 start_population_size = 144"),
    ("population", 44, "src/cfg/constants.py:25 population_size = 44"),
    ("crossover_probability", 0.35, "src/cfg/constants.py:26 crossover_probability = 0.35"),
    ("mutation_probability", 0.8, "src/cfg/constants.py:27 mutation_probability = 0.8"),
    ("elites", 44, "src/cfg/constants.py:28 num_elites = 44 (run_improved.py:783 selSPEA2)"),
    ("hall_of_fame", 100, "src/cfg/constants.py:29 hof_size = 100 (run_improved.py:762)"),
    ("generations", 30, "src/cfg/constants.py:23 num_generations = 30"),
    ("eot_probability", 0.25, "src/cfg/constants.py:22 PROB_EOT = 0.25"),
    ("eot_teacher_pool", 10, "src/cfg/constants.py:19 NUM_EOT_ELITES = 10"),
    ("eot_teachers", "spea2_top", "run_improved.py:773 selSPEA2(population, NUM_EOT_ELITES)"),
    ("eot_start_generation", 2, "run_improved.py:64 EoT only when GEN_COUNT > 0"),
    ("parent_tournament", "dcd", "run_improved.py:715 tools.selTournamentDCD(pop, k)"),
    ("temperature.initial", (0.05, 0.4), "run_improved.py:233 create_individual(temp 0.05-0.4)"),
    ("temperature.crossover", (0.05, 0.1), "run_improved.py:541 combine_elements(0.05-0.1)"),
    ("temperature.mutation", (0.02, 0.35), "run_improved.py:614 customMutation(0.02-0.35)"),
    ("temperature.eot", (0.02, 0.35), "run_improved.py:614 (EoT is a mutation's template, :64)"),
    ("top_p.mutation", 0.1, "run_improved.py:638 top_p=0.1 (dropped on GE's HF path: below)"),
    ("top_p.crossover", 0.1, "run_improved.py:567 top_p=0.1"),
    ("top_p.initial", 0.1, "run_improved.py:246 top_p=0.1"),
)
# GE's behaviour that the profile does not reproduce: a phrase README's table must contain each.
NOT_REPRODUCED: dict[str, str] = {
    "max_new_tokens": "src/llm_utils.py:125 np.random.randint(900, 1300) per call (HF path)",
    "top_p not sent": "src/llm_utils.py:141-143 text_generation without top_p; constants.py:37",
    "mutate_prompts": "run_improved.py:858 mutate_prompts() each generation; llm_utils.py:189",
    "HallOfFame": "run_improved.py:762 tools.HallOfFame(100): the best 100, not a front",
    "selSPEA2": "run_improved.py:773, 783 selSPEA2 on the raw fitness values",
    "one call": "EoT: one LLM call with the teacher's code in the prompt (run_improved.py:64)",
    "Let us think step by step": "templates/FixedPrompts/*: GE's prompt text",
}


def _value(config: object, dotted: str) -> object:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


@pytest.mark.parametrize("seed", SEEDS)
def test_the_paper_profile_has_ge_s_values(seed: str) -> None:
    evolution = load_config(ROOT / "seeds" / seed / "ge.toml", profile="paper").evolution
    wrong = [
        f"{key}: {_value(evolution, key)!r}, GE {value!r} ({source})"
        for key, value, source in GE_VALUES
        if _value(evolution, key) != value
    ]
    assert not wrong, wrong


def test_the_readme_lists_what_the_profile_does_not_reproduce() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Differences from the GE paper", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    missing = [name for name in NOT_REPRODUCED if not any(name in row for row in rows)]
    assert not missing, missing
    # every row's source reference names GE's commit's files the way this module does
    assert re.search(r"efc58def", section)
