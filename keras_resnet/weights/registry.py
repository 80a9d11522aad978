"""The weight sets known by name: torchvision's (``_torchvision``) and the user's (``register``).

Standard library only: the CLIs resolve a name (and tell a name from a file) before loading
TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import threading
import urllib.parse
import warnings
from collections.abc import Sequence
from importlib import resources

from keras_resnet.archs import ARCHS
from keras_resnet.weights import saved
from keras_resnet.weights.errors import (  # noqa: F401  (their public home is here too)
    WeightsError,
    WeightsHashMismatch,
    WeightsUnavailable,
)
from keras_resnet.weights.saved import keras_home, saved_path  # noqa: F401
from keras_resnet.weights._torchvision import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCHVISION_DEFAULTS,
    TORCHVISION_WEIGHTS,
    TORCHVISION_WEIGHTS_ENUMS,
)

DEFAULT = "DEFAULT"
# The checkpoint formats the converter reads (keras_resnet.convert.formats) and the Keras files
# the CLIs take: a --weights value ending so is a file, never a name.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
FILE_SUFFIXES = (*CHECKPOINT_SUFFIXES, ".keras", ".h5", ".npz")
# torch.hub's HASH_REGEX: the hex digits between the last "-" and the suffix of a file name.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_HEX = re.compile(r"[0-9a-f]+")
MIN_HASH_DIGITS = 8
# What may stand before the dot of a qualified name, lower-cased: an arch (``resnet50.NAME``) or
# torchvision's enum (``ResNeXt50_32X4D_Weights.IMAGENET1K_V2``).
_ARCH_OF_QUALIFIER = {**{a: a for a in ARCHS},
                      **{enum.lower(): a for a, enum in TORCHVISION_WEIGHTS_ENUMS.items()}}
# The longest image side a transform may resize to: far above any ImageNet recipe's, and low
# enough that one resized RGB image (float32) stays under a gigabyte.
MAX_RESIZE_SIZE = 8192
# A class name is shown on one line beside its score; a head of more classes than this is no
# ImageNet-style classifier (ImageNet-21k has 21,841).
MAX_CATEGORIES = 100_000
MAX_CATEGORY_CHARS = 200


@dataclasses.dataclass(frozen=True)
class WeightSet:
    """One named set of weights for one arch, with its evaluation transform and classes.

    ``sha256``: the full sha256 of the file, or a prefix of it (torchvision publishes the first
    8 hex digits in the file name); a file is used only if its sha256 starts with it.
    ``resize_size``, ``crop_size``, ``mean``, ``std``: torchvision's ``ImageClassification``
    (shorter side resized to ``resize_size`` with antialiased bilinear interpolation, center crop
    ``crop_size``, ``(x / 255 - mean) / std``). The figures (``num_params``, ``acc1``/``acc5``
    on ImageNet-1K val, ``gflops``, ``file_size_mb``, ``recipe``) are torchvision's, None for
    the user's own sets.
    """

    name: str
    arch: str
    url: str
    sha256: str
    categories: tuple[str, ...] = dataclasses.field(repr=False)
    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_params: int | None = None
    acc1: float | None = None
    acc5: float | None = None
    gflops: float | None = None
    file_size_mb: float | None = None
    recipe: str | None = None
    docs: str = dataclasses.field(default="", repr=False)
    builtin: bool = False

    @property
    def qualified_name(self) -> str:
        """``ResNet50_Weights.IMAGENET1K_V2`` (torchvision's spelling) for torchvision's sets,
        ``resnet50.NAME`` for the user's: unique across archs, accepted by ``get``."""
        if self.builtin:
            return f"{TORCHVISION_WEIGHTS_ENUMS[self.arch]}.{self.name}"
        return f"{self.arch}.{self.name}"

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def file_name(self) -> str:
        """The name of the downloaded file in the cache: the URL's own name when it holds a
        prefix of the hash (torchvision's, so torch.hub's cache and ours agree), else the
        URL's name with the first 8 hex digits of the hash added."""
        base = _url_file_name(self.url)
        found = _HASH_IN_NAME.search(base)
        if found and (self.sha256.startswith(found.group(1))
                      or found.group(1).startswith(self.sha256)):
            return base
        stem, suffix = os.path.splitext(base)
        return f"{stem}-{self.sha256[:MIN_HASH_DIGITS]}{suffix}"

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) in raw 0..255 pixel units: ``build_resnet(normalization=...)``."""
        return (tuple(m * 255 for m in self.mean), tuple(s * 255 for s in self.std))

    def transform_config(self) -> dict:
        """The evaluation transform as plain data (JSON-ready): what ``transform`` takes."""
        return {"resize_size": self.resize_size, "crop_size": self.crop_size,
                "interpolation": "bilinear", "antialias": True,
                "mean": list(self.mean), "std": list(self.std)}

    def describe(self) -> dict:
        """Everything known about the set as plain data (for a run record or a manifest)."""
        return {"name": self.name, "qualified_name": self.qualified_name, "arch": self.arch,
                "url": self.url, "sha256": self.sha256, "num_classes": self.num_classes,
                "num_params": self.num_params,
                "metrics": {"ImageNet-1K": {"acc@1": self.acc1, "acc@5": self.acc5}}
                if self.acc1 is not None else None,
                "gflops": self.gflops, "file_size_mb": self.file_size_mb, "recipe": self.recipe,
                "transform": self.transform_config(), "builtin": self.builtin}


def _url_file_name(url: str) -> str:
    return os.path.basename(urllib.parse.urlsplit(url).path)


@functools.cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1K class names in torchvision's order (``weights.meta["categories"]``),
    read from the package's data file."""
    text = (resources.files("keras_resnet.weights") / "imagenet_categories.txt").read_text(
        encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:  # a damaged install: say so rather than misname every class
        raise RuntimeError(f"keras_resnet/weights/imagenet_categories.txt holds {len(names)} "
                           "names, not 1000: reinstall keras_resnet")
    return names


_lock = threading.Lock()
_user: dict[tuple[str, str], WeightSet] = {}  # (arch, name) -> the user's set


@functools.cache
def _builtin() -> dict[tuple[str, str], WeightSet]:
    table = {}
    for row in TORCHVISION_WEIGHTS:
        ws = WeightSet(sha256=_HASH_IN_NAME.search(_url_file_name(row["url"])).group(1),
                       categories=imagenet_categories(), builtin=True, **row)
        table[(ws.arch, ws.name)] = ws
    return table


def all_weights() -> list[WeightSet]:
    """Every known set: torchvision's, those saved by ``register(..., save=True)`` (in
    ``saved_path()``), then those registered in this process (which win over a saved set of
    the same arch and name)."""
    found = {(ws.arch, ws.name): ws for ws in _read_saved()}
    with _lock:
        found.update(_user)
        return [*_builtin().values(), *found.values()]


def names(arch: str | None = None) -> list[str]:
    """The names ``get`` takes for ``arch`` (every arch when None), ``DEFAULT`` included."""
    sets = [ws for ws in all_weights() if arch is None or ws.arch == arch]
    found = list(dict.fromkeys(ws.name for ws in sets))
    if arch is None or arch in TORCHVISION_DEFAULTS:
        found.append(DEFAULT)
    return found


def looks_like_name(text) -> bool:
    """Whether a ``--weights``/``weights=`` value is a weight set's name rather than a file.

    A name is a single word of letters, digits, ``_``, ``-`` and ``.`` (``IMAGENET1K_V2``,
    ``DEFAULT``, ``ResNet50_Weights.IMAGENET1K_V2``, a registered ``my-set``) that is not an
    existing path and does not end in a model or checkpoint file suffix (.keras, .h5, .pth,
    .safetensors...); a dotted word is a name only when it starts with an arch
    (``resnet50.NAME``) or a known set carries it. Unknown names count as names too, so that a typo is told the known
    names instead of "no such file".
    """
    if not isinstance(text, str) or not _NAME.fullmatch(text):
        return False
    if text.lower().endswith(FILE_SUFFIXES) or os.path.exists(text):
        return False
    if "." in text and _split_qualified(text)[0] is None:
        # "notes.txt" is a file with an unexpected suffix, unless a set carries that name
        return text in names()
    return True


def _split_qualified(name: str) -> tuple[str | None, str]:
    """(arch, name) of ``ResNet50_Weights.IMAGENET1K_V2`` or ``resnet50.NAME``; (None, name)
    for a plain name."""
    head, dot, tail = name.partition(".")
    if dot and tail:
        arch = _ARCH_OF_QUALIFIER.get(head.lower())
        if arch is not None:
            return arch, tail
    return None, name


def get(name, arch: str | None = None) -> WeightSet:
    """The weight set called ``name`` for ``arch``.

    ``name``: ``IMAGENET1K_V1``, ``IMAGENET1K_V2``, ``DEFAULT`` (torchvision's best set for the
    arch), a name given to ``register``, or the qualified ``ResNet50_Weights.IMAGENET1K_V2`` /
    ``resnet50.NAME``, which name the arch themselves; a ``WeightSet`` is returned as it is.
    Names are matched exactly, then ignoring case. ``arch`` may be left out when the name
    belongs to one arch only.

    Raises WeightsError (one line) for an unknown name, a name of another arch, or a name that
    several archs have while ``arch`` is None.
    """
    if isinstance(name, WeightSet):
        if arch is not None and name.arch != arch:
            raise WeightsError(f"weight set {name.qualified_name} is for {name.arch}, not {arch}")
        return name
    if not isinstance(name, str) or not name:
        raise WeightsError(f"a weight set's name must be a non-empty string, got {name!r}")
    if arch is not None and arch not in ARCHS:
        raise WeightsError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    named_arch, short = _split_qualified(name)
    if named_arch is not None:
        if arch is not None and named_arch != arch:
            raise WeightsError(f"weight set {name} is for {named_arch}, not {arch}")
        arch = named_arch
    sets = all_weights()
    if short.upper() == DEFAULT:
        if arch is None:
            raise WeightsError("weights 'DEFAULT' needs an arch (torchvision's best set for it: "
                               + ", ".join(f"{a} {n}" for a, n in TORCHVISION_DEFAULTS.items())
                               + ")")
        short = TORCHVISION_DEFAULTS[arch]
    matches = [ws for ws in sets if ws.name == short]
    if not matches:
        matches = [ws for ws in sets if ws.name.lower() == short.lower()]
    if arch is not None:
        mine = [ws for ws in matches if ws.arch == arch]
        if mine:
            return mine[0]
        known = ", ".join(names(arch))
        if matches:
            others = ", ".join(ws.arch for ws in matches)
            raise WeightsError(f"weight set {name!r} is not one of {arch}'s ({known}); it "
                               f"exists for {others}")
        raise WeightsError(f"unknown weight set {name!r} for {arch}; known: {known}"
                           f"{_not_a_file(name)}")
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise WeightsError(
            f"weight set {name!r} exists for {', '.join(ws.arch for ws in matches)}: give the "
            f"arch, or the full name ({', '.join(ws.qualified_name for ws in matches)})")
    raise WeightsError(f"unknown weight set {name!r}; known: "
                       + ", ".join(dict.fromkeys(ws.qualified_name for ws in sets))
                       + _not_a_file(name))


def categories(name, arch: str | None = None) -> list[str]:
    """The class names of weight set ``name`` (see ``get``), in the order of its logits."""
    return list(get(name, arch).categories)


def _not_a_file(name: str) -> str:
    return f" (and no file named {name!r} exists)" if looks_like_name(name) else ""


def _check_hash(sha256) -> str:
    if not isinstance(sha256, str) or not _HEX.fullmatch(sha256.lower()) \
            or not MIN_HASH_DIGITS <= len(sha256) <= 64:
        raise WeightsError(f"sha256 must be the file's sha256 in hex, whole (64 digits) or its "
                           f"first {MIN_HASH_DIGITS} or more digits, got {sha256!r}")
    return sha256.lower()


def register(name: str, *, arch: str, url: str, sha256: str,
             categories: Sequence[str] | None = None, resize_size: int = 256,
             crop_size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
             std: Sequence[float] = IMAGENET_STD, save: bool = False) -> WeightSet:
    """Adds a weight set usable by name wherever torchvision's are.

    ``url``: where the checkpoint is (http(s)://, file://); a torchvision-style state_dict
    saved as .pth/.pt/.bin/.ckpt (read by torch's ``weights_only`` rule) or
    .safetensors. ``sha256``: the file's full sha256 or a prefix of at least 8 hex digits.
    ``categories``: the name of each class the checkpoint's classifier predicts (default: the
    1000 ImageNet-1K categories). ``resize_size``, ``crop_size``, ``mean``, ``std``: the
    evaluation transform (torchvision's ``ImageClassification``). ``save``: also write it to
    ``saved_path()`` (``$KERAS_HOME/keras_resnet/weights.json``), which every later process
    reads: the CLIs (``--weights NAME``) then know it too.

    Registering a name again for the same arch replaces the user's earlier set; torchvision's
    names cannot be replaced. Returns the new ``WeightSet``.
    """
    ws = _make_set(name, arch, url, sha256, categories, resize_size, crop_size, mean, std)
    if save:
        before = _update_saved(arch, name, ws)
        if before is not None and before != ws:
            warnings.warn(f"register: replaced the saved weight set {ws.qualified_name} (url "
                          f"{before.url}, sha256 {before.sha256}) in {saved_path()}",
                          stacklevel=2)
    with _lock:
        _user[(arch, name)] = ws
    return ws


def unregister(name: str, arch: str) -> None:
    """Removes a set added by ``register``, from this process and from ``saved_path()`` (no
    error when there is none)."""
    with _lock:
        _user.pop((arch, name), None)
    if any((s.arch, s.name) == (arch, name) for s in _read_saved()):
        _update_saved(arch, name, None)


def _make_set(name, arch, url, sha256, categories, resize_size, crop_size, mean,
              std) -> WeightSet:
    """A user's WeightSet from ``register``'s arguments, checked (ValueError naming what is
    wrong)."""
    if arch not in ARCHS:
        raise WeightsError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or "." in name \
            or name.upper() == DEFAULT or name.lower().endswith(FILE_SUFFIXES):
        raise WeightsError(f"a weight set's name must be a word of letters, digits, '_' and '-' "
                         f"(not {DEFAULT!r}), got {name!r}")
    if any(k[0] == arch and k[1].lower() == name.lower() for k in _builtin()):
        raise WeightsError(f"{name!r} is torchvision's {arch} weight set; register yours under "
                         "another name")
    sha256 = _check_hash(sha256)
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https",
                                                                             "file"):
        raise WeightsError(f"url must be an http://, https:// or file:// URL, got {url!r}")
    if not _url_file_name(url).lower().endswith(CHECKPOINT_SUFFIXES):
        raise WeightsError(f"url must name a checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}), "
                         f"got {url!r}")
    return WeightSet(name=name, arch=arch, url=url, sha256=sha256,
                     categories=_check_categories(categories),
                     **check_transform(resize_size, crop_size, mean, std))


