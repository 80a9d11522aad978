"""Model library tests, parametrized over every architecture in the ARCHS table."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resnet
from keras_resnet import ARCHS, BasicBlock, Bottleneck, build_resnet, feature_extractor, freeze
from keras_resnet._keras_compat import flatten_layers
from keras_resnet.archs import min_width
from keras_resnet.builder import ResNet, min_input_size, model_config, output_stride
from tests.conftest import ALL_ARCHS, random_images

# torchvision.models.resnetXX(): sum(p.numel() for p in model.parameters())
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
}


def small_width(arch: str) -> int:
    """The tests' width: 4, or the least a grouped arch takes (a channel in each group)."""
    return max(4, min_width(arch))


EVERYDAY_ARCHS = ("resnet18", "resnet34", "resnet50")


def count(weights):
    return sum(math.prod(w.shape) for w in weights)


@pytest.mark.parametrize("arch", [  # ResNet-18/34/50 every day; 45-127 M parameters: slow
    # (test_parameter_arithmetic_is_torchvisions checks every arch's count every day)
    a if a in EVERYDAY_ARCHS else pytest.param(a, marks=pytest.mark.slow) for a in ALL_ARCHS])
def test_trainable_params_equal_torchvision(arch):
    model = build_resnet(arch, input_shape=(224, 224, 3), num_classes=1000)
    assert count(model.trainable_weights) == TORCHVISION_PARAMS[arch]
    # Non-trainable = BN moving mean + variance: 2 per BN channel, as torch's buffers.
    bn_channels = sum(
        w.shape[0] for w in model.trainable_weights if "gamma" in w.path
    )
    assert count(model.non_trainable_weights) == 2 * bn_channels


SHAPE_CASES = [
    # (input_shape, stem, expected last feature map side)
    ((28, 28, 1), "imagenet", 1),
    ((28, 28, 1), "cifar", 4),
    ((32, 32, 3), "imagenet", 1),
    ((32, 32, 3), "cifar", 4),
    ((224, 224, 3), "imagenet", 7),
]

# The 101-layer ResNeXt and Wide ResNet: ResNeXt-50's and Wide ResNet-50's blocks, more of them
# (TensorFlow's CPU grouped convolution makes each 10-80 s here): the slow run checks them
# with fewer sizes and without the gradient and .keras tests their 50-layer twins cover.
DEEP_GROUPED_OR_WIDE = ("resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2")


def deep_ones_slow(archs, everyday=EVERYDAY_ARCHS):
    """Each arch as a parameter; the others than ``everyday`` marked slow (ResNet-101 and -152:
    the bottleneck blocks of ResNet-50, only more of them, 2-7 s apiece; ResNeXt and Wide
    ResNet: the same blocks with a grouped or wider 3x3, which TensorFlow's CPU computes
    slowly)."""
    return [a if a in everyday else pytest.param(a, marks=pytest.mark.slow) for a in archs]


def test_parameter_arithmetic_is_torchvisions():
    # Every arch without building it (the builds are the slow test above; that the builder
    # makes what resnet_parameters counts is test_modelfile_limits'); the BN buffers (moving
    # mean and variance) are counted beside torchvision's parameters.
    from keras_resnet.modelfile import resnet_parameters

    for arch in ALL_ARCHS:
        config = {"arch": arch, "width": 64, "input_shape": [224, 224, 3], "num_classes": 1000}
        assert resnet_parameters(config) - _bn_buffers(arch) == TORCHVISION_PARAMS[arch], arch


def _bn_buffers(arch: str) -> int:
    """torch's running mean and variance of every BatchNorm2d of ``arch`` at width 64."""
    spec, channels = ARCHS[arch], 64  # the stem's BN
    for stage, depth in enumerate(spec.depths):
        planes = 64 * 2**stage
        if spec.block == "basic":
            channels += depth * 2 * planes + (planes if stage else 0)  # downsample from stage 2
        else:
            inner = int(planes * spec.width_per_group / 64) * spec.groups
            channels += depth * (2 * inner + 4 * planes) + 4 * planes
    return 2 * channels


