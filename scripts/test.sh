#!/usr/bin/env bash
# Installs the pinned runtime + test dependencies and runs the whole test suite (offline-safe).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec python -m pytest -q --durations=20 --timeout=1800 "$@"
