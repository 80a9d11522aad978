#!/usr/bin/env bash
# Installs the pinned runtime + test dependencies and runs the test suite (offline-safe).
# Without a -m option it runs every test not marked slow (the everyday suite); extra arguments
# go to pytest, e.g. scripts/test.sh -m slow (the rest; CI runs both), scripts/test.sh -m "".
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
marker=(-m "not slow")
for arg in "$@"; do
    case "$arg" in -m|-m*|--markexpr*) marker=() ;; esac
done
exec python -m pytest -q --durations=20 --timeout=1800 "${marker[@]}" "$@"