# Every stem and size for every arch up to ResNet-50; the deeper ones in the slow run (every
# day their narrow parity test in test_convert runs each of them).
SHAPE_ARCH_CASES = [
    pytest.param(arch, shape, stem, side, id=f"{arch}-{'x'.join(map(str, shape))}-{stem}",
                 marks=[] if arch in EVERYDAY_ARCHS else [pytest.mark.slow])
    for arch in ALL_ARCHS for shape, stem, side in SHAPE_CASES
    if arch not in DEEP_GROUPED_OR_WIDE or (shape, stem) in (((32, 32, 3), "cifar"),
                                                             ((224, 224, 3), "imagenet"))
]


@pytest.mark.parametrize("arch,input_shape,stem,side", SHAPE_ARCH_CASES)
def test_output_shapes_and_finite(arch, input_shape, stem, side):
    width = small_width(arch)
    expansion = 4 if ARCHS[arch][0] == "bottleneck" else 1
    x = random_images(input_shape) * 255
    model = build_resnet(arch, input_shape=input_shape, num_classes=10, stem=stem, width=width)
    y = model(x, training=False)
    assert tuple(y.shape) == (2, 10)
    assert np.isfinite(np.asarray(y)).all()

    features = build_resnet(
        arch, input_shape=input_shape, include_top=False, pooling=None, stem=stem, width=width
    )
    f = features(x, training=False)
    assert tuple(f.shape) == (2, side, side, width * 8 * expansion)


@pytest.mark.parametrize("arch", deep_ones_slow(
    [a for a in ALL_ARCHS if a not in DEEP_GROUPED_OR_WIDE]))
def test_every_trainable_variable_gets_a_gradient(arch):
    model = build_resnet(arch, input_shape=(32, 32, 3), num_classes=5, stem="cifar",
                         width=small_width(arch))
    x = random_images((32, 32, 3), batch=4)
    labels = np.array([0, 1, 2, 3])
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing
    zero = [v.path for v, g in zip(model.trainable_variables, grads)
            if not np.any(np.asarray(g))]
    assert not zero, f"all-zero gradients: {zero}"
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("arch", deep_ones_slow(  # one arch of each block every day
    [a for a in ALL_ARCHS if a not in DEEP_GROUPED_OR_WIDE], ("resnet18", "resnet50")))
def test_config_round_trip_and_keras_file(arch, tmp_path):
    names = [f"class {i}" for i in range(7)]
    width = small_width(arch)
    model = build_resnet(arch, input_shape=(32, 32, 3), num_classes=7, stem="cifar", width=width,
                         normalization=([125.0, 123.0, 114.0], [63.0, 62.0, 66.0]),
                         class_names=names)
    x = random_images((32, 32, 3), batch=3) * 255
    expected = np.asarray(model(x, training=False))
    builder_args = {
        "arch": arch, "input_shape": [32, 32, 3], "num_classes": 7, "include_top": True,
        "pooling": "avg", "classifier_activation": None, "stem": "cifar", "width": width,
        "zero_init_residual": False,
        "normalization": [[125.0, 123.0, 114.0], [63.0, 62.0, 66.0]], "class_names": names,
    }
    assert isinstance(model, ResNet)
    assert model.builder_config == builder_args
    assert model.get_config() == {**builder_args, "name": arch, "trainable": True,
                                  "dtype": "float32", "frozen_layers": [],
                                  "format_version": 1}
    assert (model.arch, model.class_names) == (arch, tuple(names))

    clone = ResNet.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x, training=False)), expected)
    assert [l.name for l in clone.layers] == [l.name for l in model.layers]

    path = tmp_path / f"{arch}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is ResNet
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), expected)
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]


def test_builder_config_builds_the_same_architecture():
    model = build_resnet("resnet50", input_shape=(None, None, 1), include_top=False,
                         pooling="max", width=2, zero_init_residual=True, name="trunk")
    again = build_resnet(**model.builder_config)
    assert again.builder_config == model.builder_config
    assert [w.shape for w in again.weights] == [w.shape for w in model.weights]
    assert (model.name, again.name, model.class_names) == ("trunk", "resnet50", None)


def test_model_config_is_the_builder_config_of_a_resnet_only():
    model = build_resnet("resnet34", input_shape=(32, 32, 3), num_classes=5, stem="cifar",
                         width=2, normalization=(127.5, 64.0), classifier_activation="softmax",
                         class_names=list("abcde"))
    assert model_config(model) == model.builder_config
    for other in (keras.Model(model.input, model.output, name="graph"),
                  keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])):
        with pytest.raises(ValueError, match="not a keras_resnet model"):
            model_config(other)


