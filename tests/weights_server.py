"""A local HTTP server for the download tests, and a torchvision-format checkpoint to serve.

``weights_server`` (a pytest fixture: import it into a test module or a conftest) serves bytes
on 127.0.0.1 only, counts the requests per path, and can misbehave on purpose: ``"truncate"``
(a short file with an honest Content-Length), ``"stop"`` (the full Content-Length, half the
body, then the connection is closed) and ``"stall"`` (half the body, then silence for
``stall_s`` seconds). ``served_checkpoint`` is a torchvision ResNet-18 with random weights and
random BatchNorm statistics (10 classes: tests/keras_resnet/test_convert.py's), saved by
``torch.save``, with its sha256.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args):  # no request lines on stderr
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        server = self.server
        path = self.path.split("?")[0]
        with server.lock:
            server.requests[path] += 1
        body = server.files.get(path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        mode = server.modes.get(path, "ok")
        if mode == "truncate":
            body = body[: len(body) // 2]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode in ("stop", "stall"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if mode == "stall":
                time.sleep(server.stall_s)
            self.close_connection = True
            return
        chunk = server.chunk or len(body)
        for start in range(0, len(body), chunk):
            self.wfile.write(body[start:start + chunk])
            if server.chunk_delay_s:
                time.sleep(server.chunk_delay_s)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.requests: Counter = Counter()
        self.stall_s = 5.0
        self.chunk = 0
        self.chunk_delay_s = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def serve(self, name: str, body: bytes, mode: str = "ok") -> str:
        """Serves ``body`` at ``/name``; returns its URL."""
        self.files[f"/{name}"] = body
        self.modes[f"/{name}"] = mode
        return f"{self.base_url}/{name}"

    def count(self, name: str) -> int:
        with self.lock:
            return self.requests[f"/{name}"]


@pytest.fixture
def weights_server():
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    sha256: str
    num_classes: int

    @property
    def body(self) -> bytes:
        return self.path.read_bytes()


def torchvision_resnet18(num_classes: int = 10, seed: int = 0):
    """torchvision's resnet18 in eval mode with random weights and BatchNorm statistics."""
    from tests.keras_resnet.test_convert import torchvision_model

    assert num_classes == 10  # what torchvision_model builds
    return torchvision_model("resnet18", cifar=False, channels=3, seed=seed)


@pytest.fixture(scope="session")
def served_checkpoint(tmp_path_factory) -> Checkpoint:
    import torch

    net = torchvision_resnet18(10)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny-resnet18.pth"
    torch.save(net.state_dict(), path)
    return Checkpoint(path, hashlib.sha256(path.read_bytes()).hexdigest(), 10)
