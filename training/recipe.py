"""What a run trains and how: its model (new, or holding --weights), the learning-rate schedule,
the optimizer with weight decay on kernels only, the loss (with label smoothing), and the one
compile call (shared with benchmarks.train.e2e).
"""

from __future__ import annotations

import functools
import os
import warnings

from keras_resnet import _imports

from training.config import WEIGHT_SUFFIXES, TrainConfig
from training.console import log
from training.modelio import load_model


class RunError(ValueError):
    """A run that cannot start as asked (its options, --weights, its run directory); the
    message says what to change."""


class RunFileMissing(FileNotFoundError):
    """A file the run starts from (--weights, a resumed run's config.json) does not exist."""


def build_model(cfg: TrainConfig, info, start_weights: bool = True, dtype=None):
    """The run's model under the dtype policy `dtype` (default: Keras's global one): from
    scratch, or from --weights (loaded only when `start_weights`: a resumed run loads its own
    checkpoint instead), with --freeze-stages applied."""
    from keras_resnet import build_resnet, freeze, with_dtype

    if cfg.weights:
        model = model_from_weights(cfg, info, load=start_weights)
        if dtype is not None:
            model = with_dtype(model, dtype)
    else:
        try:
            model = build_resnet(
                cfg.arch, input_shape=info.image_size, num_classes=info.num_classes,
                stem=cfg.stem, width=cfg.width, zero_init_residual=cfg.zero_init_residual,
                normalization=(list(info.mean), list(info.std)), class_names=info.class_names,
                dtype=dtype)
        except ValueError as e:  # the options (--stem, --width, the data's image size) do not fit
            raise RunError(str(e)) from None
    if cfg.freeze_stages >= 0:
        freeze(model, cfg.freeze_stages)
    return model


def model_from_weights(cfg: TrainConfig, info, load: bool = True):
    """A model for the run's images and classes holding --weights: every tensor but a classifier
    of another class count. A named set and a torchvision checkpoint bring their own stem, width
    and ImageNet normalization; a .keras model its own stem, width and normalization."""
    found = weight_set(cfg)
    if found is not None:
        return _from_weight_set(found, cfg, info, load)
    if not os.path.isfile(cfg.weights):
        raise RunFileMissing(f"--weights {cfg.weights} does not exist")
    if cfg.weights.endswith(".keras"):
        return _from_keras_file(cfg, info, load)
    return _from_torch_file(cfg, info, load)


def weight_set(cfg: TrainConfig):
    """The set --weights names (checked against --arch), or None for a file or no --weights."""
    from training import weightsets

    if cfg.weights is None or cfg.weights.endswith(WEIGHT_SUFFIXES) or not weightsets.is_name(
            cfg.weights):
        return None
    return weightsets.resolve(cfg.weights, cfg.arch)


def weights_record(cfg: TrainConfig) -> dict:
    """What config.json says of a named --weights set (its resolved name, URL, hash, figures)."""
    found = weight_set(cfg)
    return {} if found is None else {"weight_set": found.describe()}


def _from_weight_set(found, cfg: TrainConfig, info, load: bool):
    from keras_resnet.weights import WeightsError

    from training import weightsets

    if info.image_size[2] != 3:
        raise RunError(f"--weights {cfg.weights} takes RGB images; the data has "
                       f"{info.image_size[2]} channel(s) (use --channels 3)")
    try:
        model = weightsets.pretrained_model(found, info.image_size, info.num_classes,
                                            info.class_names, load=load)
    except WeightsError:
        raise
    except ValueError as e:  # the data's image size does not fit the set's architecture
        raise RunError(f"--weights {cfg.weights}: {e}") from None
    if load:
        same = info.num_classes == found.num_classes
        log(f"weights {found.arch} {found.name} ({found.url})"
            + ("" if same else f"; new classifier for the data's {info.num_classes} classes"))
    return model


def _from_keras_file(cfg: TrainConfig, info, load: bool):
    from keras_resnet import model_config, model_from_keras_weights

    try:
        model, skipped = model_from_keras_weights(load_model(cfg.weights), cfg.arch,
                                                  info.image_size, info.num_classes,
                                                  info.class_names, load=load)
    except ValueError as e:  # the weights' stem does not fit the data's images, ...
        raise RunError(f"--weights {cfg.weights}: {e}") from None
    if load:
        config = model_config(model)
        log(f"weights from {cfg.weights} ({config['stem']} stem, width {config['width']})"
            + (f"; not loaded (other shapes): {', '.join(skipped)}" if skipped else ""))
    return model


