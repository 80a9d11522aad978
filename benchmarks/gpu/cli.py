"""Mixed precision on a GPU, measured: our ResNets on Keras's JAX backend beside torchvision's.

    python -m benchmarks.gpu                    # a GPU: full sizes; none: tiny sizes, to test it
    benchmarks/gpu/run.sh OUTDIR                # the prepared run for the lent GPU machine

Models: ResNet-50 (ImageNet stem, 224x224x3, batch 256, 1000 classes) and ResNet-18 (CIFAR
stem, 32x32x3, batch 512, 10 classes). Ours under float32, mixed_bfloat16 and mixed_float16
(dynamic loss scaling), trained by the jit-compiled step that ``model.fit`` runs on JAX (SGD with
momentum) on synthetic data already on the device; torchvision's same networks, channels_last,
under torch.autocast (bfloat16, float16 with a GradScaler; float32 without), eager and through
torch.compile. Figures: median images/s of the timed repeats after warm-up (the first warm-up
step compiles and is reported apart), peak device memory, and ours/torch.

Each row runs in its own process (``benchmarks.gpu.row``), in priority order
(``gpu_rows.priority``: ResNet-50 under bfloat16 first, the other torch.compile rows last) until
``--budget`` is spent; a row that fails or outlasts ``--row-timeout`` keeps what it measured
and gets a note. Neither this
process nor any row imports TensorFlow: the GPU machine has none.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import json
import os
import platform
import shutil
import signal
import sys
import threading

from benchmarks.gpu import rows as gpu_rows
from benchmarks.gpu.report import markdown, ratios
from benchmarks.machine import describe
from keras_resnet import _cli

PROG = "python -m benchmarks.gpu"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
TORCH_MODES = ("eager", "compile")
FRAMEWORKS = ("keras", "torch")
MODES = ("train", "infer")


@dataclasses.dataclass(frozen=True)
class Model:
    arch: str
    stem: str
    input_shape: tuple[int, int, int]
    batch: int
    num_classes: int
    tiny_shape: tuple[int, int, int]


MODELS = {
    "resnet50": Model("resnet50", "imagenet", (224, 224, 3), 256, 1000, (32, 32, 3)),
    "resnet18": Model("resnet18", "cifar", (32, 32, 3), 512, 10, (16, 16, 3)),
}
TINY_BATCH = 2
# (warmup, steps, repeats) when not given: enough timed steps to swamp launch jitter on a GPU;
# the fewest that exercise every code path on a CPU.
TIMING = {"full": (3, 10, 5), "tiny": (1, 1, 2)}


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, found without loading a framework here: JAX would
    take most of the GPU's memory in this process while the rows run in others."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def csv_choice(choices):
    """argparse type: a comma-separated, non-empty subset of ``choices``, in the order given."""
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(choices)}; got {text!r}")
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _cli.ArgumentParser(prog=PROG, description=__doc__, epilog=_cli.EXIT_CODES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "gpu", "cpu"), default="auto",
                   help="gpu: every row must run on the GPU (JAX_PLATFORMS=cuda, torch "
                        "cuda), else the row fails; auto: gpu when one is visible")
    p.add_argument("--size", choices=("auto", "full", "tiny"), default="auto",
                   help=f"full: the sizes above; tiny: {TINY_BATCH} images of "
                        f"{MODELS['resnet50'].tiny_shape[0]}px (ResNet-50) or "
                        f"{MODELS['resnet18'].tiny_shape[0]}px (ResNet-18), to test the run on "
                        "a CPU; auto: full on a GPU, tiny otherwise")
    p.add_argument("--models", type=csv_choice(tuple(MODELS)), default=tuple(MODELS))
    p.add_argument("--precisions", type=csv_choice(PRECISIONS), default=PRECISIONS,
                   help="for both frameworks (torch: autocast bfloat16/float16, or float32)")
    p.add_argument("--frameworks", type=csv_choice(FRAMEWORKS), default=FRAMEWORKS)
    p.add_argument("--torch", type=csv_choice(TORCH_MODES), default=TORCH_MODES,
                   help="torchvision eager, through torch.compile, or both")
    p.add_argument("--modes", type=csv_choice(MODES), default=MODES)
    p.add_argument("--batch", type=_cli.positive_int,
                   help="one batch size for every model (default: each model's)")
    p.add_argument("--image-size", type=_cli.at_least(17), metavar="PIXELS",
                   help="square input size for every model (default: each model's)")
    p.add_argument("--warmup", type=_cli.positive_int,
                   help="untimed steps per mode, the first compiling (default: 3, tiny: 1)")
    p.add_argument("--steps", type=_cli.positive_int, help="steps per timed repeat "
                   "(default: 10, tiny: 1)")
    p.add_argument("--repeats", type=_cli.positive_int,
                   help="timed repeats, the median reported (default: 5, tiny: 2)")
    p.add_argument("--row-timeout", type=_cli.positive_int, default=240, metavar="SECONDS",
                   help="a row still running after this is stopped, keeping what it measured")
    p.add_argument("--budget", type=_cli.positive_int, default=420, metavar="SECONDS",
                   help="no row starts after this (rows are run in priority order)")
    p.add_argument("--out", metavar="DIR",
                   help="write gpu.md (the table) and gpu.json (every figure) into DIR")
    return p


def plan(a, device: str, size: str) -> list[dict]:
    """The rows' specs, in priority order."""
    warmup, steps, repeats = TIMING[size]
    rows = []
    for name in a.models:
        model = MODELS[name]
        shape = model.input_shape if size == "full" else model.tiny_shape
        if a.image_size:
            shape = (a.image_size, a.image_size, shape[2])
        batch = a.batch or (model.batch if size == "full" else TINY_BATCH)
        for precision in a.precisions:
            variants = [("keras", True)] if "keras" in a.frameworks else []
            if "torch" in a.frameworks:
                variants += [("torch", mode == "compile") for mode in a.torch]
            for framework, compiled in variants:
                rows.append(dict(
                    framework=framework, model=name, arch=model.arch, stem=model.stem,
                    input_shape=list(shape), batch=batch, num_classes=model.num_classes,
                    precision=precision, compiled=compiled, device=device,
                    modes=list(a.modes), warmup=a.warmup or warmup, steps=a.steps or steps,
                    repeats=a.repeats or repeats))
    return sorted(rows, key=gpu_rows.priority)


