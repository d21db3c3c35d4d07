"""TraceSGD (tfrobust/training/optimizers.py) against optax's SGD, as the reference builds it
(adversarial_robustness/jax utils.py `sgd_momentum`: trace(decay, nesterov) -> scale_by_schedule -> scale(-1)),
written out here in NumPy; its config and its checkpointed state."""

import keras
import numpy as np
import pytest

from tfrobust.training import checkpoint as ckpt
from tfrobust.training.optimizers import TraceSGD
from tfrobust.training.schedules import WarmupSchedule

STEPS = 6


def schedule():
    return WarmupSchedule(peak=0.3, warmup_steps=3, total_steps=STEPS, kind="cosine")  # lr changes every step


def gradients(seed=0):
    rng = np.random.default_rng(seed)
    return [
        [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(2,)).astype(np.float32)] for _ in range(STEPS)
    ]


def optax_sgd(params, grads, lr_fn, momentum, nesterov):
    """optax: t <- g + m t; update = g + m t (nesterov) or t; scaled by lr(count), count = 0, 1, ...; negated."""
    params = [p.astype(np.float64) for p in params]
    trace = [np.zeros_like(p) for p in params]
    for count, g in enumerate(grads):
        lr = float(lr_fn(count))
        trace = [gi + momentum * t for gi, t in zip(g, trace)]
        direction = [gi + momentum * t for gi, t in zip(g, trace)] if nesterov else trace
        params = [p - lr * d for p, d in zip(params, direction)]
    return params, trace


def run(optimizer, variables, grads):
    for g in grads:
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(x) for x in g], variables))


def fresh_variables():
    rng = np.random.default_rng(1)
    return [
        keras.Variable(rng.normal(size=(3, 2)).astype(np.float32), name="kernel"),
        keras.Variable(np.ones(2, np.float32), name="bias"),
    ]


@pytest.mark.parametrize("nesterov", [True, False])
def test_updates_equal_optax_sgd_while_the_learning_rate_changes(nesterov):
    variables = fresh_variables()
    start = [v.numpy() for v in variables]
    optimizer = TraceSGD(learning_rate=schedule(), momentum=0.9, nesterov=nesterov)
    run(optimizer, variables, gradients())
    expected, trace = optax_sgd(start, gradients(), schedule(), 0.9, nesterov)
    for v, e in zip(variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)
    for t, e in zip(optimizer.traces, trace):
        np.testing.assert_allclose(t.numpy(), e, rtol=1e-5, atol=1e-6)
    assert float(schedule()(0)) == 0.0  # the first update moves nothing, yet fills the trace
    assert int(optimizer.iterations.numpy()) == STEPS


def test_keras_sgd_is_a_different_rule_while_the_learning_rate_changes():
    # Why TraceSGD exists: Keras's SGD keeps lr inside its buffer (v <- 0.9 v - lr g), so after a warm-up
    # from lr 0 its weights differ from optax's by far more than rounding.
    variables = fresh_variables()
    start = [v.numpy() for v in variables]
    run(keras.optimizers.SGD(learning_rate=schedule(), momentum=0.9, nesterov=True), variables, gradients())
    expected, _ = optax_sgd(start, gradients(), schedule(), 0.9, True)
    assert max(float(np.abs(v.numpy() - e).max()) for v, e in zip(variables, expected)) > 0.05


def test_config_round_trip_keeps_the_schedule_and_the_rule():
    optimizer = TraceSGD(learning_rate=schedule(), momentum=0.8, nesterov=False)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(again, TraceSGD) and again.momentum == 0.8 and again.nesterov is False
    assert again.get_config()["learning_rate"] == optimizer.get_config()["learning_rate"]
    assert [float(again.learning_rate)] == [float(schedule()(0))]  # the schedule, at step 0
    assert TraceSGD.from_config(optimizer.get_config()).get_config() == optimizer.get_config()
    with pytest.raises(ValueError, match="momentum"):
        TraceSGD(momentum=1.5)


def test_checkpointed_state_resumes_the_same_trajectory(tmp_path):
    grads = gradients(3)
    straight_vars = fresh_variables()
    straight = TraceSGD(learning_rate=schedule(), momentum=0.9)
    run(straight, straight_vars, grads)

    first_vars = fresh_variables()
    first = TraceSGD(learning_rate=schedule(), momentum=0.9)
    run(first, first_vars, grads[:2])
    path = str(tmp_path / "checkpoint.npz")
    ckpt.save_arrays(
        path,
        {"network": {v.path: v.numpy() for v in first_vars}, "optimizer": {v.path: v.numpy() for v in first.variables}},
        {"epoch": 1},
    )
    groups, _ = ckpt.load_arrays(path)
    resumed_vars = fresh_variables()
    resumed = TraceSGD(learning_rate=schedule(), momentum=0.9)
    resumed.build(resumed_vars)
    ckpt.assign_group(ckpt.by_path(resumed_vars, "network"), groups["network"], "network", path)
    ckpt.assign_group(ckpt.by_path(resumed.variables, "optimizer"), groups["optimizer"], "optimizer", path)
    assert int(resumed.iterations.numpy()) == 2
    run(resumed, resumed_vars, grads[2:])
    for a, b in zip(straight_vars, resumed_vars):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
