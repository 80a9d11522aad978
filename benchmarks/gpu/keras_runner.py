"""Our ResNet on Keras's JAX backend, for ``benchmarks.gpu.row``: a compiled training step and a
compiled inference step on synthetic data already on the device.

The training step is the one ``model.fit`` compiles on JAX (``jax.jit`` of
``model.stateless_call``, the loss, ``jax.value_and_grad`` and ``optimizer.stateless_apply``,
state donated), written with Keras's public stateless API so that no per-batch host work
(data adapters, callbacks, metrics) is timed. ``mixed_float16`` wraps the optimizer in
``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling), as ``compile`` does.
"""

from __future__ import annotations

import os

if os.environ.get("KERAS_BACKEND") != "jax":  # imported by a process that chose otherwise
    raise ImportError("benchmarks.gpu.keras_runner needs KERAS_BACKEND=jax set before Keras loads")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.gpu.timing import measure  # noqa: E402


class Runner:
    def __init__(self, spec: dict):
        from keras_resnet import build_resnet

        self.spec = spec
        self.device = jax.devices()[0]
        self.platform = self.device.platform
        self.device_name = self.device.device_kind
        self.notes = []
        # Unseeded initial weights (no figure depends on them): keras.utils.set_random_seed
        # would import TensorFlow, where installed, to seed it too.
        h, w, c = spec["input_shape"]
        self.model = build_resnet(spec["arch"], (h, w, c), spec["num_classes"], stem=spec["stem"],
                                  dtype=spec["precision"])
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        if spec["precision"] == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(self.model.trainable_variables)
        self.optimizer = optimizer
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        rng = np.random.default_rng(0)
        batch = spec["batch"]
        self.x = jax.device_put(rng.uniform(0, 255, (batch, h, w, c)).astype("float32"),
                                self.device)
        self.y = jax.device_put(rng.integers(0, spec["num_classes"], batch).astype("int32"),
                                self.device)
        self.state = (
            [v.value for v in self.model.trainable_variables],
            [v.value for v in self.model.non_trainable_variables],
            [v.value for v in self.optimizer.variables],
        )
        self.train_step = jax.jit(self._train_step, donate_argnums=0)
        self.infer_step = jax.jit(self._infer_step)
        self.last = None

    def _scaled_loss(self, trainable, non_trainable, optimizer_variables, x, y):
        logits, non_trainable = self.model.stateless_call(trainable, non_trainable, x,
                                                          training=True)
        loss = self.loss(y, logits)
        # The loss scale is an optimizer variable: read it from the state being traced.
        mapping = list(zip(self.optimizer.variables, optimizer_variables))
        with keras.StatelessScope(state_mapping=mapping):
            scaled = self.optimizer.scale_loss(loss)
        return scaled, (loss, non_trainable)

    def _train_step(self, state, x, y):
        trainable, non_trainable, optimizer_variables = state
        grad_fn = jax.value_and_grad(self._scaled_loss, has_aux=True)
        (_, (loss, non_trainable)), grads = grad_fn(trainable, non_trainable,
                                                    optimizer_variables, x, y)
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_variables)

    def _infer_step(self, trainable, non_trainable, x):
        logits, _ = self.model.stateless_call(trainable, non_trainable, x, training=False)
        return logits

    def _train(self):
        self.last, self.state = self.train_step(self.state, self.x, self.y)

    def _infer(self):
        trainable, non_trainable, _ = self.state
        self.last = self.infer_step(trainable, non_trainable, self.x)

    def _sync(self):
        jax.block_until_ready((self.last, self.state))

    def measure(self, mode: str):
        step = self._train if mode == "train" else self._infer
        spec = self.spec
        figures = measure(step, self._sync, spec["batch"], spec["warmup"], spec["steps"],
                          spec["repeats"])
        note = None
        if mode == "train":
            loss = float(self.last)
            figures["last_loss"] = loss
            if not np.isfinite(loss):
                note = f"training loss {loss} (not finite)"
        return figures, note

    def peak_mib(self):
        stats = self.device.memory_stats()  # None on a CPU
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        return stats["peak_bytes_in_use"] / 2**20

    def versions(self) -> dict:
        import jaxlib

        from keras_resnet import kernels

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                "keras": keras.__version__, "numpy": np.__version__,
                "keras_resnet_kernels": ",".join(sorted(kernels.active())) or "stock",
                "jax_backend": jax.default_backend()}

