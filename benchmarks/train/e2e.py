"""Training speed as users get it: `python -m training.fit` itself, beside its own model's
`train_on_batch` and beside torchvision's training loop fed by a torch DataLoader.

    python -m benchmarks.train.e2e --dataset mnist
    python -m benchmarks.train.e2e --dataset cifar10 -- --stem cifar --batch-size 64

Three measurements per repeat and precision (`--precisions`: float32 and mixed_bfloat16 by
default), one after the other, each in its own process:
- fit: `python -m training.fit` with its defaults (augmentation on, its optimizer, batch size and
  pipeline) plus the options after `--`, on `--steps` batches per epoch for `--epochs` epochs.
  The main figure is the whole epoch as a user waits for it: training images over the time from
  one epoch's start to the next's (validation, logs and the checkpoints' cost on training
  included), over the epochs between the first (tracing) and the last. Beside it: the training
  part alone (metrics.json's `train_images_per_s_after_first_epoch`) and validation's images/s.
- train_on_batch: the same model, optimizer and compile (training.fit's own functions) on one
  fixed batch from the same pipeline, `--steps` steps after warm-up: the model's own speed;
  then `predict_on_batch` on that batch, the rate validation is compared with.
- torch: torchvision's ResNet (same architecture and stem), the same optimizer, loss and batch,
  fed by a torch DataLoader over the same uint8 images with the equivalent torchvision
  augmentation (MNIST-like: RandomAffine(10 degrees, 10% shift); CIFAR-like: RandomCrop(32,
  padding 4) + RandomHorizontalFlip) and normalization, `--steps` steps after one warm-up epoch;
  under `torch.autocast("cpu", torch.bfloat16)` for mixed_bfloat16.

Without `--data-dir`, the images are random uint8 written in the dataset's own archive format
(IDX .gz files or the CIFAR binary tarball) at the real image shape, so that training.fit reads
them through its real loading code; pixel values do not change the work. Figures only: nothing
here asserts a speed. Exit status 2 on bad options.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

from keras_resnet import _cli
from benchmarks.machine import describe, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Datasets whose archive format this benchmark can write (digits and synthetic need no files).
WRITABLE = ("mnist", "fashion_mnist", "cifar10", "cifar100")
PRECISIONS = ("float32", "mixed_bfloat16")


# ------------------------------------------------------------------------- data files
def _idx(array, dims) -> bytes:
    header = bytes([0, 0, 8, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return gzip.compress(header + array.tobytes(), compresslevel=1)


def write_archive(name: str, folder: str, n_train: int, n_test: int, seed: int = 0) -> None:
    """Random uint8 images of `name`'s shape in its published archive format under `folder`."""
    import numpy as np

    from training.data import DATASETS
    from training.data.archives import CIFAR_LAYOUT, IDX_FILES

    info = DATASETS[name]
    rng = np.random.default_rng(seed)
    sizes = {"train": n_train, "test": n_test}
    if name in ("mnist", "fashion_mnist"):
        h, w, _ = info.image_size
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for split, (images_file, labels_file) in IDX_FILES.items():
            n = sizes[split]
            x = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
            y = rng.integers(0, info.num_classes, n, dtype=np.uint8)
            for base, data in ((images_file, _idx(x, x.shape)), (labels_file, _idx(y, y.shape))):
                with open(os.path.join(folder, name, base + ".gz"), "wb") as f:
                    f.write(data)
        return
    tarball, inner, members, label_bytes, _, classes = CIFAR_LAYOUT[name]
    with tarfile.open(os.path.join(folder, tarball), "w:gz", compresslevel=1) as tar:
        for split, files in members.items():
            per_file = -(-sizes[split] // len(files))
            for member in files:
                labels = [rng.integers(0, c, per_file, dtype=np.uint8) for c in classes]
                pixels = rng.integers(0, 256, (per_file, 3 * 32 * 32), dtype=np.uint8)
                data = np.concatenate([np.stack(labels, 1), pixels], axis=1).tobytes()
                entry = tarfile.TarInfo(f"{inner}/{member}")
                entry.size = len(data)
                tar.addfile(entry, io.BytesIO(data))


# ------------------------------------------------------------------------- the three runs
def run_fit(fit_args: list, run_dir: str) -> dict:
    """`python -m training.fit` as a user runs it; returns its metrics.json and wall time."""
    cmd = [sys.executable, "-m", "training.fit", *fit_args, "--run-dir", run_dir, "--verbose", "0"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"training.fit exited {proc.returncode}: {proc.stderr[-2000:]}")
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(run_dir, "config.json")) as f:
        num_train = json.load(f)["num_train"]
    # Whole epochs between the first (tracing) and the last (whose checkpoint writes would
    # overlap nothing): training, validation and the checkpoints' cost on training, as a user
    # waits for them.
    epochs = metrics["epoch_seconds"][1:-1]
    val = metrics["validation_seconds"][1:]
    return {"img_s": metrics["train_images_per_s_after_first_epoch"],
            "epoch_img_s": num_train * len(epochs) / sum(epochs),
            "val_img_s": metrics["validation_images"] * len(val) / sum(val),
            "precision": metrics["precision"], "wall_s": wall}


