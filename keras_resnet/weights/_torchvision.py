"""torchvision's ResNet, ResNeXt and Wide ResNet weight sets, as data: copied from torchvision
0.29.1's own source (``torchvision/models/resnet.py``: each ``*_Weights`` entry's URL,
``num_params``, ``_metrics``, ``_ops``, ``_file_size`` and ``recipe``, and the
``resize_size``/``crop_size`` of its ``ImageClassification`` transform).
tests/keras_resnet/test_weights_registry.py checks every figure against the installed
torchvision's table.

The hash is the one torchvision publishes: the hex digits after the last ``-`` of the file name,
a prefix of the file's sha256 (torch.hub's ``check_hash`` rule). ``gflops`` is torchvision's
``_ops`` (GFLOPS of one 224x224 image), ``file_size_mb`` its ``_file_size`` (MB of the .pth).
"""

# Every entry: mean/std (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225), bilinear antialiased
# resize of the shorter side, center crop 224, the 1000 ImageNet-1K categories.
_V1_RECIPE = "https://github.com/pytorch/vision/tree/main/references/classification#resnet"
_V1_DOCS = ("These weights reproduce closely the results of the paper using a simple training "
            "recipe.")
_RESNEXT_RECIPE = "https://github.com/pytorch/vision/tree/main/references/classification#resnext"
_WIDE_RECIPE = "https://github.com/pytorch/vision/pull/912#issue-445437439"
_SCRATCH_DOCS = ("These weights were trained from scratch by using TorchVision's new training "
                 "recipe (https://pytorch.org/blog/how-to-train-state-of-the-art-models-using-"
                 "torchvision-latest-primitives/).")
_V2_DOCS = ("These weights improve upon the results of the original paper by using TorchVision's "
            "new training recipe (https://pytorch.org/blog/how-to-train-state-of-the-art-models-"
            "using-torchvision-latest-primitives/).")

