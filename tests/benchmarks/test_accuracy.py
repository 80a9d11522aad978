"""benchmarks.train.accuracy's own arithmetic: the time to a validation accuracy, the shown command,
scikit-learn's baselines on a run's split, the Markdown table (the training runs themselves are
README's quick-start test and the recipe tests)."""

import pytest

from benchmarks.train import accuracy


def test_time_to_target_counts_whole_epochs_until_validation_reaches_it():
    rows = [{"val_accuracy": v} for v in ("0.9", "0.991", "0.98", "1.0")]
    assert accuracy.time_to(rows, [10.0, 2.0, 2.0, 2.0], 0.99) == pytest.approx(12.0)
    assert accuracy.time_to(rows[:1], [10.0], 0.99) is None


def test_shown_command_drops_the_benchmarks_own_options(tmp_path):
    import tempfile

    data = tempfile.gettempdir() + "/accuracy-x/idx"
    shown = accuracy._shown(f"python -m training.fit --dataset mnist --data-dir {data} "
                            "--seed 3 --run-dir /somewhere --verbose 0")
    assert shown == "python -m training.fit --dataset mnist --data-dir DIR --seed 3"


def test_baselines_are_fitted_on_the_split_they_are_shown_beside():
    digits = accuracy.baselines()
    assert digits["test_images"] == 359
    assert digits["SVC(gamma=0.001)"] == pytest.approx(0.9972, abs=1e-4)
    assert digits["LogisticRegression(max_iter=5000)"] < digits["SVC(gamma=0.001)"]
    # A folder run's test files are named by their index in load_digits.
    folder = accuracy.baselines([f"{i:04d}.png" for i in range(0, 1797, 10)])
    assert folder["test_images"] == 180 and 0.9 < folder["SVC()"] <= 1.0


def test_markdown_holds_every_run_and_baseline():
    runs = [{"test_accuracy": a, "train_wall_time_s": 30.0, "time_to_target_s": t, "epochs": 20,
             "recipe": "digits", "command": "python -m training.fit --dataset digits --seed 0"}
            for a, t in ((0.99, 12.0), (0.995, None))]
    summary = accuracy.summarize(runs)
    assert summary["mean"] == pytest.approx(0.9925)
    assert (summary["min"], summary["reached_target"]) == (0.99, 1)
    text = accuracy.markdown({"command": "python -m benchmarks.train.accuracy", "machine": "cpu",
                              "date": "2026-12-07", "seeds": "0-1",
                              "summaries": {"digits auto": summary},
                              "baselines": {"digits": {"SVC()": 0.99, "test_images": 359}}})
    assert "| digits | digits | **0.9925** | 0.9900 | 0.9950 | 0.9900 0.9950 | 20 |" in text
    assert "12.0 (1/2 runs)" in text and "| digits | 359 | 0.9900 |" in text
