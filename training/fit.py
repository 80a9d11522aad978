"""`python -m training.fit`: train a keras_resnet model and write a run directory.

RUN/config.json   every resolved option, dataset facts (class names, input shape) and versions
RUN/best.keras    best validation accuracy; RUN/last.keras  last completed epoch (+ state.json)
RUN/metrics.json  test accuracy/loss, per-class accuracy, epochs, wall time, images/s
RUN/history.png, RUN/confusion_matrix.png, RUN/log.csv, RUN/logs/ (TensorBoard)
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from keras_resnet import _cli
from keras_resnet._provenance import library_versions

from training import distribute, recipes
from training.config import TrainConfig, build_parser, config_from_args
from training.console import log
from training.data import load_pipelines
from training.distribute import DistributeError, WriteDir, make_placement
from training.modelio import load_model
from training.recipe import (build_model, compile_model, make_loss, make_optimizer, weight_set,
                             weights_record)
from training.rundir import RunDirError, RunLock, atomic_write_json
from training.runrecord import (check_resume_config, command_line, recorded_options,
                                write_record)

# Keras, TensorFlow and the modules that load them (keras_resnet, training.callbacks,
# training.report) are imported inside the functions that use them: `--help` and the checks
# of the options answer without loading TensorFlow.


class WorkerLost(RuntimeError):
    """Another worker of a multi-worker run stopped; the run can resume from its last epoch."""


class RunExists(FileExistsError):
    """The run directory already holds a run that this one would overwrite."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or exploded; the message names the last good checkpoint."""




# --------------------------------------------------------------------------------------------
# Resolution of "auto" options


def resolve_precision(requested: str, gpus: list) -> tuple[str, str]:
    """(precision, reason): "auto" is mixed_float16 with a GPU, and on a CPU mixed_bfloat16
    where it computes bfloat16 natively (keras_resnet.fast.default_cpu_precision), else
    float32."""
    if requested != "auto":
        return requested, "requested"
    if gpus:
        return "mixed_float16", f"auto: {len(gpus)} GPU(s) visible"
    from keras_resnet.fast import default_cpu_precision

    precision, why = default_cpu_precision()
    return precision, f"auto: no GPU visible; {why}"


def resolve_jit_compile(requested: str, gpus: list) -> bool:
    """The one place that decides XLA for the train step.

    "auto" is keras_resnet.fast.default_jit_compile(): on with a GPU, off on CPU, where XLA
    made these models several times slower (its CPU convolutions bypass oneDNN; measured with
    benchmarks.model.bench, see README).
    """
    if requested == "auto":
        from keras_resnet.fast import default_jit_compile

        return default_jit_compile(gpus)
    return requested == "on"


def default_run_dir(cfg: TrainConfig) -> str:
    return os.path.join("runs", f"{cfg.arch}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")


