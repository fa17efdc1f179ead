#!/usr/bin/env bash
# Mutation testing of ge's decision logic with mutmut (pinned below).
#
# Mutates guided_evolution/evolution/plan.py, selection.py, mate_choice.py, islands.py (the plan
# and selection) and bandit.py, bandit_history.py, novelty.py, diffedit.py, diversity.py (the
# bandits, novelty rejection, SEARCH/REPLACE edits, the code distance), runs their fast unit tests
# against each mutant (tests/evolution/: test_plan*.py, test_selection.py, test_mate_choice.py,
# test_islands_pure.py, test_bandit.py, test_diffedit.py, test_diff_mode.py,
# test_diff_structure.py, test_diversity.py, test_mate_partner.py, test_bandit_duplicates.py,
# test_diversity_pairs.py, test_mutants_*.py, those
# present; not the end-to-end runs in them, deselected by name below), and prints the mutants
# that no test killed. docs/mutation-testing.md lists the survivors that are equivalent and why.
# Runs in a scratch copy of the package and tests (mutmut writes a mutants/ folder and needs its
# own config), so the working tree is left alone. Installs mutmut into the venv when missing.
#
# Usage: tools/mutation_test.sh [--keep]    (--keep: leave the scratch copy for `mutmut show`)
#        MODULES="bandit novelty" tools/mutation_test.sh    (only these evolution/ modules)
# The plan and selection modules alone took about 13 minutes on 2 busy cores (1032 mutants);
# the five decision modules add about as many. Not part of .ci/run.
set -euo pipefail

MUTMUT_VERSION=3.8.1
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}

if ! "$python" -c "import sys, mutmut; sys.exit(mutmut.__version__ != '$MUTMUT_VERSION')" 2>/dev/null; then
    "$python" -m pip install -q "mutmut==$MUTMUT_VERSION"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ge-mutmut.XXXXXX")
if [[ ${1:-} == --keep ]]; then
    echo "scratch copy: $work"
else
    trap 'rm -rf "$work"' EXIT
fi
tar -C "$root" --exclude=__pycache__ -cf - guided_evolution tests pyproject.toml seeds/*/ge.toml seeds/*/*.py |
    tar -C "$work" -xf -
# The project's pyproject has no [tool.mutmut]: mutmut falls back to this setup.cfg.
cat > "$work/setup.cfg" <<'CFG'
[mutmut]
source_paths = guided_evolution
also_copy = seeds
only_mutate =
CFG
modules=${MODULES:-plan selection mate_choice islands bandit bandit_history novelty diffedit diversity}
for module in $modules; do
    echo "    guided_evolution/evolution/$module.py" >> "$work/setup.cfg"
done
echo "pytest_add_cli_args_test_selection =" >> "$work/setup.cfg"
for test in tests/evolution/test_plan.py tests/evolution/test_plan_paper.py tests/evolution/test_plan_steady.py \
    tests/evolution/test_selection.py tests/evolution/test_mate_choice.py tests/evolution/test_islands_pure.py \
    tests/evolution/test_bandit.py tests/evolution/test_diffedit.py tests/evolution/test_diff_mode.py \
    tests/evolution/test_diff_structure.py tests/evolution/test_diversity.py \
    tests/evolution/test_mate_partner.py tests/evolution/test_bandit_duplicates.py \
    tests/evolution/test_diversity_pairs.py "$root"/tests/evolution/test_mutants_*.py; do
    test=${test#"$root"/}
    if [[ -f $root/$test ]]; then echo "    $test" >> "$work/setup.cfg"; fi
done
cat >> "$work/setup.cfg" <<'CFG'
pytest_add_cli_args =
    -p
    no:cacheprovider
    -p
    no:xdist
    -k
    not temperature and not offline_run and not favours_the_model and not chooses_eot and not offline_operators_are_arms and not steady_mode and not resumed and not unknown_bandit and not edit_mode_always and not bad_edit_mode and not status_has and not without_a_finished and not report_has
CFG

cd "$work"
export LITELLM_OFFLINE_MODE=true
"$python" -m mutmut run --max-children "$(nproc)" > mutmut-run.log 2>&1 || {
    tail -40 mutmut-run.log
    exit 1
}
tail -n 3 mutmut-run.log | tr '\r' '\n' | tail -n 2
echo "surviving mutants:"
"$python" -m mutmut results
if [[ ${1:-} == --keep ]]; then
    echo "see one: (cd $work && $python -m mutmut show NAME)"
fi
