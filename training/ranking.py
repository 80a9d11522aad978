"""Model outputs -> the top-k classes, and how both predict CLIs print them."""

from __future__ import annotations

import json


def top_k(outputs, k: int, class_names=None, probabilities: bool = False) -> list[list[dict]]:
    """Per row of logits (or of `probabilities`): the k most probable classes."""
    import numpy as np

    probs = np.asarray(outputs, dtype=np.float64)
    if not probabilities:
        probs = np.exp(probs - probs.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    k = min(k, probs.shape[1])
    rows = []
    for p in probs:
        best = np.argsort(-p, kind="stable")[:k]
        rows.append([{"class": class_names[i] if class_names else str(i), "index": int(i),
                      "probability": float(p[i])} for i in best])
    return rows


def report(files, rows, as_json: bool) -> str:
    if as_json:
        return json.dumps([{"path": f, "top": top} for f, top in zip(files, rows)], indent=2)
    lines = []
    for path, top in zip(files, rows):
        lines.append(path)
        width = max(len(t["class"]) for t in top)
        lines += [f"  {n}. {t['class']:<{width}}  {t['probability']:.4f}  (index {t['index']})"
                  for n, t in enumerate(top, 1)]
    return "\n".join(lines)


# decode_predictions' own argument is called top_k (keras.applications' name for it).
_top_k = top_k


def decode_predictions(outputs, class_names=None, top_k: int = 5, from_logits: bool = True):
    """Per row of model outputs, the `top_k` classes as {"class", "index", "probability"}
    dicts, most probable first: what `python -m training.predict --json` prints. Outputs are
    logits (keras_resnet's default head); pass from_logits=False for a softmax head."""
    return _top_k(outputs, top_k, class_names, probabilities=not from_logits)

