"""The evaluation's Python API: `evaluate` and `autoattack` on every kind of model, `export_model`, the input
checks, and the report against the one `tfrobust eval` writes.

Known answer: a linear classifier (4x4x1 images, 3 classes) whose Linf robustness inside [0, 1] has a closed
form, computed here in NumPy: the worst case of each logit difference over {|x' - x| <= eps} ∩ [0, 1] picks,
per pixel, the interval end its coefficient points to. PGD-40 (the model-selection attack) finds it on this
model (tests/evaluation/test_evaluation.py), so every kind of model must give exactly that robust set.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tfrobust import attacks
from tfrobust.cli import cli
from tfrobust.errors import UserError
from tfrobust.evaluation import Evaluation, autoattack, evaluate
from tfrobust.export import export_model, load_model

EPS = 0.1
N, CLASSES = 16, 3
RNG = np.random.default_rng(0)
KERNEL = RNG.normal(size=(16, CLASSES)).astype(np.float32)
BIAS = np.array([0.1, -0.2, 0.05], np.float32)


def linear_keras_model():
    inputs = keras.Input((4, 4, 1), name="images")
    outputs = keras.layers.Dense(CLASSES, name="logits")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs, name="linear")
    model.get_layer("logits").set_weights([KERNEL, BIAS])
    return model


MODEL = linear_keras_model()


def linear_callable(images):
    """The same classifier as a plain TensorFlow function (no Keras)."""
    return tf.matmul(tf.reshape(images, [-1, 16]), KERNEL) + BIAS


def numpy_logits(x):
    return x.reshape(len(x), -1).astype(np.float64) @ KERNEL.astype(np.float64) + BIAS


# uint8 images (float = uint8 / 255 exactly as `tfrobust eval` converts) and labels with three mistakes.
IMAGES_U8 = np.random.default_rng(1).integers(0, 256, size=(N, 4, 4, 1)).astype(np.uint8)
IMAGES = IMAGES_U8.astype(np.float32) / 255.0
LABELS = numpy_logits(IMAGES).argmax(-1)
LABELS[[1, 6, 11]] = (LABELS[[1, 6, 11]] + 1) % CLASSES


def exact_linf_robust(x, y, eps):
    """Per example: no point of {|x' - x|_inf <= eps} ∩ [0, 1] is misclassified (ties count as correct)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    low, high = np.maximum(flat - eps, 0.0), np.minimum(flat + eps, 1.0)
    robust = np.zeros(len(x), bool)
    for i in range(len(x)):
        worst = -np.inf
        for j in range(CLASSES):
            if j != y[i]:
                w = KERNEL[:, j].astype(np.float64) - KERNEL[:, y[i]]
                worst = max(worst, np.sum(np.where(w > 0, w * high[i], w * low[i])) + BIAS[j] - BIAS[y[i]])
        robust[i] = worst <= 0
    return robust


EXACT = exact_linf_robust(IMAGES, LABELS, EPS)


def test_the_known_answer_is_not_trivial():
    assert 0 < EXACT.sum() < (numpy_logits(IMAGES).argmax(-1) == LABELS).sum() == 13


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    path = export_model(
        MODEL,
        str(root / "saved_models" / "linear"),
        norm="linf",
        eps=EPS,
        class_names=["a", "b", "c"],
        metadata={"note": "test"},
    )
    keras_file = str(root / "linear.keras")
    MODEL.save(keras_file)
    return {"root": root, "export": path, "keras": keras_file}


def test_every_kind_of_model_gives_the_exact_linear_robustness(exported):
    models = {
        "keras.Model": MODEL,
        ".keras file": exported["keras"],
        "SavedModel": exported["export"],
        "callable": linear_callable,
    }
    reports = {}
    for kind, model in models.items():
        evaluation = evaluate(model, IMAGES, LABELS, attack="pgd40", eps=EPS, batch_size=8, verbose=False)
        assert isinstance(evaluation, Evaluation)
        np.testing.assert_array_equal(evaluation.result.robust, EXACT, err_msg=kind)
        assert evaluation.robust_accuracy == pytest.approx(EXACT.mean())
        assert evaluation.clean_accuracy == pytest.approx(13 / 16)
        reports[kind] = evaluation.report
    assert reports["SavedModel"]["model"] == exported["export"]
    assert reports["keras.Model"]["model"] == "linear" and reports["callable"]["model"] == "linear_callable"
    timing = {"seconds", "stages", "model"}
    first = {k: v for k, v in reports["keras.Model"].items() if k not in timing}
    for kind, report in reports.items():
        assert {k: v for k, v in report.items() if k not in timing} == first, kind
        assert [s["robust_accuracy"] for s in report["stages"]] == [EXACT.mean()], kind


def test_the_report_is_what_the_cli_writes(exported, tmp_path):
    npz = str(tmp_path / "data.npz")
    np.savez(npz, image=IMAGES_U8, label=LABELS.astype(np.int64))
    cli_path, api_path = str(tmp_path / "cli.json"), str(tmp_path / "api.json")
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--model",
            exported["export"],
            "--dataset",
            f"npz:{npz}",
            "--attack",
            "pgd40",
            "--batch-size",
            "8",
            "--report",
            cli_path,
        ],
    )
    assert result.exit_code == 0, result.output
    evaluation = evaluate(
        exported["export"],
        IMAGES_U8,
        LABELS,
        attack="pgd40",
        batch_size=8,
        report=api_path,
        dataset=f"npz:{npz}",
        split="all",
        verbose=False,
    )
    with open(cli_path) as handle:
        written_by_cli = json.load(handle)
    with open(api_path) as handle:
        assert json.load(handle) == evaluation.report  # the file holds the returned report
    assert evaluation.report_path == api_path
    # The table the command prints, but for the stages' wall times (its last column).
    untimed = [line.rsplit("%", 1)[0] for line in evaluation.table.splitlines()]
    printed = [line.rsplit("%", 1)[0] for line in result.output.splitlines()]
    assert all(line in printed for line in untimed), (evaluation.table, result.output)

    def without_timings(report):
        report = dict(report, stages=[{k: v for k, v in s.items() if k != "seconds"} for s in report["stages"]])
        report.pop("seconds")
        return report

    assert without_timings(evaluation.report) == without_timings(written_by_cli)
    assert written_by_cli["eps"] == EPS  # the export's metadata, as for `evaluate` without eps


