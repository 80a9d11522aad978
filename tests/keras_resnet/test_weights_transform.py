"""keras_resnet.weights.transform against torchvision's ``weights.transforms()`` on the same PIL
image: real photographs (scikit-learn's two) at several sizes, landscape and portrait, odd
sizes, upscaled, already at size; grayscale and RGBA as PIL's ``convert("RGB")`` makes them.
Compared before normalization (the model's first layer normalizes), in 0..255 units: at most
2 per pixel, under 0.5 on average. Run with ``-s`` to see the measured differences.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import weights as kw


def _photos():
    from sklearn.datasets import load_sample_images

    return load_sample_images().images  # china.jpg, flower.jpg: 427x640 RGB


def _case(name):
    from PIL import Image

    china, flower = _photos()
    return {
        "china_427x640": lambda: china,
        "flower_portrait_640x427": lambda: np.ascontiguousarray(flower.transpose(1, 0, 2)),
        "odd_333x517": lambda: flower[11:344, 57:574],
        "odd_241x239": lambda: china[100:341, 200:439],
        "at_size_232x301": lambda: flower[:232, :301],
        "upscaled_100x150": lambda: china[50:150, 100:250],
        "large_1280x853": lambda: np.asarray(Image.fromarray(china).resize((853, 1280))),
        "gray_427x640": lambda: np.asarray(Image.fromarray(china).convert("L")),
        "gray_channel_427x640": lambda: np.asarray(Image.fromarray(flower).convert("L"))[..., None],
        "rgba_427x640": lambda: np.dstack([flower, np.full(flower.shape[:2], 77, np.uint8)]),
    }[name]()


def torchvision_pixels(image: np.ndarray, ws) -> np.ndarray:
    """torchvision's transform of the PIL image, un-normalized back to 0..255 (crop, crop, 3)."""
    from PIL import Image
    from torchvision.transforms._presets import ImageClassification

    pil = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
    t = ImageClassification(crop_size=ws.crop_size, resize_size=ws.resize_size)
    x = t(pil.convert("RGB")).numpy().transpose(1, 2, 0)
    return (x * np.array(t.std) + np.array(t.mean)) * 255


CASES = ["china_427x640", "flower_portrait_640x427", "odd_333x517", "odd_241x239",
         "at_size_232x301", "upscaled_100x150", "large_1280x853", "gray_427x640",
         "gray_channel_427x640", "rgba_427x640"]


# resize_size 232 (the V2 sets) on every case; 256 (V1) on two every day, the rest when slow.
PARAMS = [pytest.param(weights, case, marks=[pytest.mark.slow] if weights == "IMAGENET1K_V1"
                       and case not in ("china_427x640", "odd_241x239") else [])
          for weights in ("IMAGENET1K_V1", "IMAGENET1K_V2") for case in CASES]


@pytest.mark.parametrize("weights,case", PARAMS)
def test_matches_torchvision_on_real_photos(weights, case):
    ws = kw.get(weights, "resnet50")
    image = _case(case)
    got = kw.transform(ws)(image)
    assert got.dtype == tf.float32 and tuple(got.shape) == (224, 224, 3)
    diff = np.abs(got.numpy() - torchvision_pixels(image, ws))
    print(f"\n[transform] {weights} {case:24s} max {diff.max():.2f}/255 mean "
          f"{diff.mean():.3f}/255")
    assert diff.max() <= 2 and diff.mean() < 0.5


def test_in_tf_data_with_images_of_every_size():
    china, flower = _photos()
    images = [china, flower.transpose(1, 0, 2), china[:301, :255], flower[7:240, 3:500]]
    fn = kw.transform("IMAGENET1K_V2", "resnet50")
    ds = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec((None, None, 3), tf.uint8))
    batches = list(ds.map(fn).batch(4))
    assert len(batches) == 1 and batches[0].shape == (4, 224, 224, 3)
    for got, image in zip(batches[0], images):
        np.testing.assert_array_equal(got.numpy(), fn(np.ascontiguousarray(image)).numpy())
    # Channels known only when the graph runs: gray repeated, RGBA's alpha dropped.
    unknown = tf.data.Dataset.from_generator(
        lambda: iter([china[..., :1], np.dstack([china, china[..., :1]])]),
        output_signature=tf.TensorSpec((None, None, None), tf.uint8))
    gray, rgba = list(unknown.map(fn))
    np.testing.assert_array_equal(gray.numpy(), fn(np.repeat(china[..., :1], 3, -1)).numpy())
    np.testing.assert_array_equal(rgba.numpy(), fn(china).numpy())


