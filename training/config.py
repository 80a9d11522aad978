"""Every training option as data: one dataclass, and the CLI generated from it."""

from __future__ import annotations

import argparse
import dataclasses
import math
import textwrap
import typing

from keras_resnet import _cli
from keras_resnet.archs import ARCHS, STEMS

from training.data import DATASETS, SOURCES
from training.recipes import RECIPES

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
JIT_MODES = ("auto", "on", "off")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".keras")


def _opt(default, help: str, choices=None, metavar=None):
    return dataclasses.field(
        default=default, metadata={"help": help, "choices": choices, "metavar": metavar}
    )


@dataclasses.dataclass
class TrainConfig:
    # Model
    arch: str = _opt("resnet18", "architecture", sorted(ARCHS))
    recipe: str = _opt("auto", "the defaults of every option marked 'recipe' below: 'auto' "
                       "picks them from the data (see the recipes after the options), or a "
                       "recipe's name; an option you give always wins", ["auto", *RECIPES])
    stem: str | None = _opt(None, "stem: 'imagenet' (7x7/2 conv + max-pool, torchvision and the "
                            "seed code) or 'cifar' (3x3/1 conv, no pool: 16x the compute of "
                            "stage 1 at 28-32 px); recipe", list(STEMS))
    width: int | None = _opt(None, "base channel count (stage i has width*2**(i-1) filters; "
                             "64 = paper); recipe")
    zero_init_residual: bool | None = _opt(None, "start each block's last BN gamma at zero; "
                                           "recipe")
    weights: str | None = _opt(None, "start from these weights: a weight-set name "
                               "(IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT: the best of --arch; "
                               "torchvision's ResNet50_Weights.IMAGENET1K_V2; or one saved by "
                               "keras_resnet.weights.register(..., save=True); downloaded once "
                               "into $KERAS_HOME/models), a torchvision/PyTorch ResNet checkpoint "
                               "(.pth/.safetensors; its arch, stem, width and ImageNet "
                               "normalization are used) or a .keras model; the classifier is "
                               "replaced when the class count differs", metavar="NAME|FILE")
    freeze_stages: int = _opt(-1, "freeze the stem and stages 1..K (0 = the stem only; frozen "
                              "batch norm stays in inference mode); -1 = train everything",
                              metavar="K")
    # Data
    dataset: str = _opt("mnist", "dataset (digits works offline: scikit-learn's bundled "
                        "handwritten digits; synthetic is noise for smoke tests)", sorted(DATASETS))
    data_dir: str | None = _opt(None, "folder with archive files (DATA_DIR/mnist/*-idx?-ubyte.gz, "
                                "DATA_DIR/fashion_mnist/*-idx?-ubyte.gz: the four IDX files in "
                                "the dataset's subfolder, never directly in DATA_DIR, as the two "
                                "datasets share file names; DATA_DIR/cifar-10-binary.tar.gz, "
                                "...) and/or TFDS data; default: archives in ./data, TFDS in "
                                "~/tensorflow_datasets", metavar="DIR")
    source: str = _opt("auto", "where to read mnist/fashion_mnist/cifar from: 'auto' (archive "
                       "files in the data dir if present, else TFDS, downloading if online), "
                       "'archive' or 'tfds'", list(SOURCES))
    subset: int | None = _opt(None, "train on only this many training images (quick runs; "
                              "e.g. 5000 as in the seed code)", metavar="N")
    val_fraction: float = _opt(0.1, "fraction of the training split held out for validation "
                               "(fixed images); 0 validates on the test split")
    augment: bool = _opt(True, "augment training images in tf.data (MNIST-like: +-10 deg "
                         "rotation, +-10%% shift; CIFAR: 4 px pad + crop, horizontal flip; "
                         "folder: see --resize)")
    augment_strength: float | None = _opt(None, "scale of the MNIST-like and CIFAR "
                                          "augmentation: 1 = the ranges above, 0.5 = half "
                                          "(+-5 deg, +-5%%, 2 px); recipe")
    image_size: str | None = _opt(None, "H,W of --dataset folder: every image is brought to it "
                                  "(see --resize), e.g. 28,28 for digit scans, or 224,224 with "
                                  "ImageNet weights", metavar="H,W")
    channels: int = _opt(3, "channels of --dataset folder: 1 (images read as grayscale) or 3 "
                         "(RGB)", [1, 3])
    resize: str = _opt("auto", "how --dataset folder brings images to --image-size: 'crop' "
                       "(torchvision's recipe: evaluation resizes to cover the size/0.875 and "
                       "takes the centre; training takes a random-resized crop, 8-100%% of the "
                       "area, and a horizontal flip), 'stretch' (the whole image resized to H,W, "
                       "nothing cut off; training adds +-10 deg rotation and +-10%% shift, no "
                       "flip: for digits, letters, icons) or 'auto' (crop when both sides of "
                       "--image-size are >= 64 px, stretch below); recorded in config.json, "
                       "training.predict and export.predict use the same", ["auto", "crop",
                                                                             "stretch"])
    cache: str | None = _opt(None, "keep --dataset folder's decoded, resized images after the "
                             "first epoch: 'memory', or a file path prefix (tf.data cache files "
                             "named after the data and preprocessing); default: decode every "
                             "epoch, memory independent of the number of images",
                             metavar="memory|PATH")
    synthetic_shape: str = _opt("32,32,3", "H,W,C of --dataset synthetic", metavar="H,W,C")
    synthetic_classes: int = _opt(10, "classes of --dataset synthetic")
    # Optimisation
    epochs: int | None = _opt(None, "epochs to train; recipe")
    batch_size: int | None = _opt(None, "global batch size: split evenly over every replica of "
                                  "every worker (must divide by their number); keep --lr for "
                                  "the global batch (linear scaling rule: lr x k when the "
                                  "batch grows k times); recipe")
    optimizer: str | None = _opt(None, "'sgd' (momentum, optional Nesterov), 'adam' (L2 weight "
                                 "decay added to the gradient, as torch.optim.Adam) or 'adamw' "
                                 "(decoupled decay); recipe", list(OPTIMIZERS))
    lr: float | None = _opt(None, "peak learning rate; recipe")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool | None = _opt(None, "Nesterov momentum (SGD); recipe")
    weight_decay: float | None = _opt(None, "weight decay on conv/dense kernels only (never on "
                                      "BN gamma/beta or biases); recipe")
    schedule: str | None = _opt(None, "learning-rate schedule: 'step' (x step_gamma every "
                                "step_epochs, the seed's StepLR), 'cosine' (to 0, after "
                                "warmup) or 'constant'; recipe", list(SCHEDULES))
    step_epochs: int = _opt(7, "epochs between decays of the step schedule")
    step_gamma: float = _opt(0.1, "decay factor of the step schedule")
    warmup_epochs: float | None = _opt(None, "linear warm-up from 0 at the start of the cosine "
                                       "schedule (epochs, may be fractional); recipe")
    label_smoothing: float | None = _opt(None, "label smoothing of the cross-entropy loss; "
                                         "recipe")
    ema: float | None = _opt(None, "keep an exponential moving average of the weights with this "
                             "momentum (e.g. 0.99; 0 = off): validation, best.keras, the test "
                             "and export use the averaged weights; recipe")
    tta_flip: bool | None = _opt(None, "test accuracy averages the logits of each test image and "
                                 "its mirror image (both figures are recorded); recipe")
    # Execution
    precision: str = _opt("auto", "'auto' = mixed_float16 on a GPU; on a CPU mixed_bfloat16 where "
                          "it computes bfloat16 natively (avx512_bf16 or amx_bf16, oneDNN not "
                          "capped below it), float32 elsewhere (choice and reason printed and "
                          "recorded)",
                          list(PRECISIONS))
    jit_compile: str = _opt("auto", "XLA compilation of the train step: 'on', 'off' or 'auto' "
                            "(= on with a GPU, off on CPU, where XLA measured several times "
                            "slower for these models)",
                            list(JIT_MODES))
    strategy: str = _opt("auto", "tf.distribute strategy: 'multi_worker' "
                         "(MultiWorkerMirroredStrategy over the hosts in TF_CONFIG or a SLURM "
                         "job; see python -m training.launch), 'mirrored' (every local GPU, or "
                         "--cpu-replicas logical CPU devices), 'default' (one device) or 'auto' "
                         "(multi_worker with TF_CONFIG or SLURM_NTASKS > 1, mirrored with "
                         "several GPUs or --cpu-replicas > 1, else default)", list(STRATEGIES))
    cpu_replicas: int = _opt(1, "split the CPU into this many logical devices, one replica each "
                             "under 'mirrored' (emulates several GPUs on a machine without; "
                             "slower than one device)")
    batchnorm: str = _opt("sync", "BatchNorm statistics with several replicas: 'sync' (over the "
                          "global batch, as one device would: same results at any replica "
                          "count) or 'local' (per replica, torch DDP's default: no "
                          "all-reduce per layer)", ["sync", "local"])
    seed: int = _opt(0, "seed of weights init, shuffling and augmentation")
    deterministic: bool = _opt(False, "bit-reproducible runs (tf op determinism; slower)")
    run_dir: str | None = _opt(None, "output folder (default runs/ARCH-DATASET-TIMESTAMP)",
                               metavar="DIR")
    resume: bool = _opt(False, "continue the run in --run-dir from its last completed epoch, "
                        "with optimizer state and schedule position (re-run the same command "
                        "with --resume after a crash; only --epochs may change, which "
                        "stretches a cosine schedule)")
    verbose: str = _opt("auto", "Keras fit verbosity: auto (a progress bar on a terminal, else "
                        "one line per epoch), 0, 1 (bar), 2 (one line per epoch)",
                        ["auto", "0", "1", "2"])

    def validate(self) -> "TrainConfig":
        """Raises ValueError naming the command-line option of the first bad value."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise ValueError(f"{flag(f.name)}: unknown value {value!r}; expected one of "
                                 f"{choices}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{flag(f.name)} must be a finite number, got {value}")
        positive = ("width", "epochs", "batch_size", "step_epochs", "synthetic_classes",
                    "cpu_replicas")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be positive, got {getattr(self, name)}")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"--subset must be positive, got {self.subset}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("label_smoothing", "ema"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{flag(name)} must be in [0, 1), got {value}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "warmup_epochs", "momentum", "augment_strength"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.step_gamma <= 0:
            raise ValueError(f"--step-gamma must be > 0, got {self.step_gamma}")
        if self.resume and not self.run_dir:
            raise ValueError("--resume needs --run-dir (the run to continue)")
        self.synthetic_image_shape()
        if self.dataset == "folder":
            if not self.data_dir:
                raise ValueError("--dataset folder needs --data-dir DIR (DIR/<class>/* or "
                                 "DIR/train/<class>/* with DIR/test/<class>/*)")
            self.folder_image_shape()
        elif self.image_size is not None:
            raise ValueError(f"--image-size is for --dataset folder, not {self.dataset}")
        if self.dataset != "folder":
            for name, default in (("cache", None), ("resize", "auto")):
                if getattr(self, name) != default:
                    raise ValueError(f"{flag(name)} is for --dataset folder, not {self.dataset}")
        if self.cache not in (None, "memory"):
            from training.data.folder import check_cache

            check_cache(self.cache)
        if not -1 <= self.freeze_stages <= 4:
            raise ValueError(f"--freeze-stages must be -1 (none) or 0..4, got "
                             f"{self.freeze_stages}")
        if self.weights is not None and not self.weights.endswith(WEIGHT_SUFFIXES):
            from training.weightsets import is_name

            if not is_name(self.weights):
                raise ValueError(f"--weights {self.weights}: expected a weight-set name (e.g. "
                                 f"IMAGENET1K_V2) or a {', '.join(WEIGHT_SUFFIXES)} file")
        return self

    def folder_image_shape(self) -> tuple:
        """(H, W, C) of --dataset folder from --image-size and --channels."""
        try:
            size = tuple(int(v) for v in (self.image_size or "").split(","))
        except ValueError:
            size = ()
        if len(size) != 2 or min(size) < 1:
            got = f", got {self.image_size!r}" if self.image_size is not None else ""
            raise ValueError("--dataset folder needs --image-size H,W (every image is resized "
                             f"to it){got}")
        return (*size, self.channels)

    def data_options(self) -> dict:
        """The keyword arguments of training.data.load_pipelines that only some datasets take."""
        if self.dataset == "synthetic":
            return dict(image_shape=self.synthetic_image_shape(),
                        num_classes=self.synthetic_classes)
        if self.dataset == "folder":
            return dict(image_shape=self.folder_image_shape(), resize=self.resize,
                        cache=self.cache)
        return {}

    def synthetic_image_shape(self) -> tuple:
        try:
            shape = tuple(int(s) for s in self.synthetic_shape.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"--synthetic-shape must be H,W,C, got {self.synthetic_shape!r}")
        return shape

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved(self, steps_per_epoch: int | None = None) -> "TrainConfig":
        """This config with the recipe's value in every option left unset; a recipe's epochs
        rule needs `steps_per_epoch` (else it takes its lower bound)."""
        from training import recipes

        cfg, resolution = recipes.resolve(self)
        if cfg.epochs is None:
            rule = resolution.epochs_rule
            cfg = dataclasses.replace(cfg, epochs=rule.count(steps_per_epoch) if steps_per_epoch
                                      else rule.lo)
        return cfg


def flag(name: str) -> str:
    """The command-line option of a TrainConfig field."""
    return "--" + name.replace("_", "-")


def finite_float(text: str) -> float:
    """argparse type: a float, but not nan/inf, which no option has a use for and which would
    otherwise only show up as a NaN loss (or not at all) once training runs."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _base_type(annotation):
    hint = annotation if not isinstance(annotation, str) else eval(  # noqa: S307 - own annotations
        annotation, {"typing": typing})
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