def run(cfg: TrainConfig, extra_callbacks=()) -> dict:
    """Trains, evaluates and writes the run directory; returns metrics.json's content.

    Only one process at a time may use a run directory (RUN/fit.lock, see rundir.RunLock).
    """
    given = dataclasses.replace(cfg).validate()
    cfg, resolution = recipes.resolve(given)
    plan = Plan(command_line(given), resolution)
    weight_set(cfg)  # a --weights name that is unknown or of another --arch: before TensorFlow
    try:
        placement = make_placement(cfg.strategy, cfg.cpu_replicas)
    except RuntimeError as e:
        # TensorFlow refuses logical devices or a cluster once its runtime has started.
        raise DistributeError(f"--strategy {cfg.strategy} --cpu-replicas {cfg.cpu_replicas} "
                              f"must be set up before TensorFlow starts ({e}): run it as its "
                              "own process (python -m training.fit)") from None
    if placement.num_workers > 1 and not cfg.run_dir:
        raise DistributeError("a multi-worker run needs --run-dir (one folder every worker can "
                              "read; python -m training.launch sets it)")
    run_dir = cfg.run_dir or default_run_dir(cfg)
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunDirError(f"--run-dir {run_dir} is a file, not a folder: choose another --run-dir")
    if not placement.is_chief:
        # Workers other than the chief only read the run directory (to resume); what they
        # write goes to a private folder.
        write_dir = WriteDir(run_dir, placement)
        try:
            return _run_locked(cfg, plan, run_dir, extra_callbacks, placement, write_dir.path)
        finally:
            write_dir.close()
    created = not os.path.exists(run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        return _run_locked(cfg, plan, run_dir, extra_callbacks, placement, run_dir)
    except BaseException:
        if created:
            _remove_failed_start(run_dir)
        raise
    finally:
        lock.release()
        if created:
            # A run that failed before writing anything leaves no empty folder behind.
            try:
                os.rmdir(run_dir)
            except OSError:
                pass


def _remove_failed_start(run_dir: str) -> None:
    """Removes what a run that this attempt started in a new folder wrote, when it stopped
    before any epoch was checkpointed: such a folder cannot be resumed and only misleads. Only
    the names training.fit writes are removed; anything else keeps the folder."""
    import shutil

    from training import callbacks as cb

    if os.path.exists(os.path.join(run_dir, cb.STATE_FILE)):
        return
    for name in ("config.json", "split.json", cb.LOG_CSV):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
    logs = os.path.join(run_dir, "logs")
    if os.path.isdir(logs) and not os.path.islink(logs):
        shutil.rmtree(logs, ignore_errors=True)
    cb.clean_temporaries(run_dir)


@dataclasses.dataclass
class Plan:
    """What the user asked for, as a command line, and what the recipe filled in."""

    command: str
    recipe: recipes.Resolution


@dataclasses.dataclass
class Setup:
    """Where and how the run computes: resolved once, recorded in config.json."""

    placement: object  # training.distribute.Placement
    precision: str
    precision_reason: str
    jit_compile: bool
    gpus: list


@dataclasses.dataclass
class Training:
    """What model.fit left: the checkpoint's record of epochs, the timings, the NaN guard."""

    checkpoint: object
    timer: object
    nan_guard: object
    wall_s: float


def _run_locked(cfg: TrainConfig, plan: Plan, run_dir: str, extra_callbacks, placement,
                out: str) -> dict:
    """`run_dir` is read (resume), `out` written: the same folder except on non-chief workers."""
    from training import callbacks as cb

    _check_start(cfg, run_dir, placement)
    setup = _setup(cfg, placement)
    resume_entry = cb.read_resume_state(run_dir) if cfg.resume else None
    initial_epoch = resume_entry["epoch"] if resume_entry else 0
    data = _data(cfg, placement, initial_epoch, plan.recipe)
    settled = cfg.epochs is None
    cfg = dataclasses.replace(cfg, epochs=data.epochs)
    log(plan.recipe.line(cfg))
    if cfg.resume and settled:
        # Only the epochs were unknown when the options were first checked.
        check_resume_config(run_dir, cfg)
    cb.clean_temporaries(out)
    # Built before the record is written: starting weights that cannot be used stop the run
    # before it writes anything.
    model = _compiled_model(cfg, data, setup, run_dir, resume_entry)
    _write_run_record(cfg, plan, run_dir, out, data, setup,
                      _architecture(cfg, plan.recipe, model))
    done = _fit(cfg, data, setup, model, out, resume_entry, extra_callbacks)
    _check_divergence(done, run_dir)
    if not placement.is_chief:
        log(f"worker {placement.worker_index} done; the chief evaluates and reports")
        return {}
    return _report(cfg, run_dir, data, setup, done)


def _check_start(cfg: TrainConfig, run_dir: str, placement) -> None:
    distribute.check_batch(cfg.batch_size, placement)
    if cfg.resume:
        check_resume_config(run_dir, cfg)
    elif placement.is_chief and any(os.path.exists(os.path.join(run_dir, f))
                                    for f in ("state.json", "metrics.json")):
        raise RunExists(f"{run_dir} already holds a run; pass --resume to continue it or choose "
                       "another --run-dir")


def _setup(cfg: TrainConfig, placement) -> Setup:
    """Precision, XLA and seeds, said in one line."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    precision, why = resolve_precision(cfg.precision, gpus)
    jit = resolve_jit_compile(cfg.jit_compile, gpus)
    log(f"precision: {precision} ({why}); XLA jit_compile: {jit} ({cfg.jit_compile}); "
        f"strategy: {placement.kind} ({placement.reason}), {placement.num_workers} worker(s), "
        f"{placement.num_replicas} replica(s)" + (f", this is worker {placement.worker_index}"
                                                  if placement.num_workers > 1 else ""))
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    return Setup(placement, precision, why, jit, gpus)


def _data(cfg: TrainConfig, placement, initial_epoch: int, recipe: recipes.Resolution):
    """The pipelines; a recipe's epochs rule is settled here, where the data's size is known."""
    data = load_pipelines(
        cfg.dataset, batch_size=cfg.batch_size, data_dir=cfg.data_dir, augment=cfg.augment,
        seed=cfg.seed, subset=cfg.subset, val_fraction=cfg.val_fraction, source=cfg.source,
        epochs=cfg.epochs if cfg.epochs is not None else recipe.epochs,
        initial_epoch=initial_epoch, replicas=placement.num_replicas,
        augment_strength=cfg.augment_strength, **cfg.data_options())
    info = data.info
    log(f"dataset {info.name} from {data.source}: {data.num_train} train / {data.num_val} val / "
        f"{data.num_test} test images of {info.image_size}"
        + ("" if data.val is not None else "; validating on the TEST split (--val-fraction 0)")
        + ("  [SYNTHETIC noise: accuracy is meaningless]" if info.synthetic else ""))
    return data


def _architecture(cfg: TrainConfig, recipe: recipes.Resolution, model) -> dict:
    """The stem and width the model has: starting weights bring their own, whatever --stem and
    --width say (said in one line when they were given and differ)."""
    from keras_resnet import model_config

    config = model_config(model)
    built = {"stem": config["stem"], "width": config["width"]}
    asked = {"stem": cfg.stem, "width": cfg.width}
    given = {"stem", "width"} & set(recipe.explicit)
    if given and any(built[k] != asked[k] for k in given):
        log(f"--weights {cfg.weights} bring stem {built['stem']!r} and width {built['width']}: "
            f"--stem {cfg.stem} --width {cfg.width} do not apply (the run records the model's)")
    return built


def _write_run_record(cfg: TrainConfig, plan: Plan, run_dir: str, out: str, data,
                      setup: Setup, architecture: dict) -> None:
    """RUN/config.json (through training.runrecord) and, for files, RUN/split.json."""
    info, placement = data.info, setup.placement
    write_record(out, {
        "arch": cfg.arch, "dataset": cfg.dataset, "class_names": list(info.class_names),
        "num_classes": info.num_classes, "input_shape": list(info.image_size),
        "mean": list(info.mean), "std": list(info.std), "precision": setup.precision,
        "precision_reason": setup.precision_reason, "jit_compile": setup.jit_compile,
        **architecture,
        "data_source": data.source, "synthetic": info.synthetic,
        "num_train": data.num_train, "num_val": data.num_val, "num_test": data.num_test,
        "steps_per_epoch": data.steps_per_epoch, **placement.record(),
        "batchnorm": cfg.batchnorm if placement.num_replicas > 1 else "single device",
        "gpus": [g.name for g in setup.gpus],
        "run_dir": os.path.abspath(run_dir), "command": plan.command,
        "options": recorded_options(cfg), "recipe": plan.recipe.record(cfg),
        **weights_record(cfg),
        "versions": library_versions("tensorflow-datasets", "scikit-learn", "matplotlib"),
        **data.dataset.record(),
    })
    split = data.dataset.split_record()
    if split is not None:
        # Which file went to which split, so that the run's numbers can be traced to images.
        atomic_write_json(os.path.join(out, "split.json"), split)


def _compiled_model(cfg: TrainConfig, data, setup: Setup, run_dir: str, resume_entry):
    """The run's model, compiled under the strategy; a resumed run's own checkpoint loaded."""
    from training import callbacks as cb
    placement = setup.placement
    with placement.strategy.scope():
        model = build_model(cfg, data.info, start_weights=not resume_entry,
                            dtype=setup.precision)
        if placement.num_replicas > 1:
            distribute.set_batchnorm_sync(model, cfg.batchnorm == "sync")
        optimizer = make_optimizer(cfg, model, data.steps_per_epoch)
        compile_model(model, optimizer, make_loss(cfg.label_smoothing), setup.jit_compile)
        if resume_entry:
            model.load_weights(os.path.join(run_dir, cb.LAST))
            log(f"resumed from {run_dir}/{cb.LAST} after epoch {resume_entry['epoch']} "
                f"(optimizer step {int(model.optimizer.iterations.numpy())})")
    return model


def _fit(cfg: TrainConfig, data, setup: Setup, model, out: str, resume_entry,
         extra_callbacks) -> Training:
    from training import callbacks as cb
    placement = setup.placement
    initial_epoch = resume_entry["epoch"] if resume_entry else 0
    train = distribute.distribute_train(placement, data.train_shard)
    nan_guard = cb.NanGuard(data.info.num_classes)
    timer = cb.EpochTimer()
    checkpoint = cb.RunCheckpoint(out, "val_accuracy", nan_guard, resume_entry)
    # The loggers come before the checkpoint (log.csv is written by it), so that a kill
    # cannot leave a counted epoch without its row.
    # The averaged weights are swapped in before the checkpoint writes them.
    ema = [cb.EMA(resumed=resume_entry is not None)] if cfg.ema else []
    callbacks = [cb.LearningRateLog(), nan_guard, timer,
                 cb.ScalarTensorBoard(os.path.join(out, "logs")), *ema, checkpoint,
                 *extra_callbacks]
    distribute.build_for_fit(model, placement, data.info.image_size)
    start = time.perf_counter()
    try:
        if initial_epoch < cfg.epochs:
            _model_fit(model, train, cfg, data, placement, initial_epoch, callbacks)
    except BaseException:
        # The epochs' files finish before the run directory's lock is released; their own
        # error would hide the one that stopped training.
        checkpoint.close(quiet=True)
        raise
    checkpoint.close()
    wall = time.perf_counter() - start
    return Training(checkpoint, timer, nan_guard, wall)


def fit_verbosity(verbose: str, stream=None) -> int:
    """Keras's verbosity for --verbose: "auto" is the progress bar on a terminal and one line
    per epoch elsewhere (a log file, CI), where every redraw of the bar would be kept."""
    if verbose != "auto":
        return int(verbose)
    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return 2


def _model_fit(model, train, cfg: TrainConfig, data, placement, initial_epoch, callbacks):
    import tensorflow as tf

    val = data.val if data.val is not None else data.test
    with placement.strategy.scope():
        try:
            model.fit(train, epochs=cfg.epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=data.steps_per_epoch, validation_data=val,
                      shuffle=False, callbacks=callbacks, verbose=fit_verbosity(cfg.verbose))
        except (tf.errors.UnavailableError, tf.errors.AbortedError,
                tf.errors.InternalError) as e:
            if placement.num_workers == 1:
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WorkerLost(
                f"worker {placement.worker_index}: the collective with the other "
                f"workers failed ({first[:160]}); the run can continue with --resume "
                "from its last completed epoch (training.launch does this)") from None


def _check_divergence(done: Training, run_dir: str) -> None:
    from training import callbacks as cb

    if done.nan_guard.nan_at is not None:
        epoch, batch, value = done.nan_guard.nan_at
        completed = done.checkpoint.entry["epoch"]
        kept = (f"the last good checkpoint is {os.path.join(run_dir, cb.LAST)} (epoch "
                f"{completed})" if completed else "no epoch completed, so there is no checkpoint")
        raise TrainingDiverged(
            f"{done.nan_guard.reason} at epoch {epoch + 1}, batch {batch + 1}: training stopped; "
            f"{kept}. Try a lower --lr, --precision float32, or a --warmup-epochs with "
            "--schedule cosine.")
    if done.checkpoint.entry["epoch"] == 0:
        raise _cli.FailedError("no epoch completed; nothing to evaluate")


def _report(cfg: TrainConfig, run_dir: str, data, setup: Setup, done: Training) -> dict:
    """Evaluates the best checkpoint on the test split and writes the report files."""
    from training import callbacks as cb
    from training import report

    best_path = os.path.join(run_dir, cb.BEST)
    if not os.path.isfile(best_path):
        best_path = os.path.join(run_dir, cb.LAST)
    info, entry, seconds = data.info, done.checkpoint.entry, done.timer.train_seconds
    metrics = report.evaluate_model(load_model(best_path), data.test, info,
                                    tta_flip=bool(cfg.tta_flip))
    metrics.update(
        model=os.path.basename(best_path), arch=cfg.arch,
        epochs_completed=entry["epoch"], epochs_this_session=len(seconds),
        best_epoch=entry["best_epoch"],
        best_val_accuracy=None if info.synthetic else entry["best"],
        validation_split="val" if data.val is not None else "test",
        train_wall_time_s=done.wall_s,
        train_images_per_s=data.num_train * len(seconds) / sum(seconds) if seconds else None,
        # The first epoch includes tracing/XLA compilation.
        train_images_per_s_after_first_epoch=(
            data.num_train * (len(seconds) - 1) / sum(seconds[1:]) if len(seconds) > 1
            else None),
        # Whole epochs (validation and checkpoints included) and their validation parts, for
        # benchmarks.train.e2e; validation_images: how many images each validation pass saw.
        epoch_seconds=done.timer.epoch_seconds, validation_seconds=done.timer.validation_seconds,
        validation_images=data.num_val if data.val is not None else data.num_test,
        precision=setup.precision, device="GPU" if setup.gpus else "CPU",
    )
    files = report.write_report(run_dir, metrics, info, entry["history"],
                                f"{cfg.arch} on {cfg.dataset}")
    for line in report.summary_lines(metrics):
        log(line)
    log(f"wall time {done.wall_s:.1f} s; report: " + ", ".join(files.values()))
    return metrics


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _cli.configure(args)
    try:
        cfg = config_from_args(args)
    except ValueError as e:  # TrainConfig's checks of the options: reported as argparse's own
        parser.error(str(e))

    def train() -> None:
        run(cfg)

    return _cli.exit_status(train)


if __name__ == "__main__":
    sys.exit(main())
