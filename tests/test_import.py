"""`tfrobust import`: the published PyTorch checkpoints become SavedModels computing the same function.

The PyTorch reference (`torch_reference.py`) is written from the published architecture (DeepMind's
`adversarial_robustness/pytorch/model_zoo.py`). It gets random weights and random
BatchNorm running statistics; its state dict is imported and the SavedModel must reproduce its eval-mode
logits and input gradients. Needs the `[import]` extra (torch).
"""

import json
import os
import pickle

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch", reason="needs the [import] extra: pip install -e '.[import]'")
import torch.nn as nn  # noqa: E402
from torch_reference import CIFAR10, CIFAR100, RefPreActResNet18, RefWideResNet  # noqa: E402

from tfrobust.cli import cli  # noqa: E402
from tfrobust.errors import UserError  # noqa: E402
from tfrobust.importer import (  # noqa: E402
    CIFAR100_CLASS_NAMES,
    build_imported_network,
    import_checkpoint,
    read_state_dict,
    sha256,
)

LOGITS_ATOL = 1e-4


def reference(arch, num_classes=10, stats=CIFAR10, activation="swish", seed=0):
    """The reference model with random weights and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    mean, std = stats
    if arch == "wrn-16-2":
        model = RefWideResNet(16, 2, num_classes, mean, std, activation)
    else:
        assert arch == "preact-resnet-18"
        model = RefPreActResNet18(num_classes, mean, std, activation)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(1234)
            elif isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(4.0 * torch.randn(m.weight.shape, generator=gen) / m.in_features**0.5)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return model.eval()


def torch_logits_and_grad(model, x_nhwc, w):
    """Eval-mode logits and the input gradient of sum(logits @ w), both NHWC numpy."""
    x = torch.tensor(x_nhwc).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad((logits @ torch.tensor(w)).sum(), x)
    return logits.detach().numpy(), grad.permute(0, 2, 3, 1).numpy()


def tf_logits_and_grad(logits_fn, x_nhwc, w):
    import tensorflow as tf

    x = tf.constant(x_nhwc)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = logits_fn(x)
        objective = tf.reduce_sum(tf.linalg.matvec(logits, tf.constant(w)))
    return logits.numpy(), tape.gradient(objective, x).numpy()


def inputs(n=6, num_classes=10, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 32, 32, 3)).astype(np.float32), rng.normal(0, 1, num_classes).astype(np.float32)


def assert_same_function(tf_fn, model, num_classes=10):
    x, w = inputs(num_classes=num_classes)
    want_logits, want_grad = torch_logits_and_grad(model, x, w)
    got_logits, got_grad = tf_logits_and_grad(tf_fn, x, w)
    assert np.abs(want_logits).max() > 0.5 and want_logits.std(axis=0).max() > 0.01  # varies with the input
    np.testing.assert_allclose(got_logits, want_logits, rtol=0, atol=LOGITS_ATOL)
    scale = np.abs(want_grad).max()
    assert scale > 0
    np.testing.assert_allclose(got_grad, want_grad, rtol=0, atol=1e-4 * max(1.0, scale))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """arch -> (reference model, path of its saved state dict)."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for arch in ("wrn-16-2", "preact-resnet-18"):
        model = reference(arch)
        path = str(root / f"{arch}.pt")
        torch.save(model.state_dict(), path)
        out[arch] = (model, path)
    return out


# ------------------------------------------------------------------------------ exactness


def test_preact_resnet18_savedmodel_matches_pytorch_logits_and_input_gradients(checkpoints, tmp_path):
    """The API path; the WRN's SavedModel is checked the same way through the CLI (`test_cli_import`)."""
    from tfrobust.export import load_model

    model, path = checkpoints["preact-resnet-18"]
    out = str(tmp_path / "saved_models" / "imported" / "1")
    exported = import_checkpoint(path, arch="preact-resnet-18", dataset="cifar10", out=out)
    assert exported == out and os.path.isfile(os.path.join(out, "saved_model.pb"))
    loaded = load_model(os.path.dirname(out))  # TF Serving's base path resolves to the version
    assert_same_function(loaded.logits, model)
    meta = loaded.metadata
    assert meta["arch"] == "preact-resnet-18" and meta["activation"] == "swish"
    assert meta["source"]["path"] == os.path.abspath(path) and meta["source"]["sha256"] == sha256(path)
    assert meta["dataset"]["name"] == "cifar10" and meta["dataset"]["num_classes"] == 10
    assert meta["dataset"]["class_names"][0] == "airplane" and meta["input_shape"] == [32, 32, 3]
    assert meta["norm"] == "linf" and meta["eps"] == pytest.approx(8 / 255)
    assert meta["normalization"] == {"mean": list(CIFAR10[0]), "std": list(CIFAR10[1]), "from": "dataset"}


