"""Training under faults (tfrobust/training/faults.py): an injected NaN/Inf loss, gradient or weight average
stops the run with one line and leaves the last good checkpoint as it was; a file that cannot be written
(each writer of a run in turn) stops it with one line naming the file, and `--resume` continues; SIGTERM
sets a stop request instead of killing the process, and the previous handler comes back after."""

import errno
import json
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from support import write_digits_npz

from tfrobust.cli import cli
from tfrobust.config import make_config
from tfrobust.errors import Interrupted, NonFiniteError, WriteError
from tfrobust.training import callbacks as cb
from tfrobust.training import faults
from tfrobust.training.run import train
from tfrobust.training.trainer import AdversarialTrainer

# 120 digits, 24 held out: epochs of 120 samples at batch 32 are 3 or 4 steps (floor(e * 120 / 32)).
EPOCH_ENDS = [0, 3, 7, 11]


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    return write_digits_npz(tmp_path_factory.mktemp("data") / "digits.npz", n=120)


def options(npz, export_dir, epochs=2):
    return {
        "dataset": f"npz:{npz}",
        "model": "wrn-10-1",
        "batch_size": 32,
        "epochs": epochs,
        "val_size": 24,
        "eval_every": 1,
        "attack_steps": 1,
        "warmup_epochs": 1,
        "eps": 0.1,
        "ema_decay": 0.9,
        "aug_repeats": 1,
        "export_dir": export_dir,
    }


def config(npz, tmp_path, epochs=2):
    return make_config(None, options(npz, str(tmp_path / "export"), epochs))


def cli_args(npz, out, export_dir, epochs=2):
    args = ["train", "--out", out]
    for key, value in options(npz, export_dir, epochs).items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def state(run_dir):
    with np.load(os.path.join(run_dir, "checkpoint.npz")) as data:
        return json.loads(str(data["state_json"]))


def file_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def text(path):
    with open(path) as handle:
        return handle.read()


def poison_step(monkeypatch, step, *, what):
    """Makes optimizer step `step` (0-based) give a NaN loss or an infinite gradient."""
    original = AdversarialTrainer.loss_and_gradients

    def poisoned(self, images, labels):
        out = original(self, images, labels)
        hit = tf.equal(self.optimizer.iterations, step)
        if what == "loss":
            out["total"] = tf.where(hit, tf.constant(np.nan, out["total"].dtype), out["total"])
        else:
            first = out["gradients"][0]
            out["gradients"] = [
                tf.where(hit, tf.fill(tf.shape(first), tf.constant(np.inf, first.dtype)), first),
                *out["gradients"][1:],
            ]
        return out

    monkeypatch.setattr(AdversarialTrainer, "loss_and_gradients", poisoned)


# --- the step's flag --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, gradient, code, words",
    [
        (1.0, 1.0, 0, None),
        (np.nan, 1.0, 1, "the loss is NaN"),
        (np.inf, 1.0, 2, "the loss is infinite"),
        (1.0, np.nan, 4, "a gradient is NaN"),
        (-np.inf, np.inf, 10, "the loss is infinite and a gradient is infinite"),
        (np.nan, np.nan, 5, "the loss is NaN and a gradient is NaN"),
    ],
)
def test_nonfinite_code_names_each_quantity(loss, gradient, code, words):
    gradients = [tf.constant([[1.0, 2.0]]), None, tf.constant([3.0, gradient])]
    got = float(faults.nonfinite_code(tf.constant(loss), gradients))
    assert got == code
    if words:
        assert faults.describe_code(got) == words


def test_a_gradient_too_large_for_its_norm_is_still_finite():
    """The elementwise check: the global norm of these gradients overflows float32, the gradients do not."""
    huge = tf.fill([1000], tf.constant(3e37, tf.float32))
    assert not np.isfinite(tf.linalg.global_norm([huge]).numpy())
    assert float(faults.nonfinite_code(tf.constant(1.0), [huge])) == 0


