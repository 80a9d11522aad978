"""Opening a .keras file with our layers registered, and naming a bad file in one line.

``keras.models.load_model`` in a process that has not imported keras_resnet fails with a
Functional deserialization error, and Keras calls a truncated archive "not found"; every CLI
and library entry point loads models through here instead.
"""

from __future__ import annotations

import json
import os
import zipfile

from keras_resnet import _cli
from keras_resnet.archs import ARCHS, NUM_STAGES, inner_width

# What Keras 3 writes into every .keras archive.
KERAS_MEMBERS = ("config.json", "model.weights.h5")
WEIGHTS_MEMBER = "model.weights.h5"
# Keras reads a member whole into memory (the weights too, when they fit in half the RAM), so
# a few megabytes of archive can inflate to gigabytes: every size is checked, as the archive
# declares it, before a byte is inflated. config.json and metadata.json are text of a few KiB
# (a ResNet's, class names included); no member but the weights has a reason to be larger.
MAX_MEMBER_BYTES = 16 * 2**20
# The weights of a ResNet: its variables, an optimizer's (Adam keeps two per variable, AMSGrad
# three) and an EMA copy, at 4 bytes each (8 under a float64 policy), plus HDF5's headers.
WEIGHTS_COPIES = 5
WEIGHTS_OVERHEAD_BYTES = 16 * 2**20
# A model keras_resnet did not build: its parameters are not counted, so this flat cap (a
# model of 100M float32 parameters with Adam's state is 1.2 GB) bounds its weights instead.
DEFAULT_MAX_WEIGHTS_BYTES = 2 * 2**30
# Replaces either limit of the weights member.
MAX_WEIGHTS_VARIABLE = "KERAS_RESNET_MAX_WEIGHTS_BYTES"


