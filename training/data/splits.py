"""The one split rule of every source: "val" is a fixed share of the training items drawn with
SPLIT_SEED, "train" the rest (optionally its first `subset` in a fixed random order)."""

from __future__ import annotations

import numpy as np

from training.data.errors import DataError
from training.data.table import SPLIT_SEED, SPLITS


def check_split(split: str, val_fraction: float) -> None:
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; expected one of {list(SPLITS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")


def held_out(split: str, n: int, val_fraction: float, subset: int | None, what: str,
             keep=None, seed: int = SPLIT_SEED) -> np.ndarray:
    """Sorted positions of "train" or "val" among `n` training items.

    `keep` (a boolean mask) marks the items that can be used: the draw is made over all `n`,
    so that an item left out (an undecodable file) does not move the others between splits.
    `what` names the data in messages ("of mnist", "of /data/photos").
    """
    keep = np.ones(n, bool) if keep is None else np.asarray(keep, bool)
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if split == "val":
        if n_val == 0:
            raise DataError("split='val' needs val_fraction > 0")
        held = np.sort(order[:n_val])
        held = held[keep[held]]
        if len(held) == 0:
            raise DataError(f"none of the {n_val} images drawn for the val split {what} can be "
                            "used: choose another --val-fraction, or give a val/ folder")
        return held
    idx = order[n_val:]
    idx = idx[keep[idx]]
    held = (f" ({n} in its training split, {n_val} of them held out by --val-fraction "
            f"{val_fraction})" if n_val else "")
    if len(idx) == 0:
        raise DataError(f"--val-fraction {val_fraction} leaves no training images {what}{held}: "
                        "choose a smaller --val-fraction")
    if subset is not None:
        if subset < 1:
            raise DataError(f"--subset must be positive, got {subset}")
        if subset > len(idx):
            raise DataError(f"--subset {subset} is more than the {len(idx)} training images "
                            f"{what}{held}: choose --subset {len(idx)} or less")
        idx = idx[:subset]
    return np.sort(idx)