@pytest.mark.parametrize("arch", ["wrn-16-2", "preact-resnet-18"])
def test_reference_state_dict_inverts_the_import(arch, checkpoints):
    """tfrobust -> reference layout (what benchmarks/aa_reference.py attacks in PyTorch) gives back the
    very state dict that was imported, and a fresh reference model loading it computes the same logits."""
    from tfrobust.importer import reference_state_dict

    model, path = checkpoints[arch]
    network, _ = build_imported_network(read_state_dict(path), arch=arch, dataset="cifar10")
    exported = reference_state_dict(network, arch)
    original = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert sorted(exported) == sorted(original)
    for key, value in original.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    fresh = reference(arch, seed=99)
    fresh.load_state_dict({k: torch.tensor(v) for k, v in exported.items()}, strict=False)
    x, w = inputs()
    np.testing.assert_allclose(torch_logits_and_grad(fresh, x, w)[0], torch_logits_and_grad(model, x, w)[0], atol=1e-6)


def test_cifar100_relu_and_normalisation_buffers_in_the_checkpoint(tmp_path):
    """100 classes, ReLU, and `mean`/`std` buffers (where a checkpoint has them) used as the model's own."""
    from tfrobust.importer import dataset_info

    info = dataset_info("cifar100")
    assert (info.mean, info.std) == CIFAR100 and info.num_classes == 100 and len(set(info.class_names)) == 100
    assert info.class_names == CIFAR100_CLASS_NAMES and info.class_names[-1] == "worm"
    model = reference("wrn-16-2", num_classes=100, stats=CIFAR100, activation="relu", seed=3)
    other_std = (0.2023, 0.1994, 0.2010)  # not CIFAR-100's: the checkpoint's own buffers must win
    model.std = torch.tensor(other_std).view(3, 1, 1)
    path = str(tmp_path / "c100.pt")
    torch.save(
        {**model.state_dict(), "mean": torch.tensor(CIFAR100[0]).view(1, 3, 1, 1), "std": model.std.clone()}, path
    )
    with pytest.warns(UserWarning, match="differs from cifar100"):
        network, norm = build_imported_network(
            read_state_dict(path), arch="wrn-16-2", dataset="cifar100", activation="relu", path=path
        )
    assert norm["from"] == "checkpoint" and norm["std"] == pytest.approx(other_std)
    assert_same_function(lambda x: network(x, training=False), model, num_classes=100)


# ------------------------------------------------------------------------------ what is accepted, what is refused