@pytest.mark.parametrize("cls,kwargs", [
    (BasicBlock, dict(filters=8, stride=2, zero_init_residual=True)),
    (Bottleneck, dict(filters=4, stride=1, zero_init_residual=False)),
    (Bottleneck, dict(filters=16, stride=2, zero_init_residual=False, groups=8,
                      width_per_group=8)),
])
def test_block_get_config_is_exactly_the_constructor_arguments(cls, kwargs):
    block = cls(**kwargs, name="stage2_block1")
    config = block.get_config()
    assert {k: config[k] for k in kwargs} == kwargs
    # Plus only the base-layer keyword arguments that the constructor passes on.
    assert set(config) == set(kwargs) | {"name", "trainable", "dtype", "groups",
                                         "width_per_group"}
    again = cls.from_config(config)
    assert again.get_config() == config
    assert keras.saving.get_registered_object(f"keras_resnet>{cls.__name__}") is cls


def test_projection_shortcut_exactly_when_needed():
    def block(cls, filters, stride, in_ch):
        b = cls(filters, stride=stride)
        b.build((None, 8, 8, in_ch))
        return b.shortcut_conv is not None

    assert not block(BasicBlock, 16, 1, 16)
    assert block(BasicBlock, 16, 2, 16)
    assert block(BasicBlock, 16, 1, 8)
    assert not block(Bottleneck, 16, 1, 64)
    assert block(Bottleneck, 16, 1, 16)  # first block of stage 1 in resnet50
    assert block(Bottleneck, 16, 2, 64)

    model = build_resnet("resnet50", input_shape=(64, 64, 3), width=8, num_classes=3)
    with_projection = sorted(l.name for l in model.layers
                             if isinstance(l, Bottleneck) and l.shortcut_conv is not None)
    assert with_projection == [f"stage{s}_block1" for s in range(1, 5)]


def test_v1_5_stride_on_the_3x3_conv_and_layer_names():
    model = build_resnet("resnet50", input_shape=(64, 64, 3), width=8, num_classes=3)
    block = model.get_layer("stage3_block1")
    assert [c.strides for c in block.convs] == [(1, 1), (2, 2), (1, 1)]
    assert [c.kernel_size for c in block.convs] == [(1, 1), (3, 3), (1, 1)]
    assert block.convs[1].name == "stage3_block1_conv2"
    assert block.shortcut_conv.name == "stage3_block1_shortcut"
    assert block.shortcut_bn.name == "stage3_block1_shortcut_bn"
    names = [l.name for l in model.layers]
    assert names[:2] == ["image", "stem_conv"]
    assert model.get_layer("stem_conv").explicit_padding == ((3, 3), (3, 3))
    assert block.convs[1].explicit_padding == ((1, 1), (1, 1))  # the strided 3x3
    assert block.convs[0].explicit_padding is None and block.convs[0].padding == "same"
    assert names[-2:] == ["avg_pool", "predictions"]
    assert any(w.path == "stage3_block2/stage3_block2_conv1/kernel" for w in model.weights)


def test_batch_norm_and_conv_settings_match_torch():
    model = build_resnet("resnet18", input_shape=(32, 32, 3), width=4, stem="cifar")
    bns, convs = [], []
    for layer in flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            bns.append(layer)
        if isinstance(layer, keras.layers.Conv2D):
            convs.append(layer)
    assert len(bns) == len(convs) == 1 + 2 * 8 + 3
    assert all(b.epsilon == 1e-5 and b.momentum == 0.9 for b in bns)
    assert not any(c.use_bias for c in convs)


def test_strided_convolutions_pad_symmetrically_like_torch():
    """A 3x3/2 conv on an even input must see one pixel of padding on *both* sides."""
    block = BasicBlock(1, stride=2, name="b")
    x = np.zeros((1, 4, 4, 1), "float32")
    x[0, 0, 0, 0] = 1.0  # only the top-left pixel is set
    block.build(x.shape)
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[0, 0] = 1.0  # each output reads its window's top-left tap
    block.convs[0].kernel.assign(kernel)
    # torch (padding 1 on both sides): out[i] reads in[2i - 1 + k] for tap k = 0, 1, 2, so the
    # top-left tap never reaches in[0]. Keras "same" pads only after: out[i] reads in[2i + k].
    conv_out = np.asarray(block.convs[0](x))[0, :, :, 0]
    assert conv_out.shape == (2, 2)
    assert conv_out.sum() == 0.0
    kernel[:] = 0.0
    kernel[1, 1] = 1.0  # centre tap: torch's out[0] reads in[0]
    block.convs[0].kernel.assign(kernel)
    conv_out = np.asarray(block.convs[0](x))[0, :, :, 0]
    np.testing.assert_array_equal(conv_out, [[1.0, 0.0], [0.0, 0.0]])


