"""`python -m training.sample_folder DIR`: a folder of real images to try the folder workflow
offline: scikit-learn's 1797 handwritten digit scans (8x8, 16 grey levels) written as
DIR/<digit>/<n>.<ext>, each enlarged to a random 24-48 px square and saved in turn as grey
PNG, RGBA PNG, palette GIF, JPEG and BMP, the mix a folder of scans collected by hand has.

DIR must not exist yet: the images are written to a temporary folder beside it and renamed to
DIR when complete, so an interrupted run leaves no half folder under that name.
Exit status 0 written, 2 bad DIR or option.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from keras_resnet import _cli

FORMATS = (("png", "L"), ("png", "RGBA"), ("gif", "P"), ("jpg", "RGB"), ("bmp", "RGB"))


def write_digit_scans(folder: str, count: int | None = None, seed: int = 0) -> int:
    """Writes the scans into the new folder `folder`; returns how many."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    if os.path.lexists(folder):
        raise FileExistsError(f"{folder} already exists: name a new folder")
    parent = os.path.dirname(os.path.abspath(folder))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"{parent} is not a folder: create it first")
    digits = load_digits()
    n = len(digits.images) if count is None else min(count, len(digits.images))
    rng = np.random.default_rng(seed)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}-", dir=parent)
    try:
        for i in range(n):
            side = int(rng.integers(24, 49))
            img = Image.fromarray(np.clip(digits.images[i] * 16, 0, 255).astype(np.uint8), "L")
            ext, mode = FORMATS[i % len(FORMATS)]
            target = os.path.join(staging, str(digits.target[i]))
            os.makedirs(target, exist_ok=True)
            img.resize((side, side), Image.Resampling.BILINEAR).convert(mode).save(
                os.path.join(target, f"{i:04d}.{ext}"))
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return n


def main(argv=None) -> int:
    parser = _cli.ArgumentParser(prog="python -m training.sample_folder",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", metavar="DIR", help="the folder to create")
    parser.add_argument("--count", type=_cli.positive_int, default=None,
                        help="write only the first N scans (default: all 1797)")
    args = parser.parse_args(argv)
    try:
        n = write_digit_scans(args.folder, args.count)
    except (FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {args.folder}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {n} digit scans (24-48 px; PNG, GIF, JPEG, BMP) into {args.folder}/0 .. /9")
    return 0


if __name__ == "__main__":
    sys.exit(main())