EXIT_CODES = """exit status: 0 trained and reported; 2 bad input or usage (an option, the data, the
run directory: the one-line message says which and what to do); 3 training diverged (NaN/inf or
exploding loss; the message names the last good checkpoint); 1 another worker of a
multi-worker run was lost (one line; --resume continues) or an internal error (a bug: please
report the traceback)."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown, except the recipe's options (their default depends on the data, said in
    the epilog); the epilog's paragraphs keep their line breaks."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser(description: str | None = None, epilog: str | None = EXIT_CODES
                 ) -> argparse.ArgumentParser:
    from training.recipes import help_text

    if epilog is not None:
        epilog = textwrap.fill(" ".join(epilog.split()), 100) + "\n\n" + help_text()
    parser = _cli.ArgumentParser(
        prog="python -m training.fit", description=description, epilog=epilog,
        formatter_class=_HelpFormatter,
    )
    for f in dataclasses.fields(TrainConfig):
        option = flag(f.name)
        kind = _base_type(f.type)
        kwargs = dict(default=f.default, help=f.metadata["help"], dest=f.name)
        if kind is bool:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if f.metadata.get("metavar"):
            kwargs["metavar"] = f.metadata["metavar"]
        types = {float: finite_float, int: _cli.bounded_int}
        parser.add_argument(option, type=types.get(kind, kind), **kwargs)
    # Not a TrainConfig field: how much TensorFlow logs is no part of a run's recipe.
    _cli.add_log_level_argument(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The validated TrainConfig of parsed options (CLI-only ones such as --log-level left out)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names}).validate()


def parse_args(argv=None) -> TrainConfig:
    return config_from_args(build_parser().parse_args(argv))
