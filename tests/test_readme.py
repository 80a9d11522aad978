"""README's code and commands, run as a user runs them: from a folder outside the repository.

Each test takes a block from README.md by a line it contains and may shrink it with explicit
substitutions (fewer epochs, smaller widths, fewer benchmark repeats; random weights where README
downloads them): a substitution whose text is no longer in README fails the test, so README and
the tests cannot drift apart. `pip install -r requirements.txt` (quick start) is what
scripts/test.sh runs before the tests; `pip install .` is checked by tests/test_packaging.py and
scripts/test.sh is this suite itself.
"""

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from export.verification import MIN_AGREEMENT
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def block(lang: str, containing: str) -> str:
    found = [b for b in re.findall(rf"```{lang}\n(.*?)```", README, re.S) if containing in b]
    assert len(found) == 1, f"README has {len(found)} {lang} blocks containing {containing!r}"
    return found[0]


def shrink(text: str, subs: dict) -> str:
    for old, new in subs.items():
        assert old in text, f"README no longer says {old!r}: update this test with it"
        text = text.replace(old, new)
    return text


def env():
    return dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")


def run_bash(script: str, cwd, timeout=900) -> str:
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env(),
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{script}\nexit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def run_python(code: str, cwd, timeout=900) -> str:
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env(), capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow
def test_model_library_block_builds_compiles_and_trains(tmp_path):
    code = block("python", "from keras_resnet import resnet50, build_resnet") + (
        "\nimport numpy as np\n"
        "assert model.output_shape == (None, 1000), model.output_shape\n"
        "x = np.random.default_rng(0).uniform(0, 255, (8, 28, 28, 1)).astype('float32')\n"
        "h = mnist.fit(x, np.arange(8) % 10, epochs=1, verbose=0).history\n"
        "assert set(h) == {'loss', 'accuracy'}, h\n"
        "print('README-OK')\n")
    assert "README-OK" in run_python(code, tmp_path)


@pytest.mark.slow
def test_model_that_knows_what_it_is_block(tmp_path):
    out = run_python(block("python", 'model.save("pets.keras")'), tmp_path).splitlines()
    assert out == ["resnet18 ('cat', 'dog', 'owl')", "cifar", "True"], out


@pytest.mark.slow
def test_pipelines_in_your_own_script_block(tmp_path):
    code = shrink(block("python", "from training.data import DATASETS, load"),
                  {"width=16": "width=4", "epochs=5": "epochs=1"})
    out = run_python(code, tmp_path)
    assert "'accuracy':" in out and "'loss':" in out


@pytest.mark.slow
def test_quick_start_line_reaches_the_accuracy_it_promises(tmp_path):
    """README's quick-start training command exactly as written (after the pip step, which
    scripts/test.sh has run), from outside the repository: the digits recipe's floor."""
    line = next(l for l in README.splitlines() if l.startswith("pip install -r requirements.txt && "))
    command = line.split(" && ", 1)[1]
    assert command == "python -m training.fit --arch resnet18 --dataset digits"
    run_bash(command, tmp_path)
    (metrics,) = glob.glob(str(tmp_path / "runs" / "resnet18-digits-*" / "metrics.json"))
    metrics = json.loads(Path(metrics).read_text())
    assert metrics["test_accuracy"] >= 0.986, metrics["test_accuracy"]
    assert metrics["epochs_completed"] == 20  # the recipe's epochs rule on 1294 images


