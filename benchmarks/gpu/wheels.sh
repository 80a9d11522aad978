#!/usr/bin/env bash
# Fetches the wheels that benchmarks/gpu/run.sh installs on the GPU machine, which has no network
# and no Keras, into benchmarks/gpu/wheels/ (git-ignored: carry it beside the working tree; a few MB).
#
#   benchmarks/gpu/wheels.sh            # for that machine's Python 3.12
#   benchmarks/gpu/wheels.sh 3.12 3.11  # also for this machine's Python, to rehearse the run here
#
# Keras 3.15.1 needs absl-py, h5py, ml-dtypes, namex, numpy, optree, packaging and rich;
# the GPU machine's image lists all of them but namex and optree, and optree needs
# typing-extensions, which it has too. run.sh checks that Keras loads there.
set -euo pipefail

cd "$(dirname "$0")"
versions=("${@:-3.12}")
mkdir -p wheels
for version in "${versions[@]}"; do
    if ! [[ $version =~ ^3\.[0-9]+$ ]]; then
        echo "benchmarks/gpu/wheels.sh: error: expected Python versions such as 3.12, got '$version'" >&2
        exit 2
    fi
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest wheels \
        --python-version "$version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        keras==3.15.1 namex==0.1.0 optree==0.20.0
done
ls -l wheels
du -ch wheels/*.whl | tail -1
