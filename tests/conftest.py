import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torchvision 0.29.1 segfaults when it is imported *after* TensorFlow 2.21 (the reverse order
# works); the parity tests import it, so load it first when it is installed.
try:
    import torchvision  # noqa: F401
except ImportError:
    pass

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_resnet.archs import ARCHS  # noqa: E402

# TensorFlow, torch and Keras leave a few million objects that live as long as the process;
# frozen, they are skipped by every garbage collection, and the gc.collect() in the per-test
# clear_session below takes milliseconds instead of a third of a second.
gc.collect()
gc.freeze()

REPO = Path(__file__).resolve().parents[1]
ALL_ARCHS = sorted(ARCHS, key=lambda a: int(a[6:]))  # resnet18 first: the fast ones fail first


def random_images(shape, batch=2, seed=0, high=1.0) -> np.ndarray:
    """(batch, *shape) float32, uniform in [0, high): high=255 for raw pixels."""
    return np.random.default_rng(seed).uniform(0, high, (batch, *shape)).astype("float32")


def logit_tolerance(reference) -> float:
    """The parity bound for logits computed another way (another backend, framework or
    runtime): float32 round-off grows with the logits' magnitude, hence the relative part."""
    return 1e-4 + 1e-5 * float(np.abs(reference).max())


@pytest.fixture(autouse=True)
def _float32_policy_and_fresh_names():
    """Every test starts and ends with the float32 policy and a fresh Keras name scope."""
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
    yield
    keras.config.set_dtype_policy("float32")


# Integration tests that each run whole exports, trainings or other Keras backends (10-70 s
# apiece). They run in CI's second pass (`scripts/test.sh -m slow`); the everyday suite keeps
# one fast test of each feature. Node ids relative to tests/.
SLOW_TESTS = {
    "test_readme.py::test_train_evaluate_export_and_run_every_artifact",
    "training/test_predict.py::test_artifacts_predict_as_the_keras_model",
    "export/test_mixed_precision.py::test_mixed_precision_model_exports_and_verifies",
    "export/test_cli.py::test_cli_reads_calibration_and_verification_data_from_the_run_dataset",
    "export/test_cli.py::test_export_overwrite_and_manifest",
    "export/test_cli.py::test_failed_verification_exits_non_zero",
    "export/test_out_folder.py::test_an_export_killed_between_its_renames_is_restored",
    "export/test_out_folder.py::test_export_into_an_empty_mount_point_writes_in_place",
    "export/test_cli_bare_model.py::test_no_dataset_leaves_int8_out_with_a_note_and_creates_parents",
    "keras_resnet/test_backends.py::test_other_backend_matches_tensorflow_and_round_trips"
    "[bottleneck-jax]",
    "keras_resnet/test_backends.py::test_other_backend_matches_tensorflow_and_round_trips"
    "[bottleneck-torch]",
    "keras_resnet/test_models.py::test_xla_compiles_the_fast_paths_and_agrees[resnet50]",
    "benchmarks/test_bench.py::test_harness_reports_positive_rates_for_both_frameworks",
    "training/test_train_reliability.py::"
    "test_log_csv_has_no_duplicate_row_when_killed_before_the_state",
    "training/test_train_reliability.py::test_log_csv_row_is_written_with_the_checkpoint",
    "training/test_train_reliability.py::test_two_processes_on_one_run_dir_one_refuses",
    "training/test_folder_fit.py::test_start_from_a_keras_model",
    # 6-20 s apiece; each feature keeps a faster everyday test (noted beside each).
    "training/test_train_fit.py::test_resume_continues_at_the_right_epoch_with_the_same_state",
    # (resume: test_train_reliability's checkpoint/state tests)
    "training/test_train_fit.py::test_mixed_bfloat16_trains_on_cpu",
    "keras_resnet/test_backends.py::test_other_backend_matches_tensorflow_and_round_trips"
    "[basic-jax]",
    "keras_resnet/test_backends.py::test_other_backend_matches_tensorflow_and_round_trips"
    "[basic-torch]",
    "keras_resnet/test_models.py::test_xla_compiles_the_fast_paths_and_agrees[resnet18]",
    "test_readme.py::test_pipelines_in_your_own_script_block",
    "test_readme.py::test_model_library_block_builds_compiles_and_trains",
    "test_readme.py::test_model_that_knows_what_it_is_block",
    "test_startup.py::test_tensorflow_log_lines_are_off_by_default_and_on_with_info",
    "test_startup.py::test_torchvision_imported_after_our_models_works_and_says_what_it_turned_off",
    "training/test_folder_fit.py::"
    "test_mixed_formats_sizes_and_a_corrupt_file_learn_and_predict_as_model_predict",
    "training/test_folder_fit.py::test_train_val_test_folders_use_the_val_folder",
    "training/test_folder_fit.py::"
    "test_start_from_torchvision_weights_with_a_new_classifier_and_frozen_stages",
    # (folders: test_class_folders_train_and_record_the_split and test_folders.py)
    "training/test_train_reliability.py::test_a_stale_lock_of_a_dead_process_is_taken_over",
    "training/test_train_reliability.py::test_a_finite_but_exploding_loss_stops_with_exit_3",
    "training/test_train_reliability.py::"
    "test_divergence_in_a_later_epoch_names_the_last_good_checkpoint",
    "training/test_class_names.py::test_the_export_manifest_takes_the_models_class_names",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    root = os.path.dirname(os.path.abspath(__file__))
    known, files = set(), set()
    for item in items:
        path = os.path.relpath(str(item.path), root).replace(os.sep, "/")
        files.add(path)
        if f"{path}::{item.name}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
            known.add(f"{path}::{item.name}")
    # A renamed test must not silently move back into the everyday suite.
    missing = sorted(n for n in SLOW_TESTS - known if n.split("::")[0] in files)
    if missing:
        raise pytest.UsageError(f"tests/conftest.py SLOW_TESTS names unknown tests: {missing}")
