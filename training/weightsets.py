"""Weight sets named on the command line (`--weights IMAGENET1K_V2`): the one place where
training.fit, training.predict, export and export.predict turn a name into keras_resnet.weights'
set, a model holding it, its evaluation transform and what a run record or a manifest says of it.

keras_resnet.weights' errors (an unknown name, a name of another architecture, a download that
fails, a file whose hash differs) are UsageErrors: the CLIs exit 2 with their one line.
"""

from __future__ import annotations

NAMES_HELP = ("a weight-set name: IMAGENET1K_V1, IMAGENET1K_V2 or DEFAULT (the best set of "
              "--arch), torchvision's spelling (ResNet50_Weights.IMAGENET1K_V2) or one saved by "
              "keras_resnet.weights.register(..., save=True); downloaded once into "
              "$KERAS_HOME/models (default ~/.keras/models), from $KERAS_RESNET_WEIGHTS_URL "
              "when set")


def add_arguments(parser, model_help: str, weights_help: str) -> None:
    """A CLI's --model FILE or --weights NAME (exactly one), and --arch for a name."""
    from keras_resnet.archs import ARCHS

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help=model_help)
    source.add_argument("--weights", metavar="NAME",
                        help=f"instead of --model: {NAMES_HELP}; {weights_help}")
    parser.add_argument("--arch", choices=sorted(ARCHS),
                        help="the architecture of --weights NAME (where the name alone does not "
                        "say it, e.g. IMAGENET1K_V2 or DEFAULT)")


def is_name(text: str | None) -> bool:
    """Whether a --weights value names a weight set (else it is a file)."""
    from keras_resnet.weights import looks_like_name

    return bool(text) and looks_like_name(text)


def resolve(name: str, arch: str | None = None):
    """The WeightSet `name` stands for (with `arch`: one of that architecture)."""
    from keras_resnet import weights

    return weights.get(name, arch)


def pretrained_model(weight_set, input_shape=None, num_classes=None, class_names=None,
                     load: bool = True):
    """A model of the set's architecture holding its weights (`load`: else only its shape, for a
    resumed run that loads its own checkpoint). Another `num_classes` than the set's gets a new
    classifier; the model takes raw 0..255 RGB pixels of `input_shape` (default: the set's
    crop)."""
    from keras_resnet import build_resnet, weights

    if input_shape is None:
        input_shape = (weight_set.crop_size, weight_set.crop_size, 3)
    same_head = num_classes is None or num_classes == weight_set.num_classes
    if load and not weights.converted_path(weight_set).is_file():
        weights.fetch(weight_set)  # a download that fails fails before the model is built
    model = build_resnet(
        weight_set.arch, input_shape=input_shape,
        num_classes=weight_set.num_classes if num_classes is None else num_classes,
        normalization=weight_set.normalization,
        class_names=weight_set.categories if class_names is None and same_head else class_names)
    if load:
        weights.load_into(model, weight_set)  # the classifier too where the classes are the set's
    return model


def manifest_source(weight_set, model) -> dict:
    """The manifest's account of a model exported from a named set."""
    from keras_resnet.builder import model_config

    return {"weights": weight_set.describe(), "transform": weight_set.transform_config(),
            "model_config": model_config(model)}


def transform(weight_set_or_config):
    """The evaluation transform of a set (or of its transform_config(), as a manifest holds
    it): uint8 (h, w, 3) image -> the model's float32 (crop, crop, 3) input."""
    from keras_resnet import weights

    return weights.transform(weight_set_or_config)


def load_transformed(files, transform_fn):
    """float32 (N, crop, crop, 3) inputs of image files through a set's transform."""
    import numpy as np

    from training.preprocessing import read_image

    return np.stack([np.asarray(read_image(path, 3, transform_fn), np.float32)
                     for path in files])
