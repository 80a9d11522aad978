"""Image file -> model input: the one preprocessing used by training's pipelines, evaluation,
`python -m training.predict`, `python -m export.predict` and user code.

    from training import decode_predictions, load_images, preprocessing_for
    prep = preprocessing_for("runs/<run>/best.keras")   # what the run recorded in config.json
    x = load_images(["cat.jpg"], prep)                    # float32 (N, H, W, C), raw 0..255
    decode_predictions(model.predict(x), class_names, top_k=3)

Decoding is TensorFlow's (`tf.io.decode_image`: JPEG, PNG, BMP, GIF's first frame, WebP; JPEG
with the accurate DCT, so its pixels are PIL's).
Grey, grey+alpha, RGB, RGBA and palette images become `channels` channels: alpha is dropped
(as PIL's convert("RGB") does), grey is repeated into RGB, and RGB becomes grey with ITU-R
601-2 luma weights (those of PIL's convert("L")), rounded.

Two ways to bring an image to the model's (H, W):
- "crop" (torchvision's ImageNet recipe): evaluation resizes, keeping the aspect ratio, until
  the image covers (H, W) / CROP_FRACTION, then takes the centre (H, W); training takes a
  random-resized crop (8-100% of the area, aspect 3/4-4/3) and flips it horizontally at random.
- "stretch": the whole image is resized to (H, W), aspect ratio not kept, so nothing is cut
  off; training adds a small rotation and shift (no flip: mirrored digits or letters change
  meaning).
"auto" picks "crop" when both sides of (H, W) are at least AUTO_CROP_MIN_SIDE pixels (photos
at ImageNet-like sizes) and "stretch" below (digits, icons, CIFAR-sized pictures, where a
crop would cut off strokes). Resizing is bilinear with antialiasing.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat

from keras_resnet._cli import positive_env_int

# The suffixes tf.io.decode_image reads (TIFF is not among them).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
RESIZE_MODES = ("auto", "crop", "stretch")
# torchvision's evaluation transform for ImageNet: Resize(256) then CenterCrop(224).
CROP_FRACTION = 0.875
# Below this side an (H, W) is taken to be of small pictures (MNIST 28, CIFAR 32, 48-px
# scans), where a random 8% crop would leave a few pixels of a stroke.
AUTO_CROP_MIN_SIDE = 64
# torchvision's RandomResizedCrop defaults.
CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3.0 / 4.0, 4.0 / 3.0)
# ITU-R 601-2 luma, the weights of PIL's convert("L").
LUMA = (0.299, 0.587, 0.114)
# PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 1024**3 // 4 // 3): a small file
# can declare a picture whose decoded pixels take gigabytes, so sizes are read from the header
# and anything larger is refused before it is decoded. The variable raises (or lowers) it.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
MAX_PIXELS_VARIABLE = "KERAS_RESNET_MAX_IMAGE_PIXELS"
# The signatures tf.io.decode_image tells formats by, and PIL's reader of each format's header.
_SIGNATURES = ((b"\xff\xd8\xff", "JpegImagePlugin", "JpegImageFile"),
               (b"\x89PNG", "PngImagePlugin", "PngImageFile"),
               (b"GIF8", "GifImagePlugin", "GifImageFile"),
               (b"BM", "BmpImagePlugin", "BmpImageFile"))


class ImageError(ValueError):
    """An image file that cannot be read or decoded; the message names it, `reason` says why."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def resolve_resize(mode: str, height: int | None, width: int | None) -> str:
    """"crop" or "stretch" for `mode` ("auto" decides by the model's input size)."""
    if mode not in RESIZE_MODES:
        raise ImageError(f"--resize: unknown value {mode!r}; expected one of {list(RESIZE_MODES)}")
    if mode != "auto":
        return mode
    if height is None or width is None:
        return "stretch"
    return "crop" if min(height, width) >= AUTO_CROP_MIN_SIDE else "stretch"


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes a model input; recorded in a run's config.json."""

    height: int | None
    width: int | None
    channels: int
    resize: str  # "crop" or "stretch"
    crop_fraction: float = CROP_FRACTION

    @classmethod
    def for_shape(cls, shape, resize: str = "auto") -> "Preprocessing":
        """For a model input of `shape` (H, W, C)."""
        h, w, c = (None if v is None else int(v) for v in shape)
        if c not in (1, 3):
            raise ImageError(f"the model takes {c}-channel images; image files give 1 or 3")
        return cls(h, w, c, resolve_resize(resize, h, w))

    @classmethod
    def from_dict(cls, record: dict) -> "Preprocessing":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in fields})

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "decoder": "tf.io.decode_image",
                "interpolation": "bilinear, antialiased", "pixels": "raw 0..255 float32"}

    @property
    def size(self):
        return None if self.height is None or self.width is None else (self.height, self.width)