def test_zero_init_residual_makes_blocks_start_as_identity_on_the_residual_branch():
    model = build_resnet("resnet50", input_shape=(32, 32, 3), width=4, stem="cifar",
                         zero_init_residual=True)
    for layer in model.layers:
        if isinstance(layer, Bottleneck):
            assert not np.any(layer.bns[-1].gamma.numpy())
            assert np.all(layer.bns[0].gamma.numpy() == 1)
    block = BasicBlock(8, zero_init_residual=True)
    x = random_images((6, 6, 8), batch=2)
    np.testing.assert_allclose(np.asarray(block(x, training=False)), np.maximum(x, 0), atol=0)


def test_normalization_layer_takes_raw_pixels():
    mean, std = [33.3], [78.6]
    raw = random_images((28, 28, 1), batch=2) * 255
    plain = build_resnet("resnet18", input_shape=(28, 28, 1), width=4, num_classes=10)
    normed = build_resnet("resnet18", input_shape=(28, 28, 1), width=4, num_classes=10,
                          normalization=(mean, std))
    n_norm = len(normed.get_layer("normalization").weights)
    normed.set_weights(normed.get_weights()[:n_norm] + plain.get_weights())
    expected = np.asarray(plain((raw - mean[0]) / std[0], training=False))
    np.testing.assert_allclose(np.asarray(normed(raw, training=False)), expected,
                               rtol=1e-5, atol=1e-5)
    assert normed.layers[1].name == "normalization"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_mixed_precision(policy, arch):
    compute = policy.split("_")[1]
    # A name or a policy object; the global policy stays as it was.
    dtype = policy if arch == "resnet18" else keras.DTypePolicy(policy)
    model = build_resnet(arch, input_shape=(32, 32, 3), num_classes=10, stem="cifar", width=4,
                         dtype=dtype)
    assert keras.config.dtype_policy().name == "float32"
    assert model.dtype_policy.name == model.get_config()["dtype"] == policy
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert model.get_layer("stage2_block1").shortcut_bn.compute_dtype == compute
    assert all(w.dtype == "float32" for w in model.weights)
    assert model.get_layer("stage1_block1").convs[0].compute_dtype == compute
    assert model.get_layer("stem_conv").compute_dtype == compute
    x = random_images((32, 32, 3)) * 255
    inner = keras.Model(model.input, model.get_layer("stage4_block1").output)
    assert inner(x).dtype == compute
    logits = model(x, training=True)
    assert logits.dtype == "float32"
    assert np.isfinite(np.asarray(logits)).all()