def test_dataparallel_prefix_and_nested_state_dict_accepted(checkpoints, tmp_path):
    model, path = checkpoints["wrn-16-2"]
    plain = read_state_dict(path)
    assert not plain.prefix_stripped and plain.nested_under is None
    wrapped = str(tmp_path / "wrapped.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 400}, wrapped)
    state = read_state_dict(wrapped)
    assert state.prefix_stripped and state.nested_under == "state_dict"
    assert list(state.tensors) == list(plain.tensors)
    for key in plain.tensors:
        np.testing.assert_array_equal(state.tensors[key], plain.tensors[key])


def _one_line_error(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "edit, key",
    [
        ("missing", "layer.1.block.0.shortcut.weight"),
        ("extra", "layer.0.block.0.conv_2.weight"),
        ("shape", "layer.2.block.1.conv_1.weight"),
        ("classes", "logits.weight"),
    ],
)
def test_mismatching_state_dict_refused_naming_the_key(edit, key, checkpoints, tmp_path):
    model, _ = checkpoints["wrn-16-2"]
    state = dict(model.state_dict())
    if edit == "missing":
        del state[key]
    elif edit == "extra":
        state[key] = torch.zeros(32, 32, 3, 3)
    elif edit == "shape":
        state[key] = torch.zeros(128, 128, 1, 1)
    else:
        state[key], state["logits.bias"] = torch.zeros(100, 128), torch.zeros(100)
    path = str(tmp_path / "bad.pt")
    torch.save(state, path)
    out = tmp_path / "saved_models" / "bad" / "1"
    with pytest.raises(UserError) as excinfo:
        import_checkpoint(path, arch="wrn-16-2", dataset="cifar10", out=str(out))
    message = _one_line_error(excinfo)
    assert repr(key) in message and {"missing": "missing key", "extra": "unexpected key"}.get(edit, "shape") in message
    assert not out.exists()


def test_wrong_architecture_refused(checkpoints, tmp_path):
    _, preact = checkpoints["preact-resnet-18"]
    with pytest.raises(UserError) as excinfo:
        import_checkpoint(preact, arch="wrn-16-2", dataset="cifar10", out=str(tmp_path / "m" / "1"))
    message = _one_line_error(excinfo)
    assert "missing key 'init_conv.weight'" in message and "'conv_2d.weight'" in message


class _Payload:
    """Unpickling this runs a shell command (creates `marker`): what a malicious .pt file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_crafted_pickle_refused_without_running_code(tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))  # the payload is live: plain unpickling runs it
    assert control.exists()

    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.pt"  # a bare pickle, as an old-style torch.save file
    raw.write_bytes(pickle.dumps({"init_conv.weight": _Payload(marker)}, protocol=2))
    zipped = str(tmp_path / "zipped.pt")  # torch.save's zip format, the payload beside real tensors
    torch.save({"init_conv.weight": torch.zeros(16, 3, 3, 3), "logits.bias": _Payload(marker)}, zipped)
    for path in (str(raw), zipped):
        with pytest.raises(UserError) as excinfo:
            import_checkpoint(path, arch="wrn-16-2", dataset="cifar10", out=str(tmp_path / "m" / "1"))
        message = _one_line_error(excinfo)
        assert "refused" in message and "weights_only" in message
        assert not marker.exists()


@pytest.mark.parametrize(
    "content, fragment",
    [
        ([torch.zeros(3)], "holds a list"),
        ({"init_conv.weight": torch.zeros(16, 3, 3, 3), "epoch": 3}, "'epoch' is of type int"),
        ({}, "empty dict"),
        ({"init_conv.weight": torch.zeros(16, 3, 3, 3, dtype=torch.int32)}, "dtype torch.int32"),
    ],
)
def test_anything_but_a_tensor_dict_refused(content, fragment, tmp_path):
    path = str(tmp_path / "odd.pt")
    torch.save(content, path)
    with pytest.raises(UserError) as excinfo:
        read_state_dict(path)
    assert fragment in _one_line_error(excinfo)


def test_unreadable_files_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint\xff" * 10)
    for path, fragment in ((str(garbage), "refused"), (str(tmp_path / "absent.pt"), "not found")):
        with pytest.raises(UserError) as excinfo:
            read_state_dict(path)
        assert fragment in _one_line_error(excinfo)


def test_missing_torch_names_the_extra(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(UserError, match=r"pip install -e '\.\[import\]'"):
        import_checkpoint(str(tmp_path / "x.pt"), arch="wrn-16-2", dataset="cifar10", out=str(tmp_path / "m" / "1"))


# ------------------------------------------------------------------------------ command line


def test_cli_import(checkpoints, tmp_path):
    """`tfrobust import` end to end on the WRN (DataParallel prefix, nested under "state_dict"): the SavedModel
    matches PyTorch's logits and input gradients; then the same --out and a mismatching --arch are one line."""
    from tfrobust.export import load_model

    model, _ = checkpoints["wrn-16-2"]
    path = str(tmp_path / "wrapped.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 400}, path)
    out = str(tmp_path / "saved_models" / "ref-wrn" / "3")
    args = ["import", "--checkpoint", path, "--arch", "wrn-16-2", "--dataset", "cifar10", "--out", out, "--norm", "l2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"imported: {out}" in result.output
    loaded = load_model(out)
    assert_same_function(loaded.logits, model)
    meta = json.load(open(os.path.join(out, "assets.extra", "tfrobust.json")))
    assert meta["arch"] == "wrn-16-2" and meta["activation"] == "swish" and meta["source"]["sha256"] == sha256(path)
    assert meta["norm"] == "l2" and meta["eps"] == pytest.approx(128 / 255)
    assert meta["source"]["module_prefix_stripped"] is True and meta["source"]["nested_under"] == "state_dict"

    for bad_args, fragment in (
        (args, "already exists"),
        (
            [
                "import",
                "--checkpoint",
                path,
                "--arch",
                "preact-resnet-18",
                "--dataset",
                "cifar10",
                "--out",
                str(tmp_path / "saved_models" / "x" / "1"),
            ],
            "missing key 'conv_2d.weight'",
        ),
    ):
        result = CliRunner().invoke(cli, bad_args)
        assert result.exit_code != 0 and "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and fragment in errors[0], result.output


def test_tfrobust_eval_runs_on_an_imported_model(checkpoints, tmp_path):
    """`tfrobust eval` takes an imported model through TF Serving's base path (data: a CIFAR-shaped npz)."""
    _, path = checkpoints["wrn-16-2"]
    out = str(tmp_path / "saved_models" / "ref" / "1")
    assert (
        CliRunner()
        .invoke(cli, ["import", "--checkpoint", path, "--arch", "wrn-16-2", "--dataset", "cifar10", "--out", out])
        .exit_code
        == 0
    )
    rng = np.random.default_rng(0)
    npz = tmp_path / "images.npz"
    np.savez(npz, image=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), label=np.arange(12) % 10)
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--model",
            os.path.dirname(out),
            "--dataset",
            f"npz:{npz}",
            "--split",
            "train",
            "--val-size",
            "0",
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.load(open(report))
    assert data["num_examples"] == 12 and data["eps"] == pytest.approx(8 / 255)
    assert data["robust_accuracy"] <= data["clean_accuracy"]