def _from_torch_file(cfg: TrainConfig, info, load: bool):
    from keras_resnet.convert import IMAGENET_NORMALIZATION, from_torch, infer_config, \
        read_state_dict

    path = cfg.weights
    try:
        found = infer_config(read_state_dict(path)[0])
    except ValueError as e:
        raise RunError(f"--weights {path}: {e}") from None
    if found["in_channels"] != info.image_size[2]:
        raise RunError(f"--weights {path} takes {found['in_channels']}-channel images; the "
                       f"data has {info.image_size[2]} (use --channels {found['in_channels']})")
    same_classes = found["num_classes"] == info.num_classes
    normalization = IMAGENET_NORMALIZATION if found["in_channels"] == 3 else None
    with warnings.catch_warnings():
        # strict=False warns about the classifier it leaves out; the log line below says so.
        warnings.simplefilter("ignore", UserWarning)
        try:
            model = from_torch(path, cfg.arch, input_shape=info.image_size,
                               num_classes=info.num_classes, include_top=True,
                               normalization=normalization, strict=same_classes,
                               class_names=info.class_names)
        except ValueError as e:
            raise RunError(f"--weights {path}: {e}") from None
    if load:
        log(f"weights from {path} ({cfg.arch}, {found['stem']} stem, width {found['width']}"
            + (", ImageNet normalization" if normalization else "") + ")"
            + ("" if same_classes else f"; classifier replaced: the weights have "
               f"{found['num_classes']} classes, the data {info.num_classes}"))
    return model


def decayed_variables(model) -> list:
    """Conv and dense kernels: the only weights that get weight decay (not BN, not biases)."""
    return [v for v in model.trainable_variables if v.path.split("/")[-1] == "kernel"]


def learning_rate(cfg: TrainConfig, steps_per_epoch: int):
    import keras

    schedules = keras.optimizers.schedules
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        # torch StepLR(step_size, gamma) stepped once per epoch.
        return schedules.ExponentialDecay(cfg.lr, cfg.step_epochs * steps_per_epoch,
                                          cfg.step_gamma, staircase=True)
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if warmup:
        return schedules.CosineDecay(0.0, max(1, total - warmup), warmup_target=cfg.lr,
                                     warmup_steps=warmup)
    return schedules.CosineDecay(cfg.lr, max(1, total))


def make_optimizer(cfg: TrainConfig, model, steps_per_epoch: int):
    """Optimizer whose weight decay touches conv/dense kernels only.

    sgd and adam: L2 penalty wd/2*|w|^2 on the kernels, i.e. wd*w added to their gradient,
    which is what torch.optim.SGD/Adam(weight_decay=wd) do (the seed: Adam, wd 1e-4).
    adamw: decoupled decay, with every non-kernel variable excluded.
    """
    import keras

    lr = learning_rate(cfg, steps_per_epoch)
    kernels = decayed_variables(model)
    # Keras's own weight averaging: the optimizer keeps the average, training.callbacks.EMA
    # swaps it in for validation, the checkpoints and the end of training.
    ema = dict(use_ema=True, ema_momentum=cfg.ema) if cfg.ema else {}
    if cfg.optimizer == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay, **ema)
        kernel_ids = {id(v) for v in kernels}
        opt.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if id(v) not in kernel_ids])
        return opt
    if cfg.weight_decay:
        for v in kernels:
            v.regularizer = keras.regularizers.L2(cfg.weight_decay / 2.0)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=bool(cfg.nesterov),
                                    **ema)
    return keras.optimizers.Adam(lr, **ema)


def make_loss(label_smoothing: float):
    import keras

    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return _register_loss()(label_smoothing)


@functools.cache
def _register_loss():
    import keras

    @keras.saving.register_keras_serializable(package="training")
    class SparseSmoothedCrossentropy(keras.losses.Loss):
        """Cross-entropy on logits with integer labels and label smoothing (Keras's sparse
        loss has no label_smoothing)."""

        def __init__(self, label_smoothing=0.0, name="sparse_smoothed_crossentropy", **kwargs):
            super().__init__(name=name, **kwargs)
            self.label_smoothing = float(label_smoothing)

        def call(self, y_true, y_pred):
            from keras import ops

            k = ops.shape(y_pred)[-1]
            onehot = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), k)
            return keras.losses.categorical_crossentropy(
                onehot, y_pred, from_logits=True, label_smoothing=self.label_smoothing)

        def get_config(self):
            return {**super().get_config(), "label_smoothing": self.label_smoothing}

    return SparseSmoothedCrossentropy


def __getattr__(name: str):
    # PEP 562: training.recipe.SparseSmoothedCrossentropy without loading Keras at import.
    if name == "SparseSmoothedCrossentropy":
        return _register_loss()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Registered (for keras.models.load_model(..., compile=True)) as soon as Keras is loaded, not
# at import: `python -m training.fit --help` must not load TensorFlow.
_imports.after_import("keras", _register_loss)


def compile_model(model, optimizer, loss, jit_compile) -> None:
    """The single compile call of the project's training, shared with benchmarks.train.e2e.

    The metric is an object and the optimizer is built here, because Keras creates a string
    metric's and the optimizer's variables while tracing the first training step, and
    TensorFlow then traces the whole step a second time without variable creation: the
    compiled model's first epoch would start after two traces instead of one."""
    import keras

    model.compile(optimizer=optimizer, loss=loss,
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=jit_compile)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
