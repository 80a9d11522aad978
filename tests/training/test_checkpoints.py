"""Checkpoints written in the background: a run stopped at any point of an epoch's writes (as a
kill -9 would stop it) resumes to the same weights and optimizer state, bit for bit, as a run
that was never stopped."""

import csv
import os

import numpy as np
import pytest

from training import callbacks as cb
from training import checkpoints
from training.config import TrainConfig
from training.fit import run

from tests.training.test_train_fit import TINY, _weights

COMMON = dict(TINY, epochs=3, deterministic=True, optimizer="sgd", schedule="cosine",
              warmup_epochs=1, lr=0.05, nesterov=True)
# best.keras, log.csv, last.keras staged (+ sha256), state.json, last.keras in place
WRITES = 5


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("straight") / "run")
    run(TrainConfig(run_dir=run_dir, **COMMON))
    return _weights(os.path.join(run_dir, cb.LAST))


# After 2 writes best.keras and log.csv are ahead of state.json; after 3 a staged last.keras
# waits; after 4 state.json names an epoch whose last.keras is still staged. No write (0) and
# all of them (5) are the plain resume that tests/training/test_train_fit.py covers.
@pytest.mark.slow
@pytest.mark.parametrize("done", [2, 3, 4])
def test_a_kill_at_any_write_of_an_epoch_resumes_bit_identically(straight, done, tmp_path,
                                                                  monkeypatch):
    """The writer of epoch 2 stops after `done` of its writes; no later write happens."""
    run_dir = str(tmp_path / "run")
    original, jobs = checkpoints.run_steps, []

    def stop_in_epoch_2(steps, cleanup=None):
        jobs.append(len(steps))
        if len(jobs) != 2:
            return original(steps, cleanup)
        original(steps[:done], cleanup)
        raise _Killed(f"stopped after {done} of epoch 2's writes")

    monkeypatch.setattr(checkpoints, "run_steps", stop_in_epoch_2)
    with pytest.raises(_Killed):
        run(TrainConfig(run_dir=run_dir, **COMMON))
    monkeypatch.undo()
    assert jobs[:2] == [WRITES, WRITES]
    assert cb.read_resume_state(run_dir)["epoch"] == (2 if done == WRITES else 1)
    metrics = run(TrainConfig(run_dir=run_dir, resume=True, **COMMON))
    assert metrics["epochs_completed"] == 3
    resumed = _weights(os.path.join(run_dir, cb.LAST))
    assert resumed.keys() == straight.keys() and any("optimizer" in k for k in resumed)
    for key in straight:
        np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)
    rows = list(csv.DictReader(open(os.path.join(run_dir, cb.LOG_CSV))))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert not [f for f in os.listdir(run_dir) if f.startswith(".tmp-")]
    assert set(cb.intact_checkpoints(run_dir)) == {cb.LAST, cb.BEST}
