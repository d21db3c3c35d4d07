"""Tests for tfrobust.attacks.common (the attacks' shared plumbing) and known answers that pin each
evaluation attack's output for a fixed model, input and seed.

The known answers (`FINGERPRINTS`) pin which target class, restart number and seed every run of each
attack uses: a change to the order of the runs or to their seeds changes them. The model is linear on
6×6×2 images with five classes: the runner-up class 1 hardly depends on the input, so the first target of
most points cannot be reached and later targets (and their seeds) decide the result.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfrobust.attacks import common
from tfrobust.attacks.apgd import APGD
from tfrobust.attacks.fab import FABTargeted
from tfrobust.attacks.multitargeted import MultiTargeted
from tfrobust.attacks.square import Square
from tfrobust.errors import UserError

SEED = tf.constant([3, 7], tf.int64)


def runner_up_model():
    rng = np.random.default_rng(0)
    dim = 72
    kernel = rng.normal(size=(dim, 5)) / np.sqrt(dim)
    kernel[:, 0] = 0.0
    kernel[:, 1] *= 0.01  # the runner-up class: out of reach within eps
    kernel[:, 2:] *= 3.0
    bias = -0.5 * kernel.sum(0) - np.array([0.0, 0.1, 0.3, 0.35, 0.4])
    k, b = tf.constant(kernel.astype(np.float32)), tf.constant(bias.astype(np.float32))

    def model_fn(images):
        return tf.matmul(tf.reshape(images, [-1, dim]), k) + b

    return model_fn


def fingerprint_inputs():
    model_fn = runner_up_model()
    x = np.random.default_rng(1).uniform(size=(16, 6, 6, 2)).astype(np.float32)
    y = np.argmax(model_fn(x).numpy(), 1)
    y[:2] = (y[:2] + 1) % 5  # two points misclassified from the start
    return model_fn, x, y


ATTACKS = {
    "apgd-t-l2": APGD("l2", 0.15, "dlr-targeted", n_iter=3, n_restarts=2, n_target_classes=3),
    "fab-t-linf": FABTargeted("linf", 0.02, n_iter=3, n_target_classes=3, n_restarts=2),
    "mt-l2": MultiTargeted("l2", 0.15, n_restarts=4, n_steps=3, n_target_classes=3),
    "mt-per-target-l2": MultiTargeted(
        "l2", 0.15, n_restarts=2, n_steps=3, n_target_classes=3, restarts_per_target=True
    ),
    "square-linf": Square("linf", 0.02, n_queries=9, n_restarts=3),
}

# name -> (Σ x_adv, Σ |x_adv − x| in float64, rows changed, rows misclassified), recorded on an Intel Xeon
# CPU (lscpu: "Intel(R) Xeon(R) Processor").
FINGERPRINTS = {
    "apgd-t-l2": (584.3898046792019, 7.006738252704963, 7, 9),
    "fab-t-linf": (583.9144075401127, 5.070011773146689, 7, 9),
    "mt-l2": (584.2640259319451, 2.024200104409829, 2, 4),
    "mt-per-target-l2": (584.3165672922041, 2.0094325991813093, 2, 4),
    "square-linf": (584.3142984404694, 4.255565882427618, 3, 5),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_outputs_match_the_recorded_fingerprint(name):
    model_fn, x, y = fingerprint_inputs()
    labels = tf.one_hot(y, 5)
    adv = ATTACKS[name](model_fn, tf.constant(x), labels, SEED).numpy()
    total, distance, changed, wrong = FINGERPRINTS[name]
    assert int(np.any(adv != x, axis=(1, 2, 3)).sum()) == changed
    assert int((np.argmax(model_fn(adv).numpy(), 1) != y).sum()) == wrong
    # A different target or seed for any run moves these sums by far more than rounding can.
    np.testing.assert_allclose(np.sum(adv, dtype=np.float64), total, rtol=1e-6)
    np.testing.assert_allclose(np.sum(np.abs(adv.astype(np.float64) - x)), distance, rtol=1e-6)


def test_as_seed_keeps_integer_seeds_and_casts_the_rest_to_int64():
    from_int = common.as_seed(5)
    assert from_int.dtype == tf.int32 and from_int.shape == [] and int(from_int) == 5
    scalar = common.as_seed(tf.constant(9, tf.int64))
    assert scalar.dtype == tf.int64 and scalar.shape == [] and int(scalar) == 9
    pair = common.as_seed(tf.constant([1, 2], tf.int32))
    assert pair.dtype == tf.int32 and pair.shape == [2]
    np.testing.assert_array_equal(pair, [1, 2])
    from_list = common.as_seed([3, 4])
    assert from_list.dtype == tf.int32 and from_list.shape == [2]
    from_float = common.as_seed(tf.constant([1.0, 2.0]))
    assert from_float.dtype == tf.int64
    np.testing.assert_array_equal(from_float, [1, 2])


def test_class_ids_from_one_hot_and_from_ids():
    np.testing.assert_array_equal(common.class_ids(tf.constant([[0.0, 1.0, 0.0], [0.2, 0.1, 0.7]])), [1, 2])
    ids = common.class_ids(tf.constant([2, 0], tf.int64))
    assert ids.dtype == tf.int32
    np.testing.assert_array_equal(ids, [2, 0])


def test_counts_targets_and_notes():
    common.check_counts("X", n=3)
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(UserError, match=r"^X n must be a positive int, got"):
            common.check_counts("X", n=bad)
    assert common.target_count(9, 10) == 9 and common.target_count(9, 4) == 3 and common.target_count(9, 1) == 0
    assert common.target_notes("FAB-T", 9, 9, 10) == ()
    assert common.target_notes("FAB-T", 3, 9, 4) == (
        "FAB-T uses 3 target classes instead of 9: the model has only 4 classes",
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: APGD("linf", 0.1, n_iter=True),
        lambda: FABTargeted("linf", 0.1, n_restarts=True),
        lambda: MultiTargeted("linf", 0.1, n_steps=True),
        lambda: Square("linf", 0.1, n_queries=True),
    ],
)
def test_every_attack_rejects_a_bool_count(make):
    with pytest.raises(UserError, match="must be a positive int, got True"):
        make()


def test_clean_pass_needs_a_static_number_of_classes():
    x = tf.zeros([2, 2, 2, 1])
    images, y, logits = common.clean_pass(lambda t: tf.reshape(t, [2, 4]), x, tf.constant([1, 3]), "X")
    assert images.dtype == tf.float32 and logits.shape == [2, 4]
    np.testing.assert_array_equal(y, [1, 3])
    unknown = tf.function(lambda t: common.clean_pass(lambda u: tf.reshape(u, [2, -1]), t, tf.constant([0, 1]), "X"))
    with pytest.raises(UserError, match="X needs a model whose number of classes is known when tracing"):
        unknown.get_concrete_function(tf.TensorSpec([2, None, 2, 1], tf.float32))


def test_run_schedule_orders():
    def schedule(order, runs, n_restarts, num_targets):
        out = []
        for r in range(runs):
            column, restart = common.run_schedule(tf.constant(r), n_restarts, num_targets, order)
            out.append((None if column is None else int(column), int(restart)))
        return out

    # AutoAttack: every restart of a target before the next target.
    assert schedule(common.TARGET_MAJOR, 6, 2, 3) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    # Gowal et al. 2019: run r towards target r mod T.
    assert schedule(common.CYCLE, 5, 5, 2) == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
    assert schedule(common.TARGET_MAJOR, 3, 3, None) == [(None, 0), (None, 1), (None, 2)]
    assert common.num_runs(3, 4) == 12 and common.num_runs(3, 4, common.CYCLE) == 3
    assert common.num_runs(3, 0, common.CYCLE) == 0 and common.num_runs(3, None) == 3


class RecordingRun:
    """A fake single run: row i of x holds the value i; run c breaks the rows listed in `breaks[c]` and
    returns x + 100 (c + 1) for every row it sees."""

    def __init__(self, breaks):
        self.breaks = breaks
        self.calls = []

    def __call__(self, xs, ys, target, restart, seed):
        c = len(self.calls)
        rows = xs.numpy()[:, 0].astype(int).tolist()
        self.calls.append(
            {
                "rows": rows,
                "target": None if target is None else target.numpy().tolist(),
                "restart": int(restart),
                "seed": seed.numpy().tolist(),
            }
        )
        broken = tf.constant([row in self.breaks[c] for row in rows])
        return xs + 100.0 * (c + 1), broken


def _rows(n=6):
    x = tf.constant(np.repeat(np.arange(n, dtype=np.float32)[:, None], 2, axis=1))
    return x, tf.zeros([n], tf.int32)


def test_run_targets_attacks_only_the_rows_no_earlier_run_broke():
    x, y = _rows()
    robust = tf.constant([False, True, True, True, True, True])  # row 0: misclassified clean, never attacked
    targets = tf.constant([[10 + i, 20 + i] for i in range(6)], tf.int32)
    run = RecordingRun([{1}, {2, 3}, set(), {4}])
    adv = common.run_targets(run, x, y, robust, SEED, n_restarts=2, targets=targets).numpy()
    assert [c["rows"] for c in run.calls] == [[1, 2, 3, 4, 5], [2, 3, 4, 5], [4, 5], [4, 5]]
    assert [c["target"] for c in run.calls] == [[11, 12, 13, 14, 15], [12, 13, 14, 15], [24, 25], [24, 25]]
    assert [c["restart"] for c in run.calls] == [0, 1, 0, 1]
    assert [c["seed"] for c in run.calls] == [common.rng.fold_in(SEED, r).numpy().tolist() for r in range(4)]
    # Each row comes from the first run that broke it; unbroken and clean-misclassified rows stay clean.
    np.testing.assert_array_equal(adv[:, 0], [0, 101, 202, 203, 404, 5])


def test_run_targets_stops_attacking_once_every_row_is_broken():
    x, y = _rows(3)
    run = RecordingRun([{0, 1}, {2}, set(), set()])
    adv = common.run_targets(run, x, y, tf.ones([3], tf.bool), SEED, n_restarts=4).numpy()
    assert [c["rows"] for c in run.calls] == [[0, 1, 2], [2]]
    assert [c["target"] for c in run.calls] == [None, None] and [c["restart"] for c in run.calls] == [0, 1]
    np.testing.assert_array_equal(adv[:, 0], [100, 101, 202])


def test_run_targets_cycles_through_the_targets():
    x, y = _rows(2)
    targets = tf.constant([[7, 8], [17, 18]], tf.int32)
    run = RecordingRun([set(), set(), set()])
    adv = common.run_targets(
        run, x, y, tf.ones([2], tf.bool), SEED, n_restarts=3, targets=targets, order=common.CYCLE
    ).numpy()
    assert [c["target"] for c in run.calls] == [[7, 17], [8, 18], [7, 17]]
    assert [c["restart"] for c in run.calls] == [0, 0, 1]
    np.testing.assert_array_equal(adv, x.numpy())


def test_run_targets_without_targets_to_run_returns_the_clean_images():
    x, y = _rows(2)
    run = RecordingRun([])
    adv = common.run_targets(run, x, y, tf.ones([2], tf.bool), SEED, n_restarts=3, targets=tf.zeros([2, 0], tf.int32))
    assert run.calls == [] and adv is x


def test_attack_modules_share_the_plumbing():
    from tfrobust import attacks
    from tfrobust.attacks import apgd, fab, multitargeted, pgd, square

    assert attacks.ModelFn is common.ModelFn
    for module in (apgd, fab, multitargeted, pgd, square):
        assert module.ModelFn is common.ModelFn
        assert not hasattr(module, "_no_autograph")


@pytest.mark.parametrize("shape", [(5,), (5, 7), (5, 4, 4, 3)])
def test_select_rows_is_tf_where_with_the_mask_broadcast_over_each_row(shape):
    rng = np.random.default_rng(0)
    mask = tf.constant([True, False, False, True, True])
    a, b = (tf.constant(rng.normal(size=shape).astype(np.float32)) for _ in range(2))
    expected = tf.where(tf.reshape(mask, [-1] + [1] * (len(shape) - 1)), a, b).numpy()
    assert np.array_equal(common.select_rows(mask, a, b).numpy(), expected)
    spec = [tf.TensorSpec([None], tf.bool), tf.TensorSpec([None, *shape[1:]]), tf.TensorSpec([None, *shape[1:]])]
    graph = tf.function(common.select_rows, input_signature=spec)
    assert np.array_equal(graph(mask, a, b).numpy(), expected)
    assert np.array_equal(tf.function(common.select_rows, jit_compile=True)(mask, a, b).numpy(), expected)
    # Rows of a, not of b, where the mask holds: never a blend.
    assert np.array_equal(expected[0], a.numpy()[0]) and np.array_equal(expected[1], b.numpy()[1])