def test_uint8_images_one_hot_labels_and_input_range_are_conversions(exported):
    reference = evaluate(MODEL, IMAGES, LABELS, attack="apgd-ce", eps=EPS, verbose=False)
    one_hot = np.eye(CLASSES, dtype=np.float32)[LABELS]
    # A model of 0..255 images (as keras.applications models): the same classifier on x * 255.
    model_255 = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Rescaling(1 / 255), MODEL])
    variants = {
        "uint8": evaluate(MODEL, IMAGES_U8, LABELS, attack="apgd-ce", eps=EPS, verbose=False),
        "one-hot": evaluate(MODEL, IMAGES, one_hot, attack="apgd-ce", eps=EPS, verbose=False),
        "[N, 1]": evaluate(MODEL, tf.constant(IMAGES), LABELS[:, None], attack="apgd-ce", eps=EPS, verbose=False),
        "0..255": evaluate(model_255, IMAGES, LABELS, attack="apgd-ce", eps=EPS, input_range=(0, 255), verbose=False),
    }
    for name, evaluation in variants.items():
        np.testing.assert_array_equal(evaluation.result.robust, reference.result.robust, err_msg=name)
        np.testing.assert_array_equal(evaluation.result.clean_correct, reference.result.clean_correct, err_msg=name)
    # Sound: nothing counted broken is robust by the closed form.
    assert not np.any(EXACT & ~reference.result.robust)


