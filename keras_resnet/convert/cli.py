"""``python -m keras_resnet.convert``: --from-torch CKPT --out M.keras, or --to-torch M.keras
--out CKPT...; every file is written under a temporary name, read back, compared and renamed."""

from __future__ import annotations

import argparse
import os

import numpy as np

from keras_resnet import _cli
from keras_resnet.convert.formats import (
    SAFETENSORS_SUFFIX,
    TORCH_SUFFIXES,
    follow_umask,
    read_state_dict,
    write_state_dict,
)
from keras_resnet.convert.build import from_torch
from keras_resnet.convert.weights import (
    IMAGENET_NORMALIZATION,
    some_names,
    to_torch_state_dict,
    torch_compat_notes,
    unusable_values,
)
from keras_resnet.modelfile import load_model


def _parse_normalization(text: str | None):
    if text is None or text == "none":
        return None
    if text == "imagenet":
        return IMAGENET_NORMALIZATION
    try:
        mean, std = text.split(":")
        return tuple(float(v) for v in mean.split(",")), tuple(float(v) for v in std.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--normalization must be 'imagenet', 'none' or 'M1,M2,M3:S1,S2,S3', got {text!r}"
        ) from err


EXIT_CODES = """exit status:
  0  converted; every file written was read back and compared
  2  bad input or usage: an option; a checkpoint or model that is missing, damaged, not a
     ResNet or does not match --arch; non-float or NaN/inf weights; an --out folder that is
     missing or not writable. Nothing is written.
  1  a written file did not read back the same, or an internal error. Nothing is left at
     --out: files are written under a temporary name beside it and renamed once checked, so
     a file that was at --out before is only ever replaced by a checked one."""


class CheckFailed(RuntimeError):
    """A file was written, but reading it back did not give what was written (exit 1, one
    line)."""


class ConvertError(ValueError):
    """A checkpoint, model or --out that cannot be converted as asked; the message names it
    (exit 2)."""


def main(argv=None) -> int:
    from keras_resnet.archs import ARCHS

    parser = _cli.ArgumentParser(
        prog="python -m keras_resnet.convert",
        description="Convert torchvision-style ResNet weights to a Keras model and back.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-torch", metavar="CKPT", help=".pth/.pt/.bin/.ckpt or .safetensors")
    src.add_argument("--to-torch", metavar="MODEL", help="a .keras model saved by keras_resnet")
    parser.add_argument(
        "--out", nargs="+", required=True,
        help="--from-torch: one .keras path; --to-torch: one or more .pth/.safetensors paths",
    )
    parser.add_argument("--arch", choices=sorted(ARCHS), help="default: inferred (--from-torch)")
    parser.add_argument(
        "--input-size", type=_cli.positive_int, nargs="+", metavar="N",
        help="H [W] of the Keras input (default: any size). Fix it to export to TFLite.",
    )
    parser.add_argument(
        "--normalization", type=_parse_normalization, default=None,
        help="'imagenet' (torchvision's mean/std, model then takes raw 0..255 pixels), 'none' "
        "(default: the model expects torch-preprocessed input) or 'M1,M2,M3:S1,S2,S3' in "
        "pixel units",
    )
    parser.add_argument(
        "--no-strict", action="store_true",
        help="load what matches and warn about the rest (default: refuse any mismatch)",
    )
    _cli.add_log_level_argument(parser)
    args = parser.parse_args(argv)
    _check_usage(parser, args)
    _cli.configure(args)
    return _cli.exit_status(lambda: _run(args), prefix=f"{parser.prog}: error")


def _check_usage(parser, args) -> None:
    """Everything decidable from the command line, before TensorFlow loads."""
    if args.from_torch:
        if len(args.out) != 1 or not args.out[0].endswith(".keras"):
            parser.error("--from-torch needs exactly one --out path ending in .keras")
        if not args.from_torch.endswith((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)):
            parser.error(f"--from-torch {args.from_torch}: expected a file ending in "
                         f"{', '.join([*TORCH_SUFFIXES, SAFETENSORS_SUFFIX])}")
        if args.input_size and len(args.input_size) > 2:
            parser.error("--input-size takes H or H W")
        return
    bad = [p for p in args.out if not p.endswith((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))]
    if bad:
        parser.error(f"--to-torch outputs must end in .pth/.pt or .safetensors: {bad}")
    same = {os.path.abspath(p) for p in args.out}
    if len(same) != len(args.out):
        parser.error("--out names the same file twice")


