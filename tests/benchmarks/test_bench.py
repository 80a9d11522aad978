"""The benchmark harness runs and reports figures (it never asserts timings)."""

import importlib.util

import pytest

from benchmarks.model.bench import main, run


@pytest.mark.slow
def test_harness_reports_positive_rates_for_both_frameworks():
    has_torch = bool(importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision"))
    cfg = dict(arch="resnet18", input_shape=(32, 32, 3), stem="cifar", num_classes=10, width=64,
               batch=2, precision="float32", modes=("train", "infer"), jit="default", warmup=1,
               steps=1, repeats=2, torch=has_torch, torch_channels_last=False)
    res = run(cfg)
    expected = {"keras_resnet", "torchvision"} if has_torch else {"keras_resnet"}
    for mode in ("train", "infer"):
        assert set(res[mode]) == expected
        for fig in res[mode].values():
            assert len(fig["runs"]) == 2 and all(r > 0 for r in fig["runs"])
            assert fig["peak_rss_mib"] > 100  # a process with TensorFlow or torch loaded
    assert "jit_compile=False" in res["versions"]["keras_resnet"]  # CPU default: no XLA
    assert "input gradient: forward conv" in res["versions"]["keras_resnet"]
    # ResNet-18, CIFAR stem, 32x32x3, taps on zero padding excluded (see test_models)
    assert res["forward_macs_per_image"] == 481_859_328


def test_cli_prints_table_and_rejects_bad_modes(capsys, tmp_path):
    out = tmp_path / "r.json"
    assert main(["--arch", "resnet18", "--input-shape", "32,32,1", "--stem", "cifar",
                 "--width", "4", "--batch", "2", "--modes", "infer", "--warmup", "1",
                 "--steps", "1", "--repeats", "1", "--json", str(out),
                 "--input-gradient", "tensorflow"]) == 0
    text = capsys.readouterr().out
    assert "infer" in text and "ours img/s" in text and "ours GMAC/s" in text
    assert out.exists() and '"infer"' in out.read_text()
    assert "input gradient: Conv2DBackpropInput" in out.read_text()  # the A/B switch reached it
    with pytest.raises(SystemExit):
        main(["--modes", "fly"])
    with pytest.raises(SystemExit):
        main(["--precision", "float32,float8"])


def test_pipeline_throughput_runs_the_training_pipeline():
    from benchmarks.model.bench import pipeline_throughput

    assert pipeline_throughput("digits", batch=64, batches=5) > 0


def test_peak_reports_the_fma_ceiling_or_why_not_and_the_sgemm_rate(capsys):
    from benchmarks.model.peak import fma_gmacs, main, padding_time_ratio, sgemm_gmacs

    gmacs, how = fma_gmacs(iters=10_000)
    assert (gmacs is None and how) or (gmacs > 0 and "threads" in how)
    assert sgemm_gmacs(n=128, repeats=2) > 0
    ratio, share, gmacs = padding_time_ratio(size=2, channels=8, batch=2, repeats=2)
    assert ratio > 0 and gmacs > 0 and share == pytest.approx((4 / 6) ** 2)
    assert main(["--n", "128", "--iters", "10000"]) == 0
    out = capsys.readouterr().out
    assert "sgemm" in out and "GMAC/s" in out and "fma" in out and "padding" in out
    with pytest.raises(SystemExit):
        main(["--n", "0"])


def test_conv_paths_times_both_formulations_and_they_agree(capsys):
    from benchmarks.model.conv_paths import main, measure

    r = measure(batch=2, size=2, cin=8, cout=8, kernel=3, stride=2, pad=1, repeats=1)
    assert all(t > 0 for t in r["ours"] + r["keras"])
    assert r["max_abs_diff"] < 1e-5
    assert main(["--only", "on 1x1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "R18 28x28 stage4 3x3 on 1x1 (128)" in out and "stage3" not in out
    with pytest.raises(SystemExit):
        main(["--only", "no such shape"])


def test_profile_lists_op_types_and_convolution_rates(capsys):
    from benchmarks.model.profile import layer_of, main

    assert layer_of("gradient_tape/resnet18_1/stage4_block2_1/stage4_block2_conv1_1/convolution",
                    {"stage4_block2_conv1": 1}) == "stage4_block2_conv1"
    assert layer_of("resnet18_1/stage1_block1_1/Relu", {"stage4_block2_conv1": 1}) is None
    assert main(["--arch", "resnet18", "--input-shape", "32,32,3", "--stem", "cifar",
                 "--width", "4", "--batch", "2", "--mode", "train", "--steps", "1",
                 "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "ms per step" in out and "Conv2DBackpropFilter" in out and "GMAC/s" in out
    rates = [line.split()[-1] for line in out.split("slowest ops")[1].splitlines()[1:] if line]
    assert any(float(r) > 0 for r in rates if r.replace(".", "").isdigit())
    with pytest.raises(SystemExit):
        main(["--steps", "0"])


def test_weight_gradient_formulations_agree_with_tensorflows(capsys):
    from benchmarks.model.weight_grad import METHODS, main, measure

    r = measure(batch=2, size=4, channels=8, repeats=1)
    assert set(r) == set(METHODS)
    for ms, gmacs, diff in r.values():
        assert ms > 0 and gmacs > 0 and diff < 1e-5
    assert r["tensorflow"][2] == 0
    assert main(["--batch", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "machine:" in out and "stage4 4x4x512 (2)" in out
    with pytest.raises(SystemExit):
        main(["--batch", "0"])