def test_a_manifests_transform_config_gives_the_same_function():
    ws = kw.get("DEFAULT", "resnet101")
    image = _photos()[1][:300, :450]
    np.testing.assert_array_equal(kw.transform(ws.transform_config())(image).numpy(),
                                  kw.transform("ResNet101_Weights.IMAGENET1K_V2")(image).numpy())


@pytest.mark.parametrize("config,match", [
    ({"resize_size": 200, "crop_size": 224}, "must be at least crop_size 224"),
    ({"resize_size": 0, "crop_size": 224}, "resize_size must be a whole number of pixels"),
    ({"resize_size": 10**30, "crop_size": 224}, "in 1..8192, got 1000000000000000000000"),
    ({"resize_size": 256, "crop_size": 224, "mean": [0.5, float("nan"), 0.5]},
     "transform mean must be 3 finite numbers"),
    ({"resize_size": 256, "crop_size": 224, "std": [0.2, 0.2, float("inf")]},
     "transform std must be 3 finite numbers"),
    ({"resize_size": 256, "crop_size": 224, "interpolation": "nearest"}, "bilinear"),
])
def test_bad_transform_configs_are_named(config, match):
    with pytest.raises(ValueError, match=match):
        kw.transform(config)


def test_an_image_of_two_channels_is_refused():
    with pytest.raises(ValueError, match="1 \\(gray\\), 3 \\(RGB\\) or 4 \\(RGBA\\)"):
        kw.transform("DEFAULT", "resnet18")(np.zeros((30, 30, 2), np.uint8))


# tf.image.resize's methods (method, antialias, rounded to whole 0..255 values as PIL's 8-bit
# result is).
METHODS = [("bilinear", True, True), ("bilinear", True, False), ("bilinear", False, True),
           ("area", False, True), ("bicubic", True, True), ("lanczos3", True, True)]


@pytest.mark.slow
def test_antialiased_bilinear_rounded_is_the_closest_of_tfs_resize_methods():
    """The choice, measured: every case above through each of tf.image.resize's methods, at
    resize 232; prints max and mean |difference| from torchvision per method."""
    from keras_resnet.weights.transforms import as_rgb, resized_size

    ws = kw.get("IMAGENET1K_V2", "resnet50")
    means = {m: 0.0 for m in METHODS}
    for case in CASES:
        image = _case(case)
        want = torchvision_pixels(image, ws)
        rgb = tf.cast(as_rgb(image), tf.float32)
        h, w = (int(v) for v in resized_size(rgb.shape[0], rgb.shape[1], ws.resize_size))
        top, left = int(round((h - 224) / 2)), int(round((w - 224) / 2))
        row = []
        for method, antialias, rounded in METHODS:
            x = rgb if (h, w) == tuple(rgb.shape[:2]) else tf.image.resize(
                rgb, (h, w), method=method, antialias=antialias)
            x = x.numpy()[top:top + 224, left:left + 224]
            diff = np.abs((np.clip(np.round(x), 0, 255) if rounded else x) - want)
            means[method, antialias, rounded] += diff.mean() / len(CASES)
            row.append(f"{diff.max():5.2f} {diff.mean():5.3f}")
        print(f"\n[resize methods] {case:24s} " + " | ".join(row), end="")
    print("\n[resize methods] columns (max, mean |diff| in 0..255 units): "
          + ", ".join(f"{m} antialias={a}{' rounded' if r else ''}" for m, a, r in METHODS))
    assert min(means, key=means.get) == ("bilinear", True, True), means