REPLICAS_CHECK = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfrobust.training.faults import nonfinite_code
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

def step():
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    loss = tf.where(tf.equal(replica, 1), tf.constant(float("nan")), tf.constant(1.0))
    return nonfinite_code(loss, [tf.ones([2]) * tf.cast(replica, tf.float32)])

print("CODES", [float(c) for c in strategy.experimental_local_results(strategy.run(tf.function(step)))])
"""


@pytest.mark.slow
def test_nonfinite_flag_is_summed_over_replicas():
    """Under two replicas (two logical CPUs, set before TensorFlow starts: a fresh process) a NaN loss on the
    second replica only is reported by both."""
    import subprocess
    import sys

    from support import REPO

    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", REPLICAS_CHECK], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CODES [1.0, 1.0]" in result.stdout


# --- NaN / Inf ----------------------------------------------------------------------------------------


def record_checkpoints(monkeypatch):
    """The bytes of checkpoint.npz after each write, in order."""
    written = []
    original_save = cb.TrainingCheckpoint.save

    def recording_save(self, epochs_done, **kwargs):
        original_save(self, epochs_done, **kwargs)
        written.append(file_bytes(self.path))

    monkeypatch.setattr(cb.TrainingCheckpoint, "save", recording_save)
    return written


def assert_stopped_in_epoch_2(run_dir, written, export_dir):
    checkpoint = os.path.join(run_dir, "checkpoint.npz")
    assert len(written) == 1 and file_bytes(checkpoint) == written[0]  # epoch 1's, byte for byte
    assert state(run_dir)["epoch"] == 1
    rows = text(os.path.join(run_dir, "log.csv")).strip().splitlines()
    assert len(rows) == 2 and faults.NONFINITE_KEY not in rows[0].split(",")  # header + epoch 1, metrics only
    assert not os.path.exists(os.path.join(run_dir, "summary.json"))
    assert not os.path.exists(export_dir)  # nothing exported
    with np.load(checkpoint) as data:
        assert all(np.isfinite(data[key]).all() for key in data.files if key != "state_json")


@pytest.mark.slow
def test_a_nan_loss_stops_the_cli_with_one_line_and_status_1(small_npz, tmp_path, monkeypatch):
    poison_step(monkeypatch, EPOCH_ENDS[1] + 1, what="loss")  # the second step of epoch 2
    written = record_checkpoints(monkeypatch)
    out, export_dir = str(tmp_path / "run"), str(tmp_path / "export")
    result = CliRunner().invoke(cli, cli_args(small_npz, out, export_dir))
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == [
        (
            f"Error: training stopped at epoch 2, step 2 of 4: the loss is NaN; the last good checkpoint "
            f"{out}/checkpoint.npz (after epoch 1) is untouched"
        )
    ]
    assert_stopped_in_epoch_2(out, written, export_dir)


@pytest.mark.slow
def test_an_infinite_gradient_stops_training_and_keeps_the_last_good_checkpoint(small_npz, tmp_path, monkeypatch):
    poison_step(monkeypatch, EPOCH_ENDS[1] + 2, what="gradient")  # the third step of epoch 2
    written = record_checkpoints(monkeypatch)
    run_dir = str(tmp_path / "run")
    with pytest.raises(NonFiniteError) as raised:
        train(config(small_npz, tmp_path), run_dir, verbose=0)
    assert str(raised.value) == (
        f"training stopped at epoch 2, step 3 of 4: a gradient is infinite; the last good "
        f"checkpoint {run_dir}/checkpoint.npz (after epoch 1) is untouched"
    )
    assert_stopped_in_epoch_2(run_dir, written, str(tmp_path / "export"))


@pytest.mark.slow
def test_a_nonfinite_weight_average_stops_before_anything_is_written(small_npz, tmp_path, monkeypatch):
    run_dir = str(tmp_path / "run")
    original = cb.WeightAveraging.on_train_batch_end

    def poisoned(self, batch, logs=None):
        original(self, batch, logs)
        if int(self.num_updates.numpy()) == EPOCH_ENDS[1] + 2:  # inside epoch 2
            self.averages[0].assign(np.full(self.averages[0].shape, np.nan, np.float32))

    monkeypatch.setattr(cb.WeightAveraging, "on_train_batch_end", poisoned)
    seen = {}
    original_best = cb.ModelSelection.on_epoch_end

    def best_recorder(self, epoch, logs=None):
        original_best(self, epoch, logs)
        seen[epoch] = file_bytes(self.best_path)

    monkeypatch.setattr(cb.ModelSelection, "on_epoch_end", best_recorder)
    with pytest.raises(NonFiniteError) as raised:
        train(config(small_npz, tmp_path), run_dir, verbose=0)
    checkpoint = os.path.join(run_dir, "checkpoint.npz")
    assert str(raised.value) == (
        f"training stopped at the end of epoch 2: the weight average is NaN; the last "
        f"good checkpoint {checkpoint} (after epoch 1) is untouched"
    )
    assert list(seen) == [0]  # model selection never ran on the poisoned epoch
    assert file_bytes(os.path.join(run_dir, "best.npz")) == seen[0]
    assert state(run_dir)["epoch"] == 1


def test_nonfinite_before_the_first_checkpoint_says_none_is_written(small_npz, tmp_path, monkeypatch):
    poison_step(monkeypatch, 0, what="loss")
    with pytest.raises(
        NonFiniteError,
        match=r"^training stopped at epoch 1, step 1 of 3: the loss is NaN; "
        r"no checkpoint is written yet$",
    ):
        train(config(small_npz, tmp_path), str(tmp_path / "run"), verbose=0)
    assert not os.path.exists(tmp_path / "run" / "checkpoint.npz")


def test_export_refuses_nonfinite_weights(tmp_path):
    from tfrobust.export import export_network

    network = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3, name="logits")])
    kernel = network.layers[-1].kernel
    kernel.assign(np.where(np.arange(kernel.shape[0])[:, None] == 2, np.inf, kernel.numpy()).astype(np.float32))
    with pytest.raises(NonFiniteError, match=r"non-finite weights: .*kernel holds a infinite value"):
        export_network(network, root=str(tmp_path), name="m", metadata={})
    assert os.listdir(tmp_path) == []


# --- writes that fail ------------------------------------------------------------------------------------


def fail_writes(monkeypatch, name, reason=errno.ENOSPC, skip=0):
    """Makes the writes of a file called `name` (or of its temporary twin) fail with `reason` after the first
    `skip`: at the fsync for the atomic writers, with half a row written for Keras's CSV logger."""
    seen = {"count": 0}
    real_fsync = os.fsync

    def hit(path):
        base = os.path.basename(path)
        if base == name or base.startswith(f".{name}.tmp-"):
            seen["count"] += 1
            return seen["count"] > skip
        return False

    def fsync(fd):
        if hit(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(reason, os.strerror(reason))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    real_end = faults.CSVLog.__mro__[1].on_epoch_end

    def csv_epoch_end(self, epoch, logs=None):
        if hit(self.filename):
            self.csv_file.write(f"{epoch},0.5")  # a row cut short, as a full disk leaves it
            self.csv_file.flush()
            raise OSError(reason, os.strerror(reason))
        return real_end(self, epoch, logs)

    monkeypatch.setattr(keras.callbacks.CSVLogger, "on_epoch_end", csv_epoch_end)


@pytest.mark.slow
def test_a_write_that_fails_stops_training_and_resume_continues(small_npz, tmp_path, monkeypatch):
    """Each writer of a run in turn fails; each time one line names the file, the checkpoint stays as it was,
    and the next `--resume` continues from it. The run ends with every epoch logged once."""
    run_dir = str(tmp_path / "run")
    checkpoint = os.path.join(run_dir, "checkpoint.npz")
    cfg = config(small_npz, tmp_path, epochs=2)

    def attempt(name, expected, *, resume=True, reason=errno.ENOSPC, skip=0, trains=False):
        before = file_bytes(checkpoint) if os.path.exists(checkpoint) else None
        with monkeypatch.context() as patch:
            fail_writes(patch, name, reason, skip)
            with pytest.raises(WriteError) as raised:
                train(None if resume else cfg, run_dir, resume=resume, verbose=0)
        assert str(raised.value) == expected
        assert raised.value.errno == reason and isinstance(raised.value, OSError)
        if os.path.isdir(run_dir):
            assert not [entry for entry in os.listdir(run_dir) if ".tmp-" in entry]  # no temporary file left
        if before is not None and not trains:  # a failure before the run's end leaves the checkpoint as it was
            assert file_bytes(checkpoint) == before

    # The run config: nothing is left behind, so the same command starts the run again.
    attempt("config.json", f"cannot write run config {run_dir}/config.json: No space left on device", resume=False)
    assert not os.path.exists(run_dir)
    # The best weights of epoch 1 (the first validation is always the best): no checkpoint yet.
    attempt(
        "best.npz",
        f"cannot write best weights {run_dir}/best.npz: Read-only file system",
        resume=False,
        reason=errno.EROFS,
    )
    assert not os.path.exists(checkpoint)
    # The checkpoint of epoch 2 (epoch 1's is written); the resumed run's rewrite of the log (dropping the
    # row of epoch 2, written before its checkpoint); then the CSV row of epoch 2, cut short.
    attempt("checkpoint.npz", f"cannot write checkpoint {checkpoint}: Disk quota exceeded", reason=errno.EDQUOT, skip=1)
    assert state(run_dir)["epoch"] == 1
    log = os.path.join(run_dir, "log.csv")
    attempt("log.csv", f"cannot write training log {log}: No space left on device")
    assert len(text(log).strip().splitlines()) == 3  # the rewrite failed: the log is as it was
    attempt("log.csv", f"cannot write training log {log}: No space left on device", skip=1)
    assert text(log).endswith("\n1,0.5")
    assert state(run_dir)["epoch"] == 1
    # The run summary (training ends and the export is written), then the export of the next resume.
    attempt("summary.json", f"cannot write run summary {run_dir}/summary.json: No space left on device", trains=True)
    assert state(run_dir)["epoch"] == 2
    exports = str(tmp_path / "export" / cfg.export_name)
    assert os.listdir(exports) == ["1"]
    attempt("saved_model.pb", f"cannot write export {exports}/2: Permission denied", reason=errno.EACCES)
    assert os.listdir(exports) == ["1"]  # the failed export leaves nothing behind
    summary = train(None, run_dir, resume=True, verbose=0)
    assert summary["export"] == f"{exports}/2" and summary["resumed_from_epoch"] == 2
    rows = text(log).strip().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1"]  # the cut row went, each epoch once
    assert all(len(row.split(",")) == len(rows[0].split(",")) for row in rows)


@pytest.mark.slow
def test_the_cli_reports_a_failed_write_in_one_line(small_npz, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    fail_writes(monkeypatch, "checkpoint.npz")
    result = CliRunner().invoke(cli, cli_args(small_npz, out, str(tmp_path / "export"), epochs=1))
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: cannot write checkpoint {out}/checkpoint.npz: No space left on device"]
    assert not os.path.exists(os.path.join(out, "checkpoint.npz"))


def test_a_tensorflow_write_error_becomes_one_line(tmp_path, monkeypatch):
    """TensorFlow's SavedModel writer reports a full disk as ResourceExhaustedError, a read-only one as
    PermissionDeniedError (both measured on a full and a read-only tmpfs); other errors pass unchanged."""
    from tfrobust.export import export_network

    network = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3, name="logits")])

    def failing(error):
        def write_out(self, path, **kwargs):
            os.makedirs(path)
            raise error

        return write_out

    full = tf.errors.ResourceExhaustedError(None, None, "x/variables/part-0.tempstate1; No space left on device")
    archive = type(keras.export.ExportArchive())  # the backend's subclass, whose write_out runs
    monkeypatch.setattr(archive, "write_out", failing(full))
    with pytest.raises(WriteError, match=rf"^cannot write export {tmp_path}/m/1: No space left on device$"):
        export_network(network, root=str(tmp_path), name="m", metadata={})
    assert os.listdir(tmp_path / "m") == []
    oom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    monkeypatch.setattr(archive, "write_out", failing(oom))
    with pytest.raises(tf.errors.ResourceExhaustedError):
        export_network(network, root=str(tmp_path), name="m", metadata={})


