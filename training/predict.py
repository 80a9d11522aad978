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

import sys

from training.predicting import (PredictError, find_images, print_predictions,
                                 refuse_feature_extractor, run)
from training.predicting import build_parser as predict_parser


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


def build_parser():
    from training.weightsets import add_arguments

    return predict_parser("python -m training.predict", __doc__, lambda p: add_arguments(
        p, "a .keras file (e.g. RUN/best.keras)",
        "ImageNet's class names and the set's evaluation transform (resize, centre crop) are "
        "used"))


def main(argv=None) -> int:
    return run(build_parser(), _predict, argv)


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
    refuse_feature_extractor(args.model, getattr(model, "builder_config", None),
                             model.output_shape)
    shape = tuple(model.input_shape[1:])
    # A model built with classifier_activation="softmax" already returns probabilities.
    last = getattr(model.layers[-1], "activation", None)
    softmax_out = getattr(last, "__name__", "") == "softmax"

    def run_logits(images):
        return model.predict(images, verbose=0)

    print_predictions(run_logits, preprocessing_for(args.model, shape), args,
                      model_class_names(model, args.model), probabilities=softmax_out)


def _predict_named(args) -> None:
    from training import weightsets

    weight_set = weightsets.resolve(args.weights, args.arch)
    find_images(args.paths)  # before a download: a wrong path fails fast
    model = weightsets.pretrained_model(weight_set)
    print_predictions(lambda images: model.predict(images, verbose=0),
                      weightsets.transform(weight_set), args, list(weight_set.categories))


if __name__ == "__main__":
    sys.exit(main())
