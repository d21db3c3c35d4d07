"""Tests for tfrobust.diagnostics.audit (`tfrobust audit`): the gradient-masking checks of appendix C.

Models are linear classifiers of 4x4x1 images (as tests/test_attacks_apgd.py): the exact Linf robust
accuracy inside [0, 1] has a closed form, so the eps sweep can be checked against the analytic radius at
which every point breaks. The masked model is the same linear map behind a hard input threshold
(x > 0.5): its input gradient is zero everywhere, the textbook gradient masking (Athalye et al. 2018).
"""

import json
import os
import warnings

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tfrobust.cli import cli
from tfrobust.diagnostics.audit import AuditConfig, roughness, run_checks
from tfrobust.errors import UserError
from tfrobust.export import export_network

CLASSES = 3
RNG = np.random.default_rng(0)
KERNEL = RNG.normal(size=(16, CLASSES)).astype(np.float32)
BIAS = (-0.5 * KERNEL.sum(axis=0)).astype(np.float32)  # boundaries through the middle of the box


def linear(images):
    return tf.matmul(tf.reshape(images, [-1, 16]), KERNEL) + BIAS


def thresholded(images):
    # tf.cast of a comparison has no gradient: the attack's input gradient is exactly zero.
    return linear(tf.cast(images > 0.5, tf.float32))


X = np.random.default_rng(1).uniform(size=(48, 4, 4, 1)).astype(np.float32)
Y = linear(X).numpy().argmax(-1)  # every point correct: the sweeps start at 100%


