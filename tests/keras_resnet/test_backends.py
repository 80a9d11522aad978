"""Keras 3's other backends: the model library builds, trains and reads/writes .keras files under
JAX and torch, with the TensorFlow backend's logits, and never imports TensorFlow there
(training/ and export/ stay TensorFlow)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, logit_tolerance

BACKENDS = ("jax", "torch")
MODELS = {  # name: (arch, input shape, stem)
    "basic": ("resnet18", (32, 32, 3), "cifar"),
    "bottleneck": ("resnet50", (32, 32, 3), "imagenet"),
}

# Runs under KERAS_BACKEND=<backend> with TensorFlow made unimportable (Keras itself imports it
# where installed, e.g. to recognise tf.TensorShape while saving): loads the TF-saved model,
# predicts, trains one step, saves its own .keras and predicts with it, all on the images the
# TF process wrote.
CHILD = r"""
import importlib.machinery
import json, sys


class NoTensorFlow:  # as on a machine without it (the GPU machine): nothing may need it
    def find_spec(self, name, path=None, target=None):
        # Found, so that probes (torch._dynamo's find_spec) see what is installed; not loadable.
        if name.split(".")[0] == "tensorflow":
            return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked)", name=spec.name)

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, NoTensorFlow())
import numpy as np
import keras
import keras_resnet

folder = sys.argv[1]
assert keras.backend.backend() == sys.argv[2], keras.backend.backend()
x = np.load(f"{folder}/x.npy")
model = keras.models.load_model(f"{folder}/tf.keras")
np.save(f"{folder}/loaded_logits.npy", np.asarray(model.predict(x, verbose=0)))

fresh = keras_resnet.build_resnet(**json.load(open(f"{folder}/args.json")))
fresh.set_weights(model.get_weights())
fresh.compile(optimizer="adam",
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
before = [np.array(w) for w in fresh.trainable_weights]
loss = float(fresh.train_on_batch(x, np.arange(len(x)) % 5))
changed = sum(not np.array_equal(b, np.array(w)) for b, w in zip(before, fresh.trainable_weights))
fresh.save(f"{folder}/{sys.argv[2]}.keras")
np.save(f"{folder}/trained_logits.npy", np.asarray(fresh.predict(x, verbose=0)))
print(json.dumps({"loss": loss, "changed": changed, "trainable": len(before),
                  "tensorflow_loaded": "tensorflow" in sys.modules}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.slow
def test_other_backend_matches_tensorflow_and_round_trips(backend, kind, tmp_path):
    import keras

    import keras_resnet

    arch, shape, stem = MODELS[kind]
    keras.utils.set_random_seed(0)
    model = keras_resnet.build_resnet(arch, shape, 5, stem=stem, width=8,
                                      normalization=(120.0, 60.0))
    # Non-trivial batch-norm statistics, so inference differences would show.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        for v in layer.non_trainable_weights:
            if "moving_variance" in v.path:
                v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
            elif "moving_mean" in v.path:
                v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    x = rng.uniform(0, 255, (4, *shape)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    model.save(tmp_path / "tf.keras")
    (tmp_path / "args.json").write_text(json.dumps(
        {"arch": arch, "input_shape": list(shape), "num_classes": 5, "stem": stem, "width": 8,
         "normalization": [120.0, 60.0]}))
    ref = np.asarray(model(x, training=False))

    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(REPO),
               TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), backend], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])

    loaded = np.load(tmp_path / "loaded_logits.npy")
    assert np.abs(loaded - ref).max() <= logit_tolerance(ref)
    assert np.isfinite(report["loss"])
    assert report["changed"] == report["trainable"]  # every trainable variable got a gradient
    # All of it ran without TensorFlow, as on the GPU machine that runs the library on JAX
    # (benchmarks/gpu/run.sh).
    assert report["tensorflow_loaded"] is False

    # A .keras written under the other backend loads here with the same outputs.
    back = keras.models.load_model(tmp_path / f"{backend}.keras")
    trained = np.load(tmp_path / "trained_logits.npy")
    got = np.asarray(back(x, training=False))
    assert np.abs(got - trained).max() <= logit_tolerance(trained)
    assert np.abs(got - ref).max() > logit_tolerance(ref)  # it is the trained model, not the original
