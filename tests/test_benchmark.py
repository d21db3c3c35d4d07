"""`tfrobust benchmark`: the step a run would take, timed, with FLOPs, peak and the projected run time."""

import json
import os
import platform
import sys

import pytest
from click.testing import CliRunner
from support import REPO

from tfrobust.benchmark import PEAK_TFLOPS, cpu_name, forward_equivalents, forward_flops
from tfrobust.cli import cli
from tfrobust.data.datasets import load_dataset
from tfrobust.training.schedules import steps_after_epochs

sys.path.insert(0, os.path.join(REPO, "benchmarks"))


def test_forward_equivalents_follow_the_flop_convention():
    import flops

    for steps in (1, 10, 40):
        assert forward_equivalents("trades", steps) == flops.trades_forward_equivalents(steps, attack_backward="input")
    assert forward_equivalents("trades", 10) == 27
    assert forward_equivalents("pgd-at", 10) == 23
    assert forward_equivalents("standard", 10) == 3


def test_profiler_flops_equal_the_analytic_count_of_a_wide_resnet():
    import flops

    from tfrobust.models.registry import build_model

    network = build_model("wrn-16-4", input_shape=(32, 32, 3), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    counted = forward_flops(network, (32, 32, 3))
    analytic = flops.wrn_forward_flops(16, 4)
    # The profiler also counts BatchNorm, Swish and the normalisation (well under 1% of the convolutions).
    assert analytic <= counted <= 1.01 * analytic


def test_the_measured_peak_multiplies_in_the_compute_dtype(monkeypatch):
    import tensorflow as tf

    from tfrobust.benchmark import measured_matmul_peak
    from tfrobust.config import PRECISIONS

    seen, matmul = [], tf.matmul
    monkeypatch.setattr(tf, "matmul", lambda a, b: seen.append(a.dtype) or matmul(a, b))
    for precision in PRECISIONS:
        assert measured_matmul_peak(precision, size=8, repeats=1) > 0
    assert dict(zip(PRECISIONS, seen)) == {
        "float32": tf.float32,
        "mixed_bfloat16": tf.bfloat16,
        "mixed_float16": tf.float16,
    }


def test_the_cpu_is_named_with_its_family_model_and_stepping(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
    block += "model name\t: Intel(R) Xeon(R) Processor\nstepping\t: 2\nflags\t\t: fpu avx512f\n\n"
    cpuinfo.write_text(block.format(n=0) + block.format(n=1).replace("207", "143"))
    # The first processor's block, not a later one's "model" line.
    assert cpu_name(str(cpuinfo)) == "Intel(R) Xeon(R) Processor (family 6, model 207, stepping 2)"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\n")
    assert cpu_name(str(cpuinfo)) == "Some CPU"
    assert cpu_name(str(tmp_path / "absent")) == (platform.processor() or platform.machine())


def test_known_peaks_are_per_precision():
    for name, peaks in PEAK_TFLOPS.items():
        assert set(peaks) <= {"mixed_bfloat16", "float32"} and all(v > 0 for v in peaks.values()), name
    # Specific names come before the names they contain, so "H100 PCIe" is not read as an H100 SXM.
    names = list(PEAK_TFLOPS)
    assert names.index("H100 PCIe") < names.index("H100")


def _run(args):
    return CliRunner().invoke(cli, ["benchmark", *args], catch_exceptions=False)


@pytest.mark.slow
def test_benchmark_on_a_dataset_on_disk(tmp_path):
    out = tmp_path / "bench.json"
    result = _run(
        [
            "--dataset",
            "digits",
            "--model",
            "wrn-10-1",
            "--batch-size",
            "32",
            "--attack-steps",
            "2",
            "--epochs",
            "3",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--eval-attack",
            "apgd-ce",
            "--eval-batch-size",
            "16",
            "--json",
            str(out),
        ]
    )
    assert result.exit_code == 0, result.output
    assert "images/s" in result.output and "whole run" in result.output
    assert "eval apgd-ce" in result.output and "every point surviving every stage" in result.output
    report = json.loads(out.read_text())
    assert report["data"] == "digits (on disk)" and report["xla"] is False  # CPU: auto is off
    assert len(report["step_seconds"]) == 2 and report["images_per_second"] > 0
    assert 0 < report["mfu"] < 1 and "measured" in report["peak_source"]
    assert report["forward_equivalents_per_image"] == 2 * 2 + 7
    train_size = len(load_dataset("digits", val_size=0, seed=0).train)
    assert report["run_steps"] == steps_after_epochs(3, train_size, 32)
    assert report["projected_run_hours"] == pytest.approx(report["run_steps"] * report["seconds_per_step"] / 3600)
    assert report["peak_memory_gib"] > 0
    # The evaluation's cost: one batch in which every point is attacked and survives the whole stage.
    cost = report["eval"]
    assert cost["stages"] == ["apgd-ce"] and cost["batch_size"] == 16 and cost["jit_compile"] is False
    assert cost["points_attacked"] == 16 and cost["points_broken"] == 0
    assert cost["seconds_per_batch"]["apgd-ce"] > 0
    assert cost["projected_seconds_at_most"] == pytest.approx(625 * cost["seconds_per_batch"]["apgd-ce"])
    # An existing JSON file is never overwritten.
    again = _run(["--dataset", "digits", "--model", "wrn-10-1", "--batch-size", "32", "--json", str(out)])
    assert again.exit_code == 1 and "exists" in again.output
    assert json.loads(out.read_text()) == report


@pytest.mark.slow
def test_benchmark_of_a_preset_needs_no_download(tmp_path):
    out = tmp_path / "bench.json"
    result = _run(
        [
            "--preset",
            "cifar10-wrn-28-10-cutmix",
            "--model",
            "wrn-10-1",
            "--batch-size",
            "16",
            "--attack-steps",
            "1",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--json",
            str(out),
        ]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["data"] == "synthetic images of cifar10's shape"
    assert report["config"]["aug"] == "padcrop+cutmix" and report["config"]["epochs"] == 400
    assert report["run_steps"] == steps_after_epochs(400, 50_000, 16)


def test_bad_options_are_one_line_errors(tmp_path):
    result = _run(["--dataset", "digits", "--json", str(tmp_path / "missing" / "b.json")])
    assert result.exit_code == 1 and "not a writable directory" in result.output and "Traceback" not in result.output
    result = _run(["--dataset", "digits", "--steps", "0"])
    assert result.exit_code == 1 and "--steps" in result.output and "Traceback" not in result.output
    result = _run(["--model", "wrn-1-1"])
    assert result.exit_code == 1 and "model" in result.output
    result = _run(["--dataset", "digits", "--eval-attack", "apgd-nope"])
    assert result.exit_code == 1 and "unknown attack 'apgd-nope'" in result.output and "step 1" not in result.output


def test_the_convolution_ceiling_lies_between_the_kernels_own_rates():
    import tf_trades_step

    rates = tf_trades_step.measure_conv_peak("wrn-10-1", batch_size=2, image_size=8, repeats=1)
    kinds = ("per_stage_gflops", "per_stage_input_gradient_gflops", "per_stage_filter_gradient_gflops")
    every = [r for kind in kinds for r in rates[kind]]
    assert all(len(rates[kind]) == 3 for kind in kinds) and min(every) > 0
    # The per-stage rates are reported to 0.1 GFLOP/s.
    assert rates["conv_peak_gflops"] == pytest.approx(max(rates["per_stage_gflops"]), abs=0.05)
    # A FLOP-weighted harmonic mean of the rates: never outside them.
    assert min(every) - 0.05 <= rates["conv_ceiling_gflops"] <= max(every) + 0.05
