"""Every use of a Keras or TensorFlow name that is not public API, in one place.

Written against Keras 3.15.1 and TensorFlow 2.21.0. Importing this module compares the installed
versions with those and warns once (it does not fail) when they differ. On a version change,
re-check each function below against the new release:

- ``flatten_layers``: ``Layer._flatten_layers(include_self, recursive)`` still exists and still
  walks into the sublayers of custom layers (our residual blocks).
- ``symbolic_build`` / ``forget_distribute_strategy``: ``Trainer._symbolic_build(data_batch=)``
  and the ``Model._distribute_strategy`` attribute, and whether Keras's TensorFlow trainer
  still reduces the first distributed batch (keras-team/keras#20585); if not, both can go.
- ``reduce_per_replica`` / ``replace_reduce_per_replica``: the module
  ``keras.src.backend.tensorflow.trainer`` still looks up ``reduce_per_replica`` by its global
  name at call time, and whether tensorflow/tensorflow#72388 is fixed (then drop the patch).
- ``patch_tf2onnx``: ``keras.src.export.tf2onnx_lib.patch_tf2onnx``, or whether tf2onnx now
  runs on numpy 2 by itself.
- ``quiet_tf_deprecations``: ``tensorflow.python.util.deprecation._PRINT_DEPRECATION_WARNINGS``.
- ``fused_batch_norm``: ``tf.compat.v1.nn.fused_batch_norm`` (TF2 has no public fused batch
  norm; Keras 3 no longer uses it).
- ``variables_to_constants_as_graph``:
  ``tensorflow.python.framework.convert_to_constants.convert_variables_to_constants_v2_as_graph``
  (TF2 has no public way to freeze a ConcreteFunction).
- ``tflite_ops_details``: ai_edge_litert's ``Interpreter._get_ops_details()`` (its public API
  lists tensors, not ops).
- ``model_state`` / ``write_keras_archive``: ``keras.src.saving.saving_lib`` (``_save_state``,
  ``H5IOStore`` and its ``make``/``__setitem__`` protocol, the archive's member names) and
  ``serialization_lib.serialize_keras_object``: what ``Model.save`` writes, split into a copy
  of the variables taken at once and the writing of the file later (Keras has no public way
  to save a snapshot, nor to leave the optimizer out of a .keras file).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import sys
import warnings

TESTED = {"keras": "3.15.1", "tensorflow": "2.21.0"}


def _installed(package: str) -> str | None:
    module = sys.modules.get(package)
    version = getattr(module, "__version__", None)
    if version:
        return version
    for dist in (package, f"{package}-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _check_versions() -> None:
    for package, tested in TESTED.items():
        found = _installed(package)
        if found is not None and found != tested:
            warnings.warn(
                f"keras_resnet was tested with {package} {tested}, this is {found}: it uses a few "
                f"of {package}'s private names (keras_resnet/_keras_compat.py lists them); "
                "if something fails there, that is the likely cause",
                RuntimeWarning, stacklevel=3)


_check_versions()


def flatten_layers(model, include_self: bool = True, recursive: bool = True):
    """Every layer of ``model``, sublayers of custom layers included, parents before children.

    Keras 3 has no public walk into the sublayers of custom layers (our blocks); this is the one
    its own tracking and saving use."""
    return model._flatten_layers(include_self=include_self, recursive=recursive)


def symbolic_build(model, data_batch) -> None:
    """Builds the compiled state (loss, metrics) from ``data_batch``, as ``fit`` would."""
    model._symbolic_build(data_batch=data_batch)


def forget_distribute_strategy(model) -> None:
    """Makes ``fit`` take the strategy from the enclosing ``strategy.scope()`` instead of the
    one the model was made under."""
    model._distribute_strategy = None


def _tensorflow_trainer():
    from keras.src.backend.tensorflow import trainer

    return trainer


def reduce_per_replica():
    """The function Keras's TensorFlow trainer reduces each step's logs with."""
    return _tensorflow_trainer().reduce_per_replica


def replace_reduce_per_replica(function) -> None:
    """Makes Keras's TensorFlow trainer reduce each step's logs with ``function``."""
    _tensorflow_trainer().reduce_per_replica = function


def patch_tf2onnx() -> None:
    """tf2onnx 1.17 uses np.object etc., gone in numpy 2; Keras ships the patch."""
    from keras.src.export.tf2onnx_lib import patch_tf2onnx as patch

    # The patch asks numpy whether np.object exists, which numpy 2 answers with a FutureWarning
    # that says nothing to our users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"In the future `np\.object` will be defined",
                                category=FutureWarning)
        patch()


@contextlib.contextmanager
def quiet_tf_deprecations():
    """No TensorFlow deprecation warnings inside the block."""
    from tensorflow.python.util import deprecation

    previous = deprecation._PRINT_DEPRECATION_WARNINGS
    deprecation._PRINT_DEPRECATION_WARNINGS = False
    try:
        yield
    finally:
        deprecation._PRINT_DEPRECATION_WARNINGS = previous


def fused_batch_norm(x, scale, offset, **kwargs):
    """``tf.compat.v1.nn.fused_batch_norm``: (y, batch mean, batch variance); in training the
    variance is the unbiased one (Bessel's correction), as torch keeps."""
    import tensorflow as tf

    return tf.compat.v1.nn.fused_batch_norm(x, scale, offset, **kwargs)


def variables_to_constants_as_graph(concrete_function):
    """(frozen ConcreteFunction, its GraphDef): every variable the function reads folded into
    a constant."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2_as_graph,
    )

    return convert_variables_to_constants_v2_as_graph(concrete_function)


def op_def(op_type: str):
    """TensorFlow's registered OpDef of ``op_type`` (its inputs, outputs, attributes), or None."""
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op_type)