def test_feature_extractor_returns_every_stage():
    model = build_resnet("resnet50", input_shape=(64, 64, 3), width=4, num_classes=3)
    fx = feature_extractor(model, include_stem=True)
    out = fx(random_images((64, 64, 3)))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stem": (2, 16, 16, 4),
        "stage1": (2, 16, 16, 16),
        "stage2": (2, 8, 8, 32),
        "stage3": (2, 4, 4, 64),
        "stage4": (2, 2, 2, 128),
    }
    assert 64 // out["stage4"].shape[1] == output_stride("imagenet")
    # Shared weights: the extractor sees the classifier model's variables.
    assert fx.get_layer("stage4_block3") is model.get_layer("stage4_block3")
    with pytest.raises(ValueError, match="stages must be"):
        feature_extractor(model, stages=(0, 5))
    with pytest.raises(ValueError, match="not a keras_resnet model"):
        feature_extractor(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_freeze_stem_and_first_stage_keeps_their_batch_norm_in_inference_mode():
    model = build_resnet("resnet18", input_shape=(32, 32, 3), width=4, stem="cifar",
                         num_classes=4)
    freeze(model, stages=1)
    frozen = [model.get_layer("stem_conv"), model.get_layer("stem_bn"),
              model.get_layer("stage1_block1"), model.get_layer("stage1_block2")]
    assert all(not l.trainable for l in frozen)
    assert model.get_layer("stage2_block1").trainable
    before = {w.path: w.numpy().copy() for l in frozen for w in l.weights}
    trained_before = model.get_layer("stage2_block1").weights[0].numpy().copy()

    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))
    x = random_images((32, 32, 3), batch=8) * 255
    model.fit(x, np.arange(8) % 4, epochs=2, batch_size=4, verbose=0)
    for l in frozen:
        for w in l.weights:  # kernels, gamma/beta *and* moving statistics unchanged
            np.testing.assert_array_equal(w.numpy(), before[w.path], err_msg=w.path)
    assert not np.array_equal(model.get_layer("stage2_block1").weights[0].numpy(),
                              trained_before)
    # Frozen BN runs in inference mode even with training=True.
    fx = keras.Model(model.input, model.get_layer("stage1_block2").output)
    np.testing.assert_allclose(np.asarray(fx(x, training=True)),
                               np.asarray(fx(x, training=False)), rtol=1e-6, atol=1e-6)
    freeze(model, stages=0, stem=False)
    assert all(l.trainable for l in frozen)
    with pytest.raises(ValueError, match="0..4"):
        freeze(model, stages=5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(arch="resnet20"), r"Unknown arch 'resnet20'; expected one of \['resnet101'"),
    (dict(arch="resnet18", input_shape=(16, 16, 1)),
     r"input height 16 is too small for the 'imagenet' stem; the minimum is 17"),
    (dict(arch="resnet18", input_shape=(4, 32, 3), stem="cifar"),
     r"input height 4 is too small for the 'cifar' stem; the minimum is 5"),
    (dict(arch="resnet18", num_classes=0), r"num_classes must be a positive integer, got 0"),
    (dict(arch="resnet18", num_classes=-3), r"num_classes must be a positive integer, got -3"),
    (dict(arch="resnet18", num_classes=2.5), r"got 2.5"),
    (dict(arch="resnet18", pooling="mean"),
     r"Unknown pooling 'mean'; expected one of \['avg', 'max', None\]"),
    (dict(arch="resnet18", stem="tiny"), r"Unknown stem 'tiny'; expected one of \['imagenet', 'cifar'\]"),
    (dict(arch="resnet18", input_shape=(32, 32)), r"input_shape must be \(height, width, channels\)"),
    (dict(arch="resnet18", input_shape=(32, 32, 0)), r"channels must be a positive integer"),
    (dict(arch="resnet18", width=0), r"width must be a positive integer, got 0"),
    (dict(arch="resnet18", include_top=True, pooling=None), r"needs pooling 'avg' or 'max'"),
    (dict(arch="resnet18", input_shape=(32, 32, 3), normalization=([1, 2], [1, 1, 1])),
     r"1 or 3 values"),
    (dict(arch="resnet18", num_classes=2, class_names=["cat"]),
     r"1 class_names for num_classes=2"),
    (dict(arch="resnet18", num_classes=2, class_names=["cat", "cat"]),
     r"class_names must be distinct; repeated: \['cat'\]"),
    (dict(arch="resnet18", num_classes=2, class_names=["cat", ""]), r"non-empty strings"),
    (dict(arch="resnet18", num_classes=2, class_names="cd"), r"list of 2 strings, got 'cd'"),
    (dict(arch="resnet18", include_top=False, class_names=["a"]), r"needs include_top=True"),
])
def test_bad_input_is_a_clear_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_resnet(**kwargs)


def test_min_input_size_is_the_real_boundary():
    for stem in ("imagenet", "cifar"):
        m = min_input_size(stem)
        build_resnet("resnet18", input_shape=(m, m, 1), width=2, stem=stem)
        with pytest.raises(ValueError, match="too small"):
            build_resnet("resnet18", input_shape=(m - 1, m, 1), width=2, stem=stem)
    # Size-agnostic models are allowed.
    model = build_resnet("resnet18", input_shape=(None, None, 3), width=2)
    assert tuple(model(random_images((40, 56, 3))).shape) == (2, 1000)


@pytest.mark.parametrize("arch", deep_ones_slow(ALL_ARCHS))
def test_variant_functions_read_the_table(arch):
    fn = getattr(keras_resnet, arch)
    assert fn.__name__ == arch
    model = fn(input_shape=(32, 32, 3), stem="cifar", width=max(2, min_width(arch)),
               num_classes=3)
    blocks = [l for l in model.layers if isinstance(l, (BasicBlock, Bottleneck))]
    assert len(blocks) == sum(ARCHS[arch].depths)
    spec = ARCHS[arch]
    assert {(b.groups, b.width_per_group) for b in blocks} == {(spec.groups,
                                                                spec.width_per_group)}
    assert model.name == arch


