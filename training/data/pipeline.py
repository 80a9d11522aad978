"""The one pipeline driver: the items of any source -> tf.data batches of (float32 raw 0..255
NHWC images, int32 labels), with a fully known static image shape.

Shuffling and augmentation are stateless functions of ``(seed, epoch, position)``, so a run
resumed at epoch k sees exactly the batches an uninterrupted run would have seen, and the
replicas of a distributed run hold exactly the slices of the global batch one device would.

What a source's items do (`Items`): turn one epoch's batches of item indices into pixels
(gathered from memory, or read and decoded from files, with any per-image random view), and
say which batch-wise augmentation applies. Everything else is here: epoch keys, the stateless
shuffle, batching, replica slices, the batch-wise augmentation, the static-shape check, the
cardinality and prefetching.
"""

from __future__ import annotations

import dataclasses

from training.data.augment import augment_batch


def replica_layout(replicas, batch_size: int, drop_remainder: bool) -> tuple:
    """(R, first, count, per-replica batch) of a pipeline's `replicas=(R, first, count)`
    (None: one replica holding whole batches)."""
    num_replicas, first, local = replicas or (1, 0, 1)
    if replicas is not None:
        if not (0 <= first and 1 <= local and first + local <= num_replicas):
            raise ValueError(f"replicas {replicas} is not (R, first, count) within R")
        if batch_size % num_replicas or not drop_remainder:
            raise ValueError(f"a batch of {batch_size} split over {num_replicas} replicas needs "
                             "a batch size divisible by the replica count and drop_remainder")
    return num_replicas, first, local, batch_size // num_replicas


def batches_per_epoch(n: int, batch_size: int, drop_remainder: bool = False) -> int:
    return n // batch_size if drop_remainder else -(-n // batch_size)


@dataclasses.dataclass(frozen=True)
class Plan:
    """One epoch's batches: how many items, how big a batch, and which slices of each global
    batch this input worker holds (`replicas=(R, first, count)`; None: whole batches)."""

    n: int
    batch_size: int
    shuffle: bool
    drop_remainder: bool
    replicas: tuple | None

    def __post_init__(self):
        replica_layout(self.replicas, self.batch_size, self.drop_remainder)

    @property
    def layout(self) -> tuple:
        return replica_layout(self.replicas, self.batch_size, self.drop_remainder)

    @property
    def slice_size(self) -> int:
        """Images per element of the pipeline: a replica's slice, or a whole batch."""
        return self.layout[3] if self.replicas is not None else self.batch_size

    def index_batches(self, epoch_seed):
        """(global batch i, replica r, item indices of the slice) of this worker's slices of
        one epoch, in order; the indices are shuffled by `epoch_seed` when `shuffle`."""
        import tensorflow as tf

        _, first, local, per_replica = self.layout
        index = tf.range(self.n, dtype=tf.int64)
        if self.shuffle:
            index = tf.random.experimental.stateless_shuffle(index, seed=epoch_seed)
        batches = tf.data.Dataset.from_tensor_slices(index).batch(
            self.batch_size, self.drop_remainder).enumerate()
        if self.replicas is None:
            return batches.map(lambda i, idx: (i, tf.constant(0, tf.int64), idx))
        return batches.flat_map(lambda i, idx: tf.data.Dataset.range(first, first + local).map(
            lambda r: (i, r, idx[r * per_replica:(r + 1) * per_replica])))

    def holds(self, j):
        """Whether position j of an epoch falls in this worker's slices."""
        _, first, local, per_replica = self.layout
        r = (j % self.batch_size) // per_replica
        kept = (self.n // self.batch_size) * self.batch_size
        return (j < kept) & (r >= first) & (r < first + local)

    def rows(self, r):
        """`augment_batch`'s rows of replica r's slice (None: whole batches)."""
        import tensorflow as tf

        if self.replicas is None:
            return None
        return self.batch_size, tf.cast(r, tf.int32) * self.layout[3]


class Items:
    """What a pipeline reads: `n` items of one split of a source, images of `image_shape`."""

    n: int
    image_shape: tuple
    # Whether an evaluation pipeline (same batches every pass) may keep its batches in memory
    # after the first pass: for items already in memory, where the copy is small and each
    # later pass then skips the pipeline's start-up, which dominates a short validation.
    cache_evaluation: bool = False

    def epoch_batches(self, plan: Plan, epoch_seed, augment: bool, order=None):
        """One epoch as a dataset of (global batch i, replica r, images, labels) slices, before
        the batch-wise augmentation; `order`: see `epochs`."""
        raise NotImplementedError

    def batch_augmentation(self, augment: bool) -> str:
        """The `augment_batch` kind applied to whole batches ("none": nothing)."""
        raise NotImplementedError

    def batch_seed(self, epoch_seed, i):
        return fold_in(epoch_seed, i)

    def prepare(self) -> None:
        """Makes what every epoch reads, once, eagerly: before the epochs are traced."""

    def epochs(self, one_epoch, plan: Plan, augment: bool, seed: int, epochs: int | None,
               initial_epoch: int):
        """The epochs back to back: `one_epoch(key, order=None)` of each epoch key (`order`:
        a source's own dataset of (image, label) in the epoch's order, if it has one). Without
        `epochs`, one epoch with a fresh seeded key each time the dataset is iterated (so
        each Keras epoch differs)."""
        import tensorflow as tf

        if epochs is not None:
            keys = tf.data.Dataset.range(initial_epoch, epochs)
        else:
            keys = fresh_key(seed)
        return keys.flat_map(one_epoch)


def fresh_key(seed: int):
    """A dataset of one epoch key, drawn anew (seeded) each time it is iterated."""
    import tensorflow as tf

    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)