@pytest.mark.slow
def test_train_evaluate_export_and_run_every_artifact(tmp_path):
    """Training's command, then evaluate, export and the artifact snippet on what they wrote."""
    fit = shrink(block("bash", "--dataset digits   # offline"),
                 {"--dataset digits ": "--dataset digits --width 4 --epochs 1 --subset 300 "})
    run_bash(fit, tmp_path)
    (run,) = glob.glob(str(tmp_path / "runs" / "resnet18-digits-*"))
    run = os.path.relpath(run, tmp_path)
    for name in ("config.json", "best.keras", "last.keras", "metrics.json", "history.png",
                 "confusion_matrix.png", "log.csv"):
        assert (tmp_path / run / name).is_file(), name

    evaluate = "python -m training.evaluate --model runs/<run>/best.keras"
    assert f"`{evaluate}`" in README
    assert "accuracy" in run_bash(evaluate.replace("runs/<run>", run), tmp_path)

    export = block("bash", "python -m export --model runs/<run>/best.keras")
    run_bash(export.replace("runs/<run>", run), tmp_path)
    assert "tflite" in run_python(
        block("python", 'ort.InferenceSession("artifacts/model.onnx")') + "\nprint('tflite')\n",
        tmp_path)

    # Predictions on image files: real digits written as a user's PNGs.
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    (tmp_path / "my_digits").mkdir()
    for i in range(3):
        pixels = np.clip(digits.images[i] * 16, 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "L").resize((28, 28)).save(tmp_path / "my_digits" / f"{i}.png")
    Image.fromarray(np.clip(digits.images[7] * 16, 0, 255).astype(np.uint8), "L").save(
        tmp_path / "seven.png")
    predict = block("bash", "python -m training.predict --model runs/<run>/best.keras my_digits/").replace("runs/<run>", run)
    keras_text, onnx_json = run_bash(predict, tmp_path).split("\n[", 1)
    assert keras_text.count(".png") == 4
    assert len(json.loads("[" + onnx_json)) == 4
    # The Python API gives the command's top-1 classes.
    api = run_python(block("python", "training.preprocessing_for(path)").replace(
        "runs/<run>", run), tmp_path).split()
    cli = run_bash(f"python -m training.predict --model {run}/best.keras seven.png "
                   "my_digits/0.png --top-k 1 --json", tmp_path)
    assert api[0::2] == [row["top"][0]["class"] for row in json.loads(cli)]


@pytest.mark.slow  # two short trainings on MNIST- and CIFAR-format archives the test writes
def test_gpu_recipes_run_on_cpu_with_archives(tmp_path):
    from benchmarks.train.e2e import write_archive

    for name in ("mnist", "cifar10"):
        write_archive(name, str(tmp_path / "data"), n_train=300, n_test=64)  # 270 after val
    script = shrink(block("bash", "# MNIST, the mnist recipe"), {
        "--dataset mnist\n": "--dataset mnist --epochs 1 --width 4 --subset 256\n",
        "--epochs 100": "--epochs 2 --batch-size 64 --width 4 --subset 256",
    })
    run_bash(script, tmp_path)
    assert len(glob.glob(str(tmp_path / "runs" / "resnet18-mnist-*" / "metrics.json"))) == 1
    assert len(glob.glob(str(tmp_path / "runs" / "resnet18-cifar10-*" / "metrics.json"))) == 1


@pytest.mark.slow  # a torchvision ResNet through convert, TFLite, ONNX and back to torch
def test_pytorch_interop_blocks(tmp_path):
    # A full-width ResNet-18 at 64x64 stands in for README's ResNet-50 at 224x224 (the files
    # keep README's names): the same code path, a fifth of the conversion time. Full-size
    # ResNet-50 parity is test_convert's; no network here, hence random weights.
    code = shrink(block("python", "from keras_resnet.convert import IMAGENET_NORMALIZATION"), {
        'resnet50(weights="IMAGENET1K_V2")': "resnet18(weights=None)",
        "input_shape=(224, 224)": "input_shape=(64, 64)",
        "(8, 224, 224, 3)": "(8, 64, 64, 3)",
    })
    assert run_python(code, tmp_path).strip().splitlines()[-1] == "True"
    run_bash(shrink(block("bash", "python -m keras_resnet.convert --from-torch resnet50.pth"),
                    {"--input-size 224": "--input-size 64"}), tmp_path)
    for path in ("resnet50.keras", "artifacts/resnet50/model.onnx", "resnet50.pth",
                 "resnet50.safetensors"):
        assert (tmp_path / path).is_file(), path


