"""Feature extraction (multi-scale outputs) and freezing for transfer learning."""

from __future__ import annotations

import keras

from keras_resnet.builder import NUM_STAGES


def _stage_blocks(model: keras.Model, stage: int) -> list:
    prefix = f"stage{stage}_block"
    return [layer for layer in model.layers if layer.name.startswith(prefix)]


def _stem_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers if layer.name.startswith("stem_")]


def _check_resnet(model: keras.Model) -> None:
    missing = [s for s in range(1, NUM_STAGES + 1) if not _stage_blocks(model, s)]
    if missing or not _stem_layers(model):
        raise ValueError(
            f"{model.name!r} is not a keras_resnet model: no layers named 'stem_*' or "
            f"'stage{{1..{NUM_STAGES}}}_block*' (missing stages {missing})"
        )


def feature_extractor(model: keras.Model, stages=(1, 2, 3, 4), include_stem: bool = False):
    """A model sharing `model`'s layers whose outputs are the feature maps of each stage.

    Returns a ``keras.Model`` with a dict of outputs ``{"stem": ..., "stage1": ...}`` (strides
    4, 4, 8, 16, 32 for the ImageNet stem), for detection/segmentation heads. Weights are shared.
    """
    _check_resnet(model)
    bad = [s for s in stages if s not in range(1, NUM_STAGES + 1)]
    if bad or not stages:
        raise ValueError(f"stages must be a non-empty subset of {list(range(1, NUM_STAGES + 1))}, got {stages!r}")
    outputs = {}
    if include_stem:
        outputs["stem"] = _stem_layers(model)[-1].output
    for s in stages:
        outputs[f"stage{s}"] = _stage_blocks(model, s)[-1].output
    return keras.Model(model.input, outputs, name=f"{model.name}_features")


def freeze(model: keras.Model, stages: int = 0, stem: bool = True) -> keras.Model:
    """Freezes the stem and the first `stages` stages (``freeze(model, 1)`` = the seed's
    frozen ``layer1``); the rest is made trainable.

    Frozen layers are ``trainable=False``; Keras 3 runs a non-trainable BatchNormalization in
    inference mode (moving statistics, no updates) even when the model is called with
    ``training=True``. Recompile the model after changing what is trainable.
    """
    _check_resnet(model)
    if isinstance(stages, bool) or not isinstance(stages, int) or not 0 <= stages <= NUM_STAGES:
        raise ValueError(f"stages must be an integer in 0..{NUM_STAGES}, got {stages!r}")
    for layer in _stem_layers(model):
        layer.trainable = not stem
    for s in range(1, NUM_STAGES + 1):
        for layer in _stage_blocks(model, s):
            layer.trainable = s > stages
    return model