def _check_categories(categories) -> tuple[str, ...]:
    if categories is None:
        return imagenet_categories()
    if isinstance(categories, str) or not isinstance(categories, Sequence):
        raise WeightsError(f"categories must be a list of class names, got {categories!r:.80}")
    categories = tuple(categories)
    if not categories or len(categories) > MAX_CATEGORIES:
        raise WeightsError(f"categories must hold 1 to {MAX_CATEGORIES} class names, got "
                           f"{len(categories)}")
    bad = [c for c in categories if not isinstance(c, str) or not c or not c.isprintable()
           or len(c) > MAX_CATEGORY_CHARS]
    if bad:
        raise WeightsError(f"categories must be non-empty printable strings of at most "
                           f"{MAX_CATEGORY_CHARS} characters (one line each), got "
                           f"{bad[0]!r:.80}")
    if len(set(categories)) != len(categories):
        raise WeightsError("categories must be distinct, one per class")
    return categories


def check_transform(resize_size, crop_size, mean, std) -> dict:
    """A weight set's evaluation transform, checked (WeightsError naming the field): sizes
    whole numbers in 1..MAX_RESIZE_SIZE with the crop inside the resize, and the mean and std
    of each of 3 channels finite numbers in torchvision's 0..1 pixel units."""
    for label, value in (("resize_size", resize_size), ("crop_size", crop_size)):
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 1 <= value <= MAX_RESIZE_SIZE:
            raise WeightsError(f"{label} must be a whole number of pixels in 1..{MAX_RESIZE_SIZE}"
                               f", got {value!r:.40}")
    if resize_size < crop_size:
        raise WeightsError(f"resize_size {resize_size} must be at least crop_size {crop_size}")
    values = {}
    for label, value, low_ok in (("mean", mean, True), ("std", std, False)):
        try:
            numbers = tuple(value)
            if len(numbers) != 3 or any(isinstance(v, (bool, str)) for v in numbers):
                raise TypeError
            numbers = tuple(float(v) for v in numbers)
        except (TypeError, ValueError):
            raise WeightsError(f"{label} must be 3 numbers, one per RGB channel, got "
                               f"{value!r:.80}") from None
        if not all(math.isfinite(v) and (0 <= v if low_ok else 0 < v) and v <= 1
                   for v in numbers):
            bounds = "[0, 1]" if low_ok else "(0, 1]"
            raise WeightsError(f"{label} must be 3 finite numbers in {bounds} (0..1 pixel "
                               f"units, as torchvision's), got {list(numbers)}")
        values[label] = numbers
    return {"resize_size": resize_size, "crop_size": crop_size, **values}




