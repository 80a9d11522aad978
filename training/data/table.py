"""The datasets this project knows by name: their facts in one table.

Each entry says what a dataset holds (image shape, classes, the per-channel statistics the
model normalizes with, its augmentation, its official split sizes); `training.data.sources`
knows how to read each. "folder" is a placeholder whose real values come from the folder.
"""

from __future__ import annotations

import dataclasses

SPLITS = ("train", "val", "test")
SOURCES = ("auto", "archive", "tfds")
# Held-out images (the validation split, and the test split of a folder of class folders) are
# drawn with this fixed seed, independent of the training seed, so every run of a dataset
# validates and tests on the same images.
SPLIT_SEED = 20261124

# https://www.tensorflow.org/datasets/catalog/fashion_mnist
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# Fine labels in index order, as in the archive's fine_label_names.txt (TFDS only ships indices
# offline).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    source: str  # where the images come from, in words
    image_size: tuple  # (height, width, channels) of the images the pipelines yield
    num_classes: int
    class_names: tuple
    mean: tuple  # per channel, raw 0..255 pixel units (the model's normalization layer)
    std: tuple
    augmentation: str  # "mnist" (rotation + shift), "cifar" (pad-4 crop + flip), "crop" or "none"
    splits: dict  # official split sizes
    tfds_name: str | None = None
    download_host: str | None = None  # probed before a TFDS download
    synthetic: bool = False  # noise: accuracy on it means nothing and is never reported


DATASETS = {
    # Placeholders: get_info("folder", (H, W, C), data_dir=DIR) reads the real values from DIR.
    "folder": DatasetInfo(
        "folder", "an image folder (--data-dir DIR: DIR/<class>/* or DIR/train|val|test/<class>/*)",
        (32, 32, 3), 2, ("class_0", "class_1"), (127.5,), (64.0,), "mnist", {}),
    "mnist": DatasetInfo(
        "mnist", "TFDS 'mnist' or the IDX .gz files (yann.lecun.com layout)", (28, 28, 1), 10,
        DIGIT_CLASSES,
        # torchvision's MNIST constants (0.1307,), (0.3081,) times 255; seed code.
        (0.1307 * 255,), (0.3081 * 255,), "mnist", {"train": 60000, "test": 10000},
        tfds_name="mnist", download_host="storage.googleapis.com",
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", "TFDS 'fashion_mnist' or the IDX .gz files (zalandoresearch layout)",
        (28, 28, 1), 10, FASHION_MNIST_CLASSES,
        (0.2860 * 255,), (0.3530 * 255,), "mnist", {"train": 60000, "test": 10000},
        tfds_name="fashion_mnist", download_host="fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    ),
    "cifar10": DatasetInfo(
        "cifar10", "TFDS 'cifar10' or cifar-10-binary.tar.gz", (32, 32, 3), 10, CIFAR10_CLASSES,
        # Per-pixel statistics of the training set. The seed code's (0.2023, 0.1994, 0.2010)
        # is a widely copied std of per-image means, not of pixels.
        (0.4914 * 255, 0.4822 * 255, 0.4465 * 255), (0.2470 * 255, 0.2435 * 255, 0.2616 * 255),
        "cifar", {"train": 50000, "test": 10000},
        tfds_name="cifar10", download_host="www.cs.toronto.edu",
    ),
    "cifar100": DatasetInfo(
        "cifar100", "TFDS 'cifar100' or cifar-100-binary.tar.gz (fine labels)", (32, 32, 3), 100,
        CIFAR100_CLASSES,
        (0.5071 * 255, 0.4865 * 255, 0.4409 * 255), (0.2673 * 255, 0.2564 * 255, 0.2762 * 255),
        "cifar", {"train": 50000, "test": 10000},
        tfds_name="cifar100", download_host="www.cs.toronto.edu",
    ),
    # scikit-learn ships these 1797 real 8x8 scans (UCI optdigits test set), so they work on a
    # machine without network. They are upscaled to 20x20 and padded to 28x28, the layout of
    # MNIST (digits size-normalised into a 20x20 box centred in 28x28): a digits model has
    # MNIST's input shape and the ImageNet stem (minimum 17 px) applies, and the MNIST
    # rotation/shift augmentation does not push strokes out of the frame. Values 0..16 are
    # scaled to 0..255. Mean/std measured on all 1797 images after that transform.
    "digits": DatasetInfo(
        "digits", "scikit-learn load_digits (bundled, offline), 8x8 -> 28x28", (28, 28, 1), 10,
        DIGIT_CLASSES, (39.7134,), (70.7168,), "mnist", {"train": 1438, "test": 359},
    ),
    "synthetic": DatasetInfo(
        "synthetic", "uniform noise with random labels (benchmarks and smoke tests only)",
        (32, 32, 3), 10, tuple(f"class_{i}" for i in range(10)), (127.5,), (73.9,), "none",
        {"train": 1024, "test": 256}, synthetic=True,
    ),
}