def _train_on_batch_worker(fit_args: list, steps: int, warmup: int, queue) -> None:
    try:
        from training import data as datasets
        from training.config import parse_args
        from training.recipe import build_model, compile_model, make_loss, make_optimizer

        import keras

        cfg = parse_args(fit_args).resolved()
        keras.utils.set_random_seed(cfg.seed)
        data = datasets.load_pipelines(cfg.dataset, batch_size=cfg.batch_size,
                                       data_dir=cfg.data_dir, augment=cfg.augment,
                                       seed=cfg.seed, subset=cfg.subset,
                                       val_fraction=cfg.val_fraction, source=cfg.source,
                                       epochs=cfg.epochs, **cfg.data_options())
        x, y = next(iter(data.train))
        x, y = x.numpy(), y.numpy()
        model = build_model(cfg, data.info, dtype=cfg.precision)
        compile_model(model, make_optimizer(cfg, model, data.steps_per_epoch),
                      make_loss(cfg.label_smoothing), jit_compile=False)
        for _ in range(warmup):
            model.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        rate = steps * len(y) / (time.perf_counter() - start)
        for _ in range(warmup):
            model.predict_on_batch(x)
        start = time.perf_counter()
        for _ in range(steps):
            model.predict_on_batch(x)
        queue.put({"img_s": rate, "predict_img_s": steps * len(y) / (time.perf_counter() - start)})
    except Exception as e:  # noqa: BLE001 - reported to the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})


def _torch_worker(spec: dict, queue) -> None:
    try:
        import numpy as np
        import torch
        import torchvision
        from torchvision.transforms import v2

        from benchmarks.model.bench import torch_resnet
        from training.data import load_arrays

        torch.manual_seed(0)
        x, y, _ = load_arrays(spec["dataset"], "train", spec["data_dir"], "auto",
                              spec["val_fraction"], spec["subset"])
        h, w, c = x.shape[1:]
        mean = torch.tensor(spec["mean"] * (c // len(spec["mean"])), dtype=torch.float32)
        std = torch.tensor(spec["std"] * (c // len(spec["std"])), dtype=torch.float32)
        if spec["augmentation"] == "mnist":
            augment = [v2.RandomAffine(degrees=10, translate=(0.1, 0.1),
                                       interpolation=v2.InterpolationMode.BILINEAR)]
        elif spec["augmentation"] == "cifar":
            augment = [v2.RandomCrop((h, w), padding=4), v2.RandomHorizontalFlip()]
        else:
            augment = []
        transform = v2.Compose([*augment, v2.ToDtype(torch.float32),
                                v2.Normalize(mean.tolist(), std.tolist())])
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        labels = torch.from_numpy(y.astype(np.int64))

        class Images(torch.utils.data.Dataset):
            def __len__(self):
                return len(labels)

            def __getitem__(self, i):
                return transform(images[i]), labels[i]

        loader = torch.utils.data.DataLoader(Images(), batch_size=spec["batch_size"],
                                             shuffle=True, num_workers=spec["workers"],
                                             persistent_workers=spec["workers"] > 0)
        model = torch_resnet(torchvision, torch, spec["arch"], spec["stem"], c,
                             spec["num_classes"])
        wd = spec["weight_decay"]
        if spec["optimizer"] == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=spec["momentum"],
                                  nesterov=spec["nesterov"], weight_decay=wd)
        elif spec["optimizer"] == "adamw":
            opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=wd)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=spec["lr"], weight_decay=wd)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=spec["label_smoothing"])
        model.train()

        bf16 = spec["precision"] == "mixed_bfloat16"

        def epoch():
            seen = 0
            for xb, yb in loader:
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
                seen += len(yb)
            return seen

        epoch()  # warm-up: allocator, oneDNN primitive caches, DataLoader workers
        start = time.perf_counter()
        seen = sum(epoch() for _ in range(spec["epochs"] - 1))
        queue.put({"img_s": seen / (time.perf_counter() - start),
                   "versions": f"torch {torch.__version__}, torchvision "
                               f"{torchvision.__version__}, threads {torch.get_num_threads()}, "
                               f"DataLoader num_workers={spec['workers']}"})
    except Exception as e:  # noqa: BLE001
        queue.put({"error": f"{type(e).__name__}: {e}"})


