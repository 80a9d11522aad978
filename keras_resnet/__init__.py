"""keras_resnet: torchvision's ResNet v1.5 (ResNet-18 ... 152) as Keras 3 models."""

from keras_resnet.blocks import BN_EPSILON, BN_MOMENTUM, BasicBlock, Bottleneck
from keras_resnet.builder import (
    ARCHS,
    STEMS,
    build_resnet,
    min_input_size,
    output_stride,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)
from keras_resnet.features import feature_extractor, freeze

__version__ = "0.1.0"

__all__ = [
    "ARCHS", "STEMS", "BN_EPSILON", "BN_MOMENTUM", "BasicBlock", "Bottleneck", "build_resnet",
    "feature_extractor", "freeze", "min_input_size", "output_stride", "resnet18", "resnet34",
    "resnet50", "resnet101", "resnet152",
]