# --- stop requests -----------------------------------------------------------------------------------


def test_sigterm_sets_the_event_and_the_previous_handler_comes_back():
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        with faults.stop_on_sigterm() as stop:
            assert not stop.is_set()
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(5)
        assert calls == []  # the process is alive and the request went to the event only
        os.kill(os.getpid(), signal.SIGTERM)
        assert calls == [signal.SIGTERM]  # the previous handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.slow
def test_a_stop_request_writes_a_mid_epoch_checkpoint(small_npz, tmp_path, monkeypatch):
    """In-process: the request comes at step 2 of epoch 2; the checkpoint holds that step and the metrics'
    running sums; a request before the first step leaves the run as it was."""
    import threading

    stop = threading.Event()
    original = cb.WeightAveraging.on_train_batch_end

    def request(self, batch, logs=None):
        original(self, batch, logs)
        if int(self.num_updates.numpy()) == EPOCH_ENDS[1] + 2:
            stop.set()

    monkeypatch.setattr(cb.WeightAveraging, "on_train_batch_end", request)
    run_dir = str(tmp_path / "run")
    with pytest.raises(Interrupted) as raised:
        train(config(small_npz, tmp_path), run_dir, verbose=0, stop=stop)
    checkpoint = os.path.join(run_dir, "checkpoint.npz")
    assert str(raised.value) == (
        f"training stopped on request (SIGTERM) at epoch 2, step 2 of 4: the run is saved "
        f"in {checkpoint} (epoch 2, step 2); continue with: tfrobust train --resume {run_dir}"
    )
    saved = state(run_dir)
    assert (saved["epoch"], saved["epoch_step"], saved["steps"]) == (1, 2, EPOCH_ENDS[1] + 2)
    with np.load(checkpoint) as data:
        metrics = {key for key in data.files if key.startswith("metrics/")}
        assert {"metrics/loss/total", "metrics/loss/count"} <= metrics
        assert float(data["metrics/loss/count"]) == 2.0  # two steps of epoch 2 counted
    before = file_bytes(checkpoint)
    with pytest.raises(Interrupted, match=r"at the start: the run is saved in .*\(epoch 2, step 2\)"):
        train(None, run_dir, resume=True, verbose=0, stop=stop)  # still set: stops before its first step
    assert file_bytes(checkpoint) == before


def test_truncate_log_drops_rows_cut_short(tmp_path):
    """A full disk can cut the CSV row being written anywhere: the resumed run keeps only whole rows of
    the epochs its checkpoint holds (an epoch "1" cut from "12" included)."""
    from tfrobust.training.run import truncate_log

    path = tmp_path / "log.csv"
    header = "epoch,loss,val_loss"
    rows = [f"{e},0.{e},0.5" for e in range(12)]
    for cut in ("12,0.12,0.", "12,0", "1", "12,", ""):
        path.write_text("\n".join([header, *rows, cut]))
        truncate_log(str(path), 12)
        assert path.read_text() == "\n".join([header, *rows]) + "\n", cut
    path.write_text("\n".join([header, *rows]) + "\n")
    truncate_log(str(path), 3)
    assert path.read_text() == "\n".join([header, *rows[:3]]) + "\n"
