"""Tests for tfrobust.evaluation: cascade semantics, re-verification, determinism, `run_eval` end to end.

The model is a fixed linear classifier (Dense on flattened 4x4x1 images, 3 classes), for which the exact
Linf robust accuracy inside [0, 1] has a closed form: the worst case of each logit difference over the
box-shaped set {|x' - x| <= eps} ∩ [0, 1] picks, per pixel, the interval end its coefficient points to.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust.attacks.pgd import pgd40_attack
from tfrobust.errors import UserError
from tfrobust.evaluation import (
    CASCADES,
    STAGES,
    VERIFY_ROWS,
    EvalSettings,
    Evaluator,
    fixed_layout_logits,
    misclassified,
    run_eval,
    verify,
)
from tfrobust.export import export_network

EPS = 0.1
N, BATCH, CLASSES = 16, 8, 3


def _linear_model():
    model = keras.Sequential(
        [keras.Input((4, 4, 1), name="images"), keras.layers.Flatten(), keras.layers.Dense(CLASSES)]
    )
    rng = np.random.default_rng(0)
    model.layers[-1].set_weights([rng.normal(size=(16, CLASSES)).astype(np.float32), np.zeros(CLASSES, np.float32)])
    return model


MODEL = _linear_model()
KERNEL, BIAS = (w.numpy() for w in MODEL.layers[-1].weights)


def logits_fn(images):
    return MODEL(images, training=False)


def _data():
    """uint8-valued images (so the npz used by run_eval holds exactly the same points) and labels with
    three deliberate mistakes."""
    rng = np.random.default_rng(1)
    x = (rng.integers(0, 256, size=(N, 4, 4, 1)).astype(np.float32) / 255.0).astype(np.float32)
    predicted = logits_fn(x).numpy().argmax(-1)
    y = predicted.copy()
    y[[1, 6, 11]] = (y[[1, 6, 11]] + 1) % CLASSES
    return x, y


X, Y = _data()


def _dataset(x=X, y=Y):
    return tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, CLASSES))).batch(BATCH)


def exact_linf_robust(x, y, eps):
    """Exact robustness of the linear model in {|x' - x|_inf <= eps} ∩ [0, 1]."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    low, high = np.maximum(flat - eps, 0.0), np.minimum(flat + eps, 1.0)
    robust = np.zeros(len(x), bool)
    for i in range(len(x)):
        worst = -np.inf
        for j in range(CLASSES):
            if j == y[i]:
                continue
            w = KERNEL[:, j].astype(np.float64) - KERNEL[:, y[i]]
            worst = max(worst, np.sum(np.where(w > 0, w * high[i], w * low[i])) + BIAS[j] - BIAS[y[i]])
        robust[i] = worst < 0
    return robust


@pytest.fixture
def spy(monkeypatch):
    """Registers stage "spy": records (outside the graph) every batch of images it is asked to attack and
    returns them unchanged, so it never breaks a point."""
    calls = []

    def record(images):
        calls.append(images.copy())
        return images

    def factory(norm, eps):
        def attack(model_fn, x, labels, seed):
            out = tf.numpy_function(record, [x], tf.float32)
            return tf.reshape(out, tf.shape(x))

        return attack

    monkeypatch.setitem(STAGES, "spy", factory)
    return calls


@pytest.fixture(scope="module")
def evaluator():
    return Evaluator(["pgd40"], norm="linf", eps=EPS)


@pytest.fixture(scope="module")
def result(evaluator):
    return evaluator.run(logits_fn, _dataset(), seed=0, keep_adversarial=True)


# --------------------------------------------------------------------------------------------------
# Cascade semantics


def test_counts_and_subset(result):
    assert result.num_examples == N
    assert result.stage_names == ("pgd40",)
    clean = logits_fn(X).numpy().argmax(-1) == Y
    np.testing.assert_array_equal(result.clean_correct, clean)
    assert result.clean_accuracy == pytest.approx(13 / 16)
    assert not np.any(result.robust & ~result.clean_correct)  # robust ⊆ clean_correct
    assert 0 < result.robust_accuracy < result.clean_accuracy  # eps 0.1 breaks some points, not all
    assert result.robust_after_stage == (pytest.approx(result.robust_accuracy),)


def test_matches_exact_linear_robustness(result):
    exact = exact_linf_robust(X, Y, EPS)
    # Sound: a verified adversarial example exists for every point counted broken.
    assert not np.any(exact & ~result.robust)
    # Strong: PGD-40 finds the worst case of a linear model.
    np.testing.assert_array_equal(result.robust, exact)


def test_kept_adversarial_examples_are_valid(result):
    adv = result.adversarial
    assert adv is not None and adv.shape == X.shape and adv.dtype == np.float32
    broken = result.clean_correct & ~result.robust
    assert broken.any()
    delta = np.abs(adv - X).reshape(N, -1).max(axis=1)
    assert np.all(delta[broken] <= EPS + 1e-6)
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    predicted = logits_fn(adv).numpy().argmax(-1)
    assert np.all(predicted[broken] != Y[broken])
    # Robust and clean-misclassified points keep their clean image.
    np.testing.assert_array_equal(adv[~broken], X[~broken])


def test_same_seed_gives_identical_result(evaluator, result):
    again = evaluator.run(logits_fn, _dataset(), seed=0, keep_adversarial=True)
    np.testing.assert_array_equal(again.clean_correct, result.clean_correct)
    np.testing.assert_array_equal(again.robust, result.robust)
    np.testing.assert_array_equal(again.adversarial, result.adversarial)
    assert again.robust_after_stage == result.robust_after_stage
    assert again.stage_names == result.stage_names and again.num_examples == result.num_examples
    # Without keep_adversarial nothing is kept.
    assert evaluator.run(logits_fn, _dataset(), seed=0).adversarial is None


def test_clean_misclassified_points_are_never_attacked_and_stages_cascade(spy, result):
    evaluator = Evaluator(["pgd40", "spy", "pgd40"], norm="linf", eps=EPS)
    cascade = evaluator.run(logits_fn, _dataset(), seed=0)
    # The first stage uses the same seeds as the single-stage run, so it breaks the same points.
    assert cascade.robust_after_stage[0] == pytest.approx(result.robust_accuracy)
    # The spy saw exactly the clean images of the points still robust after stage 0, in order, regrouped
    # into full batches (stage-major, as the reference AutoAttack).
    survivors = X[result.robust]
    assert [len(images) for images in spy] == [min(BATCH, len(survivors) - i) for i in range(0, len(survivors), BATCH)]
    np.testing.assert_array_equal(np.concatenate(spy), survivors)
    # Robust accuracy after each stage never increases, and the last one is the result.
    after = cascade.robust_after_stage
    assert after[0] <= cascade.clean_accuracy
    assert after[1] == after[0]  # the spy breaks nothing
    assert all(b <= a for a, b in zip(after, after[1:]))
    assert after[-1] == pytest.approx(cascade.robust_accuracy)
    assert not np.any(cascade.robust & ~result.robust)


def test_pools_bound_what_is_regrouped(spy, result):
    """With a pool of one batch, stage s of batch b sees only batch b's survivors (batch-major order)."""
    Evaluator(["pgd40", "spy"], norm="linf", eps=EPS).run(logits_fn, _dataset(), seed=0, pool_size=BATCH)
    assert len(spy) == N // BATCH
    for batch, images in enumerate(spy):
        rows = slice(batch * BATCH, (batch + 1) * BATCH)
        # PGD-40 breaks exactly the analytically breakable points here, whatever the seed.
        np.testing.assert_array_equal(images, X[rows][result.robust[rows]])


def test_all_misclassified_means_zero_and_no_attack(spy):
    wrong = (logits_fn(X).numpy().argmax(-1) + 1) % CLASSES
    out = Evaluator(["spy"], norm="linf", eps=EPS).run(logits_fn, _dataset(y=wrong), keep_adversarial=True)
    assert out.clean_accuracy == 0.0 and out.robust_accuracy == 0.0
    assert out.robust_after_stage == (0.0,)
    assert spy == []  # never invoked
    np.testing.assert_array_equal(out.adversarial, X)


def test_attack_results_are_reverified(monkeypatch):
    """A stage that returns misclassified points outside the eps ball breaks nothing."""
    far = pgd40_attack("linf", 1.0)
    seen = []

    def factory(norm, eps):
        def attack(model_fn, x, labels, seed):
            adv = far(model_fn, x, labels, seed)
            return tf.numpy_function(lambda a: (seen.append(a.copy()), a)[1], [adv], tf.float32)

        return attack

    monkeypatch.setitem(STAGES, "outside", factory)
    out = Evaluator(["outside"], norm="linf", eps=EPS).run(logits_fn, _dataset())
    found = np.concatenate(seen)
    clean_correct = logits_fn(X).numpy().argmax(-1) == Y
    # The attack did succeed (misclassified, far away) ...
    assert np.all(logits_fn(found).numpy().argmax(-1) != Y[clean_correct])
    assert np.all(np.abs(found - X[clean_correct]).reshape(len(found), -1).max(axis=1) > EPS)
    # ... but nothing counts as broken.
    np.testing.assert_array_equal(out.robust, clean_correct)


# --------------------------------------------------------------------------------------------------
# Extremes of eps


def test_tiny_eps_robust_equals_clean():
    out = Evaluator(["pgd40"], norm="linf", eps=1e-6).run(logits_fn, _dataset())
    np.testing.assert_array_equal(out.robust, out.clean_correct)
    assert out.robust_accuracy == out.clean_accuracy


def test_huge_eps_breaks_the_linear_model():
    assert not exact_linf_robust(X, Y, 1.0).any()
    out = Evaluator(["pgd40"], norm="linf", eps=1.0).run(logits_fn, _dataset())
    assert out.robust_accuracy <= 1 / N
    assert out.clean_accuracy == pytest.approx(13 / 16)


def test_empty_dataset():
    out = Evaluator(["pgd40"], norm="linf", eps=EPS).run(logits_fn, _dataset().take(0))
    assert out.num_examples == 0 and np.isnan(out.clean_accuracy) and np.isnan(out.robust_accuracy)


def test_unknown_stage_is_user_error():
    with pytest.raises(UserError, match="unknown attack"):
        Evaluator(["pgd41"], norm="linf", eps=EPS)
    assert CASCADES["pgd40"] == ("pgd40",)


# --------------------------------------------------------------------------------------------------
# verify


def _threshold_fn(t):
    """Class 1 iff the mean pixel exceeds t."""

    def fn(images):
        m = tf.reduce_mean(tf.reshape(images, [tf.shape(images)[0], -1]), axis=1)
        return tf.stack([tf.zeros_like(m), m - t], axis=-1)

    return fn


def test_verify_accepts_and_rejects():
    fn = _threshold_fn(0.52)
    clean = np.full((1, 4, 4, 1), 0.5, np.float32)
    label = np.array([0])

    def check(adv, norm="linf", eps=0.05, x=clean, f=fn):
        return bool(verify(f, x, np.asarray(adv, np.float32), label, norm, eps)[0])

    assert check(clean + 0.03)  # inside the ball, in [0, 1], misclassified
    assert not check(clean + 0.01)  # still correctly classified
    assert not check(clean + 0.1)  # misclassified but outside the Linf ball
    assert check(clean + np.float32(0.05))  # exactly on the sphere (float rounding tolerated)
    # Outside [0, 1] above ...
    high = np.full((1, 4, 4, 1), 0.98, np.float32)
    assert check(high + 0.015, x=high, f=_threshold_fn(0.99))
    assert not check(high + 0.03, x=high, f=_threshold_fn(0.99))
    # ... and below.
    low_pixel = clean.copy()
    low_pixel[0, 0, 0, 0] = 0.0
    adv = low_pixel + 0.04  # mean 0.509
    assert check(adv, x=low_pixel, f=_threshold_fn(0.5))
    adv[0, 0, 0, 0] = -0.01
    assert not check(adv, x=low_pixel, f=_threshold_fn(0.5))
    # L2: 16 pixels moved by c have norm 4c.
    assert check(clean + 0.03, norm="l2", eps=0.125)
    assert not check(clean + 0.03, norm="l2", eps=0.115)
    # L1: the same 16 pixels have norm 16c = 0.48 (inside every L2 radius above, outside these L1 ones).
    assert check(clean + 0.03, norm="l1", eps=0.49)
    assert not check(clean + 0.03, norm="l1", eps=0.47)
    # Empty batches.
    assert verify(fn, clean[:0], clean[:0], label[:0], "linf", 0.05).shape == (0,)


def test_verify_per_example():
    fn = _threshold_fn(0.52)
    clean = np.full((3, 4, 4, 1), 0.5, np.float32)
    adv = clean + np.array([0.03, 0.01, 0.2], np.float32).reshape(3, 1, 1, 1)
    np.testing.assert_array_equal(verify(fn, clean, adv, np.zeros(3, int), "linf", 0.05), [True, False, False])


def _worst_linf_corner(x, y, eps):
    """The worst case of the linear model in {|x' - x|_inf <= eps} ∩ [0, 1] (as `exact_linf_robust`): per
    example, the interval end each pixel's coefficient points to, for the other class that gains most."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    low, high = np.maximum(flat - eps, 0.0), np.minimum(flat + eps, 1.0)
    out = flat.copy()
    for i in range(len(x)):
        best = -np.inf
        for j in range(CLASSES):
            if j != y[i]:
                w = KERNEL[:, j].astype(np.float64) - KERNEL[:, y[i]]
                corner = np.where(w > 0, high[i], low[i])
                gain = w @ corner + BIAS[j] - BIAS[y[i]]
                if gain > best:
                    best, out[i] = gain, corner
    return out.reshape(x.shape).astype(np.float32)


def test_attack_batches_runs_one_attack_in_order_and_counts_only_verified_successes():
    """The single-attack runner shared by the cascade and the audit: batches of `todo` in order, seed(k)
    for batch k, and a success counted only inside the ball (known answer: the exact linear worst case)."""
    from tfrobust.evaluation import GroupResult, attack_batches

    onehot = np.eye(CLASSES, dtype=np.float32)[Y]
    todo = np.array([0, 2, 3, 4, 5, 7, 8, 9, 10, 12, 13])  # 11 points: batches of 4, 4 and 3
    seen = []

    def attack(images, labels, seed):
        images, labels = images.numpy(), labels.numpy().argmax(-1)
        seen.append((images, seed.numpy().tolist()))
        out = _worst_linf_corner(images, labels, EPS)
        out[1::2] = _worst_linf_corner(images[1::2], labels[1::2], 3 * EPS)  # outside the ball
        assert np.all(np.abs(out[1::2] - images[1::2]).reshape(len(out[1::2]), -1).max(1) > 1.5 * EPS)
        return tf.constant(out)

    def run(**kwargs):
        return list(
            attack_batches(
                attack,
                logits_fn,
                X,
                onehot,
                todo,
                batch_size=4,
                norm="linf",
                eps=EPS,
                seed=lambda k: tf.constant([7, k], tf.int64),
                **kwargs,
            )
        )

    results = run(keep_adversarial=True)
    batches = [todo[:4], todo[4:8], todo[8:]]
    assert [r.index.tolist() for r in results] == [b.tolist() for b in batches]
    assert [s for _, s in seen] == [[7, 0], [7, 1], [7, 2]]
    for (images, _), batch in zip(seen, batches):
        np.testing.assert_array_equal(images, X[batch])
    exact_broken = ~exact_linf_robust(X, Y, EPS)
    for r, batch in zip(results, batches):
        expected = exact_broken[batch] & (np.arange(len(batch)) % 2 == 0)  # odd rows were outside the ball
        np.testing.assert_array_equal(r.broken, expected)
        np.testing.assert_array_equal(r.adversarial, _worst_linf_corner(X[batch], Y[batch], EPS)[expected])
    assert any(r.broken.any() for r in results)

    # A batch saved by an interrupted run is taken as it is and not attacked; the others are stored.
    saved = GroupResult(index=todo[4:8], broken=np.array([True, False, False, False]), seconds=2.0)
    seen.clear()
    stored = []
    again = run(load=lambda k, batch: saved if k == 1 else None, store=lambda k, r: stored.append(k))
    assert again[1] is saved and stored == [0, 2] and [s for _, s in seen] == [[7, 0], [7, 2]]
    assert again[0].adversarial is None


def shape_dependent_logits(images):
    """Two classes; the margin z_0 − z_1 of the first pixel's value minus 0.5, shifted by 1e-3 when the batch
    has an odd number of rows: a stand-in for kernels that round differently at different batch sizes."""
    flat = tf.reshape(images, [tf.shape(images)[0], -1])
    odd = tf.cast(tf.shape(images)[0] % 2, tf.float32)
    z0 = flat[:, 0] - 0.5 - 1e-3 * odd
    return tf.stack([z0, tf.zeros_like(z0)], axis=-1)


def test_verdict_does_not_depend_on_the_other_points_in_the_batch():
    rng = np.random.default_rng(3)
    # On the boundary within the shift: margin +5e-4, misclassified when the batch is odd-sized.
    point = np.full([1, 4, 4, 1], 0.5, np.float32)
    point[0, 0, 0, 0] = 0.5005
    clean = point.copy()
    verdicts = set()
    for others in range(0, 6):
        filler = rng.uniform(size=(others, 4, 4, 1)).astype(np.float32)
        for position in range(others + 1):
            adv = np.insert(filler, position, point[0], axis=0)
            labels = np.zeros(len(adv), int)
            broken = verify(
                shape_dependent_logits, np.insert(filler, position, clean[0], axis=0), adv, labels, "linf", 0.1
            )
            verdicts.add(bool(broken[position]))
    assert verdicts == {False}  # batches of VERIFY_ROWS (even) rows: margin +5e-4, correctly classified
    # The stand-in really is shape dependent: a batch of 1 or 3 would have called it broken.
    assert np.asarray(shape_dependent_logits(point)).argmax(-1)[0] == 1


def test_fixed_layout_logits_of_a_row_do_not_depend_on_the_rest_of_the_batch():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("swish"),
            keras.layers.Conv2D(8, 3, strides=2, padding="same"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5),
        ]
    )
    fn = tf.function(lambda x: model(x, training=False))
    rng = np.random.default_rng(4)
    example = rng.uniform(size=(1, 8, 8, 3)).astype(np.float32)
    reference = fixed_layout_logits(fn, example)[0]
    for others in (1, 7, VERIFY_ROWS - 1, VERIFY_ROWS + 5):
        batch = rng.uniform(size=(others, 8, 8, 3)).astype(np.float32)
        position = int(rng.integers(others + 1))
        logits = fixed_layout_logits(fn, np.insert(batch, position, example[0], axis=0))
        np.testing.assert_array_equal(logits[position], reference)  # bit for bit


def test_misclassified_counts_ties_as_correct():
    rng = np.random.default_rng(5)
    logits = rng.integers(-2, 3, size=(400, 4)).astype(np.float32)  # many exact ties
    labels = rng.integers(0, 4, size=400)
    expected = np.array(
        [any(logits[i, j] > logits[i, labels[i]] for j in range(4) if j != labels[i]) for i in range(400)]
    )
    np.testing.assert_array_equal(misclassified(logits, labels), expected)
    tied = np.array([[1.0, 1.0, 0.0]], np.float32)
    assert not misclassified(tied, np.array([1]))[0] and not misclassified(tied, np.array([0]))[0]

    # A clean tie is a correct point, and an adversarial tie is not a success.
    def tie_fn(images):
        return tf.zeros([tf.shape(images)[0], 3])

    x = np.full([2, 4, 4, 1], 0.5, np.float32)
    result = Evaluator(["pgd40"], norm="linf", eps=EPS).run(tie_fn, _dataset(x, np.array([0, 2])))
    assert result.clean_correct.tolist() == [True, True] and result.robust.tolist() == [True, True]


def test_evaluation_runs_without_tf32_and_restores_the_setting():
    flags = []

    def record() -> np.float32:
        flags.append(tf.config.experimental.tensor_float_32_execution_enabled())
        return np.float32(0.0)

    def model_fn(images):
        # The flag as seen when the graph runs (not when it is traced), at every forward pass.
        return logits_fn(images) + tf.reshape(tf.numpy_function(record, [], tf.float32, stateful=True), [])

    previous = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(True)
    try:
        Evaluator(["pgd40"], norm="linf", eps=EPS).run(model_fn, _dataset())
        assert flags and not any(flags)  # every forward pass of the attack and the verdicts: TF32 off
        assert tf.config.experimental.tensor_float_32_execution_enabled()  # restored
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(previous)


# --------------------------------------------------------------------------------------------------
# run_eval (what `tfrobust eval` runs)


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    npz = str(root / "data.npz")
    np.savez(npz, image=np.round(X * 255).astype(np.uint8), label=Y.astype(np.int64))
    metadata = {
        "dataset": {"name": f"npz:{npz}"},
        "norm": "linf",
        "eps": EPS,
        "training_config": {"val_size": 0, "seed": 0},
    }
    export_network(MODEL, root=str(root / "saved_models"), name="lin", metadata=metadata)
    return root, npz, str(root / "saved_models" / "lin")


def test_run_eval_end_to_end(eval_files, result):
    root, npz, model_dir = eval_files
    report_path = str(root / "reports" / "report.json")
    settings = EvalSettings(model_path=model_dir, split="train", batch_size=BATCH, report=report_path)
    out = run_eval(settings)
    report = out["report"]
    assert out["report_path"] == report_path
    with open(report_path) as handle:
        assert json.load(handle) == report
    assert report["model"] == os.path.join(model_dir, "1")
    assert report["dataset"] == f"npz:{npz}"
    assert report["num_examples"] == N
    assert report["norm"] == "linf" and report["eps"] == pytest.approx(EPS)
    assert report["clean_accuracy"] == pytest.approx(result.clean_accuracy)
    assert report["robust_accuracy"] == pytest.approx(result.robust_accuracy)
    assert [(s["attack"], s["robust_accuracy"]) for s in report["stages"]] == [("pgd40", report["robust_accuracy"])]
    assert report["stages"][0]["seconds"] >= 0
    assert not os.path.exists(report_path + ".state")  # the saved progress is removed once the report is written
    robust = int(result.robust.sum())
    assert report["counts"] == {
        "clean_correct": 13,
        "robust": robust,
        "misclassified_clean": N - 13,
        "broken_by_stage": [13 - robust],
    }
    assert "pgd40" in out["table"] and "clean" in out["table"]
    # Whether TF ran its oneDNN kernels decides CPU timings; None would mean TF's private query moved.
    assert isinstance(report["versions"]["onednn"], bool)
    assert report["numerics"] == {"tf32": False, "verify_rows": VERIFY_ROWS, "ties": "correct"}
    assert report["jit_compile"] is False  # --jit-compile auto on a CPU

    before = open(report_path).read()
    with pytest.raises(UserError, match="exists"):
        run_eval(settings)
    assert open(report_path).read() == before


def test_run_eval_under_xla_records_it_and_breaks_the_same_points(eval_files, result, tmp_path):
    _, _, model_dir = eval_files
    settings = EvalSettings(
        model_path=model_dir, split="train", batch_size=BATCH, report=str(tmp_path / "xla.json"), jit_compile="on"
    )
    report = run_eval(settings)["report"]
    assert report["jit_compile"] is True
    assert report["counts"]["robust"] == int(result.robust.sum())
    assert report["counts"]["clean_correct"] == int(result.clean_correct.sum())


def test_run_eval_default_report_path_and_limit(eval_files, tmp_path, monkeypatch):
    _, _, model_dir = eval_files
    monkeypatch.chdir(tmp_path)
    out = run_eval(EvalSettings(model_path=model_dir, split="train", batch_size=BATCH, n_examples=5))
    assert out["report"]["num_examples"] == 5
    path = out["report_path"]
    assert path.startswith(os.path.join("eval_reports", "lin-v1-pgd40-linf-train-")) and path.endswith(".json")
    assert os.path.isfile(tmp_path / path)


def test_run_eval_user_errors(eval_files, tmp_path):
    _, _, model_dir = eval_files
    with pytest.raises(UserError, match="unknown attack"):
        run_eval(EvalSettings(model_path=model_dir, attack="autoattack-nope", split="train"))
    with pytest.raises(UserError, match="batch-size"):
        run_eval(EvalSettings(model_path=model_dir, split="train", batch_size=0))
    with pytest.raises(UserError, match="no model"):
        run_eval(EvalSettings(model_path=str(tmp_path / "missing"), split="train"))
    with pytest.raises(UserError, match="eps"):
        run_eval(EvalSettings(model_path=model_dir, split="train", eps=2.0, report=str(tmp_path / "r.json")))
    assert not os.path.exists(tmp_path / "r.json")


def test_run_eval_warns_for_probability_outputs(eval_files, tmp_path):
    _, npz, _ = eval_files
    softmax = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(CLASSES, activation="softmax")]
    )
    path = str(tmp_path / "softmax.keras")
    softmax.save(path)
    with pytest.warns(UserWarning, match="probabilities"):
        # A .keras file carries no metadata: the dataset must be given, as on the command line.
        with pytest.raises(UserError, match="has no test split"):
            run_eval(EvalSettings(model_path=path, dataset=f"npz:{npz}", split="test", report=str(tmp_path / "r.json")))


def test_interrupted_evaluation_resumes_to_the_uninterrupted_result(eval_files, tmp_path, monkeypatch):
    """The first batch of stage 1 is saved, the run dies in its second batch; --resume loads the first and
    computes only the rest, and the report and per-example npz equal those of an uninterrupted run."""
    from tfrobust.evaluation import engine, resume_eval

    _, _, model_dir = eval_files
    monkeypatch.setitem(CASCADES, "two-stage", ("pgd40", "apgd-ce"))  # two cheap stages: fast, same bookkeeping
    common = dict(model_path=model_dir, attack="two-stage", split="train", batch_size=BATCH)
    real_verify = engine.verify
    calls = []

    def counting_verify(*args, **kwargs):  # called once per attacked batch
        calls.append(len(args[1]))
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(engine, "verify", counting_verify)
    whole = run_eval(
        EvalSettings(**common, report=str(tmp_path / "whole.json"), save_examples=str(tmp_path / "whole.npz"))
    )["report"]
    total = len(calls)
    assert calls[:2] == [BATCH, N - 3 - BATCH] and total >= 3  # 13 correct points: a batch of 8, then 5

    def dies_in_second_batch(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_verify(*args, **kwargs)

    calls.clear()
    monkeypatch.setattr(engine, "verify", dies_in_second_batch)
    path = str(tmp_path / "resumed.json")
    with pytest.raises(KeyboardInterrupt):
        run_eval(EvalSettings(**common, report=path, save_examples=str(tmp_path / "resumed.npz")))
    assert not os.path.exists(path)
    assert sorted(os.listdir(path + ".state")) == ["pool0000_stage00_batch00000.npz", "settings.json"]
    # The same command again is refused: it would throw the saved progress away.
    with pytest.raises(UserError, match="--resume"):
        run_eval(EvalSettings(**common, report=path, save_examples=str(tmp_path / "resumed.npz")))

    calls.clear()
    monkeypatch.setattr(engine, "verify", counting_verify)
    resumed = resume_eval(path)["report"]
    assert len(calls) == total - 1  # every batch but the saved one
    assert not os.path.exists(path + ".state")
    for key in ("clean_accuracy", "robust_accuracy", "counts", "num_examples", "eps", "norm", "seed", "attack"):
        assert resumed[key] == whole[key], key
    assert [s["robust_accuracy"] for s in resumed["stages"]] == [s["robust_accuracy"] for s in whole["stages"]]
    with np.load(tmp_path / "whole.npz") as a, np.load(tmp_path / "resumed.npz") as b:
        for key in ("broken_at", "robust", "clean_correct", "adversarial", "label"):
            np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(UserError, match="nothing to resume"):
        resume_eval(path)


def test_resume_refuses_a_saved_batch_of_other_points(tmp_path):
    from tfrobust.evaluation.state import EvalState, GroupResult

    state = EvalState.create(str(tmp_path / "r.json.state"), {"attack": "aa"})
    state.save_group(
        (0, 1, 0), GroupResult(index=np.array([0, 2, 5]), broken=np.array([True, False, False]), seconds=1.5)
    )
    loaded = state.load_group((0, 1, 0), np.array([0, 2, 5]))
    np.testing.assert_array_equal(loaded.broken, [True, False, False])
    assert loaded.seconds == 1.5 and loaded.adversarial is None
    assert state.load_group((0, 1, 1), np.array([7])) is None
    with pytest.raises(UserError, match="other points"):
        state.load_group((0, 1, 0), np.array([0, 2, 6]))


def test_saved_examples_are_consistent_with_the_report(eval_files, tmp_path, monkeypatch):
    _, _, model_dir = eval_files
    monkeypatch.setitem(CASCADES, "two-stage", ("apgd-ce", "fab-t"))
    out = run_eval(
        EvalSettings(
            model_path=model_dir,
            attack="two-stage",
            split="train",
            batch_size=BATCH,
            report=str(tmp_path / "r.json"),
            save_examples=str(tmp_path / "ex.npz"),
        )
    )
    report = out["report"]
    with np.load(tmp_path / "ex.npz") as data:
        assert list(data["stage_names"]) == ["apgd-ce", "fab-t"]
        np.testing.assert_array_equal(data["label"], Y)
        np.testing.assert_array_equal(data["clean_correct"], logits_fn(X).numpy().argmax(-1) == Y)
        broken_at, adv = data["broken_at"], data["adversarial"]
        assert np.all((broken_at == 0) == ~data["clean_correct"])
        assert np.all((broken_at == -1) == data["robust"])
        for stage, entry in enumerate(report["stages"]):
            survivors = data["clean_correct"] & ((broken_at == -1) | (broken_at > stage + 1))
            assert survivors.mean() == pytest.approx(entry["robust_accuracy"])
        # Successes are inside the ball and the box and misclassified; the rest are the clean images.
        hit = broken_at > 0
        assert hit.any()
        np.testing.assert_array_equal(
            verify(logits_fn, X[hit], adv[hit], Y[hit], "linf", EPS), np.ones(hit.sum(), bool)
        )
        np.testing.assert_array_equal(adv[~hit], X[~hit])
    with pytest.raises(UserError, match="exists"):
        run_eval(EvalSettings(model_path=model_dir, split="train", save_examples=str(tmp_path / "ex.npz")))


@pytest.mark.parametrize("tensorflow_first", [True, False])
def test_onednn_warning_only_when_tensorflow_was_imported_first(tensorflow_first):
    # A fresh interpreter: whether oneDNN is on is fixed when TensorFlow first loads.
    import subprocess
    import sys

    order = "import tensorflow, tfrobust" if tensorflow_first else "import tfrobust, tensorflow"
    code = f"{order}\nfrom tfrobust.evaluation import onednn_enabled, onednn_warning\nprint(onednn_enabled(), bool(onednn_warning()))"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    enabled, warned = out.stdout.split()
    if tensorflow_first:
        # Warned exactly when TF's own default left oneDNN off (CPUs without AVX512-VNNI, as the CI machine).
        assert warned == str(enabled == "False")
    else:
        assert (enabled, warned) == ("True", "False")


def test_sigterm_keeps_the_state_and_says_how_to_resume(eval_files, tmp_path, monkeypatch):
    """SIGTERM during the second attacked batch: `Interrupted` names the --resume command, the first batch
    stays in the state, the process's own SIGTERM handler comes back, and --resume finishes the report."""
    import signal

    from tfrobust.errors import Interrupted
    from tfrobust.evaluation import engine, resume_eval

    _, _, model_dir = eval_files
    monkeypatch.setitem(CASCADES, "two-stage", ("pgd40", "apgd-ce"))
    real_verify = engine.verify
    calls = []

    def terminated_in_second_batch(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises at the next bytecode
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(engine, "verify", terminated_in_second_batch)
    path = str(tmp_path / "stopped.json")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match=f"continue with: tfrobust eval --resume {path}$"):
        run_eval(EvalSettings(model_path=model_dir, attack="two-stage", split="train", batch_size=BATCH, report=path))
    assert signal.getsignal(signal.SIGTERM) is before
    assert "pool0000_stage00_batch00000.npz" in os.listdir(path + ".state") and not os.path.exists(path)
    monkeypatch.setattr(engine, "verify", real_verify)
    assert resume_eval(path)["report"]["num_examples"] == N
