"""A usage error of any CLI is two lines, ``<prog>: error: <message>`` and ``see <prog>
--help``, exit 2: not argparse's usage dump above the one line that matters. In-process:
every main parses its arguments before it does anything else."""

import importlib

import pytest

from tests import harness

CLIS = {
    "training.fit": "python -m training.fit",
    "training.evaluate": "python -m training.evaluate",
    "training.predict": "python -m training.predict",
    "training.launch": "python -m training.launch",
    "training.sample_folder": "python -m training.sample_folder",
    "export.cli": "python -m export",
    "export.predict": "python -m export.predict",
    "keras_resnet.convert.cli": "python -m keras_resnet.convert",
    "keras_resnet.summary": "python -m keras_resnet.summary",
    **{f"benchmarks.{name}": f"python -m benchmarks.{name}"
       for name in ("model.bench", "model.conv_paths", "train.decode", "train.distributed",
                    "train.e2e", "deploy.memory", "model.peak", "model.profile",
                    "model.weight_grad", "model.grouped_conv")},
}


@pytest.mark.parametrize("name", sorted(CLIS))
def test_a_usage_error_is_the_error_and_where_help_is(name, capsys):
    main = importlib.import_module(name).main
    result = harness.run_cli(main, capsys, "--no-such-option")
    prog = CLIS[name]
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert lines[0].startswith(f"{prog}: error: "), result.err
    assert lines[1:] == [f"see {prog} --help"], result.err
