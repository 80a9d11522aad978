"""Default recipes: what a run trains with when the user leaves an option unset.

Each kind of data gets its own recipe (the `RECIPES` table); `--recipe auto` picks it from the
dataset, the image size and --weights, and any option given on the command line wins over it.
The resolved values, the recipe's name and which values came from where are recorded in
config.json, so a run can be repeated with the recipe changed or not.

Sources of the choices (cited in `--help` and README):
- "How to train your ResNet" (D. Page, 2018) and airbench (K. Jordan, 2024): SGD with Nesterov
  momentum, a short warm-up then a decaying rate, label smoothing, weight decay on kernels,
  flip augmentation at test time for natural images;
- torchvision's reference classification recipes (references/classification, "How to train
  state-of-the-art models using TorchVision's latest primitives", 2021): cosine schedule with
  linear warm-up, label smoothing 0.1, weight decay 1e-4 (kernels only), zero-init residual,
  weight EMA, lr 0.1 per 256 images and 0.01 for fine-tuning;
- the seed code (Adam 1e-3, StepLR 7/0.1, 10 epochs of batch 128): `--recipe seed`.
"""

from __future__ import annotations

import dataclasses
import math

# The options a recipe may set. Every other option has one default for all data.
RECIPE_FIELDS = ("stem", "width", "zero_init_residual", "epochs", "batch_size", "optimizer",
                 "lr", "nesterov", "weight_decay", "schedule", "warmup_epochs",
                 "label_smoothing", "augment_strength", "ema", "tta_flip")

# Small data needs many passes: a recipe's epochs are "at least this many optimizer steps",
# within a range of epochs, so 1,300 digit scans and MNIST's 54,000 images both get a
# schedule long enough to converge and no longer than needed.


@dataclasses.dataclass(frozen=True)
class Epochs:
    """Epochs as a step budget: enough epochs for `min_steps` optimizer steps, clamped to
    [lo, hi]."""

    min_steps: int
    lo: int
    hi: int

    def count(self, steps_per_epoch: int) -> int:
        return max(self.lo, min(self.hi, math.ceil(self.min_steps / max(1, steps_per_epoch))))

    def describe(self) -> str:
        return f"enough for {self.min_steps} steps, {self.lo}-{self.hi} epochs"


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    data: str  # the kind of data it is for (help text)
    sources: str  # where its choices come from (help text, config.json)
    values: dict


_SMALL_GREY = dict(
    optimizer="sgd", lr=0.1, nesterov=True, schedule="cosine", warmup_epochs=1.0,
    label_smoothing=0.1, weight_decay=5e-4, batch_size=64, augment_strength=1.0,
    ema=0.0, zero_init_residual=False, tta_flip=False,
)

RECIPES = {
    "digits": Recipe(
        "digits", "scikit-learn's digits (1,438 scans of 28x28 grey)",
        "How to train your ResNet / airbench (SGD-Nesterov, warm-up + decay, label smoothing "
        "0.1, weight decay 5e-4), chosen on validation data; no flip (digits are not "
        "symmetric)",
        dict(_SMALL_GREY, stem="imagenet", width=16, epochs=Epochs(420, 20, 60))),
    "mnist": Recipe(
        "mnist", "MNIST-like 28x28 grey images (mnist, fashion_mnist)",
        "as digits (the CIFAR stem, 3x3/1 without pool, keeps 28x28 maps for stage 1 but costs "
        "16x its compute: --stem cifar)",
        dict(_SMALL_GREY, stem="imagenet", width=16, epochs=Epochs(420, 6, 60))),
    "cifar": Recipe(
        "cifar", "CIFAR-like 32x32 RGB images (cifar10, cifar100)",
        "How to train your ResNet / airbench / torchvision's references: SGD-Nesterov lr 0.1 "
        "per 128 images, 2 warm-up epochs then cosine, label smoothing 0.1, weight decay 5e-4, "
        "zero-init residual, pad-4 crop + flip, flip at test time (not measured here: no "
        "CIFAR data can be downloaded)",
        dict(stem="cifar", width=64, zero_init_residual=True, epochs=30, batch_size=128,
             optimizer="sgd", lr=0.1, nesterov=True, weight_decay=5e-4, schedule="cosine",
             warmup_epochs=2.0, label_smoothing=0.1, augment_strength=1.0, ema=0.0,
             tta_flip=True)),
    "folder-small": Recipe(
        "folder-small", "image folders below 64 px (--resize stretch: scans, icons, letters)",
        "as digits (rotation + shift, no flip: such images are rarely symmetric)",
        dict(_SMALL_GREY, stem="imagenet", width=16, epochs=Epochs(420, 10, 60))),
    "folder": Recipe(
        "folder", "image folders of 64 px and more, trained from scratch (--resize crop)",
        "torchvision's reference recipe scaled to small data: SGD-Nesterov lr 0.1 per 256 "
        "images, 2 warm-up epochs then cosine, label smoothing 0.1, weight decay 1e-4, "
        "zero-init residual, random-resized crop + flip, flip at test time",
        dict(stem="imagenet", width=64, zero_init_residual=True, epochs=Epochs(2000, 15, 90),
             batch_size=64, optimizer="sgd", lr=0.025, nesterov=True, weight_decay=1e-4,
             schedule="cosine", warmup_epochs=2.0, label_smoothing=0.1, augment_strength=1.0,
             ema=0.0, tta_flip=True)),
    "finetune": Recipe(
        "finetune", "any data starting from --weights (ImageNet sets, checkpoints, .keras)",
        "torchvision's fine-tuning practice: SGD-Nesterov lr 0.01 per 64 images, 1 warm-up "
        "epoch then cosine, label smoothing 0.1, weight decay 1e-4; flip at test time for "
        "RGB images cropped from photos",
        dict(stem="imagenet", width=64, zero_init_residual=False, epochs=10, batch_size=64,
             optimizer="sgd", lr=0.01, nesterov=True, weight_decay=1e-4, schedule="cosine",
             warmup_epochs=1.0, label_smoothing=0.1, augment_strength=1.0, ema=0.0,
             tta_flip=None)),
    "seed": Recipe(
        "seed", "the seed code's recipe, for any data (and synthetic noise)",
        "the seed code: Adam 1e-3, StepLR 7/0.1, batch 128, 10 epochs, weight decay 1e-4",
        dict(stem="imagenet", width=64, zero_init_residual=False, epochs=10, batch_size=128,
             optimizer="adam", lr=1e-3, nesterov=False, weight_decay=1e-4, schedule="step",
             warmup_epochs=0.0, label_smoothing=0.0, augment_strength=1.0, ema=0.0,
             tta_flip=False)),
}
assert all(set(r.values) == set(RECIPE_FIELDS) for r in RECIPES.values())


