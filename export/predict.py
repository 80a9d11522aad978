"""`python -m export.predict --artifact ARTIFACT PATH...`: top-k classes of image files from an
exported artifact, run in its own runtime (a SavedModel folder in TensorFlow, .onnx in ONNX
Runtime, .tflite in LiteRT).

The output is that of `python -m training.predict` for the Keras model (the same
training.preprocessing functions, with the preprocessing the training run recorded, which
`python -m export` copies into the manifest; for an export of a named weight set, its
evaluation transform; else the default for the artifact's input size), so a deploy script can
compare the two. Class names come from the manifest.json that
`python -m export` wrote (looked for beside the artifact and up to two folders above).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.predicting import (PredictError, find_images, print_predictions,
                                 refuse_feature_extractor, run)
from training.predicting import build_parser as predict_parser


def _find_manifest(artifact: Path):
    """(manifest, its artifact entry, the manifest's path), or (None, None, None)."""
    target = artifact.resolve()
    for folder in [artifact.resolve().parent, *list(artifact.resolve().parents)[:3]]:
        path = folder / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        entries = manifest.get("artifacts") if isinstance(manifest, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            where = entry.get("path") if isinstance(entry, dict) else None
            if isinstance(where, str) and where and (folder / where).resolve() == target:
                return manifest, entry, path
    return None, None, None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# Larger than any image a model of ours is exported for; a bigger figure is a tampered file.
MAX_SIDE = 1 << 15


def _checked_fields(manifest: dict, path: Path):
    """(input shape (H, W, C), preprocessing record or None, class names or None) from the
    manifest, each checked: a manifest edited by hand gets one line naming the field."""
    def refuse(field, value, expected):
        raise PredictError(f"{path}: field {field} is {value!r}; expected {expected} (as "
                           "python -m export writes it: export again to restore it)")

    given = manifest.get("input")
    shape = given.get("shape") if isinstance(given, dict) else None
    if not (isinstance(shape, list) and len(shape) == 4 and
            (shape[0] is None or _is_count(shape[0])) and
            all(_is_count(d) and d <= MAX_SIDE for d in shape[1:3]) and
            _is_count(shape[3]) and shape[3] in (1, 3)):
        refuse("input.shape", shape, f"[null, H, W, C] with H, W in 1..{MAX_SIDE} and C 1 or 3")
    h, w, c = shape[1:]
    source = manifest.get("source")
    run_config = source.get("run_config") if isinstance(source, dict) else None
    record = run_config.get("preprocessing") if isinstance(run_config, dict) else None
    if record is not None:
        field = "source.run_config.preprocessing"
        if not isinstance(record, dict):
            refuse(field, record, "an object")
        for key, want in (("height", h), ("width", w), ("channels", c)):
            value = record.get(key, want)
            # None: a run of a size-agnostic model, whose images are not resized.
            if not (_is_count(value) and value == want or value is None and key != "channels"):
                refuse(f"{field}.{key}", record[key], f"{want}, the artifact's input.shape")
        resize = record.get("resize", "crop")
        if resize not in ("crop", "stretch"):
            refuse(f"{field}.resize", resize, "'crop' or 'stretch'")
        fraction = record.get("crop_fraction", 1.0)
        if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                or not 0 < fraction <= 1):
            refuse(f"{field}.crop_fraction", fraction, "a number in (0, 1]")
    names = manifest.get("class_names")
    if names is not None and not (isinstance(names, list) and names
                                  and all(isinstance(n, str) for n in names)):
        refuse("class_names", names, "a list of class names (strings)")
    return (h, w, c), record, names


def _check_sha256(artifact: Path, entry: dict, path: Path) -> None:
    """The artifact must be the one the export verified: a changed file or folder is refused."""
    from export.checks import describe_path

    recorded = entry.get("sha256")
    _, actual = describe_path(artifact)
    if recorded != actual:
        raise PredictError(
            f"{artifact}: its sha256 {actual[:12]}... differs from the {str(recorded)[:12]}... "
            f"that {path} records: the artifact was changed after the export; export the model "
            f"again (python -m export --model MODEL.keras --out {path.parent} --overwrite)")


def _preprocessing(manifest: dict, path: Path, artifact: Path, shape, record):
    """What brings image files to the artifact's input: the evaluation transform of the weight
    set it was exported from, else the run's recorded preprocessing, else the default for its
    input shape."""
    from training.preprocessing import ImageError, Preprocessing

    source = manifest.get("source")
    config = source.get("transform") if isinstance(source, dict) else None
    if config is not None:
        return _transform(config, path, shape)
    try:
        return (Preprocessing.from_dict(record) if isinstance(record, dict)
                else Preprocessing.for_shape(shape))
    except (ImageError, TypeError) as e:
        raise PredictError(f"{artifact}: its manifest's preprocessing cannot be used "
                           f"({e})") from None


def _transform(config, path: Path, shape):
    """The weight set's evaluation transform that the manifest records, checked."""
    from training.weightsets import transform

    crop = config.get("crop_size") if isinstance(config, dict) else None
    try:
        if shape != (crop, crop, 3):
            raise ValueError(f"crop_size {crop!r} is not the artifact's input "
                             f"{shape[0]}x{shape[1]}x{shape[2]}")
        return transform(config)
    except (TypeError, ValueError) as e:
        raise PredictError(f"{path}: field source.transform cannot be used ({e}); export "
                           "again to restore it") from None


def build_parser():
    return predict_parser("python -m export.predict", __doc__, lambda p: p.add_argument(
        "--artifact", required=True,
        help="a SavedModel folder (e.g. artifacts/saved_model/1), .onnx or .tflite"))


def main(argv=None) -> int:
    return run(build_parser(), _predict, argv)


def _predict(args) -> None:
    find_images(args.paths)
    artifact = Path(args.artifact)
    if not artifact.exists():
        raise PredictError(f"artifact {artifact} does not exist")
    manifest, entry, manifest_path = _find_manifest(artifact)
    if manifest is None:
        raise PredictError(f"no manifest.json of python -m export lists {artifact} (looked "
                           "beside it and two folders up): it gives the input shape and "
                           "class names")
    shape, record, class_names = _checked_fields(manifest, manifest_path)
    source = manifest.get("source")
    refuse_feature_extractor(str(artifact), source.get("model_config")
                             if isinstance(source, dict) else None,
                             [None, len(class_names or [])])
    _check_sha256(artifact, entry, manifest_path)
    from export.verification import load_runner

    runner = load_runner(artifact)
    prep = _preprocessing(manifest, manifest_path, artifact, shape, record)
    print_predictions(runner, prep, args, class_names)


if __name__ == "__main__":
    sys.exit(main())
