"""Learning-rate schedule, linear scaling rule and EMA warm-up (tfrobust/training/schedules.py)."""

import math

import pytest

from tfrobust.training.schedules import WarmupSchedule, ema_decay, peak_learning_rate


def test_peak_learning_rate_linear_scaling_rule():
    # METHOD.md: max(0.1 * batch / 256, 0.1): 512 -> 0.2, 1024 -> 0.4, smaller batches keep 0.1.
    assert peak_learning_rate(512) == pytest.approx(0.2)
    assert peak_learning_rate(1024) == pytest.approx(0.4)
    assert peak_learning_rate(128) == pytest.approx(0.1)


def test_linear_warmup_then_cosine_to_zero():
    s = WarmupSchedule(peak=0.4, warmup_steps=10, total_steps=110, kind="cosine")
    assert float(s(0)) == pytest.approx(0.04)
    assert float(s(4)) == pytest.approx(0.2)
    assert float(s(9)) == pytest.approx(0.4)
    assert float(s(10)) == pytest.approx(0.4)
    assert float(s(60)) == pytest.approx(0.2, rel=1e-5)  # half-way through the cosine
    assert float(s(110)) == pytest.approx(0.0, abs=1e-7)
    values = [float(s(t)) for t in range(10, 111)]
    assert all(a >= b - 1e-7 for a, b in zip(values, values[1:]))


def test_piecewise_drops_tenfold_at_two_thirds():
    s = WarmupSchedule(peak=0.2, warmup_steps=3, total_steps=30, kind="piecewise")
    assert float(s(19)) == pytest.approx(0.2)
    assert float(s(20)) == pytest.approx(0.02)
    assert float(s(29)) == pytest.approx(0.02)


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
