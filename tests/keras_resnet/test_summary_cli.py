"""keras_resnet.summary's usage errors: one argparse-style line, exit 2, before TensorFlow
loads."""

import pytest

from tests.test_startup import HEAVY, imported, run_python

PROG = "python -m keras_resnet.summary"
CASES = [
    (["--width", "0"], "--width: must be positive"),
    (["--width", "-8"], "--width: must be positive"),
    (["--width", "wide"], "--width: expected an integer"),
    (["--width", "100000"], "--width: must be at most 1024"),
    (["--num-classes", "10000000"], "--num-classes: must be at most 100000"),
    (["--num-classes", "0"], "--num-classes: must be positive"),
    (["--input-shape", "0,0,3"], "--input-shape: height, width and channels must be positive"),
    (["--input-shape", "224,224"], "--input-shape: needs 3 values"),
    (["--input-shape", "a,b,c"], "--input-shape: must be H,W,C integers"),
    (["--input-shape", ""], "--input-shape: needs 3 values"),
    (["--arch", "resnet19"], "--arch: invalid choice"),
]


def assert_usage_error(proc, prog, message):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: "), proc.stderr[-2000:]
    assert message in errors[0], errors[0]
    loaded = imported(proc.stderr)
    assert "argparse" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_options_are_one_line_before_tensorflow(argv, message, tmp_path):
    proc = run_python(tmp_path, "-X", "importtime", "-m", "keras_resnet.summary", *argv,
                      timeout=120)
    assert_usage_error(proc, PROG, message)


def test_help_documents_the_exit_codes(tmp_path):
    proc = run_python(tmp_path, "-m", "keras_resnet.summary", "--help")
    assert proc.returncode == 0
    assert "exit status:" in proc.stdout and "2  bad input or usage" in proc.stdout


def test_one_shape_parser_for_every_cli():
    import benchmarks.model.bench
    import keras_resnet._cli
    import keras_resnet.summary

    assert keras_resnet.summary.parse_shape is keras_resnet._cli.parse_shape
    assert benchmarks.model.bench.parse_shape is keras_resnet._cli.parse_shape
    assert keras_resnet._cli.parse_shape(" 28, 28,1") == (28, 28, 1)


def test_a_model_too_big_for_memory_is_one_line(monkeypatch, capsys):
    """What the bounds let through can still exceed this machine's memory: TensorFlow's
    allocation failure is the user's to fix, not a traceback."""
    import tensorflow as tf

    from keras_resnet import builder, summary
    from tests import harness

    def build_resnet(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(
            None, None, "OOM when allocating tensor with shape[3,3,8192,8192]")

    monkeypatch.setattr(builder, "build_resnet", build_resnet)
    result = harness.run_cli(summary.main, capsys, "--arch", "resnet152", "--width", "1024")
    assert result.code == 2
    line = harness.one_line(result.err, "error: not enough memory")
    assert "--width 1024" in line and "smaller --width" in line
