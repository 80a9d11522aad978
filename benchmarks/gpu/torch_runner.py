"""torchvision's ResNet for ``benchmarks.gpu.row``: the same network as ours, channels_last,
under ``torch.autocast`` (bfloat16, or float16 with ``torch.amp.GradScaler``; float32 without
autocast), eager or through ``torch.compile``, SGD with momentum, synthetic data on the device.

A ``torch.compile`` that fails (no C++ compiler, an Inductor or Triton error) is the row's note,
not the end of the run: the row then has no figure for that mode.
"""

from __future__ import annotations

import math

import torch
import torchvision

from benchmarks.model.bench import torch_resnet
from benchmarks.gpu.timing import measure

DTYPES = {"float32": None, "mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}


class Runner:
    def __init__(self, spec: dict):
        self.spec = spec
        if spec["device"] == "gpu" and not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device (torch.cuda.is_available() is False)")
        self.device = "cuda" if spec["device"] == "gpu" else "cpu"
        self.platform = self.device
        self.device_name = (torch.cuda.get_device_name() if self.device == "cuda"
                            else "cpu")
        self.notes = []
        torch.manual_seed(0)
        # cuDNN picks its fastest convolution per shape, as cuDNN autotuning does under XLA.
        torch.backends.cudnn.benchmark = True
        h, w, c = spec["input_shape"]
        model = torch_resnet(torchvision, torch, spec["arch"], spec["stem"], c,
                             spec["num_classes"])
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.net = torch.compile(self.model) if spec["compiled"] else self.model
        self.dtype = DTYPES[spec["precision"]]
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.scaler = torch.amp.GradScaler(self.device, enabled=self.dtype is torch.float16)
        self.loss = torch.nn.CrossEntropyLoss()
        batch = spec["batch"]
        self.x = (torch.rand(batch, c, h, w, device=self.device) * 255).contiguous(
            memory_format=torch.channels_last)
        self.y = torch.randint(0, spec["num_classes"], (batch,), device=self.device)
        self.last = None

    def _autocast(self):
        return torch.autocast(self.device, dtype=self.dtype or torch.float32,
                              enabled=self.dtype is not None)

    def _train(self):
        with self._autocast():
            loss = self.loss(self.net(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.last = loss.detach()

    def _infer(self):
        with torch.no_grad(), self._autocast():
            self.last = self.net(self.x)

    def _sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def measure(self, mode: str):
        self.model.train(mode == "train")
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step = self._train if mode == "train" else self._infer
        spec = self.spec
        run = lambda: measure(step, self._sync, spec["batch"], spec["warmup"],  # noqa: E731
                              spec["steps"], spec["repeats"])
        if not spec["compiled"]:
            figures = run()
        else:
            try:
                figures = run()
            except Exception as err:  # Inductor/Triton/compiler failures: the row's note
                first = (str(err).strip().splitlines() or [""])[0][:300]
                return None, f"torch.compile failed in {mode}: {type(err).__name__}: {first}"
        if mode != "train":
            return figures, None
        loss = figures["last_loss"] = float(self.last)
        return figures, None if math.isfinite(loss) else f"training loss {loss} (not finite)"

    def peak_mib(self):
        if self.device != "cuda":
            return None
        return torch.cuda.max_memory_allocated() / 2**20

    def versions(self) -> dict:
        return {"torch": torch.__version__, "torchvision": torchvision.__version__,
                "cuda": torch.version.cuda, "cudnn": (torch.backends.cudnn.version()
                                                      if self.device == "cuda" else None)}
