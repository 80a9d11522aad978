"""Where the time of a training or inference step goes, op by op (TensorFlow profiler).

    python -m benchmarks.model.profile --arch resnet18 --input-shape 32,32,3 --stem cifar --batch 64

Builds the model as bench.py does, warms it up, records `--steps` steps with
tf.profiler.experimental, and prints the time per step of each TensorFlow op type and of the
slowest individual ops (names as TensorFlow's graph optimizer left them: a fused
convolution + batch norm + ReLU is listed under the name of its last fused op). Op times are
wall time on the executor thread that ran the op, including its intra-op threads; with
`--inter-op 1` the ops run one at a time, so the times add up to the step. Figures only.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

from keras_resnet import _cli


def op_times(trace_dir: str, steps: int) -> dict[tuple[str, str], float]:
    """{(op type, op name): ms per step} from the .xplane.pb the profiler wrote."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(Path(trace_dir).rglob("*.xplane.pb"))
    if not files:
        raise RuntimeError(f"the profiler wrote no .xplane.pb under {trace_dir}")
    space = xplane_pb2.XSpace()
    space.ParseFromString(files[-1].read_bytes())
    totals: dict[tuple[str, str], float] = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # executor threads: one event per op
                continue
            for event in line.events:
                label = plane.event_metadata[event.metadata_id].name
                if ":" not in label:
                    continue
                name, op_type = label.rsplit(":", 1)
                if name.startswith("ExecutorState"):  # the executor's own span, not an op
                    continue
                totals[op_type, name] += event.duration_ps / 1e9 / steps
    return dict(totals)


def conv_macs(model) -> dict[str, int]:
    """{convolution layer name: MACs per image on real pixels} (from keras_resnet.summary)."""
    from keras_resnet.summary import summarize

    return {r.name: r.pixel_macs for r in summarize(model) if r.kind == "Conv2D"}


def layer_of(op_name: str, layers) -> str | None:
    """The layer whose name scope an op sits in (Keras adds a _1 suffix when tracing)."""
    for part in op_name.split("/"):
        base = part.rsplit("_", 1)[0] if part.rsplit("_", 1)[-1].isdigit() else part
        if base in layers:
            return base
    return None


def profile(cfg: dict, steps: int, inter_op: int | None):
    """(ms per step without the profiler, {(type, name): ms per step}, conv MACs per image)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if inter_op and tf.config.threading.get_inter_op_parallelism_threads() != inter_op:
        try:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        except RuntimeError as e:  # TensorFlow already ran something in this process
            print(f"warning: inter-op threads stay at TensorFlow's setting ({e}); op times may "
                  "overlap", file=sys.stderr)
    from benchmarks.model.bench import KerasRunner

    runner = KerasRunner(cfg)
    mode = cfg["modes"][0]
    for _ in range(cfg["warmup"]):
        runner.step(mode)
    t0 = time.perf_counter()
    for _ in range(steps):
        runner.step(mode)
    step_ms = (time.perf_counter() - t0) / steps * 1e3
    with tempfile.TemporaryDirectory() as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        try:
            for _ in range(steps):
                runner.step(mode)
        finally:
            tf.profiler.experimental.stop()
        return step_ms, op_times(trace_dir, steps), conv_macs(runner.model)


def main(argv=None) -> int:
    from benchmarks.model.bench import add_model_arguments

    p = _cli.ArgumentParser(prog="python -m benchmarks.model.profile", description=__doc__,
                                epilog=_cli.EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--mode", default="train", choices=("train", "infer"))
    p.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"),
                   help="the model's dtype policy (mixed_bfloat16: Cast ops show what the "
                        "float32 variables and the float32 head cost)")
    p.add_argument("--steps", type=_cli.positive_int, default=5,
                   help="profiled steps (and timed steps)")
    p.add_argument("--inter-op", type=_cli.non_negative_int, default=1,
                   help="inter-op threads (1: ops one at a time, times add up; 0: TF default)")
    p.add_argument("--top", type=_cli.non_negative_int, default=25,
                   help="how many individual ops to list")
    a = p.parse_args(argv)
    _cli.configure(a)
    cfg = dict(arch=a.arch, input_shape=a.input_shape, stem=a.stem, num_classes=a.num_classes,
               width=a.width, batch=a.batch, precision=a.precision, modes=(a.mode,),
               jit="default", warmup=3)
    step_ms, ops, macs = profile(cfg, a.steps, a.inter_op or None)
    by_type = collections.Counter()
    for (op_type, _), ms in ops.items():
        by_type[op_type] += ms
    total = sum(by_type.values())
    from benchmarks.machine import describe

    print(f"{a.arch} {a.input_shape} stem={a.stem} batch={a.batch} {a.mode} {a.precision} "
          f"({describe()}): "
          f"{step_ms:.1f} ms per step ({a.batch / step_ms * 1e3:.1f} img/s) without the "
          f"profiler; ops sum to {total:.1f} ms per step")
    print(f"\n{'op type':<44}{'ms/step':>10}{'share':>8}")
    for op_type, ms in by_type.most_common():
        if ms >= 0.01:
            print(f"{op_type:<44}{ms:>10.2f}{ms / total:>8.1%}")
    if a.top:
        # GMAC/s (taps on zero padding excluded) for convolution ops (forward, either gradient)
        # whose op name names the layer;
        # fused inference ops are named after their batch norm / ReLU and get none.
        print(f"\n{'slowest ops':<90}{'ms/step':>10}{'GMAC/s':>9}")
        for (op_type, name), ms in collections.Counter(ops).most_common(a.top):
            layer = layer_of(name, macs) if "Conv2D" in op_type else None
            rate = f"{macs[layer] * a.batch / ms / 1e6:>9.1f}" if layer else f"{'':>9}"
            print(f"{(op_type + ' ' + name)[:89]:<90}{ms:>10.2f}{rate}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
