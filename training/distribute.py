"""Which tf.distribute strategy a run uses, and what each worker process may write.

Keras's own `model.fit` runs the distributed step: the strategy only has to exist before
TensorFlow starts its runtime, every variable has to be made in its scope, and the training
data has to reach the replicas in the order a single device would have seen it
(`distribute_train`). Writes are the chief's: the other workers of a multi-worker run get a
private temporary folder for whatever Keras and our callbacks write, removed when they end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile



class DistributeError(ValueError):
    """A strategy that cannot run here; the message says what was found and what to change."""


@dataclasses.dataclass
class Placement:
    strategy: object
    kind: str  # "default", "mirrored" or "multi_worker"
    reason: str
    num_workers: int
    worker_index: int
    cluster: str  # "TF_CONFIG", "SLURM" or "" (one process)

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def record(self) -> dict:
        return {"strategy": self.kind, "strategy_reason": self.reason,
                "num_workers": self.num_workers, "num_replicas": self.num_replicas,
                "cluster": self.cluster or None}


def tf_config() -> dict | None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise DistributeError(f"TF_CONFIG is not a cluster spec with cluster.worker and "
                              f"task.index ({e}): see README 'Training on several machines'"
                              ) from None
    if task.get("type", "worker") != "worker" or not 0 <= index < len(workers):
        raise DistributeError(f"TF_CONFIG task {task} is not one of the {len(workers)} workers")
    if "chief" in config["cluster"]:
        raise DistributeError("TF_CONFIG with a separate 'chief' task is not supported: list "
                              "every host under 'worker'; worker 0 is the chief")
    return config


def slurm_tasks() -> int:
    try:
        return int(os.environ.get("SLURM_NTASKS", "1"))
    except ValueError:
        return 1


def make_placement(requested: str, cpu_replicas: int = 1) -> Placement:
    """Creates the strategy; call before any other TensorFlow work in the process (a
    multi-worker strategy and logical CPU devices can only be set up before TF starts)."""
    import tensorflow as tf

    config = tf_config()
    slurm = slurm_tasks() > 1 and "SLURM_PROCID" in os.environ
    gpus = tf.config.list_physical_devices("GPU")
    if requested == "auto":
        if config is not None or slurm:
            requested, reason = "multi_worker", "auto: " + ("TF_CONFIG" if config else "SLURM")
        elif len(gpus) > 1 or cpu_replicas > 1:
            requested = "mirrored"
            reason = (f"auto: {len(gpus)} GPUs" if len(gpus) > 1
                      else f"auto: --cpu-replicas {cpu_replicas}")
        else:
            requested, reason = "default", "auto: one device"
    else:
        reason = "requested"
    if cpu_replicas > 1:
        if gpus:
            raise DistributeError(f"--cpu-replicas {cpu_replicas} is for machines without a GPU; "
                                  f"this one has {len(gpus)}: leave it at 1")
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    if requested == "default":
        if cpu_replicas > 1:
            raise DistributeError(f"--cpu-replicas {cpu_replicas} needs --strategy mirrored or "
                                  "auto")
        return Placement(tf.distribute.get_strategy(), "default", reason, 1, 0, "")
    if requested == "mirrored":
        devices = ([g.name.replace("physical_device:", "") for g in gpus] if gpus else
                   [f"/cpu:{i}" for i in range(cpu_replicas)])
        return Placement(tf.distribute.MirroredStrategy(devices), "mirrored", reason, 1, 0, "")
    # multi_worker
    if config is not None:
        workers = len(config["cluster"]["worker"])
        index = int(config["task"]["index"])
        resolver, cluster = None, "TF_CONFIG"
    elif slurm:
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
        workers, index, cluster = slurm_tasks(), int(os.environ["SLURM_PROCID"]), "SLURM"
    else:
        raise DistributeError("--strategy multi_worker needs TF_CONFIG (see python -m "
                              "training.launch) or a SLURM job with more than one task")
    if cpu_replicas > 1:
        raise DistributeError("--cpu-replicas is for 'mirrored' in one process; a multi-worker "
                              "run has one replica per worker process on a CPU")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver, communication_options=options)
    return Placement(strategy, "multi_worker", reason, workers, index, cluster)


def check_batch(batch_size: int, placement: Placement) -> None:
    replicas = placement.num_replicas
    if batch_size % replicas:
        raise DistributeError(
            f"--batch-size {batch_size} does not divide over {replicas} replicas "
            f"({placement.num_workers} worker(s)): use a multiple of {replicas}, e.g. "
            f"{max(replicas, batch_size // replicas * replicas)}")


def distribute_train(placement: Placement, make_shard):
    """The training dataset for `model.fit`: `make_shard(replicas)` returns a pipeline given
    replicas=(R, first, count) (see training.data.pipeline.pipeline); with one replica, the plain one."""
    import tensorflow as tf

    strategy = placement.strategy
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return make_shard(None)

    def per_worker(context: tf.distribute.InputContext):
        local = replicas // context.num_input_pipelines
        return make_shard((replicas, context.input_pipeline_id * local, local))

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(per_worker, options)


def set_batchnorm_sync(model, sync: bool) -> None:
    """Marks every BatchNorm of the model (blocks included) synchronised or not."""
    import keras

    from keras_resnet._keras_compat import flatten_layers

    for layer in flatten_layers(model, include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = sync


class WriteDir:
    """Where this worker writes: the run directory for the chief; a temporary folder for the
    others, removed by `close()`."""

    def __init__(self, run_dir: str, placement: Placement):
        self.run_dir = run_dir
        self.path = run_dir if placement.is_chief else tempfile.mkdtemp(
            prefix=f"keras-resnet-worker{placement.worker_index}-")
        self.private = not placement.is_chief

    def close(self) -> None:
        if self.private:
            shutil.rmtree(self.path, ignore_errors=True)


def build_for_fit(model, placement: Placement, image_shape) -> None:
    """Builds the model's compiled state (loss, metrics, optimizer) under the strategy now, and
    keeps Keras's `fit` from building it from the first distributed batch.

    Keras 3.15's TensorFlow trainer, for a model made under a strategy scope, averages the
    first distributed batch across replicas (`strategy.reduce`) only to learn the input shapes;
    under MultiWorkerMirroredStrategy that reduce fails ("Attempt to convert a value
    (PerReplica...) to a Tensor", keras-team/keras#20585). The shapes are known here, so the
    model is built from a zero batch and `fit` then runs with the strategy taken from the
    enclosing `strategy.scope()` (the trainer's own fallback), which skips that reduce.
    """
    import numpy as np

    from keras_resnet import _keras_compat

    if placement.num_replicas == 1:
        return
    per_replica = 1
    batch = (np.zeros((per_replica, *image_shape), np.float32), np.zeros((per_replica,), np.int32))
    with placement.strategy.scope():
        _keras_compat.symbolic_build(model, batch)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    _keras_compat.forget_distribute_strategy(model)
    if placement.num_workers > 1:
        _fix_multi_worker_log_reduction()


def _fix_multi_worker_log_reduction() -> None:
    """Keras 3.15 averages each step's scalar logs over a multi-worker strategy's replicas with
    `strategy.reduce("MEAN", v, axis=0)`, which fails on a scalar ("Invalid reduction dimension
    0 for input with 0 dimensions", tensorflow/tensorflow#72388). The same mean over replicas,
    without the axis, is what was meant; everything else goes through Keras's own function."""
    import tensorflow as tf

    from keras_resnet import _keras_compat

    original = _keras_compat.reduce_per_replica()
    if getattr(original, "_keras_resnet_fixed", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if (reduction in ("auto", "mean")
                and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)):
            def mean(v):
                if strategy.experimental_local_results(v)[0].shape.rank == 0:
                    return strategy.reduce("MEAN", v, axis=None)
                return original(v, strategy, reduction)

            return tf.nest.map_structure(mean, values)
        return original(values, strategy, reduction)

    reduce_per_replica._keras_resnet_fixed = True
    _keras_compat.replace_reduce_per_replica(reduce_per_replica)
