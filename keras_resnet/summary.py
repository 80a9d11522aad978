"""Per-layer table of output shapes, parameter counts and FLOPs, like torchsummary.

    python -m keras_resnet.summary --arch resnet50 --input-shape 224,224,3

FLOPs are counted as 2 x multiply-accumulates of convolutions and the classifier (plus one op
per element for batch norm, ReLU, residual additions and pooling), for one image. torchvision's
"GFLOPS" column (e.g. 4.09 for resnet50) counts multiply-accumulates only; both are printed.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keras_resnet import _cli
from keras_resnet._cli import parse_shape
from keras_resnet.archs import ARCHS, STEMS

if TYPE_CHECKING:
    import keras

    from keras_resnet.blocks import _ResidualBlock

# Keras is imported inside the functions, so that `--help` and usage errors of the CLI below
# are answered without loading TensorFlow.


@dataclass
class Row:
    name: str
    kind: str
    shape: tuple
    params: int
    macs: int
    other_flops: int  # element-wise work: BN, ReLU, add, pooling
    depth: int = 0
    # MACs whose kernel tap lands on a real pixel, not on zero padding: the work a convolution
    # kernel that skips padding (oneDNN's, ours on tiny maps) must do. Equal to macs elsewhere.
    pixel_macs: int = 0


def _numel(shape) -> int:
    return math.prod(int(d) for d in shape if d is not None)


def _params(layer) -> int:
    return sum(_numel(w.shape) for w in layer.weights)


def _layer_cost(layer, in_shape, out_shape) -> tuple[int, int]:
    """(MACs, other FLOPs) for one image through `layer`."""
    import keras

    out = _numel(out_shape[1:])
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return out * kh * kw * int(in_shape[-1]) // layer.groups, 0
    if isinstance(layer, keras.layers.Dense):
        return _numel(layer.kernel.shape), out
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.ReLU,
                          keras.layers.Normalization)):
        return 0, out
    if isinstance(layer, (keras.layers.MaxPooling2D,)):
        return 0, out * _numel(layer.pool_size)
    if isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
        return 0, _numel(in_shape[1:])
    return 0, 0


def _taps_on_pixels(size: int, kernel: int, stride: int, out: int, before: int) -> int:
    """Along one axis: sum over output positions of the taps that land inside the input."""
    return sum(sum(1 for a in range(kernel) if 0 <= i * stride + a - before < size)
               for i in range(out))


def _pixel_macs(layer, in_shape, pad=((0, 0), (0, 0))) -> int:
    """MACs of a Conv2D counting only taps on real pixels; in_shape is before `pad`."""
    from keras_resnet.geometry import conv_geometry

    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    h, w, cin = int(in_shape[1]), int(in_shape[2]), int(in_shape[3])
    ho, wo, top, left = conv_geometry((h, w), layer.kernel_size, layer.strides, layer.padding,
                                      pad)
    return (_taps_on_pixels(h, kh, sh, ho, top) * _taps_on_pixels(w, kw, sw, wo, left)
            * cin // layer.groups * layer.filters)


def _row(layer, in_shape, out_shape, padded_from=None, depth=0) -> Row:
    """padded_from: (shape before, padding) when a ZeroPadding2D layer fed this layer (as in
    files saved before convolutions padded themselves)."""
    import keras

    macs, other = _layer_cost(layer, in_shape, out_shape)
    pixel_macs = macs
    if isinstance(layer, keras.layers.Conv2D):
        own = getattr(layer, "explicit_padding", None) or ((0, 0), (0, 0))
        before, pad = padded_from or (in_shape, own)
        pixel_macs = _pixel_macs(layer, before, pad)
    return Row(layer.name, type(layer).__name__, out_shape, _params(layer), macs, other, depth,
               pixel_macs)


def _block_rows(block: _ResidualBlock, in_shape) -> list[Row]:
    import keras

    rows = []
    shape = tuple(in_shape)
    for layer in block.main_path:
        out = layer.compute_output_shape(shape)
        row = _row(layer, shape, out, depth=1)
        if isinstance(layer, keras.layers.BatchNormalization):
            row.other_flops *= 2  # BN then ReLU (or the residual add after the last BN)
        rows.append(row)
        shape = out
    sc_shape = tuple(in_shape)
    for layer in block.shortcut_path:
        out = layer.compute_output_shape(sc_shape)
        rows.append(_row(layer, sc_shape, out, depth=1))
        sc_shape = out
    return rows


def summarize(model: keras.Model) -> list[Row]:
    """One row per top-level layer and, indented, per sublayer of each residual block."""
    import keras

    from keras_resnet.blocks import _ResidualBlock

    rows = []
    pads = {}  # id of a ZeroPadding2D's output -> (its input shape, padding)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            rows.append(Row(layer.name, "Input", tuple(layer.output.shape), 0, 0, 0))
            continue
        in_shape = tuple(layer.input.shape)
        out_shape = tuple(layer.output.shape)
        if isinstance(layer, _ResidualBlock):
            sub = _block_rows(layer, in_shape)
            rows.append(Row(layer.name, type(layer).__name__, out_shape, _params(layer),
                            sum(r.macs for r in sub), sum(r.other_flops for r in sub), 0,
                            sum(r.pixel_macs for r in sub)))
            rows.extend(sub)
        else:
            rows.append(_row(layer, in_shape, out_shape, pads.get(id(layer.input))))
            if isinstance(layer, keras.layers.ZeroPadding2D):
                pads[id(layer.output)] = (in_shape, layer.padding)
    return rows


def total_macs(model: keras.Model, on_pixels: bool = False) -> int:
    """Multiply-accumulates of one forward pass per image (convolutions and the classifier).

    on_pixels=True counts only kernel taps that land on real pixels, not on zero padding."""
    rows = [r for r in summarize(model) if r.depth == 0]
    return sum(r.pixel_macs if on_pixels else r.macs for r in rows)


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def format_table(model: keras.Model) -> str:
    rows = summarize(model)
    lines = [f"{'Layer (type)':<50}{'Output shape':>22}{'Params':>14}{'MFLOPs':>12}",
             "=" * 98]
    for r in rows:
        label = ("  " * r.depth + f"{r.name} ({r.kind})")
        mflops = (2 * r.macs + r.other_flops) / 1e6
        lines.append(f"{label:<50}{_fmt_shape(r.shape):>22}{r.params:>14,}{mflops:>12.2f}")
    top = [r for r in rows if r.depth == 0]
    total = sum(_numel(w.shape) for w in model.weights)
    trainable = sum(_numel(w.shape) for w in model.trainable_weights)
    macs = sum(r.macs for r in top)  # = total_macs(model), without summarizing twice
    pixel_macs = sum(r.pixel_macs for r in top)
    flops = 2 * macs + sum(r.other_flops for r in top)
    lines += [
        "=" * 98,
        f"Total params:         {total:,}",
        f"Trainable params:     {trainable:,}",
        f"Non-trainable params: {total - trainable:,}  (batch-norm moving statistics etc.)",
        f"Multiply-accumulates: {macs / 1e9:.3f} G per image  (torchvision's 'GFLOPS' figure)",
        f"  of which on pixels: {pixel_macs / 1e9:.3f} G  (taps on zero padding excluded)",
        f"FLOPs:                {flops / 1e9:.3f} G per image  (2 x MACs + element-wise ops)",
        f"Parameter size:       {total * 4 / 2**20:.2f} MiB as float32",
    ]
    return "\n".join(lines)


# 16x torchvision's widest (wide_resnet50_2's 128): ResNet-152 there holds ~15 billion
# parameters; larger values only end in an allocation failure.
MAX_WIDTH = 1024
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841


def main(argv=None) -> int:
    parser = _cli.ArgumentParser(
        prog="python -m keras_resnet.summary",
        description="Print a per-layer table of output shapes, parameters and FLOPs.",
        epilog=_cli.EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--arch", default="resnet18", choices=sorted(ARCHS),
                        help="architecture (default: %(default)s)")
    parser.add_argument("--input-shape", type=parse_shape, default=(224, 224, 3),
                        help="H,W,C of one image (default: 224,224,3)")
    parser.add_argument("--num-classes", type=_cli.int_in_range(1, MAX_CLASSES), default=1000,
                        help=f"classifier size, 1..{MAX_CLASSES} (default: %(default)s)")
    parser.add_argument("--stem", default="imagenet", choices=STEMS,
                        help="imagenet: 7x7/2 conv + max-pool; cifar: 3x3/1 conv "
                             "(default: %(default)s)")
    parser.add_argument("--width", type=_cli.int_in_range(1, MAX_WIDTH), default=64,
                        help=f"base channel count, 1..{MAX_WIDTH} (default: %(default)s)")
    parser.add_argument("--no-top", action="store_true",
                        help="without the pooling + classifier head")
    _cli.add_log_level_argument(parser)
    return _cli.run(parser, lambda args: _summarize(parser, args), argv)


def _summarize(parser, args) -> None:
    from keras_resnet.builder import build_resnet

    try:
        model = build_resnet(args.arch, input_shape=args.input_shape,
                             num_classes=args.num_classes, stem=args.stem, width=args.width,
                             include_top=not args.no_top)
    except ValueError as e:  # the options together (e.g. a size too small for the arch)
        parser.error(str(e))
    except Exception as e:
        import tensorflow as tf

        if not isinstance(e, tf.errors.ResourceExhaustedError):
            raise
        raise _cli.UsageError(
            f"not enough memory for the weights of {args.arch} at --width {args.width} with "
            f"--num-classes {args.num_classes}: choose a smaller --width or --num-classes"
        ) from None
    print(f"{model.name}: input {args.input_shape}, stem {args.stem!r}, width {args.width}")
    print(format_table(model))


if __name__ == "__main__":
    raise SystemExit(main())