# --------------------------------------------------------------------------------------------
# TensorFlow functions (graph-safe: used inside tf.data maps)


def decode(contents, channels: int):
    """uint8 (h, w, channels) of an encoded image (a scalar string tensor)."""
    import tensorflow as tf

    # JPEG with the accurate integer DCT: the pixels PIL (torchvision's loader) gives, where
    # decode_image's default fast DCT differs from them by a few levels.
    image = tf.cond(
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=0, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(contents, channels=0, dtype=tf.uint8,
                                   expand_animations=False))
    native = tf.shape(image)[-1]  # 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA (palettes expanded)
    if channels == 3:
        out = tf.cond(native < 3, lambda: tf.repeat(image[..., :1], 3, axis=-1),
                      lambda: image[..., :3])
    elif channels == 1:
        def luma():
            rgb = tf.cast(image[..., :3], tf.float32)
            return tf.cast(tf.round(tf.tensordot(rgb, tf.constant(LUMA), 1))[..., None],
                           tf.uint8)

        out = tf.cond(native < 3, lambda: image[..., :1], luma)
    else:
        raise ImageError(f"images can be read with 1 or 3 channels, not {channels}")
    out.set_shape([None, None, channels])
    return out


def _resize(image, size):
    import tensorflow as tf

    return tf.image.resize(image, size, method="bilinear", antialias=True)


def _cover_size(image, height: int, width: int, fraction: float):
    """(h, w) of `image` scaled, aspect kept, to cover (height, width) / fraction."""
    import tensorflow as tf

    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.maximum(height / fraction / shape[0], width / fraction / shape[1])
    return tf.cast(tf.round(shape * scale), tf.int32)


def model_input(image, prep: Preprocessing):
    """float32 (H, W, C) evaluation view of a uint8 image: the model's input."""
    import tensorflow as tf

    if prep.size is None:
        return tf.cast(image, tf.float32)
    if prep.resize == "stretch":
        out = _resize(image, prep.size)
    else:
        out = _resize(image, _cover_size(image, prep.height, prep.width, prep.crop_fraction))
        out = tf.image.resize_with_crop_or_pad(out, prep.height, prep.width)
    out.set_shape([prep.height, prep.width, prep.channels])
    return out


def training_base(image, prep: Preprocessing):
    """The deterministic part of a training view (what `--cache` keeps): for "stretch" the
    evaluation view; for "crop" the image shrunk (never enlarged) to cover (H, W) /
    crop_fraction, as uint8, so random crops come from the scale evaluation sees."""
    import tensorflow as tf

    if prep.resize == "stretch":
        return model_input(image, prep)
    size = _cover_size(image, prep.height, prep.width, prep.crop_fraction)
    shrink = tf.reduce_all(size <= tf.shape(image)[:2])
    out = tf.cond(shrink, lambda: tf.cast(tf.round(tf.clip_by_value(
        _resize(image, size), 0.0, 255.0)), tf.uint8), lambda: image)
    out.set_shape([None, None, prep.channels])
    return out


def training_view(base, prep: Preprocessing, seed):
    """float32 (H, W, C) random view of a `training_base` output; `seed` is a stateless [2]
    seed. "stretch" returns the base unchanged (its rotation and shift act on batches)."""
    import tensorflow as tf

    if prep.resize == "stretch":
        return base
    s_box, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(base), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=s_box,
        min_object_covered=0.0, aspect_ratio_range=CROP_ASPECT, area_range=CROP_AREA,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    out = _resize(tf.slice(base, begin, size), prep.size)
    out = tf.image.stateless_random_flip_left_right(out, s_flip)
    out.set_shape([prep.height, prep.width, prep.channels])
    return out


# --------------------------------------------------------------------------------------------
# Files (eager): prediction and user code


def max_image_pixels() -> int:
    """The most pixels (width x height x frames) an image file may declare: $KERAS_RESNET_MAX_
    IMAGE_PIXELS, else DEFAULT_MAX_IMAGE_PIXELS."""
    return positive_env_int(MAX_PIXELS_VARIABLE, "pixels", ImageError,
                            DEFAULT_MAX_IMAGE_PIXELS)


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a folder"))


def not_regular(mode: int) -> str:
    """What a file of st_mode `mode` is when it is not a regular file, else ""."""
    if stat.S_ISREG(mode):
        return ""
    return "not a regular file (" + next((k for test, k in _KINDS if test(mode)),
                                         "a special file") + ")"


def _fail(path, reason: str, message: str | None = None):
    raise ImageError(message or f"{path} {reason}", reason) from None