def test_summary_cli_prints_table_totals_and_flops(capsys):
    from keras_resnet.summary import main

    assert main(["--arch", "resnet18", "--input-shape", "224,224,3"]) == 0
    out = capsys.readouterr().out
    assert "Trainable params:     11,689,512" in out
    # torchvision reports 1.81 GFLOPS (multiply-accumulates) for resnet18 at 224x224.
    assert "Multiply-accumulates: 1.814 G" in out
    assert "stage3_block1_shortcut (Conv2D)" in out
    assert "(N, 7, 7, 512)" in out
    with pytest.raises(SystemExit):
        main(["--arch", "resnet18", "--input-shape", "8,8,1"])
    assert "minimum is 17" in capsys.readouterr().err


def test_total_macs_counts_every_convolution_and_the_classifier():
    from keras_resnet.summary import total_macs

    model = build_resnet("resnet18", input_shape=(32, 32, 3), num_classes=10, stem="cifar")
    expected = 32 * 32 * 9 * 3 * 64  # 3x3 stem
    size, cin = 32, 64
    for cout in (64, 128, 256, 512):
        out = size if cout == 64 else size // 2
        expected += out * out * 9 * cin * cout  # first 3x3 of the stage's first block
        expected += 3 * out * out * 9 * cout * cout  # the three other 3x3 convolutions
        if cout != cin:
            expected += out * out * cin * cout  # 1x1 projection shortcut
        size, cin = out, cout
    expected += 512 * 10
    assert total_macs(model) == expected  # 555,422,720

    # Only taps on real pixels: a 3x3 "same" conv on n x n maps meets (3n - 2)^2 of 9 n^2 taps
    # per channel pair; a 3x3/2 conv padded by 1 on n x n meets (3 n/2 - 1)^2.
    on_pixels = 94 * 94 * 3 * 64
    size, cin = 32, 64
    for cout in (64, 128, 256, 512):
        if cout == 64:
            on_pixels += (3 * size - 2) ** 2 * cin * cout
        else:
            on_pixels += (3 * size // 2 - 1) ** 2 * cin * cout + (size // 2) ** 2 * cin * cout
            size //= 2
        on_pixels += 3 * (3 * size - 2) ** 2 * cout * cout
        cin = cout
    on_pixels += 512 * 10
    assert total_macs(model, on_pixels=True) == on_pixels  # 481,859,328


def test_fused_batch_norm_matches_keras_and_updates_like_torch():
    from keras_resnet.layers import BatchNorm

    x = np.random.default_rng(1).normal(2.0, 3.0, (8, 5, 5, 4)).astype("float32")
    ours = BatchNorm(momentum=0.9, epsilon=1e-5)
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    y_ours, y_ref = ours(x, training=True), ref(x, training=True)
    np.testing.assert_allclose(np.asarray(y_ours), np.asarray(y_ref), atol=2e-6)
    np.testing.assert_allclose(ours.moving_mean.numpy(), ref.moving_mean.numpy(), atol=1e-6)
    # torch.nn.BatchNorm2d: running_var += 0.1 * (unbiased batch variance - running_var)
    flat = x.reshape(-1, 4)
    np.testing.assert_allclose(ours.moving_variance.numpy(),
                               0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
    # Inference uses the moving statistics, exactly as the Keras layer does with the same ones.
    ref.moving_variance.assign(ours.moving_variance)
    np.testing.assert_allclose(np.asarray(ours(x, training=False)),
                               np.asarray(ref(x, training=False)), atol=2e-6)
    # A frozen layer stays in inference mode under training=True.
    ours.trainable = False
    before = ours.moving_mean.numpy().copy()
    np.testing.assert_allclose(np.asarray(ours(x, training=True)),
                               np.asarray(ours(x, training=False)), atol=0)
    np.testing.assert_array_equal(ours.moving_mean.numpy(), before)
    assert keras.saving.get_registered_object("keras_resnet>BatchNorm") is BatchNorm


def test_mixed_precision_keras_file_loads_under_the_float32_policy(tmp_path):
    model = build_resnet("resnet50", input_shape=(32, 32, 3), num_classes=3, stem="cifar",
                         width=4, dtype="mixed_bfloat16")
    x = random_images((32, 32, 3)) * 255
    expected = np.asarray(model(x, training=False))
    model.save(tmp_path / "mixed.keras")
    loaded = keras.models.load_model(tmp_path / "mixed.keras")
    block = loaded.get_layer("stage2_block1")
    assert block.convs[0].compute_dtype == block.shortcut_bn.compute_dtype == "bfloat16"
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), expected)
    from keras_resnet import with_dtype

    assert with_dtype(loaded, keras.DTypePolicy("mixed_bfloat16")) is loaded
    rebuilt = with_dtype(loaded, "float32")
    assert rebuilt.get_layer("stage2_block1").shortcut_bn.compute_dtype == "float32"
    assert rebuilt.get_config() == {**loaded.get_config(), "dtype": "float32"}
    for a, b in zip(loaded.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size,kernel,stride,padding,pad,path", [
    (1, 3, 1, "same", None, "matmul"), (1, 1, 1, "same", None, "matmul"),
    (2, 1, 2, "same", None, "matmul"), (4, 3, 2, "valid", None, "matmul"),
    (2, 3, 1, "same", None, "matmul"), (3, 3, 2, "same", None, "matmul"),
    (2, 3, 2, "same", None, "matmul"), (3, 3, 1, "valid", None, "matmul"),
    # torch-style zero padding inside the conv: the product skips the padded pixels
    (2, 3, 2, "valid", ((1, 1), (1, 1)), "matmul"), (3, 3, 2, "valid", ((1, 1), (1, 1)), "matmul"),
    (1, 3, 2, "valid", ((1, 1), (1, 1)), "matmul"), (2, 3, 1, "valid", ((1, 1), (1, 1)), "matmul"),
    # too big for the matrix product: the plain convolution runs
    (5, 3, 1, "same", None, "conv"), (6, 3, 2, "valid", ((1, 1), (1, 1)), "conv"),
    # strided 1x1 (projection shortcuts): a product only where the output is one pixel
    (2, 1, 2, "valid", None, "matmul"), (3, 1, 2, "valid", None, "matmul"),
    (7, 1, 2, "valid", None, "conv"), (4, 1, 2, "same", None, "conv"),
])
def test_conv2d_formulations_equal_keras_conv2d(size, kernel, stride, padding, pad, path):
    from keras_resnet.kernels import conv as conv_kernels
    from keras_resnet.layers import Conv2D

    x = tf.constant(np.random.default_rng(0).normal(size=(5, size, size, 8)).astype("float32"))
    ours = Conv2D(16, kernel, strides=stride, padding=padding, use_bias=False,
                  explicit_padding=pad)
    ref = keras.layers.Conv2D(16, kernel, strides=stride, padding=padding, use_bias=False)
    padded = x.shape if pad is None else (5, size + 2, size + 2, 8)  # as blocks build it
    ours.build(padded)
    ref.build(padded)
    ref.kernel.assign(ours.kernel)
    plan = conv_kernels.tap_plan(ours, size, size, pad, (stride, stride))
    assert (plan is None) == (path == "conv")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours = ours(x)
        y_ref = ref(x if pad is None else keras.layers.ZeroPadding2D(pad)(x))
        l_ours, l_ref = tf.reduce_sum(y_ours ** 2), tf.reduce_sum(y_ref ** 2)
    assert y_ours.shape == y_ref.shape == ours.compute_output_shape(x.shape)
    np.testing.assert_allclose(np.asarray(y_ours), np.asarray(y_ref), rtol=1e-5, atol=1e-6)
    for g_ours, g_ref in zip(tape.gradient(l_ours, [x, ours.kernel]),
                             tape.gradient(l_ref, [x, ref.kernel])):
        np.testing.assert_allclose(np.asarray(g_ours), np.asarray(g_ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.slow
def test_xla_compiles_the_fast_paths_and_agrees(arch):
    # The GPU path keeps XLA: the tiny-map products (gather of taps, padding folded in) and the
    # subsampled 1x1 shortcuts must compile under jit_compile=True (odd 7x7 -> 4x4 map included).
    x = random_images((28, 28, 1), batch=4) * 255
    y = np.arange(4) % 3
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = build_resnet(arch, input_shape=(28, 28, 1), num_classes=3, width=8)
        model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=jit,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        out = model.predict_on_batch(x)  # before training: one SGD step at batch 4 makes
        results.append((model.train_on_batch(x, y), out))  # the moving statistics chaotic
    (loss_eager, out_eager), (loss_xla, out_xla) = results
    assert math.isfinite(loss_xla)
    np.testing.assert_allclose(loss_xla, loss_eager, rtol=1e-3)  # 50 layers of round-off
    np.testing.assert_allclose(out_xla, out_eager, rtol=1e-4, atol=1e-4 * np.abs(out_eager).max())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_input_gradient_is_a_forward_convolution_and_equals_tensorflows(dtype):
    from keras_resnet.layers import Conv2D

    x = tf.constant(np.random.default_rng(0).normal(size=(4, 6, 5, 8)).astype("float32"))
    ours = Conv2D(16, 3, padding="same", use_bias=False, dtype=dtype)
    ref = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, dtype=dtype)
    ours.build(x.shape)
    ref.build(x.shape)
    ref.kernel.assign(ours.kernel)

    def grads(layer, training):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training) if layer is ours else layer(x)
            loss = tf.reduce_sum(tf.cast(y, "float32") ** 2)
        return y, tape.gradient(loss, [x, layer.kernel])

    y_ours, g_ours = grads(ours, True)
    y_ref, g_ref = grads(ref, None)
    tol = 1e-5 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(np.asarray(y_ours, "float32"), np.asarray(y_ref, "float32"),
                               rtol=tol, atol=tol)
    for a, b in zip(g_ours, g_ref):
        scale = float(np.abs(np.asarray(b, "float32")).max())
        np.testing.assert_allclose(np.asarray(a, "float32"), np.asarray(b, "float32"),
                                   rtol=tol, atol=tol * scale)

    def op_types(training):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = ours(x, training=training)
            return tape.gradient(y, x)
        return {op.type for op in step.get_concrete_function(x).graph.get_operations()}

    assert "Conv2DBackpropInput" not in op_types(True)
    # Inference and the tape outside training keep TensorFlow's own gradient (and its
    # Conv2D + batch norm + ReLU fusion in inference graphs).
    assert "Conv2DBackpropInput" in op_types(False)


