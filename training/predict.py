"""`python -m training.predict --model RUN/best.keras PATH...`: top-k classes of image files.
`python -m training.predict --arch resnet50 --weights IMAGENET1K_V2 PATH...`: the same with a
named weight set (ImageNet's class names, the set's own evaluation transform), no run needed.

PATH is an image file or a folder (searched recursively for .png, .jpg, .jpeg, .bmp, .gif,
.webp). Each image goes through training.preprocessing, as in training's evaluation: decoded
by TensorFlow, converted to the model's channels, brought to its input height and width the
way the run recorded in config.json ("crop": resize and centre crop; "stretch": resize; without
a record, "auto" for the input size), and given as raw 0..255 pixels: the model normalizes
them itself. Class names come from the model itself (training.fit builds it with them), else
from the config.json that training.fit wrote beside the model (files saved before models held
their class names), else class indices. `python -m export.predict` gives the same output for
an exported artifact.
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_resnet import _cli
from keras_resnet._cli import positive_int

from training.ranking import report, top_k

EXIT_CODES = """exit status: 0 predictions printed; 2 bad input or usage (a path that is not an
image or holds none, an unreadable model: the one-line message names it); 1 a model that gives
non-finite outputs (one line), or an internal error."""


class PredictError(ValueError):
    """A user's input that cannot be predicted on; the message names it."""


class NonFiniteOutputs(ValueError):
    """The model gave NaN or infinite outputs: it is broken, and no ranking (nor valid JSON,
    which has no NaN) can be made of them."""


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--top-k", type=positive_int, default=5, help="classes shown per image")
    p.add_argument("--json", action="store_true",
                   help='one JSON list of {"path", "top": [{"class", "index", "probability"}]}')
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per model call")
    _cli.add_log_level_argument(p)


def find_images(paths) -> list[str]:
    """The image files named or found below the folders named, in a stable order."""
    from training.preprocessing import IMAGE_SUFFIXES, is_image_name, not_regular

    found = []
    for path in paths:
        if os.path.isdir(path):
            inside = sorted(
                os.path.join(root, name)
                for root, dirs, names in os.walk(path) for name in names
                if is_image_name(name))
            if not inside:
                raise PredictError(f"folder {path} holds no image files "
                                   f"({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        elif os.path.isfile(path):
            found.append(path)
        elif os.path.exists(path):
            kind = not_regular(os.stat(path).st_mode)
            raise PredictError(f"{path} is {kind}; give image files or folders")
        else:
            raise PredictError(f"{path} does not exist")
    # A FIFO would block the reader forever, a device may never end: neither is read.
    for f in found:
        if os.path.exists(f) and not os.path.isfile(f):
            raise PredictError(f"{f} is {not_regular(os.stat(f).st_mode)}; image files are "
                               "regular files")
    return found


def load_images(files, preprocessing):
    """float32 (N, H, W, C) model inputs of image files: training.preprocessing.load_images, with
    its errors as PredictError. `preprocessing` is a Preprocessing, an input shape (H, W, C;
    then the default for that size) or a named weight set's transform (a callable)."""
    from training.preprocessing import ImageError, Preprocessing
    from training.preprocessing import load_images as load

    try:
        if callable(preprocessing):
            from training.weightsets import load_transformed

            return load_transformed(files, preprocessing)
        if not isinstance(preprocessing, Preprocessing):
            preprocessing = Preprocessing.for_shape(preprocessing)
        return load(files, preprocessing)
    except ImageError as e:
        raise PredictError(str(e)) from None


def predict_files(run_logits, preprocessing, paths, k, class_names, batch_size,
                  probabilities=False):
    """(files, top-k rows): `run_logits(images) -> logits` over the images found in `paths`,
    prepared by `preprocessing` (see load_images)."""
    import numpy as np

    files = find_images(paths)
    logits = []
    for i in range(0, len(files), batch_size):
        logits.append(np.asarray(run_logits(load_images(files[i:i + batch_size],
                                                        preprocessing))))
    logits = np.concatenate(logits)
    bad = ~np.isfinite(logits).all(axis=tuple(range(1, logits.ndim)))
    if bad.any():
        raise NonFiniteOutputs(
            f"the model gives non-finite outputs (NaN or infinity) for {int(bad.sum())} of "
            f"{len(files)} images (first: {files[int(np.argmax(bad))]}): it is broken; use "
            "another checkpoint or retrain it")
    if class_names is not None and len(class_names) != logits.shape[1]:
        raise PredictError(f"{len(class_names)} class names for a model with "
                           f"{logits.shape[1]} outputs")
    return files, top_k(logits, k, class_names, probabilities)


def model_class_names(model, model_path: str):
    """The model's own class names (a keras_resnet ResNet built with them), else the ones in
    the run's config.json beside the file, else None."""
    names = getattr(model, "class_names", None)
    return list(names) if names else class_names_beside(model_path)


def class_names_beside(model_path: str):
    """training.fit's class names from the run record in the model's folder, if there is one."""
    from training.runrecord import RunRecord, RunRecordError

    try:
        record = RunRecord.beside(model_path)
    except RunRecordError as e:
        raise PredictError(str(e)) from None
    return list(record.class_names) if record and record.class_names else None


def build_parser() -> argparse.ArgumentParser:
    p = _cli.ArgumentParser(prog="python -m training.predict", description=__doc__,
                                epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    from training.weightsets import add_arguments

    add_arguments(p, "a .keras file (e.g. RUN/best.keras)",
                  "ImageNet's class names and the set's evaluation transform (resize, centre "
                  "crop) are used")
    add_common_arguments(p)
    return p


def main(argv=None) -> int:
    p = build_parser()
    return _cli.run(p, _predict, argv, prefix=f"{p.prog}: error")


def _predict(args) -> None:
    if args.weights:
        return _predict_named(args)
    if args.arch:
        raise PredictError(f"--arch is for --weights NAME; --model {args.model} holds its own "
                           "architecture")
    find_images(args.paths)  # before loading TensorFlow: a wrong path fails fast
    from training.modelio import load_model
    from training.runrecord import preprocessing_for

    model = load_model(args.model)
    shape = tuple(model.input_shape[1:])
    # A model built with classifier_activation="softmax" already returns probabilities.
    last = getattr(model.layers[-1], "activation", None)
    softmax_out = getattr(last, "__name__", "") == "softmax"

    def run_logits(images):
        return model.predict(images, verbose=0)

    prep = preprocessing_for(args.model, shape)
    files, rows = predict_files(run_logits, prep, args.paths, args.top_k,
                                model_class_names(model, args.model), args.batch_size,
                                probabilities=softmax_out)
    print(report(files, rows, args.json))


def _predict_named(args) -> None:
    from training import weightsets

    weight_set = weightsets.resolve(args.weights, args.arch)
    find_images(args.paths)  # before a download: a wrong path fails fast
    model = weightsets.pretrained_model(weight_set)
    files, rows = predict_files(lambda images: model.predict(images, verbose=0),
                                weightsets.transform(weight_set), args.paths, args.top_k,
                                list(weight_set.categories), args.batch_size)
    print(report(files, rows, args.json))


if __name__ == "__main__":
    sys.exit(main())
