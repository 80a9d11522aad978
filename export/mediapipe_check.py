"""A .tflite file run as a mobile app runs it: MediaPipe Tasks' ImageClassifier created from the
file alone (its metadata gives the preprocessing, the labels and the heads), fed RGB uint8
images. ``export.verification.mediapipe_rule`` judges what it answers."""

from __future__ import annotations

import numpy as np

from export.model_io import ExportError
from export.tflite_metadata import SCORE_OUTPUT


def unavailable() -> str | None:
    """Why MediaPipe cannot run here, or None."""
    try:
        from mediapipe.tasks.python import vision  # noqa: F401
    except ImportError as err:
        return f"mediapipe is not installed ({err}); pip install 'mediapipe==1.2.2'"
    return None


def pixels(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 of raw-pixel images (N, H, W, C), as an app's decoded pictures: a grey
    image repeated over the three channels."""
    images = np.asarray(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def classify(path, images, num_classes: int) -> np.ndarray:
    """(N, classes) scores of the ``probabilities`` head that MediaPipe's ImageClassifier gives
    for each of ``images`` (raw pixels, rounded to uint8: ``pixels``)."""
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(path)), max_results=-1)
    scores = np.zeros((len(images), num_classes), np.float32)
    try:
        classifier = vision.ImageClassifier.create_from_options(options)
    except Exception as err:  # MediaPipe raises RuntimeError/ValueError with its status text
        raise ExportError(f"MediaPipe's ImageClassifier refused {path}: {err}") from None
    with classifier:
        for i, rgb in enumerate(pixels(images)):
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
            heads = {c.head_name: c for c in classifier.classify(image).classifications}
            if SCORE_OUTPUT not in heads:
                raise ExportError(f"MediaPipe found no {SCORE_OUTPUT!r} head in {path} "
                                  f"(heads {sorted(heads)})")
            for category in heads[SCORE_OUTPUT].categories:
                scores[i, category.index] = category.score
    return scores
