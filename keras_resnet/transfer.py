"""A model for new images and classes that starts from the weights of a saved keras_resnet model."""

from __future__ import annotations

from typing import Sequence

import keras

from keras_resnet.builder import ResNet, build_resnet, model_config


def model_from_keras_weights(
    source,
    arch: str,
    input_shape: Sequence[int | None],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    load: bool = True,
) -> tuple[keras.Model, list[str]]:
    """A new ``arch`` for ``input_shape`` and ``num_classes`` holding ``source``'s weights.

    ``source``: a .keras file saved by keras_resnet, or a model already loaded from one. The new
    model keeps the source's stem, width and normalization (as ``model_config`` gives them), so
    that every tensor but a classifier of another class count still fits. With ``load`` each
    layer whose weights have the same shapes in both models (matched by name) takes the source's
    weights; without it the model keeps its fresh initialization (a resumed run loads its own
    checkpoint instead).

    Returns ``(model, skipped)``: ``skipped`` names the layers of the new model that a layer of
    the same name in the source could not fill because their shapes differ.
    """
    if not isinstance(source, keras.Model):
        from keras_resnet.modelfile import load_model

        source = load_model(source)
    config = model_config(source)
    model = build_resnet(arch, input_shape=input_shape, num_classes=num_classes,
                         stem=config["stem"], width=config["width"],
                         normalization=config["normalization"], class_names=class_names)
    if not load:
        return model, []
    return model, copy_matching_weights(source, model)


def copy_matching_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """Copies the weights of each layer of ``source`` into the layer of ``target`` with the same
    name and weight shapes; returns the names of target layers skipped for other shapes."""
    by_name = {layer.name: layer for layer in source.layers}
    skipped = []
    for layer in target.layers:
        old = by_name.get(layer.name)
        if old is None or not layer.weights:
            continue
        if [w.shape for w in old.weights] != [w.shape for w in layer.weights]:
            skipped.append(layer.name)
            continue
        layer.set_weights(old.get_weights())
    return skipped


def with_dtype(model: ResNet, dtype) -> ResNet:
    """``model`` itself if it computes under the dtype policy ``dtype`` (a name or a
    ``keras.DTypePolicy``), else the same ResNet rebuilt under it, holding its weights.

    Variables are float32 under every policy Keras has (mixed precision computes in half
    precision on float32 variables), so the weights copy over exactly; the normalization and
    the classifier stay float32 in both.
    """
    policy = keras.dtype_policies.get(dtype)
    model_config(model)  # a ResNet, or a ValueError saying it is not
    if model.dtype_policy.name == policy.name:
        return model
    rebuilt = ResNet.from_config({**model.get_config(), "dtype": policy.name})
    rebuilt.set_weights(model.get_weights())
    return rebuilt