def fold_in(seed, i):
    import tensorflow as tf

    return tf.random.experimental.stateless_fold_in(seed, i)


def pipeline(items: Items, batch_size: int, *, shuffle: bool, augment: bool, seed: int = 0,
             epochs: int | None = None, initial_epoch: int = 0, drop_remainder: bool = False,
             replicas=None, augment_strength: float = 1.0, cache: bool = False):
    """tf.data pipeline of (float32 raw 0..255 (B, H, W, C) images, int32 labels) over `items`.

    `replicas=(R, first, count)`: the pipeline of an input worker that feeds replicas
    first..first+count-1 of R. Each global batch of `batch_size` is cut into R equal slices in
    order and this pipeline yields its `count` slices one after another (what
    ``strategy.distribute_datasets_from_function`` hands to its local replicas in turn), so the
    replicas of one step hold exactly the global batch a single device would, and the workers
    of an epoch hold disjoint shares of it. Needs drop_remainder (equal slices).

    With `epochs`, the dataset holds epochs initial_epoch..epochs-1 back to back, each shuffled
    and augmented as a function of (seed, epoch index): give it to ``model.fit`` with
    ``steps_per_epoch=batches_per_epoch(...)``. Without, each iteration of the dataset is one
    epoch with a fresh (seeded) shuffle, for ``model.fit(ds, epochs=...)`` in user code.

    `cache`: an evaluation pipeline keeps its batches after the first complete pass.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if items.n == 0:
        raise ValueError("no images to build a pipeline from")
    if epochs is not None and not 0 <= initial_epoch <= epochs:
        raise ValueError(f"initial_epoch {initial_epoch} outside 0..{epochs}")
    plan = Plan(items.n, batch_size, shuffle, drop_remainder, replicas)
    kind = items.batch_augmentation(augment)
    base_seed = tf.constant(seed, tf.int64)
    shape = tuple(items.image_shape)

    def one_epoch(key, order=None):
        epoch_seed = tf.stack([base_seed, tf.cast(key, tf.int64)])

        def finish(i, r, x, y):
            if kind != "none":
                x = augment_batch(x, items.batch_seed(epoch_seed, i), kind, rows=plan.rows(r),
                                  strength=augment_strength)
            if replicas is not None:
                x.set_shape([plan.slice_size, *shape])
            return x, y

        return items.epoch_batches(plan, epoch_seed, augment, order).map(
            finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    items.prepare()
    ds = items.epochs(one_epoch, plan, augment, seed, epochs, initial_epoch)
    spec = ds.element_spec[0]
    # The models branch on a known spatial size (keras_resnet's matrix-product convolution):
    # a pipeline that lost it would put training on the slow generic path.
    if tuple(spec.shape[1:]) != shape:
        raise AssertionError(f"pipeline lost the static image shape: {spec}")
    # flat_map hides the length; Keras needs it to end evaluation without a warning.
    per_epoch = batches_per_epoch(items.n, batch_size, drop_remainder) * plan.layout[2]
    total = per_epoch * ((epochs - initial_epoch) if epochs is not None else 1)
    ds = ds.apply(tf.data.experimental.assert_cardinality(total))
    if cache:
        ds = _cached(ds, shuffle or kind != "none" or epochs is not None)
    return ds.prefetch(tf.data.AUTOTUNE)


def _cached(ds, varies: bool):
    """`ds` keeping its batches after the first complete pass; `varies`: its passes differ."""
    if varies:
        raise ValueError("only an evaluation pipeline (no shuffle, no augmentation, no epochs) "
                         "has the same batches every pass, to cache")
    return ds.cache()