def _check_paths(source: str, outs) -> None:
    """The input exists and every --out can be created, before anything is converted."""
    if not os.path.isfile(source):
        what = "is a folder, not a file" if os.path.isdir(source) else "does not exist"
        raise ConvertError(f"{source}: {what}")
    for out in outs:
        folder = os.path.dirname(os.path.abspath(out))
        if os.path.isdir(out):
            raise ConvertError(f"--out {out} is a folder; give a file name")
        if not os.path.isdir(folder):
            raise ConvertError(f"--out {out}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConvertError(f"--out {out}: the folder {folder} is not writable")
        if os.path.abspath(out) == os.path.abspath(source):
            raise ConvertError(f"--out {out} is the input file")


def _temp_path(path: str) -> str:
    """A hidden name beside ``path`` with the same suffix (Keras and our writers pick the
    format by it); a rename within one folder then replaces ``path`` in one step."""
    import secrets

    folder, name = os.path.split(os.path.abspath(path))
    suffix = os.path.splitext(name)[1]
    return os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.partial{suffix}")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _named(path: str, err: Exception) -> ConvertError:
    """A library's ValueError about the user's file, as a ConvertError that names ``path``
    (library errors often do not)."""
    text = str(err)
    return ConvertError(text if path in text else f"{path}: {text}")


def _run(args) -> int:
    if args.from_torch:
        return _run_from_torch(args)
    return _run_to_torch(args)


def _run_from_torch(args) -> int:
    src, out = args.from_torch, args.out[0]
    _check_paths(src, [out])
    if src.endswith(TORCH_SUFFIXES):
        _import_torch_first(src)
    input_shape = tuple((args.input_size * 2)[:2]) if args.input_size else None
    print(f"reading {src}")
    try:
        model = from_torch(
            src, args.arch, input_shape=input_shape,
            normalization=args.normalization, strict=not args.no_strict, verbose=True,
        )
    except ValueError as err:
        raise _named(src, err) from err
    except ImportError as err:  # a module the checkpoint's format needs is not installed
        raise ConvertError(str(err)) from err
    tmp = _temp_path(out)
    try:
        model.save(tmp)
        follow_umask(tmp)
        _verify_keras_file(model, tmp, shown_as=out)
        os.replace(tmp, out)
    finally:
        _remove(tmp)
    print(f"wrote {out} (reloaded and compared)")
    return 0


def _run_to_torch(args) -> int:
    _check_paths(args.to_torch, args.out)
    if any(p.endswith(TORCH_SUFFIXES) for p in args.out):
        _import_torch_first(args.out[0])
    model = load_model(args.to_torch)
    try:
        sd = to_torch_state_dict(model)
        notes = torch_compat_notes(model)
    except ValueError as err:
        raise _named(args.to_torch, err) from err
    unusable = unusable_values(sd, [k for k in sd if not k.endswith(".num_batches_tracked")])
    if unusable:
        raise ConvertError(f"{args.to_torch}: {unusable}; nothing was written")
    for note in notes:
        print(f"  note: {note}")
    temps = {path: _temp_path(path) for path in args.out}
    try:
        for path, tmp in temps.items():
            back = _written_back(sd, path, tmp, model.name)
            diff = [k for k in sd if not np.array_equal(sd[k], back.get(k))]
            diff += sorted(set(back) - set(sd))
            if diff:
                raise CheckFailed(f"{path}: read back differs from what was written in "
                                  f"{some_names(diff, 5)}; nothing was written")
        # All or none: the outputs are renamed into place only once every one is checked.
        for path, tmp in temps.items():
            os.replace(tmp, path)
    finally:
        for tmp in temps.values():
            _remove(tmp)
    for path in args.out:
        print(f"wrote {path} ({len(sd)} tensors; read back and compared)")
    return 0


def _written_back(sd, path: str, tmp: str, model_name: str) -> dict:
    """Writes ``sd`` to ``tmp`` in ``path``'s format and reads it back."""
    try:
        write_state_dict(sd, tmp, model_name)
        back, _ = read_state_dict(tmp)
    except ImportError as err:  # e.g. safetensors, needed for .safetensors only
        raise ConvertError(str(err)) from err
    return back


def _import_torch_first(path: str) -> None:
    # Before TensorFlow loads, so that a missing torch is said before any work is done. torch
    # itself imports fine after TensorFlow; torchvision does not (keras_resnet._imports).
    try:
        import torch  # noqa: F401
    except ImportError as err:
        raise ConvertError(
            f"{path}: .pth/.pt files need PyTorch (pip install torch); .safetensors needs none"
        ) from err


def _verify_keras_file(model, path, shown_as=None) -> None:
    """Loads the saved .keras file and checks it gives the same outputs."""
    # Any size works for a size-agnostic model; 64 keeps the check quick.
    shape = [1] + [64 if d is None else d for d in model.input_shape[1:]]
    x = np.random.default_rng(0).uniform(0, 1, shape).astype("float32")
    loaded = load_model(path)
    a = np.asarray(model(x, training=False))
    b = np.asarray(loaded(x, training=False))
    if not np.array_equal(a, b):
        raise CheckFailed(
            f"{shown_as or path}: the reloaded model differs from the converted one (outputs "
            f"by up to {np.max(np.abs(a - b)):.3g}); nothing was written"
        )
