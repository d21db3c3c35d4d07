"""Learning-rate schedule, epoch length, linear scaling rule and EMA warm-up (tfrobust/training/schedules.py),
against the reference's formulas written out here from DeepMind's `adversarial_robustness/jax`
(experiment.py `get_config`, utils.py `get_cosine_schedule` / `get_step_schedule`) and the optax schedules
they call (linear_schedule, cosine_decay_schedule, piecewise_constant_schedule, join_schedules)."""

import math

import numpy as np
import pytest

from tfrobust.config import PRESETS, make_config
from tfrobust.errors import UserError
from tfrobust.training.schedules import (
    WarmupSchedule,
    ema_decay,
    peak_learning_rate,
    steps_after_epochs,
    training_schedule,
)

# ------------------------------------------------------------------ the reference, independently (float64)


def optax_linear(count, init, end, transition_steps):
    """optax.polynomial_schedule(power=1): (init - end) * (1 - clip(count, 0, T) / T) + end."""
    count = np.clip(count, 0, transition_steps)
    return (init - end) * (1.0 - count / transition_steps) + end


def optax_cosine(count, init, decay_steps):
    """optax.cosine_decay_schedule(init, decay_steps, alpha=0); a constant init when decay_steps <= 0."""
    if decay_steps <= 0:
        return np.full(np.shape(count), init, np.float64)
    count = np.minimum(count, decay_steps)
    return init * 0.5 * (1.0 + np.cos(np.pi * count / decay_steps))


def optax_piecewise(count, init, boundaries_and_scales):
    """optax.piecewise_constant_schedule: each scale applies once count >= its boundary."""
    value = np.full(np.shape(count), init, np.float64)
    for boundary, scale in sorted(boundaries_and_scales.items()):
        value = np.where(count >= boundary, value * scale, value)
    return value