@pytest.mark.slow  # three short trainings, each beside train_on_batch (the first beside torch)
def test_e2e_benchmark_block(tmp_path):
    e2e = shrink(block("bash", "python -m benchmarks.train.e2e --dataset mnist --steps 28"), {
        # Full width (torchvision has no other), a batch of 8: the one run beside torch, in
        # float32 only (bfloat16 at full width is emulated, and slow, on CPUs without it); the
        # next command measures both precisions at width 4.
        "--dataset mnist --steps 28 --repeats 2 -- --recipe seed\n":
            "--dataset mnist --repeats 1 --steps 2 --precisions float32 --json e2e.json -- "
            "--recipe seed --batch-size 8\n",
        "--steps 15 --repeats 3 -- --stem cifar":
            "--steps 2 --repeats 1 --no-torch -- --width 4 --stem cifar",
        "--dataset mnist --steps 28 --repeats 2 --precisions float32 -- --recipe seed   #":
            "--dataset mnist --repeats 1 --steps 2 --precisions float32 --no-torch -- --recipe "
            "seed --width 4 #",
    })
    text = run_bash(e2e, tmp_path)
    assert text.count("fit / train_on_batch") == 4  # float32, two precisions, float32 again
    res = json.loads((tmp_path / "e2e.json").read_text())  # the first command's figures
    assert res["batch_size"] == 8 and res["steps_per_epoch"] == 2 and "AVX" in res["machine"]
    assert set(res["precisions"]) == {"float32"}
    for figures in res["precisions"].values():
        assert all(v > 0 for v in figures["median_img_s"].values())
        assert set(figures["runs"]) == {"fit_epoch", "fit_training", "fit_validation",
                                        "train_on_batch", "predict_on_batch", "torch"}
        assert figures["fit_over_train_on_batch"] > 0 and figures["fit_over_torch"] > 0
    assert "python -m training.fit --dataset mnist --subset 16 --epochs 3" in text


@pytest.mark.slow  # four model benchmarks, ours and torch's, a step each
def test_bench_block(tmp_path):
    bench = shrink(block("bash", "python -m benchmarks.model.bench --arch resnet18"), {
        "--batch 128": "--batch 8",
        "--batch 64": "--batch 8",
        "--batch 32": "--batch 4",
        "--repeats 5": "--repeats 1 --warmup 1 --width 8",
        "--steps 3": "--steps 1",
    })
    assert run_bash(bench, tmp_path).count("ours img/s") == 6  # two of them in two precisions


@pytest.mark.slow  # convert, an export of two formats and each format alone, as subprocesses
def test_memory_block_reports_peak_rss_of_each_cli(tmp_path):
    memory = shrink(block("bash", "python -m benchmarks.deploy.memory"), {
        "python -m benchmarks.deploy.memory ": "python -m benchmarks.deploy.memory --arch resnet18 "
        "--input-size 32 --width 8 --num-classes 4 --formats onnx,tflite --tflite-variants "
        "float32 --latency-runs 1 --calibration-images 4 --keep work --json memory.json ",
    })
    text = run_bash(memory, tmp_path)
    runs = {r["name"]: r for r in json.loads((tmp_path / "memory.json").read_text())["runs"]}
    assert set(runs) == {"convert", "export (all)", "export onnx", "export tflite float32"}
    for name, r in runs.items():
        assert r["exit_code"] == 0
        assert r["peak_rss_mib"] > 100, name  # a Python process with TensorFlow loaded
        assert name in text
    assert "peak RSS MiB" in text and "machine:" in text and "tensorflow" in text
    assert (tmp_path / "work" / "all" / "manifest.json").exists()


@pytest.mark.slow  # the benchmark commands README names in its prose, each cut to a step
def test_benchmark_commands_in_the_prose(tmp_path):
    prose = " ".join(README.split())  # commands wrap across lines in paragraphs
    for command in ("python -m benchmarks.model.peak", "python -m benchmarks.model.weight_grad",
                    "python -m benchmarks.model.conv_paths",
                    "python -m benchmarks.model.grouped_conv",
                    "python -m benchmarks.model.profile --arch resnet18 --input-shape 32,32,3 "
                    "--stem cifar --batch 64 --mode train",
                    "python -m keras_resnet.summary --arch resnet50 --input-shape 224,224,3"):
        assert command in prose, command
    small = {"python -m benchmarks.model.peak": " --iters 1000000 --n 256",
             "python -m benchmarks.model.weight_grad": " --batch 2 --repeats 1",
             "python -m benchmarks.model.conv_paths": " --repeats 1 --only 'on 1x1'",
             "python -m benchmarks.model.grouped_conv": " --repeats 1 --only 4x4"}
    for command, args in small.items():
        run_bash(command + args, tmp_path)
    run_bash("python -m benchmarks.model.profile --arch resnet18 --input-shape 32,32,3 "
             "--stem cifar --batch 4 --width 8 --mode train", tmp_path)
    assert "Total" in run_bash(
        "python -m keras_resnet.summary --arch resnet50 --input-shape 224,224,3", tmp_path)