TORCHVISION_WEIGHTS = (
    dict(arch="resnet18", name="IMAGENET1K_V1",
         url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
         num_params=11689512, acc1=69.758, acc5=89.078, gflops=1.814, file_size_mb=44.661,
         recipe=_V1_RECIPE, resize_size=256, crop_size=224, docs=_V1_DOCS),
    dict(arch="resnet34", name="IMAGENET1K_V1",
         url="https://download.pytorch.org/models/resnet34-b627a593.pth",
         num_params=21797672, acc1=73.314, acc5=91.420, gflops=3.664, file_size_mb=83.275,
         recipe=_V1_RECIPE, resize_size=256, crop_size=224, docs=_V1_DOCS),
    dict(arch="resnet50", name="IMAGENET1K_V1",
         url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
         num_params=25557032, acc1=76.130, acc5=92.862, gflops=4.089, file_size_mb=97.781,
         recipe=_V1_RECIPE, resize_size=256, crop_size=224, docs=_V1_DOCS),
    dict(arch="resnet50", name="IMAGENET1K_V2",
         url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
         num_params=25557032, acc1=80.858, acc5=95.434, gflops=4.089, file_size_mb=97.79,
         recipe="https://github.com/pytorch/vision/issues/3995#issuecomment-1013906621",
         resize_size=232, crop_size=224, docs=_V2_DOCS),
    dict(arch="resnet101", name="IMAGENET1K_V1",
         url="https://download.pytorch.org/models/resnet101-63fe2227.pth",
         num_params=44549160, acc1=77.374, acc5=93.546, gflops=7.801, file_size_mb=170.511,
         recipe=_V1_RECIPE, resize_size=256, crop_size=224, docs=_V1_DOCS),
    dict(arch="resnet101", name="IMAGENET1K_V2",
         url="https://download.pytorch.org/models/resnet101-cd907fc2.pth",
         num_params=44549160, acc1=81.886, acc5=95.780, gflops=7.801, file_size_mb=170.53,
         recipe="https://github.com/pytorch/vision/issues/3995#new-recipe",
         resize_size=232, crop_size=224, docs=_V2_DOCS),
    dict(arch="resnet152", name="IMAGENET1K_V1",
         url="https://download.pytorch.org/models/resnet152-394f9c45.pth",
         num_params=60192808, acc1=78.312, acc5=94.046, gflops=11.514, file_size_mb=230.434,
         recipe=_V1_RECIPE, resize_size=256, crop_size=224, docs=_V1_DOCS),
    dict(arch="resnet152", name="IMAGENET1K_V2",
         url="https://download.pytorch.org/models/resnet152-f82ba261.pth",
         num_params=60192808, acc1=82.284, acc5=96.002, gflops=11.514, file_size_mb=230.474,
         recipe="https://github.com/pytorch/vision/issues/3995#new-recipe",
         resize_size=232, crop_size=224, docs=_V2_DOCS),
    dict(arch="resnext50_32x4d", name="IMAGENET1K_V1",
         url="https://download.pytorch.org/models/resnext50_32x4d-7cdf4587.pth",
         num_params=25028904, acc1=77.618, acc5=93.698, gflops=4.23, file_size_mb=95.789,
         recipe=_RESNEXT_RECIPE, resize_size=256, crop_size=224, docs=_V1_DOCS),
    dict(arch="resnext50_32x4d", name="IMAGENET1K_V2",
         url="https://download.pytorch.org/models/resnext50_32x4d-1a0047aa.pth",
         num_params=25028904, acc1=81.198, acc5=95.340, gflops=4.23, file_size_mb=95.833,
         recipe="https://github.com/pytorch/vision/issues/3995#new-recipe",
         resize_size=232, crop_size=224, docs=_V2_DOCS),
    dict(arch="resnext101_32x8d", name="IMAGENET1K_V1",
         url="https://download.pytorch.org/models/resnext101_32x8d-8ba56ff5.pth",
         num_params=88791336, acc1=79.312, acc5=94.526, gflops=16.414, file_size_mb=339.586,
         recipe=_RESNEXT_RECIPE, resize_size=256, crop_size=224, docs=_V1_DOCS),
    dict(arch="resnext101_32x8d", name="IMAGENET1K_V2",
         url="https://download.pytorch.org/models/resnext101_32x8d-110c445d.pth",
         num_params=88791336, acc1=82.834, acc5=96.228, gflops=16.414, file_size_mb=339.673,
         recipe="https://github.com/pytorch/vision/issues/3995#new-recipe-with-fixres",
         resize_size=232, crop_size=224, docs=_V2_DOCS),
    dict(arch="resnext101_64x4d", name="IMAGENET1K_V1",
         url="https://download.pytorch.org/models/resnext101_64x4d-173b62eb.pth",
         num_params=83455272, acc1=83.246, acc5=96.454, gflops=15.46, file_size_mb=319.318,
         recipe="https://github.com/pytorch/vision/pull/5935",
         resize_size=232, crop_size=224, docs=_SCRATCH_DOCS),
    dict(arch="wide_resnet50_2", name="IMAGENET1K_V1",
         url="https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
         num_params=68883240, acc1=78.468, acc5=94.086, gflops=11.398, file_size_mb=131.82,
         recipe=_WIDE_RECIPE, resize_size=256, crop_size=224, docs=_V1_DOCS),
    dict(arch="wide_resnet50_2", name="IMAGENET1K_V2",
         url="https://download.pytorch.org/models/wide_resnet50_2-9ba9bcbe.pth",
         num_params=68883240, acc1=81.602, acc5=95.758, gflops=11.398, file_size_mb=263.124,
         recipe="https://github.com/pytorch/vision/issues/3995#new-recipe-with-fixres",
         resize_size=232, crop_size=224, docs=_V2_DOCS),
    dict(arch="wide_resnet101_2", name="IMAGENET1K_V1",
         url="https://download.pytorch.org/models/wide_resnet101_2-32ee1156.pth",
         num_params=126886696, acc1=78.848, acc5=94.284, gflops=22.753, file_size_mb=242.896,
         recipe=_WIDE_RECIPE, resize_size=256, crop_size=224, docs=_V1_DOCS),
    dict(arch="wide_resnet101_2", name="IMAGENET1K_V2",
         url="https://download.pytorch.org/models/wide_resnet101_2-d733dc28.pth",
         num_params=126886696, acc1=82.510, acc5=96.020, gflops=22.753, file_size_mb=484.747,
         recipe="https://github.com/pytorch/vision/issues/3995#new-recipe",
         resize_size=232, crop_size=224, docs=_V2_DOCS),
)

# torchvision's ``ResNet*_Weights.DEFAULT``: the best set of each arch.
TORCHVISION_DEFAULTS = {
    "resnet18": "IMAGENET1K_V1",
    "resnet34": "IMAGENET1K_V1",
    "resnet50": "IMAGENET1K_V2",
    "resnet101": "IMAGENET1K_V2",
    "resnet152": "IMAGENET1K_V2",
    "resnext50_32x4d": "IMAGENET1K_V2",
    "resnext101_32x8d": "IMAGENET1K_V2",
    "resnext101_64x4d": "IMAGENET1K_V1",
    "wide_resnet50_2": "IMAGENET1K_V2",
    "wide_resnet101_2": "IMAGENET1K_V2",
}

# torchvision's name of each arch's weights enum: ``ResNeXt50_32X4D_Weights.IMAGENET1K_V2``.
TORCHVISION_WEIGHTS_ENUMS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "resnet152": "ResNet152_Weights",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
    "resnext101_32x8d": "ResNeXt101_32X8D_Weights",
    "resnext101_64x4d": "ResNeXt101_64X4D_Weights",
    "wide_resnet50_2": "Wide_ResNet50_2_Weights",
    "wide_resnet101_2": "Wide_ResNet101_2_Weights",
}

# transforms/_presets.py ImageClassification's defaults, on 0..1 images.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