def test_autoattack_returns_verified_adversarial_examples():
    with pytest.warns(UserWarning, match="APGD-T skipped"):  # 3 classes: no targeted DLR (as the reference)
        x_adv = autoattack(linear_callable, IMAGES, LABELS, norm="linf", eps=EPS, batch_size=8, verbose=False)
    assert x_adv.shape == IMAGES.shape and x_adv.dtype == np.float32
    assert np.abs(x_adv - IMAGES).max() <= EPS * (1 + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1
    wrong = numpy_logits(x_adv).argmax(-1) != LABELS
    clean_wrong = numpy_logits(IMAGES).argmax(-1) != LABELS
    np.testing.assert_array_equal(x_adv[clean_wrong], IMAGES[clean_wrong])  # never attacked
    np.testing.assert_array_equal(wrong, ~EXACT)  # AutoAttack finds the worst case of a linear model
    np.testing.assert_array_equal(x_adv[EXACT], IMAGES[EXACT])  # robust: the clean image
    with pytest.raises(UserError, match="version"):
        autoattack(MODEL, IMAGES, LABELS, version="fast")  # not a version of the reference


def test_attacks_run_as_plain_functions_on_a_callable():
    attack = attacks.apgd_ce("linf", EPS)
    x_adv = attack(linear_callable, tf.constant(IMAGES), tf.constant(LABELS), tf.constant([0, 0])).numpy()
    assert np.abs(x_adv - IMAGES).max() <= EPS * (1 + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1
    broken = (numpy_logits(x_adv).argmax(-1) != LABELS) & (numpy_logits(IMAGES).argmax(-1) == LABELS)
    np.testing.assert_array_equal(broken, ~EXACT & (numpy_logits(IMAGES).argmax(-1) == LABELS))


def test_mismatches_raise_one_clear_error(exported):
    cases = [
        ({"images": IMAGES[:5]}, "5 images but 16 labels"),
        ({"images": IMAGES * 255}, r"range over 1\.\.255: give floats in \[0, 1\] or uint8"),
        ({"images": IMAGES[..., 0]}, r"give a batch \[N, height, width, channels\]"),
        ({"images": IMAGES.astype(np.int32)}, "dtype int32"),
        ({"images": np.ones((N, 5, 5, 1), np.float32)}, "fails on the images of shape"),
        ({"labels": np.full((N, CLASSES), 1 / 3)}, "not one-hot"),
        ({"labels": LABELS + 3}, "labels range over 3..5 but there are 3 classes"),
        ({"labels": np.eye(4)[LABELS]}, "one-hot rows of 4 classes but there are 3 classes"),
        ({"labels": LABELS + 0.5}, "not whole numbers"),
        ({"attack": "nope"}, "unknown attack 'nope'"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"eps": 8.0}, "did you mean"),
        ({"model": object()}, "cannot evaluate a object"),
        ({"input_range": (1, 0)}, "low < high"),
        (
            {"model": exported["export"], "images": np.zeros((N, 8, 8, 1), np.float32)},
            r"the images are \[8, 8, 1\] but the model takes \[4, 4, 1\]",
        ),
    ]
    for change, message in cases:
        arguments = {"model": MODEL, "images": IMAGES, "labels": LABELS, "attack": "pgd40", **change}
        with pytest.raises(UserError, match=message):
            evaluate(
                arguments.pop("model"), arguments.pop("images"), arguments.pop("labels"), verbose=False, **arguments
            )


def user_cnn():
    """A user's functional CNN with plain Keras BatchNormalization and no layer named like tfrobust's."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4)(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(2)
    for weight in model.weights:  # moving statistics too: inference mode must use them
        low = 0.5 if "variance" in weight.path else -0.5
        weight.assign(rng.uniform(low, 1.0, weight.shape).astype(np.float32))
    return model


def test_export_model_of_a_user_functional_cnn(tmp_path):
    model = user_cnn()
    path = export_model(
        model,
        str(tmp_path / "saved_models" / "cnn"),
        norm="l2",
        eps=0.25,
        dataset="my-data",
        class_names=["w", "x", "y", "z"],
    )
    assert path == str(tmp_path / "saved_models" / "cnn" / "1")
    loaded = load_model(str(tmp_path / "saved_models" / "cnn"))
    x = np.random.default_rng(3).uniform(size=(5, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(
        loaded.logits(tf.constant(x)).numpy(), model(x, training=False).numpy(), rtol=1e-5, atol=1e-5
    )
    meta = loaded.metadata
    assert (meta["norm"], meta["eps"], meta["input_shape"], meta["input_range"]) == ("l2", 0.25, [8, 8, 3], [0.0, 1.0])
    assert meta["dataset"] == {"name": "my-data", "num_classes": 4, "class_names": ["w", "x", "y", "z"]}
    assert meta["features"]["size"] == 96  # the input of the final Dense layer
    features = keras.Model(model.inputs, model.layers[-1].input)
    np.testing.assert_allclose(
        loaded.features(tf.constant(x)).numpy(), features([x], training=False).numpy(), rtol=1e-5, atol=1e-5
    )
    # `evaluate` on the export takes its threat model from the metadata.
    labels = model(x, training=False).numpy().argmax(-1)
    report = evaluate(path, x, labels, attack="pgd40", verbose=False).report
    assert (report["norm"], report["eps"]) == ("l2", 0.25)
    assert evaluate(path, x, labels, attack="pgd40", norm="linf", verbose=False).report["eps"] == pytest.approx(8 / 255)
    # A second export is the next version; an existing one is never overwritten.
    assert export_model(model, str(tmp_path / "saved_models" / "cnn")).endswith(os.path.join("cnn", "2"))
    with pytest.raises(UserError, match="already exists"):
        export_model(model, str(tmp_path / "saved_models" / "cnn" / "1"))


class SubclassedLinear(keras.Model):
    """A subclassed model of 0..255 images: Keras records no input shape for it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(CLASSES)

    def call(self, images):
        return self.dense(self.flatten(images / 255.0))


def test_export_model_of_a_subclassed_model_with_its_input_range(tmp_path):
    model = SubclassedLinear()
    model(IMAGES[:1])
    model.dense.set_weights([KERNEL, BIAS])
    with pytest.raises(UserError, match="input_shape=\\(height, width, channels\\)"):
        export_model(model, str(tmp_path / "sub"))
    path = export_model(model, str(tmp_path / "sub"), input_shape=(4, 4, 1), input_range=(0, 255), eps=EPS)
    loaded = load_model(path)
    # The export takes [0, 1] images: the same logits as the linear model on them.
    np.testing.assert_allclose(loaded.logits(tf.constant(IMAGES)).numpy(), numpy_logits(IMAGES), rtol=1e-5, atol=1e-5)
    assert loaded.metadata["input_range"] == [0.0, 255.0] and loaded.features is None
    evaluation = evaluate(path, IMAGES, LABELS, attack="pgd40", batch_size=8, verbose=False)
    np.testing.assert_array_equal(evaluation.result.robust, EXACT)


def test_export_model_user_errors(tmp_path):
    with pytest.raises(UserError, match="class names"):
        export_model(MODEL, str(tmp_path / "m"), class_names=["only-one"])
    with pytest.raises(UserError, match="written by export_model"):
        export_model(MODEL, str(tmp_path / "m"), metadata={"eps": 0.5})
    with pytest.raises(UserError, match="JSON"):
        export_model(MODEL, str(tmp_path / "m"), metadata={"array": np.zeros(2)})
    with pytest.raises(UserError, match="eps"):
        export_model(MODEL, str(tmp_path / "m"), eps=8)
    with pytest.raises(UserError, match="keras.Model"):
        export_model(linear_callable, str(tmp_path / "m"))
    assert not os.path.exists(tmp_path / "m")


def test_check_data_takes_the_models_classes():
    from tfrobust.evaluation import check_data

    # Labels that leave the last class out (an npz subset, whose dataset counts classes as largest label + 1).
    subset = LABELS[LABELS < 2]
    images, labels, num_classes = check_data(linear_callable, IMAGES_U8[LABELS < 2], subset, num_classes=2)
    assert num_classes == CLASSES and images.dtype == np.uint8 and labels.dtype == np.int64
    with pytest.raises(UserError, match="the model outputs 3 logits but the data have 4 classes"):
        check_data(linear_callable, IMAGES, LABELS, num_classes=4)
    with pytest.raises(UserError, match=r"cifar10 images are \[4, 4, 1\] but the model takes \[32, 32, 3\]"):
        check_data(linear_callable, IMAGES, LABELS, input_shape=[32, 32, 3], name="cifar10 images")