class ModelFileError(ValueError):
    """A model file that is missing or cannot be loaded; the message names it and the fault."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def resnet_parameters(config: dict) -> int:
    """How many numbers the variables of the ResNet with builder config `config` hold
    (trainable and not: BatchNorm's moving statistics count), from the ARCHS table alone."""
    block, depths, groups, per_group = ARCHS[config["arch"]]
    width, channels = int(config["width"]), int(config["input_shape"][-1])
    kernel = 7 if config.get("stem", "imagenet") == "imagenet" else 3
    bn = 4  # gamma, beta, moving mean, moving variance per channel
    total = kernel * kernel * channels * width + bn * width
    cin = width
    for stage, depth in enumerate(depths[:NUM_STAGES]):
        f = width * 2**stage
        cout = f if block == "basic" else 4 * f
        mid = inner_width(f, groups, per_group)
        for b in range(depth):
            if block == "basic":
                total += 9 * cin * f + 9 * f * f + 2 * bn * f
            else:
                total += cin * mid + 9 * mid * mid // groups + mid * cout + bn * (2 * mid + cout)
            if cin != cout or (stage > 0 and b == 0):  # the shortcut's conv and BN
                total += cin * cout + bn * cout
            cin = cout
    if config.get("include_top", True):
        total += cin * int(config["num_classes"]) + int(config["num_classes"])
    return total


def _weights_override() -> int | None:
    """$KERAS_RESNET_MAX_WEIGHTS_BYTES, if it is set."""
    return _cli.positive_env_int(MAX_WEIGHTS_VARIABLE, "bytes", ModelFileError)


def _max_weights_bytes(config_json: bytes, override: int | None) -> tuple[int, str]:
    """(the limit of the weights member, what it is) for the archive's config.json."""
    if override is not None:
        return override, MAX_WEIGHTS_VARIABLE
    try:
        top = json.loads(config_json)
        config = top["config"]
        if top.get("class_name") != "ResNet" or not str(top.get("module", "")).startswith(
                "keras_resnet"):
            raise KeyError("not a keras_resnet ResNet")
        params = resnet_parameters(config)
        size = 8 if "float64" in json.dumps(config.get("dtype")) else 4
    except Exception:  # not ours, or malformed: Keras tells which when it loads it
        return DEFAULT_MAX_WEIGHTS_BYTES, "the cap for models keras_resnet did not build"
    return (WEIGHTS_COPIES * size * params + WEIGHTS_OVERHEAD_BYTES,
            f"what {params} parameters need")


def _oversized_member(z: zipfile.ZipFile, override: int | None) -> str | None:
    """What is wrong with the first member of `z` larger than its limit, else None."""
    infos = z.infolist()
    for info in infos:
        if info.filename != WEIGHTS_MEMBER and info.file_size > MAX_MEMBER_BYTES:
            return (f"its member {info.filename} inflates to {info.file_size} bytes, more than "
                    f"the {MAX_MEMBER_BYTES} a .keras member other than {WEIGHTS_MEMBER} may "
                    "hold")
    if "config.json" not in z.namelist() or WEIGHTS_MEMBER not in z.namelist():
        return None
    weights = z.getinfo(WEIGHTS_MEMBER).file_size
    limit, what = _max_weights_bytes(z.read("config.json"), override)
    if weights > limit:
        return (f"its member {WEIGHTS_MEMBER} inflates to {weights} bytes, more than the limit "
                f"of {limit} ({what}; set {MAX_WEIGHTS_VARIABLE} to raise it)")
    return None


def check_keras_file(path) -> None:
    """Raises ModelFileError unless ``path`` is a whole .keras archive (every member's CRC is
    read, so a damaged file is told before Keras half-loads it)."""
    shown = repr(os.fspath(path))
    if not os.path.exists(path):
        raise ModelFileError(f"model file {shown} does not exist")
    if os.path.isdir(path):
        raise ModelFileError(f"model file {shown} is a folder; expected a .keras file")
    override = _weights_override()
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            oversized = _oversized_member(z, override)
            # Only then is anything inflated (the CRCs also hold each member to its declared
            # size: zipfile reads no further, and a cut-off member fails its CRC).
            damaged = None if oversized else z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ModelFileError(f"could not load model file {shown}: not a readable .keras archive "
                             f"(truncated, corrupt or another format: {_first_line(err)})"
                             ) from None
    if oversized:
        raise ModelFileError(f"could not load model file {shown}: {oversized}")
    if damaged is not None:
        raise ModelFileError(f"could not load model file {shown}: it is corrupt ({damaged} fails "
                             "its CRC check)")
    missing = [m for m in KERAS_MEMBERS if m not in names]
    if missing:
        raise ModelFileError(f"could not load model file {shown}: it holds no "
                             f"{' or '.join(missing)} (not a Keras 3 .keras model)")


def _unknown_class_hint(err: BaseException) -> str:
    # keras_resnet is imported by now, so Keras met a class that it does not register.
    if "Could not locate class" not in str(err):
        return ""
    return ("; keras_resnet's models load after `import keras_resnet`, which registers ResNet and "
            "its layers: this file names a class it does not have (saved by another library "
            "or a newer keras_resnet?)")


def load_model(path, compile: bool = False):
    """The keras.Model in the .keras file ``path``, or a one-line ModelFileError.

    A mixed-precision file loads back as mixed precision under any global dtype policy: a
    ResNet records the policy it was built under.
    """
    check_keras_file(path)
    import keras

    import keras_resnet  # noqa: F401  registers our layers for deserialization

    try:
        model = keras.models.load_model(path, compile=compile)
    except Exception as err:  # Keras raises ValueError, TypeError, KeyError, OSError...
        raise ModelFileError(f"could not load model file {os.fspath(path)!r}: "
                             f"{type(err).__name__}: {_first_line(err)}"
                             f"{_unknown_class_hint(err)}") from err
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"model file {os.fspath(path)!r} holds a {type(model).__name__}, "
                             "not a model")
    return model