def tflite_ops_details(interpreter) -> list[dict]:
    """Every op of a LiteRT interpreter's graph: its ``op_name``, ``inputs``, ``outputs``."""
    return interpreter._get_ops_details()


_recorder_class = None


def _recorder():
    """An H5IOStore (``_save_state`` accepts nothing else) that keeps host copies of the
    variables it is given instead of writing them."""
    global _recorder_class
    if _recorder_class is None:
        import numpy as np
        from keras import ops
        from keras.src.saving import saving_lib

        class Recorder(saving_lib.H5IOStore):
            def __init__(self):  # noqa: D107  no HDF5 file: nothing is written
                self.entries = []
                self._values = None

            def __bool__(self):
                return True

            def make(self, path, metadata=None):
                self._values = {}
                self.entries.append((path, metadata, self._values))
                return self

            def __setitem__(self, key, value):
                self._values[key] = np.array(ops.convert_to_numpy(value), copy=True)

            def close(self):
                pass

        _recorder_class = Recorder
    return _recorder_class()


def model_state(model) -> tuple[dict, list]:
    """(config, entries) of what ``model.save`` would write now: the serialized model and
    ``[(path in the weights file, metadata, {name: numpy copy})]`` of every variable (model,
    optimizer, metrics), copied to host memory so that training may go on while a file is
    written from them (``write_keras_archive``)."""
    from keras.src.saving import saving_lib
    from keras.src.saving.serialization_lib import ObjectSharingScope, serialize_keras_object

    with ObjectSharingScope():
        config = serialize_keras_object(model)
    store = _recorder()
    saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="",
                           visited_saveables=set())
    return config, store.entries


def write_keras_archive(fileobj, config: dict, entries) -> None:
    """A .keras file of ``config`` and ``entries`` (``model_state``) written to ``fileobj``,
    as ``Model.save`` writes it: keras.models.load_model and Model.load_weights read it."""
    import datetime
    import json
    import zipfile

    import keras
    from keras.src.saving import saving_lib

    metadata = {"keras_version": keras.__version__,
                "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    with zipfile.ZipFile(fileobj, "w") as archive:
        with archive.open(saving_lib._METADATA_FILENAME, "w") as f:
            f.write(json.dumps(metadata).encode())
        with archive.open(saving_lib._CONFIG_FILENAME, "w") as f:
            f.write(json.dumps(config).encode())
        store = saving_lib.H5IOStore(saving_lib._VARS_FNAME_H5, archive=archive, mode="w")
        try:
            for path, meta, values in entries:
                store.make(path, metadata=meta)
                for key, value in values.items():
                    store[key] = value
        finally:
            store.close()