def open_image_file(path):
    """A binary file object of `path`, which must be a regular file (symlinks followed): a FIFO
    would block the reader forever and a device may never end, so neither is ever opened."""
    try:
        kind = not_regular(os.stat(path).st_mode)
        if not kind:
            # O_NONBLOCK: a FIFO put in the file's place since the stat does not block the
            # open, and the fstat below refuses it.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        _fail(path, f"cannot be read: {e.strerror or e}")
    if kind:
        _fail(path, kind, f"{path} is {kind}; image files are regular files")
    f = os.fdopen(fd, "rb")
    try:
        kind = not_regular(os.fstat(fd).st_mode)
        if not kind:
            os.set_blocking(fd, True)
            return f
    except BaseException:
        f.close()
        raise
    f.close()
    _fail(path, kind, f"{path} is {kind}; image files are regular files")


def check_header(f, path, limit: int | None = None) -> None:
    """Raises ImageError unless the binary file `f` starts with the header of an image that
    tf.io.decode_image reads, of at most `limit` pixels (default max_image_pixels()) counting
    every frame of an animation: read from the header alone, before any pixel is decoded."""
    import importlib

    limit = max_image_pixels() if limit is None else limit
    start = f.tell()
    head = f.read(12)
    f.seek(start)
    found = [(m, c) for sig, m, c in _SIGNATURES if head.startswith(sig)]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        found = [("WebPImagePlugin", "WebPImageFile")]
    if not found:
        _fail(path, "not a decodable image: not a JPEG, PNG, GIF, BMP or WebP file",
              f"{path} is not a readable image (not a JPEG, PNG, GIF, BMP or WebP file)")
    module, name = found[0]
    from PIL import Image

    try:
        # The format's own reader, not Image.open: that one stops at twice PIL's limit
        # whatever MAX_PIXELS_VARIABLE says, and warns below it.
        im = getattr(importlib.import_module(f"PIL.{module}"), name)(f)
        width, height = im.size
        frames = int(getattr(im, "n_frames", 1) or 1)
    except Image.DecompressionBombError:  # a GIF frame past its canvas, over PIL's own stop
        width = height = frames = None
    except Exception as e:  # PIL's readers raise SyntaxError, struct.error, OSError...
        _fail(path, f"not a decodable image: {e}", f"{path} is not a readable image ({e})")
    finally:
        f.seek(start)
    if width is None:
        what = "a frame larger than PIL's decompression-bomb limit"
    elif width * height * frames > limit:
        what = (f"{width}x{height}" + (f" x {frames} frames" if frames > 1 else "")
                + f" = {width * height * frames} pixels")
    else:
        return
    reason = (f"too large: {what}, more than the limit of {limit} pixels (set "
              f"{MAX_PIXELS_VARIABLE} to raise it)")
    _fail(path, reason, f"{path} is {reason}")


def check_image_file(path, limit: int | None = None) -> None:
    """Raises ImageError unless `path` is a regular file whose header is that of an image
    tf.io.decode_image reads, of at most `limit` pixels (default max_image_pixels())."""
    with open_image_file(path) as f:
        check_header(f, path, limit)


def load_image(path: str, prep: Preprocessing):
    """float32 (H, W, C) numpy model input of one image file."""
    return read_image(path, prep.channels, lambda image: model_input(image, prep)).numpy()


def read_image(path: str, channels: int, then=None):
    """The uint8 (h, w, channels) tensor of one image file (see decode), or `then(image)`;
    every failure, of reading, decoding or of `then`, is an ImageError naming the file."""
    import tensorflow as tf

    limit = max_image_pixels()
    try:
        with open_image_file(path) as f:
            check_header(f, path, limit)
            contents = f.read()
    except OSError as e:
        reason = f"cannot be read: {e.strerror or e}"
        raise ImageError(f"{path} {reason}", reason) from None
    try:
        image = decode(tf.constant(contents), channels)
        return image if then is None else then(image)
    except tf.errors.OpError as e:
        reason = f"not a decodable image: {_reason(e)}"
        raise ImageError(f"{path} is not a readable image ({_reason(e)})", reason) from None


def _reason(error) -> str:
    """TensorFlow's message without its op and device decorations."""
    text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\].*", "", error.message or "").strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def load_images(paths, prep: Preprocessing):
    """float32 (N, H, W, C) numpy model inputs of image files (raw 0..255 pixels)."""
    import numpy as np

    arrays = [load_image(p, prep) for p in paths]
    if len({a.shape for a in arrays}) > 1:
        raise ImageError("the model takes any image size, but these images differ in size: "
                         "give images of one size")
    return np.stack(arrays) if arrays else np.zeros((0, prep.height or 0, prep.width or 0,
                                                     prep.channels), np.float32)
