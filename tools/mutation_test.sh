#!/usr/bin/env bash
# Mutation testing of the generation plan and of selection with mutmut (pinned below).
#
# Mutates guided_evolution/evolution/plan.py, selection.py, mate_choice.py and islands.py, runs
# their fast unit tests against each mutant (tests/evolution/test_plan.py, test_plan_paper.py,
# test_plan_steady.py, test_selection.py, test_mate_choice.py, test_islands_pure.py, those present;
# not the slow end-to-end runs: the temperature test, mate choice's offline run, test_islands.py),
# and prints the mutants that no test killed.
# Runs in a scratch copy of the package and tests (mutmut writes a mutants/ folder and needs its
# own config), so the working tree is left alone. Installs mutmut into the venv when missing.
#
# Usage: tools/mutation_test.sh [--keep]    (--keep: leave the scratch copy for `mutmut show`)
# Takes about 13 minutes on 2 busy cores (1032 mutants, about 1.4 a second). Not part of .ci/run.
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
tar -C "$root" --exclude=__pycache__ -cf - guided_evolution tests pyproject.toml seeds/*/ge.toml |
    tar -C "$work" -xf -
# The project's pyproject has no [tool.mutmut]: mutmut falls back to this setup.cfg.
cat > "$work/setup.cfg" <<'CFG'
[mutmut]
source_paths = guided_evolution
also_copy = seeds
only_mutate =
    guided_evolution/evolution/plan.py
    guided_evolution/evolution/selection.py
    guided_evolution/evolution/mate_choice.py
    guided_evolution/evolution/islands.py
pytest_add_cli_args_test_selection =
CFG
for test in tests/evolution/test_plan.py tests/evolution/test_plan_paper.py tests/evolution/test_plan_steady.py \
    tests/evolution/test_selection.py tests/evolution/test_mate_choice.py tests/evolution/test_islands_pure.py; do
    if [[ -f $root/$test ]]; then echo "    $test" >> "$work/setup.cfg"; fi
done
cat >> "$work/setup.cfg" <<'CFG'
pytest_add_cli_args =
    -p
    no:cacheprovider
    -k
    not temperature and not offline_run
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
