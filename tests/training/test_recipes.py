"""Default recipes: which recipe each kind of data gets, explicit options winning, the epochs rule,
config.json's record of it, and the recipe's parts (EMA weights saved, test-time flip, augmentation
strength)."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from training import recipes
from training.config import TrainConfig, parse_args

TINY = dict(dataset="synthetic", synthetic_shape="8,8,3", stem="cifar", width=4,
            batch_size=64, jit_compile="off", verbose="0", val_fraction=0.25)


@pytest.mark.parametrize("args, name, expected", [
    (["--dataset", "digits"], "digits",
     dict(optimizer="sgd", lr=0.1, nesterov=True, schedule="cosine", warmup_epochs=1.0,
          batch_size=64, label_smoothing=0.1, weight_decay=5e-4, stem="imagenet", width=16,
          tta_flip=False, epochs=20)),
    (["--dataset", "mnist"], "mnist", dict(stem="imagenet", width=16, tta_flip=False, epochs=6)),
    (["--dataset", "fashion_mnist"], "mnist", dict(optimizer="sgd", batch_size=64)),
    (["--dataset", "cifar10"], "cifar",
     dict(stem="cifar", width=64, zero_init_residual=True, tta_flip=True, epochs=30,
          batch_size=128, warmup_epochs=2.0)),
    (["--dataset", "cifar100"], "cifar", dict(tta_flip=True)),
    (["--dataset", "folder", "--data-dir", "d", "--image-size", "28,28"], "folder-small",
     dict(stem="imagenet", width=16, tta_flip=False)),
    (["--dataset", "folder", "--data-dir", "d", "--image-size", "224,224"], "folder",
     dict(stem="imagenet", width=64, zero_init_residual=True, tta_flip=True)),
    (["--dataset", "folder", "--data-dir", "d", "--image-size", "224,224", "--weights",
      "IMAGENET1K_V1"], "finetune", dict(lr=0.01, tta_flip=True, epochs=10)),
    (["--dataset", "folder", "--data-dir", "d", "--image-size", "32,32", "--channels", "1",
      "--weights", "w.pth"], "finetune", dict(tta_flip=False)),
    (["--dataset", "digits", "--weights", "w.pth"], "finetune", dict(tta_flip=False)),
    (["--dataset", "synthetic"], "seed",
     dict(optimizer="adam", lr=1e-3, schedule="step", batch_size=128, epochs=10)),
    (["--dataset", "digits", "--recipe", "seed"], "seed", dict(optimizer="adam")),
])
def test_each_kind_of_data_gets_its_recipe(args, name, expected):
    given = parse_args(args)
    cfg, resolution = recipes.resolve(given)
    assert resolution.name == name
    steps = {"digits": 21, "mnist": 844}.get(given.dataset)
    cfg = given.resolved(steps)
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert all(getattr(cfg, f) is not None for f in recipes.RECIPE_FIELDS)


def test_explicit_options_win_and_are_recorded_as_given():
    given = parse_args(["--dataset", "digits", "--lr", "0.05", "--epochs", "7", "--no-nesterov",
                        "--optimizer", "adamw", "--stem", "cifar"])
    cfg, resolution = recipes.resolve(given)
    assert (cfg.lr, cfg.epochs, cfg.nesterov, cfg.optimizer, cfg.stem) == (
        0.05, 7, False, "adamw", "cifar")
    assert cfg.batch_size == 64 and cfg.label_smoothing == 0.1  # from the recipe
    assert set(resolution.explicit) == {"lr", "epochs", "nesterov", "optimizer", "stem"}
    assert resolution.epochs_rule is None  # --epochs given: no rule
    record = resolution.record(cfg)
    assert record["name"] == "digits" and record["values"]["lr"] == 0.05
    assert record["values"]["batch_size"] == 64
    line = resolution.line(cfg)
    assert line.startswith("recipe digits (--dataset digits): --width 16 ")
    assert "--batch-size 64" in line and "--no-tta-flip" in line and "--warmup-epochs 1 " in line
    assert line.endswith("(given: --stem cifar --epochs 7 --optimizer adamw --lr 0.05 "
                         "--no-nesterov)")


def test_the_epochs_rule_scales_with_the_data():
    rule = recipes.RECIPES["digits"].values["epochs"]
    assert rule.count(21) == 20  # 1,294 digits at batch 64
    assert rule.count(3) == 60  # clamped above
    assert rule.count(10_000) == 20  # clamped below
    assert recipes.RECIPES["mnist"].values["epochs"].count(844) == 6  # 54,000 images


def test_recipes_are_named_in_help_and_wrong_names_refused(capsys):
    from training.config import build_parser

    text = build_parser().format_help()
    for name in recipes.RECIPES:
        assert f"  {name}: " in text
    assert "How to train your ResNet" in text and "airbench" in text and "torchvision" in text
    with pytest.raises(SystemExit) as e:
        parse_args(["--recipe", "fast"])
    assert e.value.code == 2 and "--recipe" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--ema must be in"):
        parse_args(["--ema", "1.0"])


class _Capture(keras.callbacks.Callback):
    """The weights in the model at each epoch's end (after the checkpoint) and after the last
    training step (the live weights)."""

    def __init__(self):
        super().__init__()
        self.epoch_end, self.live = [], None

    def on_train_batch_end(self, batch, logs=None):
        self.live = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end.append(self.model.get_weights())


def test_ema_weights_are_validated_saved_and_recorded(tmp_path):
    from training.fit import run

    run_dir = str(tmp_path / "run")
    capture = _Capture()
    metrics = run(TrainConfig(run_dir=run_dir, epochs=2, ema=0.9, lr=0.05, optimizer="sgd",
                              subset=128, **TINY), extra_callbacks=[capture])
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["recipe"]["name"] == "seed" and config["recipe"]["values"]["ema"] == 0.9
    assert "ema" in config["recipe"]["explicit"]
    best = keras.models.load_model(os.path.join(run_dir, "best.keras"), compile=False)
    saved = best.get_weights()
    held = capture.epoch_end[metrics["best_epoch"] - 1]
    assert all(np.array_equal(a, b) for a, b in zip(saved, held))
    # The averaged weights, not the live ones of the last step.
    assert not all(np.allclose(a, b) for a, b in zip(capture.epoch_end[-1], capture.live))


def test_test_time_flip_averages_the_mirror_image():
    from training.data import get_info
    from training.report import evaluate_model

    class Left:
        """Logits that favour class 0 when the left half is brighter: a mirror flips them."""

        def predict_on_batch(self, x):
            x = np.asarray(x)
            d = x[:, :, :2].mean(axis=(1, 2, 3)) - x[:, :, 2:].mean(axis=(1, 2, 3))
            return np.stack([d, -d] + [np.full_like(d, -9.0)] * 8, axis=1)

    info = get_info("synthetic", image_shape=(4, 4, 1), num_classes=10)
    info = dataclasses.replace(info, synthetic=False)
    x = np.zeros((2, 4, 4, 1), np.float32)
    x[0, :, :2] = 9.0
    x[1, :, 3:] = 1.0
    data = [(x, np.array([0, 1]))]
    plain = evaluate_model(Left(), data, info)
    flipped = evaluate_model(Left(), data, info, tta_flip=True)
    assert plain["test_accuracy"] == 1.0 and not plain["test_time_flip"]
    # Each mirror image's evidence cancels its own: every average is a tie, which argmax
    # gives to class 0, so image 1 (class 1) is now wrong.
    assert flipped["test_time_flip"] and flipped["test_accuracy_without_flip"] == 1.0
    assert flipped["test_accuracy"] < 1.0


def test_augmentation_strength_scales_the_ranges():
    import tensorflow as tf

    from training.data.augment import augment_batch

    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 12, 12, 1)), tf.float32)
    seed = tf.constant([1, 2], tf.int64)
    for kind in ("mnist", "cifar"):
        unchanged = augment_batch(images, seed, kind, strength=0.0)
        if kind == "mnist":
            np.testing.assert_allclose(unchanged.numpy(), images.numpy(), atol=1e-3)
        moved = [float(tf.reduce_mean(tf.abs(augment_batch(images, seed, kind, strength=s)
                                             - images))) for s in (0.5, 2.0)]
        assert moved[0] < moved[1]


def test_pipelines_settle_an_epochs_rule_and_evaluate_in_double_batches():
    from training.data import load_pipelines, pipeline
    from training.data.sources import ArrayItems

    data = load_pipelines("digits", batch_size=64, epochs=lambda steps: 2 * steps)
    assert data.steps_per_epoch == 21 and data.epochs == 42
    images, _ = next(iter(data.val))
    assert images.shape[0] == 128  # evaluation takes twice the training batch
    first = [y.numpy().tolist() for _, y in data.val]
    assert [y.numpy().tolist() for _, y in data.val] == first  # the cached pass
    items = ArrayItems(np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4, np.int32), "mnist")
    with pytest.raises(ValueError, match="only an evaluation pipeline"):
        pipeline(items, 2, shuffle=True, augment=False, cache=True)


def test_compile_model_lets_the_first_training_step_be_traced_once():
    # A variable created while tracing (a string metric's, the optimizer's slots) makes
    # TensorFlow trace the whole step again: twice the start-up cost of every run.
    from training.recipe import compile_model, make_loss

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    compile_model(model, keras.optimizers.AdamW(1e-3, use_ema=True), make_loss(0.1), False)
    traces = []
    step = model.train_step
    model.train_step = lambda data: traces.append(1) or step(data)
    x = np.zeros((8, 4), np.float32)
    history = model.fit(x, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    assert len(traces) == 1
    assert set(history.history) == {"loss", "accuracy"}
