"""Evaluation of a model on a pipeline, and the report files (metrics.json and plots)."""

from __future__ import annotations

import io
import os
import time
import warnings

import numpy as np

from training.callbacks import atomic_write_bytes, atomic_write_json

SYNTHETIC_NOTE = "synthetic noise with random labels: accuracy means nothing and is not reported"


def evaluate_model(model, dataset, info, class_names=None, label_map=None,
                   tta_flip: bool = False) -> dict:
    """Test loss/accuracy, per-class accuracy and confusion matrix of `model` on `dataset`.

    `label_map`: the model's index of each of the dataset's labels, for data whose classes are
    the model's `class_names` in another order or a subset of them; the confusion matrix is
    then over the model's classes and the per-class accuracy over the dataset's.

    `tta_flip`: each image's logits are the mean of its own and its mirror image's (the
    figures then describe that; `test_accuracy_without_flip` keeps the plain accuracy)."""
    labels, logits, plain = [], [], []
    start = time.perf_counter()
    for x, y in dataset:
        z = np.asarray(model.predict_on_batch(x), dtype=np.float64)
        if tta_flip:
            plain.append(z.argmax(axis=1))
            mirrored = np.asarray(x)[:, :, ::-1]
            z = (z + np.asarray(model.predict_on_batch(mirrored), dtype=np.float64)) / 2.0
        logits.append(z)
        labels.append(np.asarray(y))
    seconds = time.perf_counter() - start
    y = np.concatenate(labels).astype(np.int64)
    present = range(info.num_classes)
    if label_map is not None:
        y = np.asarray(label_map, dtype=np.int64)[y]
        present = label_map
    names = list(class_names) if label_map is not None else list(info.class_names)
    z = np.concatenate(logits)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(y)), y].mean())
    pred = z.argmax(axis=1)
    k = len(names)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    support = cm.sum(axis=1)
    per_class = {names[i]: (float(cm[i, i] / support[i]) if support[i] else None)
                 for i in present}
    accuracy = float((pred == y).mean())
    metrics = {
        "dataset": info.name,
        "split": "test",
        "num_examples": int(len(y)),
        "test_loss": loss,
        "test_accuracy": accuracy,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "eval_seconds": seconds,
        "eval_images_per_s": len(y) / seconds if seconds > 0 else None,
        "test_time_flip": bool(tta_flip),
    }
    if tta_flip:
        metrics["test_accuracy_without_flip"] = float(
            (np.concatenate(plain) == y).mean())
    if info.synthetic:
        metrics.update(test_accuracy=None, per_class_accuracy=None, note=SYNTHETIC_NOTE)
        metrics.pop("test_accuracy_without_flip", None)
    return metrics


def _savefig(fig, path: str) -> None:
    buf = io.BytesIO()
    # A class name in a script the default font lacks (CJK, emoji) is drawn as a box; the
    # figure is still right, and the warning would break the promise of a quiet stderr.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font",
                                category=UserWarning)
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_history(history: dict, path: str, title: str) -> None:
    """Loss, accuracy and (when recorded) learning rate per epoch, epochs counted from 1 as in
    log.csv and the console."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [m for m in ("loss", "accuracy") if history.get(m) or history.get("val_" + m)]
    if history.get("learning_rate"):
        panels.append("learning_rate")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            values = history.get(prefix + metric)
            if values:
                label = metric.replace("_", " ")
                if metric != "learning_rate":
                    label = ("validation " if prefix else "train ") + label
                ax.plot(range(1, len(values) + 1), values, style, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("_", " "))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    _savefig(fig, path)
    plt.close(fig)


def plot_confusion(cm, class_names, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    k = len(class_names)
    size = min(4 + 0.5 * k, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    if k <= 20:
        ax.set_xticks(range(k), class_names, rotation=45, ha="right")
        ax.set_yticks(range(k), class_names)
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > threshold else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    _savefig(fig, path)
    plt.close(fig)


def write_report(out_dir: str, metrics: dict, info, history: dict | None = None,
                 title: str = "") -> dict:
    """Writes metrics.json, confusion_matrix.png and (with a history) history.png."""
    os.makedirs(out_dir, exist_ok=True)
    files = {"metrics": os.path.join(out_dir, "metrics.json"),
             "confusion_matrix": os.path.join(out_dir, "confusion_matrix.png")}
    tag = " (SYNTHETIC: not an accuracy)" if info.synthetic else ""
    acc = metrics.get("test_accuracy")
    cm_title = (f"{title}\nconfusion matrix on the test split"
                + (f" (accuracy {acc:.4f})" if acc is not None else "") + tag)
    plot_confusion(metrics["confusion_matrix"], info.class_names, files["confusion_matrix"],
                   cm_title)
    if history:
        files["history"] = os.path.join(out_dir, "history.png")
        plot_history(history, files["history"], title + tag)
    atomic_write_json(files["metrics"], metrics)
    return files


def summary_lines(metrics: dict) -> list[str]:
    lines = []
    if metrics.get("test_accuracy") is not None:
        lines.append(f"test accuracy {metrics['test_accuracy']:.4f}  loss "
                     f"{metrics['test_loss']:.4f}  ({metrics['num_examples']} images)")
    else:
        lines.append(f"test loss {metrics['test_loss']:.4f} ({metrics.get('note', '')})")
    per_class = metrics.get("per_class_accuracy")
    if per_class and len(per_class) <= 20:
        lines.append("per class: " + ", ".join(
            f"{k} {v:.3f}" for k, v in per_class.items() if v is not None))
    return lines
