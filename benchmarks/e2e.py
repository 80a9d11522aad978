"""Training speed as users get it: `python -m training.fit` itself, beside its own model's
`train_on_batch` and beside torchvision's training loop fed by a torch DataLoader.

    python -m benchmarks.e2e --dataset mnist
    python -m benchmarks.e2e --dataset cifar10 -- --stem cifar --batch-size 64

Three measurements per repeat, one after the other, each in its own process:
- fit: `python -m training.fit` with its defaults (augmentation on, its optimizer, batch size and
  pipeline) plus the options after `--`, on `--steps` batches per epoch for `--epochs` epochs;
  the rate is training images over the training part of the epochs after the first
  (metrics.json's `train_images_per_s_after_first_epoch`: tracing and validation excluded,
  data pipeline and callbacks included).
- train_on_batch: the same model, optimizer and compile (training.fit's own functions) on one
  fixed batch from the same pipeline, `--steps` steps after warm-up: the model's own speed.
- torch: torchvision's ResNet (same architecture and stem), the same optimizer, loss and batch,
  fed by a torch DataLoader over the same uint8 images with the equivalent torchvision
  augmentation (MNIST-like: RandomAffine(10 degrees, 10% shift); CIFAR-like: RandomCrop(32,
  padding 4) + RandomHorizontalFlip) and normalization, `--steps` steps after one warm-up epoch.

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
from benchmarks.machine import describe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Datasets whose archive format this benchmark can write (digits and synthetic need no files).
WRITABLE = ("mnist", "fashion_mnist", "cifar10", "cifar100")


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
    return {"img_s": metrics["train_images_per_s_after_first_epoch"],
            "img_s_all_epochs": metrics["train_images_per_s"], "wall_s": wall}


def _train_on_batch_worker(fit_args: list, steps: int, warmup: int, queue) -> None:
    try:
        from training import data as datasets
        from training.config import parse_args
        from training.recipe import build_model, compile_model, make_loss, make_optimizer

        import keras

        cfg = parse_args(fit_args)
        keras.utils.set_random_seed(cfg.seed)
        data = datasets.load_pipelines(cfg.dataset, batch_size=cfg.batch_size,
                                       data_dir=cfg.data_dir, augment=cfg.augment,
                                       seed=cfg.seed, subset=cfg.subset,
                                       val_fraction=cfg.val_fraction, source=cfg.source,
                                       epochs=cfg.epochs, **cfg.data_options())
        x, y = next(iter(data.train))
        x, y = x.numpy(), y.numpy()
        model = build_model(cfg, data.info)
        compile_model(model, make_optimizer(cfg, model, data.steps_per_epoch),
                      make_loss(cfg.label_smoothing), jit_compile=False)
        for _ in range(warmup):
            model.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        queue.put({"img_s": steps * len(y) / (time.perf_counter() - start)})
    except Exception as e:  # noqa: BLE001 - reported to the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})


def _torch_worker(spec: dict, queue) -> None:
    try:
        import numpy as np
        import torch
        import torchvision
        from torchvision.transforms import v2

        from benchmarks.bench import torch_resnet
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

        def epoch():
            seen = 0
            for xb, yb in loader:
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xb), yb).backward()
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
    p = _cli.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__,
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
    p.add_argument("--epochs", type=_cli.at_least(2), default=2,
                   help="epochs per fit run (the first is warm-up; default 2)")
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
    for flag in ("--run-dir", "--subset", "--epochs", "--dataset", "--data-dir", "--resume"):
        if any(opt == flag or opt.startswith(flag + "=") for opt in extra):
            p.error(f"{flag} is set by the benchmark itself; remove it after --")

    from training.config import parse_args
    from training.data import DATASETS

    if a.dataset not in DATASETS:
        p.error(f"unknown --dataset {a.dataset!r}; expected one of {sorted(DATASETS)}")
    if a.data_dir is None and a.dataset not in WRITABLE + ("digits", "synthetic"):
        p.error(f"--dataset {a.dataset} needs --data-dir")

    with tempfile.TemporaryDirectory(prefix="e2e-") as tmp:
        probe = parse_args(["--dataset", a.dataset, *extra])
        subset = a.steps * probe.batch_size
        data_dir = a.data_dir
        if data_dir is None and a.dataset in WRITABLE:
            data_dir = os.path.join(tmp, "data")
            os.makedirs(data_dir)
            n_train = math.ceil(subset / (1.0 - probe.val_fraction)) + 1
            write_archive(a.dataset, data_dir, n_train, max(probe.batch_size, 256))
        fit_args = ["--dataset", a.dataset, "--subset", str(subset), "--epochs", str(a.epochs),
                    *(["--data-dir", data_dir] if data_dir else []), *extra]
        cfg = parse_args(fit_args)
        info = DATASETS[a.dataset]
        spec = dict(dataset=a.dataset, data_dir=data_dir, val_fraction=cfg.val_fraction,
                    subset=subset, augmentation=info.augmentation if cfg.augment else "none",
                    mean=list(info.mean), std=list(info.std), arch=cfg.arch, stem=cfg.stem,
                    num_classes=info.num_classes, batch_size=cfg.batch_size,
                    optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                    nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
                    label_smoothing=cfg.label_smoothing, epochs=a.epochs, workers=a.torch_workers)
        use_torch = a.torch and cfg.width == 64 and info.augmentation in ("mnist", "cifar", "none")
        if a.torch and not use_torch:
            print("--width != 64: torchvision has no such option; skipping torch", file=sys.stderr)
        if use_torch:
            import importlib.util

            if not (importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision")):
                print("torch/torchvision not installed: skipping torch", file=sys.stderr)
                use_torch = False
        runs = {"fit": [], "train_on_batch": [], **({"torch": []} if use_torch else {})}
        fit_wall, torch_versions = [], None
        for r in range(a.repeats):
            fit = run_fit(fit_args, os.path.join(tmp, f"run{r}"))
            runs["fit"].append(fit["img_s"])
            fit_wall.append(fit["wall_s"])
            runs["train_on_batch"].append(
                _in_process(_train_on_batch_worker, fit_args, a.steps, 3)["img_s"])
            if use_torch:
                res = _in_process(_torch_worker, spec)
                runs["torch"].append(res["img_s"])
                torch_versions = res["versions"]

    medians = {k: statistics.median(v) for k, v in runs.items()}
    result = {"machine": describe(), "fit_command": "python -m training.fit " + " ".join(
        arg if arg != data_dir or a.data_dir else "TMP/data" for arg in fit_args),
              "batch_size": cfg.batch_size, "steps_per_epoch": a.steps, "runs": runs,
              "median_img_s": medians, "fit_wall_s": fit_wall, "torch": torch_versions,
              "fit_over_train_on_batch": medians["fit"] / medians["train_on_batch"],
              "fit_over_torch": medians["fit"] / medians["torch"] if use_torch else None}
    print_result(result)
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            json.dump(result, f, indent=2)
        os.replace(a.json + ".tmp", a.json)
    return 0


def print_result(res: dict) -> None:
    import keras
    import tensorflow as tf

    print(f"\n{res['fit_command']}")
    print(f"  machine: {res['machine']}")
    print(f"  tensorflow {tf.__version__}, keras {keras.__version__}"
          + (f"; {res['torch']}" if res["torch"] else ""))
    print(f"  batch {res['batch_size']}, {res['steps_per_epoch']} steps per epoch; median of "
          f"{len(res['runs']['fit'])} repeats (runs: "
          + "; ".join(f"{k} " + ", ".join(f"{v:.1f}" for v in vs) for k, vs in res["runs"].items())
          + ")")
    m = res["median_img_s"]
    print(f"  {'training.fit img/s':<24}{m['fit']:>10.1f}")
    print(f"  {'train_on_batch img/s':<24}{m['train_on_batch']:>10.1f}"
          f"   fit / train_on_batch = {res['fit_over_train_on_batch']:.2f}")
    if "torch" in m:
        print(f"  {'torchvision img/s':<24}{m['torch']:>10.1f}"
              f"   fit / torchvision = {res['fit_over_torch']:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
