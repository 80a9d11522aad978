#!/usr/bin/env bash
# Installs the pinned runtime + test dependencies and runs the test suite (offline-safe).
# Without a -m option it runs every test not marked slow (the everyday suite); extra arguments
# go to pytest, e.g. scripts/test.sh -m slow (the rest; CI runs both), scripts/test.sh -m "",
# scripts/test.sh -n 0 (one process, no xdist workers).
# One pytest-xdist worker per core (at most 4), torch on one thread in each (tests/conftest.py);
# --dist loadgroup keeps a test file, and the tests sharing the export fixture, on one worker.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
marker=(-m "not slow")
for arg in "$@"; do
    case "$arg" in -m|-m*|--markexpr*) marker=() ;; esac
done
start=$(date +%s)
status=0
python -m pytest -q -n auto --maxprocesses 4 --dist loadgroup --durations=15 --timeout=1800 \
    "${marker[@]}" "$@" || status=$?
echo "scripts/test.sh: pytest took $(( $(date +%s) - start )) s (exit status $status)"
exit "$status"
