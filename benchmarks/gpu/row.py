"""One row of ``python -m benchmarks.gpu``, in its own process: ``python -m benchmarks.gpu.row
SPEC.json RESULT.json``.

A process per row because JAX's peak-memory counter cannot be reset, and so that a crash, a hang
or a failed compilation of one row costs that row only. The result file is rewritten after each
phase (inference first, then training), so a row stopped at its time limit keeps the figures it
had. Inference comes first so that its peak memory is its own; training's includes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from benchmarks.gpu.timing import write_json

MODES = ("infer", "train")


def run(spec: dict, out_path: str) -> None:
    if spec["framework"] == "keras":
        from benchmarks.gpu import keras_runner as framework
    else:
        from benchmarks.gpu import torch_runner as framework
    runner = framework.Runner(spec)
    result = {"device_name": runner.device_name, "platform": runner.platform,
              "versions": runner.versions(), "notes": list(runner.notes)}
    for mode in MODES:
        if mode not in spec["modes"]:
            continue
        figures, note = runner.measure(mode)
        if figures is not None:
            figures["peak_mib"] = runner.peak_mib()
        result[mode] = figures
        if note:
            result["notes"].append(note)
        result["tensorflow_loaded"] = "tensorflow" in sys.modules
        write_json(out_path, result)
    result["tensorflow_loaded"] = "tensorflow" in sys.modules
    write_json(out_path, result)


def main(argv=None) -> int:
    from keras_resnet import _cli

    p = _cli.ArgumentParser(prog="python -m benchmarks.gpu.row", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="JSON file: one row planned by python -m benchmarks.gpu")
    p.add_argument("result", help="JSON file to write the row's figures to")
    a = p.parse_args(argv)
    # Before anything imports Keras: a row is the library on JAX, never TensorFlow. Here, not
    # on import, so that a process importing this module keeps its own backend.
    os.environ["KERAS_BACKEND"] = "jax"
    with open(a.spec) as f:
        run(json.load(f), a.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