def reference_lr(step, peak, total_steps, warmup_steps, cosine):
    """utils.get_cosine_schedule / get_step_schedule: join_schedules([linear 0 -> peak, decay], [warmup])."""
    step = np.asarray(step, np.float64)
    if total_steps < warmup_steps:
        return optax_linear(step, 0.0, peak, warmup_steps)
    warm = optax_linear(step, 0.0, peak, warmup_steps) if warmup_steps > 0 else np.zeros_like(step)
    if cosine:
        after = optax_cosine(step - warmup_steps, peak, total_steps - warmup_steps)
    else:
        after = optax_piecewise(step - warmup_steps, peak, {total_steps * 2 // 3: 0.1})
    return np.where(step < warmup_steps, warm, after)  # join_schedules: step >= boundary -> next schedule


def reference_steps_from_epochs(n, batch_size, examples=50_000):
    """experiment.py: max(int(n * 50_000 / train_batch_size), 1)."""
    return max(int(n * examples / batch_size), 1)


# ------------------------------------------------------------------ tests


def test_peak_learning_rate_linear_scaling_rule():
    # docs/method.md, "Optimizer and schedule": max(0.1 * batch / 256, 0.1): 512 -> 0.2, 1024 -> 0.4,
    # smaller batches keep 0.1.
    assert peak_learning_rate(512) == pytest.approx(0.2)
    assert peak_learning_rate(1024) == pytest.approx(0.4)
    assert peak_learning_rate(128) == pytest.approx(0.1)


@pytest.mark.parametrize("kind", ["cosine", "piecewise"])
@pytest.mark.parametrize("warmup, total", [(10, 110), (3, 30), (7, 8), (0, 20), (12, 9), (10, 10)])
def test_schedule_equals_the_reference_at_every_step(kind, warmup, total):
    schedule = WarmupSchedule(peak=0.4, warmup_steps=warmup, total_steps=total, kind=kind)
    steps = np.arange(total)
    expected = reference_lr(steps, 0.4, total, warmup, cosine=kind == "cosine")
    np.testing.assert_allclose(np.asarray(schedule(steps)), expected, rtol=1e-6, atol=1e-7)


def test_warmup_starts_at_zero_and_the_drop_follows_the_warmup():
    s = WarmupSchedule(peak=0.2, warmup_steps=3, total_steps=30, kind="piecewise")
    assert float(s(0)) == 0.0  # optax linear_schedule from 0: the first update has lr 0
    assert float(s(1)) == pytest.approx(0.2 / 3)
    assert float(s(3)) == pytest.approx(0.2)
    # x0.1 at warm-up + floor(2 * 30 / 3) = 23, not at two thirds of the run (20).
    assert float(s(22)) == pytest.approx(0.2)
    assert float(s(23)) == pytest.approx(0.02)
    c = WarmupSchedule(peak=0.4, warmup_steps=10, total_steps=110, kind="cosine")
    assert float(c(60)) == pytest.approx(0.2, rel=1e-5)  # half-way through the cosine
    assert float(c(110)) == pytest.approx(0.0, abs=1e-7)


def test_steps_after_epochs_is_the_reference_count():
    # experiment.py: 400 epochs at batch 512 are int(400 * 50_000 / 512) = 39062 steps; 10 epochs 976.
    assert steps_after_epochs(400, 50_000, 512) == 39062
    assert steps_after_epochs(10, 50_000, 512) == 976
    assert steps_after_epochs(800, 50_000, 1024) == 39062
    for epochs in range(0, 50):
        for batch in (64, 128, 256, 512, 1000, 1024):
            assert steps_after_epochs(epochs, 50_000, batch) == int(epochs * 50_000 / batch)
    with pytest.raises(UserError, match="--batch-size"):
        steps_after_epochs(1, 100, 101)


@pytest.mark.parametrize("name", [n for n in PRESETS if n.startswith("cifar")])
def test_each_cifar_preset_schedule_equals_the_reference_over_the_whole_run(name):
    config = make_config(name, {}).resolved()
    batch = config.batch_size
    total = reference_steps_from_epochs(config.epochs, batch)
    warmup = reference_steps_from_epochs(10, batch)  # the reference's warm-up is always 10 epochs
    assert config.warmup_epochs == 10
    assert config.learning_rate == pytest.approx(0.1 * max(batch / 256, 1.0))
    schedule = training_schedule(
        peak=config.learning_rate,
        warmup_epochs=config.warmup_epochs,
        epochs=config.epochs,
        epoch_examples=50_000,
        batch_size=batch,
        kind=config.schedule,
    )
    # The run's length: epochs end at floor((e + 1) * 50,000 / batch) steps, the last at the reference's total.
    assert steps_after_epochs(config.epochs, 50_000, batch) == total
    ends = [
        steps_after_epochs(e + 1, 50_000, batch) - steps_after_epochs(e, 50_000, batch) for e in range(config.epochs)
    ]
    assert sum(ends) == total and set(ends) <= {50_000 // batch, 50_000 // batch + 1}
    steps = np.arange(total)
    expected = reference_lr(steps, config.learning_rate, total, warmup, cosine=config.schedule == "cosine")
    np.testing.assert_allclose(np.asarray(schedule(steps)), expected, rtol=2e-6, atol=1e-7)
    assert float(schedule(0)) == 0.0


def test_schedule_round_trips_its_config():
    s = WarmupSchedule(peak=0.2, warmup_steps=3, total_steps=30, kind="piecewise")
    t = WarmupSchedule(**s.get_config())
    assert [float(s(i)) for i in range(30)] == [float(t(i)) for i in range(30)]


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        WarmupSchedule(peak=0.1, warmup_steps=1, total_steps=2, kind="linear")


@pytest.mark.parametrize("step", [0, 1, 5, 100, 10_000])
def test_ema_decay_warmup_formula(step):
    tau = 0.999
    assert float(ema_decay(step, tau)) == pytest.approx(min(tau, (1 + step) / (10 + step)), rel=1e-6)


def test_ema_decay_reaches_tau():
    assert float(ema_decay(0, 0.999)) == pytest.approx(0.1)
    assert math.isclose(float(ema_decay(10**6, 0.995)), 0.995, rel_tol=1e-6)