def worst_linf_margin(x, y, eps):
    """max over ball ∩ box of max_{j≠y} z_j − z_y per example (exact for the linear model)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    eps = np.broadcast_to(np.asarray(eps, np.float64), (len(x),))[:, None]
    low, high = np.maximum(flat - eps, 0.0), np.minimum(flat + eps, 1.0)
    k, b = KERNEL.astype(np.float64), BIAS.astype(np.float64)
    out = np.full(len(x), -np.inf)
    for i in range(len(x)):
        for j in range(CLASSES):
            if j != y[i]:
                w = k[:, j] - k[:, y[i]]
                out[i] = max(out[i], np.sum(np.where(w > 0, w * high[i], w * low[i])) + b[j] - b[y[i]])
    return out


def minimal_eps(x, y):
    """Per example, the smallest Linf radius with an adversarial point (bisection: the worst margin grows
    with eps)."""
    low, high = np.zeros(len(x)), np.ones(len(x))
    for _ in range(40):
        mid = (low + high) / 2
        breaks = worst_linf_margin(x, y, mid) > 0
        high = np.where(breaks, mid, high)
        low = np.where(breaks, low, mid)
    return high


def _config(**overrides):
    base = dict(
        eps_multiples=(0.0, 1.0, 8.0),
        steps=(5, 20),
        square_queries=300,
        landscape_images=2,
        grid_size=11,
        batch_size=64,
        checks=("eps", "square", "landscape"),
    )
    return AuditConfig(**{**base, **overrides})


def test_linear_eps_curve_falls_to_zero_at_the_analytic_eps():
    radii = minimal_eps(X, Y)
    largest = float(radii.max())  # beyond it no point is robust, just below it one still is
    eps = largest / 4
    multiples = (0.0, 1.0, 2.0, 3.8, 5.0, 8.0)
    (result,), _ = run_checks(
        linear,
        X,
        Y,
        num_classes=CLASSES,
        norm="linf",
        eps=eps,
        config=_config(eps_multiples=multiples, checks=("eps",)),
    )
    measured = {p["multiple"]: p["robust_accuracy"] for p in result.details["points"]}
    for multiple in multiples:
        exact = float(np.mean(radii > multiple * eps))
        # APGD's successes are verified, so it never reports less than the exact robust accuracy; it breaks
        # every point whose adversarial radius is clearly inside the ball (CE ascent can stop short of the
        # boundary on points that are only just breakable, as the APGD tests allow too).
        clearly_breakable_left = float(np.mean(radii > 0.8 * multiple * eps))
        assert exact <= measured[multiple] <= clearly_breakable_left, (multiple, exact, measured[multiple])
    assert measured[0.0] == 1.0
    assert measured[3.8] >= 1.0 / len(X)  # 0.95 × the largest radius: the hardest point survives
    assert measured[5.0] == 0.0 and measured[8.0] == 0.0  # 1.25 × the largest radius: every point breaks
    assert result.passed and result.details["largest_rise"] == 0.0


def test_thresholded_model_is_flagged_and_the_smooth_model_passes():
    config = _config()
    # Without the points whose adversarial radius lies in (0.8 eps, eps]: CE ascent can stop short of the
    # boundary there (see the test above), so Square may break one that APGD-CE missed on the smooth model
    # too, and whether it does depends on its random draws. On the others APGD-CE breaks every breakable
    # point, so Square can break none that APGD left.
    radii = minimal_eps(X, Y)
    keep = (radii <= 0.8 * 0.1) | (radii > 0.1)
    x, y = X[keep], Y[keep]
    smooth, _ = run_checks(
        linear,
        x,
        y,
        num_classes=CLASSES,
        norm="linf",
        eps=0.1,
        config=_config(checks=("eps", "steps", "square", "landscape")),
    )
    masked, _ = run_checks(thresholded, x, y, num_classes=CLASSES, norm="linf", eps=0.1, config=config)
    smooth, masked = {r.name: r for r in smooth}, {r.name: r for r in masked}
    assert all(r.passed for r in smooth.values()), {n: r.measured for n, r in smooth.items()}
    # Zero gradients: APGD cannot reach 0% even in a ball of radius 0.8, and Square (no gradients) breaks
    # points APGD left robust.
    assert not masked["eps_sweep"].passed
    assert masked["eps_sweep"].details["accuracy_at_largest_eps"] > 0.05
    assert not masked["square_vs_gradient"].passed
    assert masked["square_vs_gradient"].details["square_only_count"] > 0
    assert smooth["square_vs_gradient"].details["square_only_count"] == 0
    # The step function's landscape is a staircase.
    assert not masked["loss_landscape"].passed
    assert masked["loss_landscape"].details["max_roughness"] > config.roughness_threshold
    assert smooth["loss_landscape"].details["max_roughness"] < config.roughness_threshold
    for name in masked:
        assert smooth[name].threshold and masked[name].measured
    # The steps sweep converges on the linear model (it cannot see zero gradients: see the module docs).
    assert [p["steps"] for p in smooth["steps_sweep"].details["points"]] == [5, 20]
    assert smooth["steps_sweep"].details["last_change"] <= 0.01


def test_checks_run_without_tf32():
    flags = []

    def record():
        flags.append(tf.config.experimental.tensor_float_32_execution_enabled())
        return np.float32(0.0)

    def recording_linear(images):  # the flag when the graph runs, at every forward pass
        return linear(images) + tf.reshape(tf.numpy_function(record, [], tf.float32, stateful=True), [])

    previous = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(True)
    try:
        run_checks(
            recording_linear,
            X[:8],
            Y[:8],
            num_classes=CLASSES,
            norm="linf",
            eps=0.1,
            config=_config(eps_multiples=(1.0,), checks=("eps",)),
        )
        assert flags and not any(flags)
        assert tf.config.experimental.tensor_float_32_execution_enabled()
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(previous)


def test_audit_attacks_through_the_evaluation_engine(monkeypatch):
    """The audit's runner is the engine's single-attack runner: the clean-correct points in batches of
    `batch_size`, every success re-verified by `tfrobust.evaluation.engine.verify`."""
    from tfrobust.attacks.apgd import APGD
    from tfrobust.diagnostics.audit import _Runner
    from tfrobust.evaluation import engine

    sizes = []
    real = engine.verify

    def counting(*args, **kwargs):
        sizes.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "verify", counting)
    runner = _Runner(linear, X, Y, CLASSES, batch_size=20, seed=0)
    broken = runner.broken(APGD("linf", 0.3, "ce", n_iter=10, n_restarts=1), "linf", 0.3, stream=0)
    assert sizes == [20, 20, 8]
    assert broken.any() and not np.any(broken & (worst_linf_margin(X, Y, 0.3) < 0))  # sound: each is real


def test_roughness_statistic():
    axis = np.linspace(-1, 1, 21)
    a, b = np.meshgrid(axis, axis, indexing="ij")
    assert roughness(2 * a - b + 3) == pytest.approx(0.0, abs=1e-12)  # a plane
    assert roughness(np.zeros((5, 5))) == 0.0  # flat
    assert roughness(a**2 + b**2) < 0.05  # smooth: h² curvature against the range
    assert roughness(np.where(a > 0.05, 1.0, 0.0)) == pytest.approx(1.0)  # one step


def test_bad_configuration_is_a_user_error():
    with pytest.raises(UserError, match="--steps"):
        AuditConfig(steps=(10,))
    with pytest.raises(UserError, match="unknown check"):
        AuditConfig(checks=("eps", "gradients"))
    with pytest.raises(UserError, match="--eps-multiples"):
        AuditConfig(eps_multiples=(-1.0, 1.0))


def _png_ok(path):
    image = matplotlib.image.imread(path)
    assert os.path.getsize(path) > 0 and image.ndim == 3
    assert image[..., :3].std() > 0.01  # not a single flat colour


def test_cli_writes_json_plots_and_refuses_an_existing_report(tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 1), name="images"), keras.layers.Flatten(), keras.layers.Dense(10)])
    rng = np.random.default_rng(0)
    model.layers[-1].set_weights([rng.normal(size=(64, 10)).astype(np.float32), np.zeros(10, np.float32)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_network(
            model,
            root=str(tmp_path),
            name="linear",
            metadata={"dataset": {"name": "digits"}, "norm": "linf", "eps": 0.05, "training_config": {"val_size": 0}},
        )
    out = str(tmp_path / "audit")
    args = [
        "audit",
        "--model",
        path,
        "--out",
        out,
        "--n-examples",
        "16",
        "--eps-multiples",
        "0,1,8",
        "--landscape-images",
        "1",
        "--grid",
        "7",
        "--checks",
        "eps,landscape",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "eps_sweep" in result.output and "overall:" in result.output
    report = json.load(open(os.path.join(out, "audit.json")))
    assert report["eps"] == pytest.approx(0.05) and report["num_examples"] == 16 and report["dataset"] == "digits"
    assert report["numerics"] == {"tf32": False}
    assert [c["name"] for c in report["checks"]] == ["eps_sweep", "loss_landscape"]
    assert [p["eps"] for p in report["checks"][0]["details"]["points"]] == pytest.approx([0.0, 0.05, 0.4])
    for name in ("eps_sweep.png", "loss_landscape.png"):
        _png_ok(os.path.join(out, name))
    # An existing report is never replaced without --overwrite; with it, only its own files go.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code != 0 and "--overwrite" in again.output and "Traceback" not in again.output
    open(os.path.join(out, "mine.txt"), "w").write("user data")
    replaced = CliRunner().invoke(cli, args[:-1] + ["eps", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert sorted(os.listdir(out)) == sorted(
        [".tfrobust-report.json", "audit.json", "audit.md", "eps_sweep.png", "mine.txt"]
    )
    assert open(os.path.join(out, "mine.txt")).read() == "user data"
