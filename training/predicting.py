"""What both predict CLIs share (`python -m training.predict` on a Keras model, `python -m
export.predict` on an exported artifact): their parser and exit contract, finding and reading
the image files, and the top-k table they print."""

from __future__ import annotations

import argparse
import os

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


def build_parser(prog: str, description: str, add_model_arguments) -> argparse.ArgumentParser:
    """A predict CLI's parser: ``add_model_arguments(parser)`` adds what names the model,
    then come the image paths and the options both CLIs share."""
    p = _cli.ArgumentParser(prog=prog, description=description, epilog=EXIT_CODES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    add_common_arguments(p)
    return p


def run(parser: argparse.ArgumentParser, predict, argv=None) -> int:
    """A predict CLI's main: ``predict(args)`` under the exit contract."""
    return _cli.run(parser, predict, argv, prefix=f"{parser.prog}: error")


def print_predictions(run_logits, preprocessing, args, class_names,
                      probabilities: bool = False) -> None:
    """The top-k table (or --json) of ``run_logits`` over the images of ``args.paths``."""
    files, rows = predict_files(run_logits, preprocessing, args.paths, args.top_k, class_names,
                                args.batch_size, probabilities)
    print(report(files, rows, args.json))


def refuse_feature_extractor(what: str, config, outputs) -> None:
    """Refuses a model without a classifier (``config``: its builder_config, or None when
    unknown): its outputs are features, which a ranking would print as class scores."""
    if isinstance(config, dict) and config.get("include_top") is False:
        size = "x".join(str(d) for d in list(outputs)[1:] if d is not None) or "?"
        raise PredictError(f"{what} has no classifier (built with include_top=False): it is a "
                           f"feature extractor giving {size} features per image, not class "
                           "scores; predict with a model that has its classifier")


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
