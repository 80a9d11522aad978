"""Where a 2D convolution's taps land: shared by the layers' fast paths and the MAC count."""

from __future__ import annotations


def conv_geometry(size, kernel_size, strides, padding, pad=None):
    """(out height, out width, top, left) of a 2D convolution, or None if it has no output.

    ``pad`` ((top, bottom), (left, right)) is zero padding added first; ``top``/``left`` count
    all padding before the first input row/column (Keras/TF "same" puts its odd pixel last)."""
    (h, w), (kh, kw), (sh, sw) = size, kernel_size, strides
    (pt, pb), (pl, pr) = pad if pad is not None else ((0, 0), (0, 0))
    hp, wp = h + pt + pb, w + pl + pr
    if padding == "valid":
        if hp < kh or wp < kw:
            return None
        return (hp - kh) // sh + 1, (wp - kw) // sw + 1, pt, pl
    if padding == "same":
        ho, wo = -(-hp // sh), -(-wp // sw)
        return (ho, wo, pt + max((ho - 1) * sh + kh - hp, 0) // 2,
                pl + max((wo - 1) * sw + kw - wp, 0) // 2)
    return None
