"""`python -m export.predict --artifact ARTIFACT PATH...`: top-k classes of image files from an
exported artifact, run in its own runtime (a SavedModel folder in TensorFlow, .onnx in ONNX
Runtime, .tflite in LiteRT).

The output is that of `python -m training.predict` for the Keras model (the same
training.preprocessing functions, with the preprocessing the training run recorded, which
`python -m export` copies into the manifest; without one, the default for the artifact's input
size), so a deploy script can compare the two. Class names come from the manifest.json that
`python -m export` wrote (looked for beside the artifact and up to two folders above).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from keras_resnet import _cli

from training.predict import (EXIT_CODES, PredictError, add_common_arguments, find_images,
                              predict_files, report)


def manifest_for(artifact: Path):
    """(manifest, its artifact entry) of the export that wrote `artifact`, or (None, None)."""
    target = artifact.resolve()
    for folder in [artifact.resolve().parent, *list(artifact.resolve().parents)[:3]]:
        path = folder / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for entry in manifest.get("artifacts", []):
            if (folder / entry.get("path", "")).resolve() == target:
                return manifest, entry
    return None, None


def build_parser() -> argparse.ArgumentParser:
    p = _cli.ArgumentParser(prog="python -m export.predict", description=__doc__,
                                epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True,
                   help="a SavedModel folder (e.g. artifacts/saved_model/1), .onnx or .tflite")
    add_common_arguments(p)
    return p


def main(argv=None) -> int:
    p = build_parser()
    return _cli.run(p, _predict, argv, prefix=f"{p.prog}: error")


def _predict(args) -> None:
    find_images(args.paths)
    artifact = Path(args.artifact)
    if not artifact.exists():
        raise PredictError(f"artifact {artifact} does not exist")
    manifest, _ = manifest_for(artifact)
    if manifest is None:
        raise PredictError(f"no manifest.json of python -m export lists {artifact} (looked "
                           "beside it and two folders up): it gives the input shape and "
                           "class names")
    shape = tuple(manifest["input"]["shape"][1:])
    from export.verification import load_runner

    runner = load_runner(artifact)
    from training.preprocessing import ImageError, Preprocessing

    record = (manifest.get("source", {}).get("run_config", {}) or {}).get("preprocessing")
    try:
        prep = (Preprocessing.from_dict(record) if isinstance(record, dict)
                else Preprocessing.for_shape(shape))
    except (ImageError, TypeError) as e:
        raise PredictError(f"{artifact}: its manifest's preprocessing cannot be used "
                           f"({e})") from None
    files, rows = predict_files(runner, prep, args.paths, args.top_k,
                                manifest.get("class_names"), args.batch_size)
    print(report(files, rows, args.json))


if __name__ == "__main__":
    sys.exit(main())