def test_training_step_uses_the_forward_convolution_for_stride_1_input_gradients():
    from keras_resnet import kernels

    model = build_resnet("resnet18", input_shape=(32, 32, 3), num_classes=4, stem="cifar",
                         width=4)
    x = random_images((32, 32, 3), batch=2) * 255

    def count_backprop_input():
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(x, training=True))
            return tape.gradient(loss, model.trainable_variables)
        ops_ = step.get_concrete_function(x).graph.get_operations()
        return sum(op.type == "Conv2DBackpropInput" for op in ops_)

    # ResNet-18, CIFAR stem: 14 stride-1 3x3 convolutions (stem and 13 in blocks) switch to
    # the forward convolution; the 3 strided 3x3 and 3 strided 1x1 shortcuts keep TensorFlow's.
    with_flip = count_backprop_input()
    with kernels.use(kernels.active() - {"flipped_input_gradient"}):
        without = count_backprop_input()
    assert "flipped_input_gradient" in kernels.active()
    assert (with_flip, without) == (6, 20)


def test_conv2d_explicit_padding_round_trips_and_rejects_what_it_cannot_do():
    from keras_resnet.layers import Conv2D

    conv = Conv2D(4, 3, strides=2, padding="valid", explicit_padding=1)
    config = conv.get_config()
    assert config["explicit_padding"] == [[1, 1], [1, 1]]
    assert Conv2D.from_config(config).explicit_padding == ((1, 1), (1, 1))
    assert conv.compute_output_shape((2, 8, 8, 3)) == (2, 4, 4, 4)  # torch: (8 + 2 - 3) // 2 + 1
    assert "explicit_padding" not in Conv2D(4, 3, padding="same").get_config()
    with pytest.raises(ValueError, match="needs padding='valid'"):
        Conv2D(4, 3, padding="same", explicit_padding=1)
    for bad in (((1, -1), (1, 1)), (1, 2), "1"):
        with pytest.raises(ValueError, match="non-negative"):
            Conv2D(4, 3, padding="valid", explicit_padding=bad)
    with pytest.raises(ValueError, match="channels_last"):
        Conv2D(4, 3, padding="valid", explicit_padding=1, data_format="channels_first")
