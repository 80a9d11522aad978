"""Distributed training: per-replica slicing of the data, the launcher, and the equivalence of
one device, MirroredStrategy over logical CPUs and two local workers (MultiWorkerMirrored)."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO
from training.data import make_pipeline

# Equivalence runs: noise images (on digits even two one-device runs part ways fast), 5 steps
# an epoch, SGD; the kill/restart runs: real digits, 20 steps an epoch, fit's defaults.
# One epoch, 5 SGD steps: each step's arithmetic is compared. Over more steps float32 training
# amplifies any round-off difference by orders of magnitude, unpredictably (README, "Training on
# several machines"), so a longer run measures that amplification, not the replicas.
EQUIVALENCE = ["--arch", "resnet18", "--dataset", "synthetic", "--synthetic-shape", "16,16,3",
               "--stem", "cifar", "--width", "8", "--batch-size", "32", "--subset", "160",
               "--epochs", "1", "--optimizer", "sgd", "--lr", "0.01", "--deterministic",
               "--verbose", "2"]
DIGITS = ["--arch", "resnet18", "--dataset", "digits", "--width", "8", "--batch-size", "32",
          "--subset", "640", "--epochs", "3", "--deterministic", "--verbose", "2"]


def _pipeline(n_images, replicas, augmentation="mnist", epochs=2):
    images = (np.arange(n_images * 64) % 251).astype(np.uint8).reshape(n_images, 8, 8, 1)
    labels = np.arange(n_images, dtype=np.int32)
    return [(x.numpy(), y.numpy()) for x, y in make_pipeline(
        images, labels, 8, shuffle=True, augmentation=augmentation, seed=5, epochs=epochs,
        drop_remainder=True, replicas=replicas)]


def test_workers_hold_disjoint_slices_that_make_up_each_global_batch():
    single = _pipeline(44, None)
    # 4 replicas over 2 input workers (2 local replicas each), as distribute_train builds them.
    workers = [_pipeline(44, (4, 2 * w, 2)) for w in range(2)]
    assert len(single) == 2 * (44 // 8)
    assert [len(w) for w in workers] == [2 * len(single)] * 2
    for step, (x, y) in enumerate(single):
        parts = [workers[w][2 * step + j] for w in range(2) for j in range(2)]
        assert all(p[1].shape == (2,) for p in parts)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
        # The augmented pixels too: each slice draws the transforms of its rows.
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
    epoch = [y for x, y in workers[0][:10] + workers[1][:10]]
    seen = np.concatenate(epoch)
    assert len(seen) == len(set(seen.tolist())) == 40  # no duplicates; 4 left for no batch


@pytest.mark.parametrize("resize, cache", [("crop", None), ("stretch", None),
                                           ("crop", "memory")])
def test_folder_workers_read_disjoint_files_and_get_single_device_pixels(tmp_path, resize,
                                                                         cache):
    import keras

    from tests.training.test_folders import make_mixed_folder
    from training import data as datasets

    keras.utils.set_random_seed(0)
    root = make_mixed_folder(tmp_path / "pics", n=10, bad=0)
    kw = dict(data_dir=str(root), image_shape=(24, 24, 3), resize=resize, cache=cache,
              val_fraction=0.0, batch_size=8, epochs=2, seed=1)
    single = datasets.load_pipelines("folder", **kw)
    shard = datasets.load_pipelines("folder", replicas=4, **kw).train_shard
    workers = [[(x.numpy(), y.numpy()) for x, y in shard((4, 2 * w, 2))] for w in range(2)]
    reference = [(x.numpy(), y.numpy()) for x, y in single.train]
    steps = single.num_train // 8
    assert all(len(w) == 2 * 2 * steps for w in workers)
    for k in range(2 * steps):  # both epochs
        x, y = reference[(k // steps) * len(reference) // 2 + k % steps]
        parts = [workers[w][2 * k + j] for w in range(2) for j in range(2)]
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)


def test_replica_slices_need_an_even_split():
    with pytest.raises(ValueError, match="divisible by the replica count"):
        _pipeline(44, (3, 0, 1))


def _fit(tmp_path, name, *extra, env=None, run=EQUIVALENCE):
    run_dir = tmp_path / name
    cmd = [sys.executable, "-m", "training.fit", *run, "--run-dir", str(run_dir), *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env=env)
    return proc, run_dir


def _launch(tmp_path, name, *extra, nproc=2, env=None, popen=False, run=EQUIVALENCE):
    run_dir = tmp_path / name
    cmd = [sys.executable, "-m", "training.launch", "--nproc", str(nproc), "--",
           *run, "--run-dir", str(run_dir), *extra]
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env), run_dir
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env=env), run_dir


def _difference(a, b) -> float:
    from benchmarks.train.distributed import weight_difference

    return weight_difference(str(a / "last.keras"), str(b / "last.keras"))[0]


def test_batch_that_does_not_divide_over_replicas_is_one_line(tmp_path):
    proc, run_dir = _fit(tmp_path, "odd", "--epochs", "1", "--cpu-replicas", "3", run=DIGITS)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: --batch-size 32 does not divide over 3 replicas")
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize("argv, message", [
    (["--nproc", "2"], "give training.fit options after --"),
    (["--nproc", "2", "--", "--strategy", "default"], "--strategy is set by the launcher"),
    (["--nproc", "0", "--", "--epochs", "1"], "--nproc"),
])
def test_launcher_usage_errors(argv, message):
    proc = subprocess.run([sys.executable, "-m", "training.launch", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_one_device_mirrored_and_two_workers_train_the_same_weights(tmp_path):
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    runs = {}
    for name, extra, env in (
            ("single", (), None),
            ("mirrored", ("--cpu-replicas", "2"), None)):
        proc, runs[name] = _fit(tmp_path, name, *extra, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
    launched, runs["workers"] = _launch(tmp_path, "workers",
                                        env=dict(os.environ, TMPDIR=str(worker_tmp)))
    assert launched.returncode == 0, launched.stdout[-3000:]
    assert "[worker 1]" in launched.stdout and "[worker 0]" in launched.stdout

    # Relative L2 over all weights; measured about 1e-7 (float32 round-off).
    for name in ("mirrored", "workers"):
        assert _difference(runs["single"], runs[name]) < 1e-5, name
    assert _difference(runs["mirrored"], runs["workers"]) < 1e-6

    config = json.loads((runs["workers"] / "config.json").read_text())
    assert (config["strategy"], config["num_workers"], config["num_replicas"],
            config["batchnorm"], config["cluster"]) == ("multi_worker", 2, 2, "sync", "TF_CONFIG")
    config = json.loads((runs["mirrored"] / "config.json").read_text())
    assert (config["strategy"], config["num_workers"], config["num_replicas"]) == (
        "mirrored", 1, 2)
    # Only the chief wrote: worker 1's private folder is gone, and the run directory's log.csv
    # has one row per epoch.
    assert glob.glob(str(worker_tmp / "keras-resnet-worker*")) == []
    assert len((runs["workers"] / "log.csv").read_text().strip().splitlines()) == 1 + 1


@pytest.mark.slow
def test_killed_worker_is_restarted_and_the_run_ends_as_if_uninterrupted(tmp_path):
    proc, killed_dir = _launch(tmp_path, "killed", popen=True, run=DIGITS)
    lines = []
    deadline = time.monotonic() + 600
    victim = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "worker 1 started (pid" in line and victim is None:
            victim = int(line.split("pid ")[1].split(",")[0])
        # Epoch 2 under way and its first epoch in state.json (written in the background while
        # epoch 2 trains), so this kill is mid-run.
        if victim and victim > 0 and "Epoch 2/3" in line:
            while not (killed_dir / "state.json").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(victim, signal.SIGKILL)
            victim = -1
    rest, _ = proc.communicate(timeout=600)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out[-3000:]
    assert victim == -1, out[-3000:]
    assert "worker 1 killed by signal 9; restarting all 2 workers (1/3) with --resume" in out

    whole, whole_dir = _launch(tmp_path, "whole", run=DIGITS)
    assert whole.returncode == 0, whole.stdout[-3000:]
    assert _difference(killed_dir, whole_dir) == 0.0
    assert len((killed_dir / "log.csv").read_text().strip().splitlines()) == 1 + 3
    metrics = json.loads((killed_dir / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.3  # two workers learn the digits; chance is 0.1