def resolve_device(a) -> tuple[str, str]:
    found = gpu_present()
    device = a.device if a.device != "auto" else ("gpu" if found else "cpu")
    size = a.size if a.size != "auto" else ("full" if device == "gpu" else "tiny")
    if a.device == "auto" and not found:
        print("no GPU visible: rows run on the CPU" + (" at tiny sizes" if size == "tiny"
                                                         else ""), file=sys.stderr)
    return device, size


def report(a, argv, device: str, size: str, rows: list[dict]) -> dict:
    measured = [r for r in rows if r.get("train") or r.get("infer")]
    versions = {}
    for r in measured:
        for key, value in (r.get("versions") or {}).items():
            versions.setdefault(key, value)
    names = sorted({r["device_name"] for r in measured if r.get("device_name")})
    return {
        "format": 1,
        "command": " ".join([PROG, *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device, "size": size,
        "gpu_name": ", ".join(names) if device == "gpu" else None,
        "device_names": names,
        "host": describe(), "python": platform.python_version(),
        "versions": versions,
        "settings": {"row_timeout_s": a.row_timeout, "budget_s": a.budget,
                     "xla_python_client_preallocate":
                         os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "default")},
        "rows": rows,
        "ratios": ratios(rows),
    }


def write_outputs(out_dir: str, result: dict, table: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for name, text in (("gpu.md", table), ("gpu.json", json.dumps(result, indent=1))):
        path = os.path.join(out_dir, name)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)


def benchmark(a, argv) -> int:
    if a.out and os.path.exists(a.out) and not os.path.isdir(a.out):
        raise _cli.UsageError(f"--out {a.out!r} is a file; expected a folder")
    device, size = resolve_device(a)
    rows, interrupted = gpu_rows.run_all(plan(a, device, size), a.row_timeout, a.budget)
    result = report(a, argv, device, size, rows)
    table = markdown(result)
    print(table)
    if a.out:
        write_outputs(a.out, result, table)
        print(f"wrote {os.path.join(a.out, 'gpu.md')} and gpu.json", file=sys.stderr)
    if interrupted:
        raise KeyboardInterrupt  # after the table of what was measured: exit 130
    if not any(r.get("train") or r.get("infer") for r in rows):
        raise _cli.FailedError("no row was measured: see the notes above")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = build_parser().parse_args(argv)
    # A time limit's SIGTERM (run.sh's timeout) ends the row running and still writes the
    # table of the rows measured, as Ctrl-C does.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return _cli.exit_status(lambda: benchmark(a, argv), prefix=f"{PROG}: error")
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
