#!/usr/bin/env bash
# Mutation testing of the generation plan and of selection with mutmut (pinned below).
#
# Mutates guided_evolution/evolution/plan.py and selection.py only, runs their unit tests
# (tests/test_plan.py, test_selection.py and, where present, test_plan_paper.py; not the slow
# end-to-end temperature test) against each mutant, and prints the mutants that no test killed.
# Runs in a scratch copy of the package and tests (mutmut writes a mutants/ folder and needs its
# own config), so the working tree is left alone. Installs mutmut into the venv when missing.
#
# Usage: tools/mutation_test.sh [--keep]    (--keep: leave the scratch copy for `mutmut show`)
# Takes a few minutes on 2 cores. Not part of .ci/run.
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
pytest_add_cli_args_test_selection =
CFG
for test in tests/test_plan.py tests/test_selection.py tests/test_plan_paper.py; do
    if [[ -f $root/$test ]]; then echo "    $test" >> "$work/setup.cfg"; fi
done
cat >> "$work/setup.cfg" <<'CFG'
pytest_add_cli_args =
    -p
    no:cacheprovider
    -k
    not temperature
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