def _in_process(target, *args) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # TensorFlow and torch are never forked after import
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"{target.__name__}: {result['error']}")
    return result


# ------------------------------------------------------------------------- driver
def build_parser() -> argparse.ArgumentParser:
    p = _cli.ArgumentParser(prog="python -m benchmarks.train.e2e", description=__doc__,
                                epilog=_cli.EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist",
                   help="training.fit's --dataset (default mnist); without --data-dir, "
                        f"one of {', '.join(WRITABLE)}, digits or synthetic")
    p.add_argument("--data-dir", default=None,
                   help="real data to read (default: random images written in the dataset's "
                        "archive format into a temporary folder)")
    p.add_argument("--steps", type=_cli.positive_int, default=30,
                   help="training batches per epoch")
    p.add_argument("--epochs", type=_cli.at_least(3), default=3,
                   help="epochs per fit run (the first is warm-up, the last's checkpoint "
                        "overlaps nothing: the whole-epoch figure is of those between; "
                        "default 3)")
    p.add_argument("--precisions", default=",".join(PRECISIONS),
                   help="comma-separated training precisions to measure, each with "
                        "torchvision in the same (bfloat16 autocast for mixed_bfloat16); "
                        "default %(default)s")
    p.add_argument("--repeats", type=_cli.positive_int, default=3,
                   help="repeats of the three runs (median)")
    p.add_argument("--no-torch", dest="torch", action="store_false",
                   help="skip torchvision's loop")
    p.add_argument("--torch-workers", type=_cli.non_negative_int, default=0,
                   help="torch DataLoader num_workers (default 0: the machine's cores go to "
                        "the model, as tf.data's parallel map shares them too)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    _cli.add_log_level_argument(p)
    p.add_argument("fit_options", nargs=argparse.REMAINDER,
                   help="after --: further training.fit options (e.g. -- --stem cifar)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    _cli.configure(a)
    extra = _cli.after_double_dash(a.fit_options)
    for flag in ("--run-dir", "--subset", "--epochs", "--dataset", "--data-dir", "--resume",
                 "--precision"):
        if any(opt == flag or opt.startswith(flag + "=") for opt in extra):
            p.error(f"{flag} is set by the benchmark itself; remove it after --")
    precisions = [x for x in a.precisions.split(",") if x]
    if not precisions or set(precisions) - set(PRECISIONS):
        p.error(f"--precisions takes a comma-separated subset of {list(PRECISIONS)}, got "
                f"{a.precisions!r}")

    from training.config import parse_args
    from training.data import DATASETS

    if a.dataset not in DATASETS:
        p.error(f"unknown --dataset {a.dataset!r}; expected one of {sorted(DATASETS)}")
    if a.data_dir is None and a.dataset not in WRITABLE + ("digits", "synthetic"):
        p.error(f"--dataset {a.dataset} needs --data-dir")

    with tempfile.TemporaryDirectory(prefix="e2e-") as tmp:
        probe = parse_args(["--dataset", a.dataset, *extra]).resolved()
        subset = a.steps * probe.batch_size
        data_dir = a.data_dir
        if data_dir is None and a.dataset in WRITABLE:
            data_dir = os.path.join(tmp, "data")
            os.makedirs(data_dir)
            n_train = math.ceil(subset / (1.0 - probe.val_fraction)) + 1
            write_archive(a.dataset, data_dir, n_train, max(probe.batch_size, 256))
        fit_args = ["--dataset", a.dataset, "--subset", str(subset), "--epochs", str(a.epochs),
                    *(["--data-dir", data_dir] if data_dir else []), *extra]
        result = {"machine": describe(), "fit_command": "python -m training.fit " + " ".join(
            arg if arg != data_dir or a.data_dir else "TMP/data" for arg in fit_args),
            "steps_per_epoch": a.steps, "precisions": {}}
        for precision in precisions:
            args = [*fit_args, "--precision", precision]
            result["precisions"][precision] = _measure(a, args, data_dir, subset, tmp)
            result["batch_size"] = parse_args(args).resolved().batch_size
    print_result(result)
    if a.json:
        write_json(a.json, result)
    return 0


def _measure(a, fit_args: list, data_dir, subset: int, tmp: str) -> dict:
    """The three runs, `a.repeats` times, at one precision: medians and their ratios."""
    from training.config import parse_args
    from training.data import DATASETS

    cfg = parse_args(fit_args).resolved()
    info = DATASETS[a.dataset]
    spec = dict(dataset=a.dataset, data_dir=data_dir, val_fraction=cfg.val_fraction,
                subset=subset, augmentation=info.augmentation if cfg.augment else "none",
                mean=list(info.mean), std=list(info.std), arch=cfg.arch, stem=cfg.stem,
                num_classes=info.num_classes, batch_size=cfg.batch_size,
                optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
                label_smoothing=cfg.label_smoothing, epochs=a.epochs, workers=a.torch_workers,
                precision=cfg.precision)
    use_torch = _torch_usable(a, cfg, info)
    keys = ("fit_epoch", "fit_training", "fit_validation", "train_on_batch", "predict_on_batch")
    runs = {k: [] for k in keys + (("torch",) if use_torch else ())}
    torch_versions = None
    for r in range(a.repeats):
        fit = run_fit(fit_args, os.path.join(tmp, f"run-{cfg.precision}-{r}"))
        runs["fit_epoch"].append(fit["epoch_img_s"])
        runs["fit_training"].append(fit["img_s"])
        runs["fit_validation"].append(fit["val_img_s"])
        model = _in_process(_train_on_batch_worker, fit_args, a.steps, 3)
        runs["train_on_batch"].append(model["img_s"])
        runs["predict_on_batch"].append(model["predict_img_s"])
        if use_torch:
            res = _in_process(_torch_worker, spec)
            runs["torch"].append(res["img_s"])
            torch_versions = res["versions"]
    m = {k: statistics.median(v) for k, v in runs.items()}
    return {"runs": runs, "median_img_s": m, "torch": torch_versions,
            "fit_over_train_on_batch": m["fit_epoch"] / m["train_on_batch"],
            "validation_over_prediction": m["fit_validation"] / m["predict_on_batch"],
            "fit_over_torch": m["fit_epoch"] / m["torch"] if use_torch else None}


def _torch_usable(a, cfg, info) -> bool:
    use_torch = a.torch and cfg.width == 64 and info.augmentation in ("mnist", "cifar", "none")
    if a.torch and not use_torch:
        print("--width != 64: torchvision has no such option; skipping torch", file=sys.stderr)
    if use_torch:
        import importlib.util

        if not (importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision")):
            print("torch/torchvision not installed: skipping torch", file=sys.stderr)
            use_torch = False
    return use_torch


def print_result(res: dict) -> None:
    import keras
    import tensorflow as tf

    print(f"\n{res['fit_command']}")
    print(f"  machine: {res['machine']}")
    torch = next((r["torch"] for r in res["precisions"].values() if r["torch"]), None)
    print(f"  tensorflow {tf.__version__}, keras {keras.__version__}"
          + (f"; {torch}" if torch else ""))
    for precision, r in res["precisions"].items():
        m = r["median_img_s"]
        print(f"  {precision}: batch {res['batch_size']}, {res['steps_per_epoch']} steps per "
              f"epoch; median of {len(r['runs']['fit_epoch'])} repeats (runs: "
              + "; ".join(f"{k} " + ", ".join(f"{v:.1f}" for v in vs)
                          for k, vs in r["runs"].items()) + ")")
        print(f"    {'training.fit img/s, whole epoch':<40}{m['fit_epoch']:>10.1f}"
              f"   fit / train_on_batch = {r['fit_over_train_on_batch']:.2f}")
        print(f"    {'training.fit img/s, training part':<40}{m['fit_training']:>10.1f}")
        print(f"    {'train_on_batch img/s':<40}{m['train_on_batch']:>10.1f}")
        print(f"    {'validation img/s':<40}{m['fit_validation']:>10.1f}"
              f"   validation / predict_on_batch = {r['validation_over_prediction']:.2f}")
        print(f"    {'predict_on_batch img/s':<40}{m['predict_on_batch']:>10.1f}")
        if "torch" in m:
            tag = " (bf16 autocast)" if precision == "mixed_bfloat16" else ""
            print(f"    {'torchvision img/s' + tag:<40}{m['torch']:>10.1f}"
                  f"   fit / torchvision = {r['fit_over_torch']:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