@pytest.mark.slow  # two short fine-tuning runs on a folder of PNGs
def test_own_images_and_start_weights_block(tmp_path):
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, level in (("cats", 70), ("dogs", 180)):
        (tmp_path / "my_photos" / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(rng.normal(level, 30, (48, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(tmp_path / "my_photos" / name / f"{i}.jpg")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    script = shrink(block("bash", "--arch resnet18 --dataset folder --data-dir my_photos"), {
        "--image-size 64,64 --epochs 5": "--image-size 32,32 --epochs 1 --width 8",
        "--image-size 224,224": "--image-size 32,32",
        "--epochs 5\n": "--epochs 1\n",
    })
    run_bash(script, tmp_path)
    runs = sorted(glob.glob(str(tmp_path / "runs" / "resnet18-folder-*")))
    assert len(runs) == 2
    for run in runs:
        config = json.loads(Path(run, "config.json").read_text())
        assert config["class_names"] == ["cats", "dogs"]
        assert Path(run, "split.json").is_file()


@pytest.mark.slow  # two local workers train, then two hand-started TF_CONFIG workers
def test_several_machines_blocks(tmp_path):
    launch = shrink(block("bash", "python -m training.launch --nproc 2"), {
        "--width 16 --epochs 10 --batch-size 128": "--width 4 --epochs 1 --batch-size 32 "
                                                   "--subset 128",
    })
    out = run_bash(launch, tmp_path)
    assert "[launch] workers ended with [0, 0]; exit status 0" in out, out[-2000:]
    assert (tmp_path / "runs" / "digits-2workers" / "metrics.json").is_file()

    from training.launch import free_ports

    ports = free_ports(2)
    hosts = shrink(block("bash", "TF_CONFIG='{\"cluster\""), {
        "hostA:12345": f"127.0.0.1:{ports[0]}",
        "hostB:12345": f"127.0.0.1:{ports[1]}",
        "--arch resnet50 --dataset cifar10 --stem cifar --batch-size 256 --run-dir "
        "/shared/runs/r50": "--arch resnet18 --dataset digits --width 4 --epochs 1 "
                            "--batch-size 32 --subset 128 --run-dir r50",
    })
    # The two hosts' commands, run side by side on this one.
    hosts = hosts.replace("--run-dir r50\n", "--run-dir r50 &\n", 1) + "wait\n"
    run_bash(hosts, tmp_path)
    config = json.loads((tmp_path / "r50" / "config.json").read_text())
    assert (config["strategy"], config["num_workers"], config["cluster"]) == (
        "multi_worker", 2, "TF_CONFIG")
    assert (tmp_path / "r50" / "metrics.json").is_file()


@pytest.mark.slow  # three short trainings
def test_distributed_benchmark_command(tmp_path):
    prose = " ".join(README.split())
    assert "python -m benchmarks.train.distributed" in prose
    out = run_bash("python -m benchmarks.train.distributed -- --arch resnet18 --dataset digits "
                   "--width 4 --batch-size 32 --subset 64 --epochs 1 --optimizer sgd "
                   "--lr 0.01 --deterministic", tmp_path)
    assert "one device" in out and "mirrored, 2 logical CPUs" in out
    assert "2 workers (training.launch)" in out


@pytest.mark.slow  # a folder, a training, an export of every format, four predictions
def test_folder_to_deployed_model_journey(tmp_path):
    journey = shrink(block("bash", "python -m training.sample_folder my_scans"), {
        "python -m training.sample_folder my_scans\n":
            "python -m training.sample_folder my_scans --count 300\n",
        "    --run-dir runs/scans": "    --width 8 --epochs 2 --run-dir runs/scans",
    })
    out = run_bash(journey, tmp_path)
    assert "top-1 equal to training.predict: onnx 300 int8" in out, out[-2000:]
    assert len(json.loads((tmp_path / "keras.json").read_text())) == 300
    manifest = json.loads((tmp_path / "artifacts" / "scans" / "manifest.json").read_text())
    assert manifest["class_names"] == [str(d) for d in range(10)]
    _mediapipe_snippet_on_the_scans(tmp_path, json.loads((tmp_path / "keras.json").read_text()))


def _mediapipe_snippet_on_the_scans(tmp_path, keras_rows):
    """README's MediaPipe snippet on the journey's float32 and int8 TFLite files, every scan: its
    top-1 is training.predict's (float32: on every scan; int8: by export's int8 rule)."""
    files = [r["path"] for r in keras_rows]
    snippet = block("python", MEDIAPIPE_BLOCK).replace("max_results=3", "max_results=1")
    prose = " ".join(README.split())
    assert ("python -m export --model runs/scans/best.keras --formats saved_model,tflite,onnx "
            "--out artifacts/scans") in prose
    loop = ("import sys\nfor v in ('float32', 'int8'):\n    for f in sys.argv[1:]:\n"
            "        print(v, f, end=' ')\n"
            + "".join(f"        {line}\n" for line in shrink(snippet, {
                "artifacts/scans/tflite/model_int8.tflite": "artifacts/scans/tflite/model_{v}.tflite",
                'Image.open("photo.png")': "Image.open(f)",
                "model_asset_path=": "model_asset_path=f"}).splitlines()))
    r = subprocess.run([sys.executable, "-c", loop, *files], cwd=tmp_path, env=env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    keras_top = {r["path"]: r["top"][0]["class"] for r in keras_rows}
    for variant in ("float32", "int8"):
        got = {}
        for line in r.stdout.splitlines():
            v, f, printed = line.split(" ", 2)
            if v == variant:
                got[f] = eval(printed)[0][0]
        assert len(got) == len(files) > 100, (variant, len(got))
        differ = [f for f in files if got[f] != keras_top[f]]
        # float32 gives every answer of training.predict; int8 by export's int8 rule (a near
        # tie in the Keras model's scores may go either way after quantization).
        allowed = 0 if variant == "float32" else (1 - MIN_AGREEMENT["int8"]) * len(files)
        assert len(differ) <= allowed, (variant, len(differ), differ[:5])


@pytest.mark.slow  # writes JPEGs and runs three tf.data pipelines twice
def test_decode_benchmark_block(tmp_path):
    decode = shrink(block("bash", "python -m benchmarks.train.decode"), {
        "python -m benchmarks.train.decode     #":
            "python -m benchmarks.train.decode --images 16 --size 64 #",
    })
    out = run_bash(decode, tmp_path)
    assert "training pipeline" in out and "evaluation pipeline" in out and "per core" in out
    prose = " ".join(README.split())
    assert "`--images 2000 --size 32`" in prose
    assert "decode check" in run_bash("python -m benchmarks.train.decode --images 20 --size 32",
                                      tmp_path)


def test_readme_links_every_results_file_and_each_keeps_its_command():
    """Measured figures live in benchmarks/results/*.md, each linked from README with its command."""
    results = sorted((REPO / "benchmarks" / "results").glob("*.md"))
    linked = set(re.findall(r"\]\((benchmarks/results/[\w.-]+\.md)\)", README))
    assert linked == {f"benchmarks/results/{p.name}" for p in results}, linked
    for p in results:
        assert "python -m " in p.read_text(), p.name


@pytest.mark.slow  # the GPU section's commands: --help, the script's usage line, its syntax
def test_gpu_section_commands(tmp_path):
    prose = " ".join(README.split())
    for command in ("python -m benchmarks.gpu", "benchmarks/gpu/wheels.sh",
                    "benchmarks/gpu/run.sh OUTDIR", "PYTHON=venv/bin/python"):
        assert command in prose, command
    assert "GPU figures: pending." in prose or "| ResNet-50" in README  # figures or why none
    help_text = run_bash("python -m benchmarks.gpu --help", tmp_path)
    assert "--row-timeout" in help_text and "exit status:" in help_text
    for script in ("run.sh", "wheels.sh"):
        run_bash(f"bash -n {REPO / 'benchmarks' / 'gpu' / script}", tmp_path)
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "run.sh")], cwd=tmp_path,
                       env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("usage: benchmarks/gpu/run.sh OUTDIR"), r


@pytest.mark.slow  # a prediction, a fine-tuning, two ONNX exports and their predictions
def test_weights_by_name_block(tmp_path):
    """README's IMAGENET1K_V2 journey with a set of the user's in its place (no network here):
    a torchvision ResNet-18 with random weights, registered with save=True for the CLIs."""
    import hashlib

    import torch
    import torchvision
    from PIL import Image
    from sklearn.datasets import load_sample_images

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    spec = {"arch": "resnet18", "url": (tmp_path / "r18.pth").as_uri(),
            "sha256": hashlib.sha256((tmp_path / "r18.pth").read_bytes()).hexdigest(),
            "resize_size": 37, "crop_size": 32, "save": True}
    china, flower = load_sample_images().images
    Image.fromarray(china).save(tmp_path / "photo.jpg")
    for name, image in (("china", china), ("flower", flower)):
        (tmp_path / "my_photos" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(image[40 * i:40 * i + 64, 60 * i:60 * i + 64]).save(
                tmp_path / "my_photos" / name / f"{i}.jpg")
    script = shrink(block("bash", "--weights IMAGENET1K_V2 photo.jpg"), {
        "--arch resnet50 --weights IMAGENET1K_V2": "--arch resnet18 --weights LOCAL_SET",
        "--image-size 224,224": "--image-size 32,32",
        "--epochs 5": "--epochs 1",
    })
    register = ("from keras_resnet import weights; "
                f"weights.register('LOCAL_SET', **{spec!r})")
    out = run_bash(f'export KERAS_HOME=keras_home\npython -c "{register}"\n' + script, tmp_path)
    # Both predictions of photo.jpg: three of ImageNet's class names each.
    assert out.count("photo.jpg") == 2 and out.count("  3. ") == 2, out
    config = json.loads((tmp_path / "runs" / "photos" / "config.json").read_text())
    assert config["weight_set"]["name"] == "LOCAL_SET"
    assert len(json.loads((tmp_path / "onnx.json").read_text())) == 12
    manifest = json.loads((tmp_path / "artifacts" / "imagenet" / "manifest.json").read_text())
    assert manifest["source"]["weights"]["name"] == "LOCAL_SET"
    assert manifest["source"]["transform"]["resize_size"] == 37
    assert len(manifest["class_names"]) == 1000


@pytest.mark.slow  # every artifact of the session's export timed once; torch.onnx needs width 64
@pytest.mark.parametrize("exported", ["basic"], indirect=True)
def test_deploy_benchmark_command_in_the_prose(exported, tmp_path):
    command = "python -m benchmarks.deploy --export artifacts/"
    assert command in " ".join(README.split())
    out = run_bash(command.replace("artifacts/", str(exported.out))
                   + " --no-torch --repeats 1 --iters 1 --batches 1,2", tmp_path)
    for label in ("saved_model float32", "onnx float32", "onnx int8", "tflite int8"):
        assert f"| {label} | 2 |" in out, out


MEDIAPIPE_BLOCK = "vision.ImageClassifier.create_from_options(options) as classifier"


def test_mediapipe_block_classifies_like_keras(exported, tmp_path, monkeypatch, capsys):
    """README's MediaPipe snippet, run in this process (a subprocess would import TensorFlow and
    MediaPipe again) on the session export's int8 file and a PNG of one verification image."""
    import numpy as np
    from PIL import Image

    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "scans").symlink_to(exported.out)
    image = exported.images[0].astype(np.uint8)
    grey = image.shape[-1] == 1  # the basic model's grey file; the bottleneck model's RGB
    Image.fromarray(image[..., 0] if grey else image, "L" if grey else "RGB").save(
        tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    exec(block("python", MEDIAPIPE_BLOCK), {})
    printed = capsys.readouterr().out.strip()
    top = [name for name, _ in eval(printed)]  # the snippet prints [(class, score), ...]
    keras_top = np.argsort(np.asarray(exported.model(exported.images[:1]))[0])[::-1]
    names = exported.manifest["class_names"]
    assert top[0] == names[keras_top[0]], (printed, keras_top)
    assert len(top) == 3
