"""One ExportSource per export: its float32 reference is made once, whichever writers and
checks read it, and its serving functions keep the artifacts' names."""

import numpy as np
import pytest

from export import source as source_module
from export.model_io import ExportError
from export.source import INPUT_NAME, ExportSource
from tests.conftest import random_images


def test_the_reference_is_made_once_and_every_serving_function_reads_it(monkeypatch):
    import keras_resnet

    model = keras_resnet.build_resnet("resnet18", (28, 28, 1), 3, stem="cifar", width=2,
                                      dtype="mixed_bfloat16", class_names=["a", "b", "c"])
    made = []
    real = source_module.float32_model
    monkeypatch.setattr(source_module, "float32_model", lambda m: made.append(m) or real(m))
    source = ExportSource(model, model.class_names, {"model_file": "m.keras"})
    assert (source.shape, source.num_classes, source.class_names) == (
        (28, 28, 1), 3, ("a", "b", "c"))
    assert made == []  # nothing is rebuilt before a writer needs it
    assert ExportSource.of(source) is source
    serve = source.serving_function()
    graph_def, input_name, outputs = source.frozen_graph_def(("matmul_conv",))
    assert len(made) == 1 and source.rebuilt and source.reference is not model
    assert input_name == f"{INPUT_NAME}:0" and sorted(outputs.values()) == [
        "logits", "probabilities"]
    x = random_images((28, 28, 1), batch=2) * 255
    np.testing.assert_allclose(serve(x)["logits"].numpy(),
                               np.asarray(source.reference(x, training=False)), rtol=1e-5,
                               atol=1e-5)
    assert len(made) == 1


def test_class_names_must_fit_the_model():
    import keras_resnet

    model = keras_resnet.build_resnet("resnet18", (28, 28, 1), 3, stem="cifar", width=2)
    with pytest.raises(ExportError, match="2 class names for a 3-class model"):
        ExportSource(model, ["a", "b"])


def test_collections_inside_an_export_skip_the_objects_made_before_it():
    import gc

    from export.model_io import collecting_new_objects_only

    gc.unfreeze()  # the suite freezes what lives long (conftest); frozen again below
    try:
        with pytest.raises(RuntimeError):
            with collecting_new_objects_only():
                assert gc.get_freeze_count() > 0
                raise RuntimeError("a failed conversion")
        assert gc.get_freeze_count() == 0
    finally:
        gc.freeze()
    # A process that froze objects itself keeps them frozen through an export.
    frozen = gc.get_freeze_count()
    with collecting_new_objects_only():
        pass
    assert gc.get_freeze_count() == frozen > 0