def choose(cfg) -> tuple[str, str]:
    """(recipe name, why) for a config's data and weights; `--recipe NAME` is taken as is."""
    if cfg.recipe != "auto":
        return cfg.recipe, "asked for (--recipe)"
    if cfg.weights:
        return "finetune", "--weights given"
    if cfg.dataset == "digits":
        return "digits", "--dataset digits"
    if cfg.dataset in ("mnist", "fashion_mnist"):
        return "mnist", f"--dataset {cfg.dataset}"
    if cfg.dataset in ("cifar10", "cifar100"):
        return "cifar", f"--dataset {cfg.dataset}"
    if cfg.dataset == "folder":
        small = min(cfg.folder_image_shape()[:2]) < 64
        return ("folder-small", "an image folder below 64 px") if small else (
            "folder", "an image folder of 64 px or more")
    return "seed", f"--dataset {cfg.dataset}"


def resolve(cfg):
    """(config with every recipe option set, Resolution). Options the user gave are kept;
    `epochs` may stay an `Epochs` rule until the data's size is known (`Resolution.epochs`)."""
    name, why = choose(cfg)
    recipe = RECIPES[name]
    explicit = [f for f in RECIPE_FIELDS if getattr(cfg, f) is not None]
    filled = {f: recipe.values[f] for f in RECIPE_FIELDS if getattr(cfg, f) is None}
    if filled.get("tta_flip", False) is None:
        filled["tta_flip"] = _flip_allowed(cfg)
    rule = filled.pop("epochs", None)
    if isinstance(rule, int):
        filled["epochs"], rule = rule, None
    resolved = dataclasses.replace(cfg, **filled)
    return resolved, Resolution(name, why, recipe.sources, explicit, rule)


def _flip_allowed(cfg) -> bool:
    """Test-time flip for the fine-tuning recipe: RGB images cropped from photos only."""
    if cfg.dataset in ("cifar10", "cifar100"):
        return True
    if cfg.dataset == "folder":
        return cfg.channels == 3 and min(cfg.folder_image_shape()[:2]) >= 64
    return False


@dataclasses.dataclass
class Resolution:
    """What the recipe decided, for config.json and the run's first lines."""

    name: str
    why: str
    sources: str
    explicit: list
    epochs_rule: Epochs | None

    def epochs(self, steps_per_epoch: int) -> int | None:
        return None if self.epochs_rule is None else self.epochs_rule.count(steps_per_epoch)

    def record(self, cfg) -> dict:
        return {"name": self.name, "chosen_because": self.why, "sources": self.sources,
                "explicit": list(self.explicit),
                "epochs_rule": None if self.epochs_rule is None else self.epochs_rule.describe(),
                "values": {f: getattr(cfg, f) for f in RECIPE_FIELDS}}

    def line(self, cfg) -> str:
        """The run's first words on its recipe, as the options that would give it."""
        def option(f):
            value, name = getattr(cfg, f), "--" + f.replace("_", "-")
            if isinstance(value, bool):
                return name if value else "--no-" + name[2:]
            return f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"

        shown = " ".join(option(f) for f in RECIPE_FIELDS if f not in self.explicit)
        given = (" (given: " + " ".join(option(f) for f in self.explicit) + ")"
                 if self.explicit else "")
        return f"recipe {self.name} ({self.why}): {shown}{given}"


def help_text() -> str:
    """The recipes for --help's epilog: what each kind of data gets and where it comes from."""
    import textwrap

    lines = ["recipes (--recipe auto picks one from the data; an option you give always wins):"]
    for r in RECIPES.values():
        v = r.values
        epochs = v["epochs"].describe() if isinstance(v["epochs"], Epochs) else f"{v['epochs']}"
        lines += textwrap.wrap(
            f"{r.name}: {r.data}. {v['optimizer']} lr {v['lr']}"
            + (" nesterov" if v["nesterov"] else "")
            + f", {v['schedule']}" + (f" after {v['warmup_epochs']:g} warm-up epoch(s)"
                                      if v["warmup_epochs"] else "")
            + f", batch {v['batch_size']}, epochs {epochs}, label smoothing "
            f"{v['label_smoothing']}, weight decay {v['weight_decay']}, stem {v['stem']} width "
            f"{v['width']}, zero-init residual {v['zero_init_residual']}, EMA {v['ema'] or 'off'}, "
            f"test-time flip {'where the images allow' if v['tta_flip'] is None else v['tta_flip']}. "
            f"Source: {r.sources}.", 100, initial_indent="  ", subsequent_indent="    ",
            break_on_hyphens=False)
    return "\n".join(lines)