# ------------------------------------------------------------------------------------------
# Sets saved for every process (keras_resnet.weights.saved holds the file).


_REQUIRED = ("name", "arch", "url", "sha256")
_OPTIONAL = {"categories": None, "resize_size": 256, "crop_size": 224, "mean": IMAGENET_MEAN,
             "std": IMAGENET_STD}


def _sets_of(path, rows: list) -> tuple[WeightSet, ...]:
    sets = []
    for row in rows:
        missing = [k for k in _REQUIRED if k not in row]
        unknown = sorted(set(row) - {*_REQUIRED, *_OPTIONAL})
        try:
            if missing or unknown:
                raise WeightsError(f"fields {missing or unknown} are "
                                   + ("missing" if missing else "unknown"))
            sets.append(_make_set(**{**_OPTIONAL, **row}))
        except (TypeError, ValueError) as err:
            raise WeightsError(f"{path} holds a weight set that register would refuse ({err}); "
                               "fix or delete it") from None
    return tuple(sets)


def _read_saved(fresh: bool = False) -> tuple[WeightSet, ...]:
    return saved.read(_sets_of, fresh)


def _row(ws: WeightSet) -> dict:
    return {"name": ws.name, "arch": ws.arch, "url": ws.url, "sha256": ws.sha256,
            "categories": None if ws.categories == imagenet_categories() else list(ws.categories),
            "resize_size": ws.resize_size, "crop_size": ws.crop_size,
            "mean": list(ws.mean), "std": list(ws.std)}


def _update_saved(arch: str, name: str, ws: WeightSet | None) -> WeightSet | None:
    """Replaces (``ws``) or removes (None) the saved set ``(arch, name)``, under the file's lock;
    returns the saved set it replaced, if any."""
    with saved.locked():
        sets = _read_saved(fresh=True)
        before = next((s for s in sets if (s.arch, s.name) == (arch, name)), None)
        if ws is None and before is None:
            return None
        kept = [s for s in sets if (s.arch, s.name) != (arch, name)]
        saved.write([_row(s) for s in kept + ([ws] if ws is not None else [])])
        _read_saved(fresh=True)  # its new stamp: this process need not parse it again
        return before
