#!/usr/bin/env bash
# Runs the named test tiers in one pytest session, so the run ends with one summary line.
# pytest's exit code 5 ("no tests collected") is a failure here: a tier that silently
# collects nothing would otherwise look green.
set -uo pipefail
VENV="${VENV:-${BRAID_CACHE:-$HOME/.cache/braid}/venv}"
cd "$(dirname "$0")/.."
# The venv is shared between checkouts: this checkout's sources come first.
export PYTHONPATH="$PWD/src:$PWD/dev/src${PYTHONPATH:+:$PYTHONPATH}"
tiers=("$@")
[ ${#tiers[@]} -gt 0 ] || tiers=(unit integration e2e)
paths=(); marks=()
for t in "${tiers[@]}"; do paths+=("tests/$t"); marks+=("$t"); done
expr=$(IFS='|'; echo "${marks[*]}" | sed 's/|/ or /g')
"$VENV/bin/python" -m pytest "${paths[@]}" -m "$expr" ${PYTEST_ARGS:-}
rc=$?
if [ $rc -eq 5 ]; then
  echo "run-tests: pytest collected no tests for tiers: ${tiers[*]} — treating as a failure" >&2
  exit 1
fi
exit $rc
