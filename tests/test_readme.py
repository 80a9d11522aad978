"""README's code, run as a user runs it: from a folder outside the repository."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def block_with(text: str) -> str:
    found = [b for b in python_blocks() if text in b]
    assert len(found) == 1, f"README has {len(found)} python blocks containing {text!r}"
    return found[0]


def run_outside_repo(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_model_library_block_builds_compiles_and_trains(tmp_path):
    code = block_with("from keras_resnet import resnet50, build_resnet") + (
        "\nimport numpy as np\n"
        "assert model.output_shape == (None, 1000), model.output_shape\n"
        "x = np.random.default_rng(0).uniform(0, 255, (8, 28, 28, 1)).astype('float32')\n"
        "h = mnist.fit(x, np.arange(8) % 10, epochs=1, verbose=0).history\n"
        "assert set(h) == {'loss', 'accuracy'}, h\n"
        "print('README-OK')\n")
    r = run_outside_repo(code, tmp_path)
    assert r.returncode == 0 and "README-OK" in r.stdout, r.stderr[-3000:]
