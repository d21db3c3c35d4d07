"""Invalid option values and damaged files: every command stops with one line, no traceback, and changes no
file outside its output path.

A property test over the commands that read files or take values: `train --resume`, `eval`,
`eval --resume`, `audit`, `report`, `pseudolabel`, `diversity`, `generate`, `import`, `augment-preview` and
`benchmark`. Each case runs the command in-process (click's CliRunner) in a fresh copy of a small world (a
dataset npz, a run directory, a tfrobust SavedModel, a `.keras` model, an interrupted evaluation's state, a
PyTorch state dict) and asserts: exit status 1 or 2, the exception a `SystemExit` (any other exception is
what a user sees as a traceback), no "Traceback" in the output, exactly one "Error:" line, and, from a
snapshot of every file (path -> sha256, mtime) and folder of the copy before and after, that nothing
outside the command's output path was created, changed or removed.

(a) Invalid option values: each command has a list of (option, value) pairs, each value invalid for that
    option: negative, zero, NaN, infinite or huge numbers, wrong types, unknown names, empty strings, paths
    that do not exist, a directory where a file is expected, a file where a directory is expected. A seeded
    generator picks `OPTION_CASES` pairs per command (`TFROBUST_DAMAGE_ALL=1` runs every pair).
(b) Damaged files: each kind of file the command reads, truncated and bit-flipped. Truncation cuts a
    random number of bytes off the end (text files: never at a line end, so the cut leaves an incomplete
    line or document). A bit flip XORs 0x80 into one random byte of the file's content: anywhere in a text
    file (a high bit in ASCII text is invalid UTF-8), anywhere in a SavedModel's files (saved_model.pb and
    variables.index are covered by fingerprint.pb's hashes, variables.data by its per-tensor CRC-32C), and
    inside a member's data in a zip archive (npz, .keras, .pt: covered by the member's CRC-32; bytes of the
    zip's own bookkeeping, such as a timestamp, carry no content; `report` reads only a checkpoint's
    `state_json` member, so its flips land there). The error line names the damaged file (or, for a file
    inside a SavedModel, the SavedModel's directory). A seeded generator picks `SAMPLED_READS` of the
    SavedModel's files for the commands other than `eval`, which damages every one.

Every command line of `COMMANDS` runs to the end on the undamaged world (the control test below), and a
damaged case's error line names the damaged file: the refusal is the damage's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from support import write_digits_npz

from tfrobust.cli import cli

SEED = 17
OPTION_CASES = 4  # invalid option values tried per command (all with TFROBUST_DAMAGE_ALL=1)
SAMPLED_READS = 2  # files of a command's `sampled_reads` damaged (all with TFROBUST_DAMAGE_ALL=1)
MODEL = "saved_models/tiny/1"
STATE = "eval/report.json.state"
SAVED_BATCH = f"{STATE}/pool0000_stage00_batch00000.npz"
MODEL_FILES = [
    f"{MODEL}/saved_model.pb",
    f"{MODEL}/variables/variables.data-00000-of-00001",
    f"{MODEL}/variables/variables.index",
    f"{MODEL}/fingerprint.pb",
    f"{MODEL}/assets.extra/tfrobust.json",
]
TEXT_SUFFIXES = (".json", ".csv")
ZIP_SUFFIXES = (".npz", ".keras", ".pt")

torch = None
try:
    import torch
except ImportError:  # the [import] extra; `import` cases are skipped without it
    pass


# --------------------------------------------------------------------------------------------------
# The world every case starts from


def _build_world(root: str) -> None:
    """Writes the inputs, with paths relative to `root` (each case runs in a copy of it)."""
    import keras

    from tfrobust.config import new_run_config
    from tfrobust.evaluation import engine
    from tfrobust.evaluation.run import EvalSettings, run_eval
    from tfrobust.fileio import write_text_atomic
    from tfrobust.training import callbacks as cb
    from tfrobust.training.run import build_run, export_selected

    write_digits_npz(os.path.join(root, "data.npz"), n=120)
    config = (
        new_run_config(
            None,
            {
                "dataset": "npz:data.npz",
                "model": "wrn-10-1",
                "batch_size": 16,
                "epochs": 2,
                "val_size": 16,
                "attack_steps": 1,
                "warmup_epochs": 0,
                "eps": 0.1,
                "export_dir": "saved_models",
                "name": "tiny",
            },
        )
        .validate()
        .resolved()
    )
    os.makedirs("run")
    write_text_atomic("run/config.json", config.to_json())
    open("run/.lock", "w").close()
    run = build_run(config, "run")
    checkpoint = cb.TrainingCheckpoint(
        "run/checkpoint.npz", run.averaging, run.selection, epoch_examples=run.epoch_examples
    )
    checkpoint.set_model(run.trainer)
    checkpoint.on_epoch_end(0)  # one epoch of two done: `train --resume` would continue
    columns = [
        "epoch",
        "adv_accuracy",
        "ce",
        "clean_accuracy",
        "kl",
        "loss",
        "val_avg_clean_accuracy",
        "val_avg_pgd40_accuracy",
        "val_raw_clean_accuracy",
        "val_raw_pgd40_accuracy",
    ]
    write_text_atomic("run/log.csv", ",".join(columns) + "\n0,0.08,2.31,0.07,0.0017,2.38,0.16,0.06,0.16,0.06\n")
    record = {
        "epoch": 1,
        "val_avg_clean_accuracy": 0.16,
        "val_avg_pgd40_accuracy": 0.06,
        "val_raw_clean_accuracy": 0.16,
        "val_raw_pgd40_accuracy": 0.06,
    }
    write_text_atomic(
        "run/summary.json",
        json.dumps({"best": record, "last": record, "epochs": 1, "export": MODEL, "resumed_from_epoch": 0}, indent=2)
        + "\n",
    )
    assert export_selected(run, "run", which="last") == MODEL

    keras.utils.set_random_seed(0)
    network = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    network.save("model.keras")

    # An `eval` interrupted in its second attacked batch: the first is saved in its state.
    real_verify, calls = engine.verify, []

    def dies_in_second_batch(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_verify(*args, **kwargs)

    engine.verify = dies_in_second_batch
    try:
        run_eval(EvalSettings(model_path=MODEL, attack="pgd40", n_examples=16, batch_size=8, report="eval/report.json"))
    except KeyboardInterrupt:
        pass
    finally:
        engine.verify = real_verify
    assert sorted(os.listdir(STATE)) == ["pool0000_stage00_batch00000.npz", "settings.json"]

    if torch is not None:
        from torch_reference import CIFAR10, RefWideResNet

        torch.manual_seed(0)
        torch.save(RefWideResNet(10, 1, 10, *CIFAR10, "swish").state_dict(), "ckpt.pt")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("world"))
    here = os.getcwd()
    os.chdir(root)
    try:
        _build_world(root)
    finally:
        os.chdir(here)
    return root, _snapshot(root)


# --------------------------------------------------------------------------------------------------
# The commands: a working command line, and the values each option must refuse


MISSING = "missing/nothing.npz"
HUGE = "99999999999999999999"  # more than int64 holds
NOT_INT = ["abc", "1.5", "nan", ""]
POSITIVE_INT = ["0", "-1", *NOT_INT]
BATCH = [*POSITIVE_INT, HUGE]
SEED_VALUES = ["-1", *NOT_INT]
RADIUS = ["0", "-1", "nan", "inf", "1e30", "abc", ""]
MODEL_PATHS = [MISSING, "", "data.npz", "run"]
DATASETS = ["bogus", "", "npz:", f"npz:{MISSING}", "npz:run"]
OUT_DIRS = ["data.npz", "", "run"]


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]  # a command line that works (before any damage)
    outputs: tuple[str, ...]  # paths the command may create or change
    invalid: dict  # option -> values it must refuse; None: the option is appended, not replaced
    reads: tuple[str, ...]  # files it reads, each damaged in turn
    sampled_reads: tuple[str, ...] = ()  # files it reads, of which SAMPLED_READS are damaged in turn
    # zip archives of which the command reads one member only: flips land in that member
    read_members: tuple[tuple[str, str], ...] = ()
    needs_torch: bool = False


COMMANDS = [
    Command(
        "train-resume",
        ("train", "--resume", "run"),
        (),
        {"--resume": ["", MISSING, "data.npz", "saved_models"], "--epochs": ["3"], "--out": ["elsewhere"]},
        ("run/config.json", "run/checkpoint.npz"),
    ),
    Command(
        "eval",
        (
            "eval",
            "--model",
            MODEL,
            "--dataset",
            "npz:data.npz",
            "--attack",
            "pgd40",
            "--n-examples",
            "8",
            "--batch-size",
            "8",
            "--report",
            "out/report.json",
        ),
        ("out",),
        {
            "--model": MODEL_PATHS,
            "--attack": ["bogus", ""],
            "--dataset": DATASETS,
            "--split": ["bogus", "", "test"],
            "--norm": ["bogus", ""],
            "--eps": RADIUS,
            "--n-examples": POSITIVE_INT,
            "--batch-size": BATCH,
            "--seed": NOT_INT,
            "--report": ["run", "data.npz", ""],
            "--val-size": ["-1", "abc"],
            "--save-examples": ["out/x.txt", "run", "data.npz", ""],
        },
        (*MODEL_FILES, "data.npz", "model.keras"),
    ),
    Command(
        "eval-resume",
        ("eval", "--resume", "eval/report.json"),
        ("eval/report.json",),
        {"--resume": ["", MISSING, "data.npz", "run"], "--seed": ["3"], "--model": [MODEL]},
        (f"{STATE}/settings.json", SAVED_BATCH),
    ),
    Command(
        "audit",
        (
            "audit",
            "--model",
            MODEL,
            "--out",
            "out",
            "--dataset",
            "npz:data.npz",
            "--split",
            "all",
            "--n-examples",
            "8",
            "--checks",
            "landscape",
            "--landscape-images",
            "1",
            "--grid",
            "3",
            "--batch-size",
            "8",
        ),
        ("out",),
        {
            "--model": MODEL_PATHS,
            "--out": OUT_DIRS,
            "--dataset": DATASETS,
            "--split": ["bogus", "", "test"],
            "--norm": ["bogus", ""],
            "--eps": RADIUS,
            "--n-examples": POSITIVE_INT,
            "--checks": ["bogus", ""],
            "--eps-multiples": ["abc", "-1", "nan", ""],
            "--steps": ["0", "-5", "abc", ""],
            "--square-queries": POSITIVE_INT,
            "--landscape-images": ["-1", *NOT_INT],
            "--grid": ["0", "1", "-1", "abc", HUGE],
            "--batch-size": BATCH,
            "--seed": SEED_VALUES,
        },
        ("data.npz",),
        MODEL_FILES,
    ),
    Command(
        "report",
        ("report", "run", "--out", "out"),
        ("out",),
        {"run": [MISSING, "data.npz", "saved_models", ""], "--out": OUT_DIRS},
        ("run/config.json", "run/log.csv", "run/summary.json", "run/checkpoint.npz"),
        read_members=(("run/checkpoint.npz", "state_json.npy"),),
    ),
    Command(
        "pseudolabel",
        ("pseudolabel", "--classifier", MODEL, "--input", "data.npz", "--output", "out", "--batch-size", "64"),
        ("out",),
        {
            "--classifier": MODEL_PATHS,
            "--input": [MISSING, "", "run", "run/config.json"],
            "--output": OUT_DIRS,
            "--top-k-per-class": POSITIVE_INT,
            "--batch-size": BATCH,
            "--shard-size": BATCH,
        },
        ("data.npz",),
        MODEL_FILES,
    ),
    Command(
        "diversity",
        (
            "diversity",
            "--out",
            "out",
            "--dataset",
            "npz:data.npz",
            "--test",
            "npz:data.npz",
            "--set",
            "npz:data.npz",
            "--n",
            "8",
            "--pca-dims",
            "4",
            "--extractor",
            MODEL,
        ),
        ("out",),
        {
            "--out": OUT_DIRS,
            "--dataset": DATASETS,
            "--aug": ["bogus", ""],
            "--set": ["data.npz", *DATASETS[2:]],
            "--test": ["data.npz", *DATASETS[2:]],
            "--n": ["1", *POSITIVE_INT],
            "--extractor": MODEL_PATHS,
            "--classifier": MODEL_PATHS,
            "--pca-dims": POSITIVE_INT,
            "--batch-size": BATCH,
            "--seed": SEED_VALUES,
        },
        ("data.npz",),
        MODEL_FILES,
    ),
    Command(
        "generate",
        (
            "generate",
            "--generator",
            "gaussian",
            "--dataset",
            "npz:data.npz",
            "--n",
            "20",
            "--output",
            "out",
            "--val-size",
            "16",
            "--shard-size",
            "10",
        ),
        ("out",),
        {
            "--generator": ["bogus", ""],
            "--dataset": DATASETS,
            "--n": [*POSITIVE_INT, "1e30"],
            "--output": OUT_DIRS,
            "--shard-size": BATCH,
            "--seed": SEED_VALUES,
            "--val-size": ["-1", "abc", "1000"],
        },
        ("data.npz",),
    ),
    Command(
        "import",
        ("import", "--checkpoint", "ckpt.pt", "--arch", "wrn-10-1", "--dataset", "cifar10", "--out", "out/imported/1"),
        ("out",),
        {
            "--checkpoint": [MISSING, "", "run", "data.npz"],
            "--arch": ["bogus", ""],
            "--dataset": ["bogus", ""],
            "--activation": ["bogus"],
            "--out": ["", "data.npz", MODEL],
            "--norm": ["bogus"],
            "--eps": RADIUS,
        },
        ("ckpt.pt",),
        needs_torch=True,
    ),
    Command(
        "augment-preview",
        ("augment-preview", "--aug", "padcrop", "--dataset", "npz:data.npz", "--out", "out/preview.png"),
        ("out",),
        {
            "--aug": ["bogus", ""],
            "--dataset": DATASETS,
            "--out": ["out/x.txt", "", "run", "data.npz"],
            "--n": ["0", "-1", "100", *NOT_INT],
            "--draws": ["0", "-1", "9", *NOT_INT],
            "--seed": SEED_VALUES,
        },
        ("data.npz",),
    ),
    Command(
        "benchmark",
        (
            "benchmark",
            "--dataset",
            "npz:data.npz",
            "--model",
            "wrn-10-1",
            "--batch-size",
            "8",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--json",
            "bench.json",
        ),
        ("bench.json",),
        {
            "--steps": POSITIVE_INT,
            "--warmup": ["-1", *NOT_INT],
            "--json": ["data.npz", "run", ""],
            "--model": ["bogus", ""],
            "--batch-size": BATCH,
            "--dataset": DATASETS,
            "--aug": ["bogus"],
            "--eps": ["-1", "nan", "inf", "abc"],
            "--learning-rate": ["-1", "nan", "abc"],
            "--attack-steps": ["0", "-1", "abc"],
            "--ema-decay": ["-1", "2", "nan"],
            "--precision": ["bogus"],
            "--beta": ["-1", "nan"],
            "--weight-decay": ["nan", "inf"],
            "--seed": ["-1", "abc", str(2**32), HUGE],
        },
        ("data.npz",),
    ),
]


def _with_value(args: tuple[str, ...], option: str, value: str) -> list[str]:
    """`args` with `option`'s value replaced by `value` (appended when absent; a positional `run` replaced)."""
    args = list(args)
    if option in args:
        args[args.index(option) + 1] = value
    elif option == "run":
        args[args.index("run")] = value
    else:
        args += [option, value]
    return args


# --------------------------------------------------------------------------------------------------
# Damage


def _truncate(path: str, rng: np.random.Generator) -> None:
    data = Path(path).read_bytes()
    if path.endswith(TEXT_SUFFIXES):
        ends = [n for n in range(len(data.rstrip())) if n == 0 or data[n - 1 : n] != b"\n"]
        length = int(rng.choice(ends))
    else:
        length = int(rng.integers(0, len(data)))
    with open(path, "r+b") as handle:
        handle.truncate(length)


def _member_spans(path: str, member: str | None = None) -> list[tuple[int, int]]:
    """(start, end) of every non-empty member's data in a zip archive (only `member`'s, if given)."""
    spans = []
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for info in archive.infolist():
            if member is not None and info.filename != member:
                continue
            handle.seek(info.header_offset + 26)
            name_length, extra_length = struct.unpack("<HH", handle.read(4))
            start = info.header_offset + 30 + name_length + extra_length
            if info.compress_size:
                spans.append((start, start + info.compress_size))
    return spans


def _flip(path: str, rng: np.random.Generator, member: str | None = None) -> None:
    data = bytearray(Path(path).read_bytes())
    if path.endswith(ZIP_SUFFIXES):
        spans = _member_spans(path, member)
        start, end = spans[int(rng.integers(len(spans)))]
        position = int(rng.integers(start, end))
    else:
        position = int(rng.integers(len(data)))
    data[position] ^= 0x80
    with open(path, "r+b") as handle:
        handle.write(bytes(data))


DAMAGE_NAMES = {_truncate: "truncated", _flip: "bit-flipped"}


# --------------------------------------------------------------------------------------------------
# One case


def _snapshot(root: str) -> dict[str, tuple]:
    """path (relative) -> (sha256, mtime_ns) of every file, ("dir",) of every folder."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = ("dir",)
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = (
                    hashlib.sha256(handle.read()).hexdigest(),
                    os.stat(path).st_mtime_ns,
                )
    return found


def _inside(path: str, outputs: tuple[str, ...]) -> bool:
    return any(path == out or path.startswith(out + os.sep) for out in outputs)


def _run_case(world: str, case_dir: str, command: Command, args: list[str], damage=None) -> list[str]:
    """Runs one case in a fresh copy of `world`; returns what went wrong (empty: the case passed)."""
    shutil.copytree(world, case_dir)
    damaged = None
    if damage is not None:
        relative, how, rng, member = damage
        damaged = os.path.join(case_dir, relative)
        if member is None:
            how(damaged, rng)
        else:
            how(damaged, rng, member)
    before = _snapshot(case_dir)
    here = os.getcwd()
    os.chdir(case_dir)
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        os.chdir(here)
    after = _snapshot(case_dir)
    problems = []
    label = f"{' '.join(args)!r}" + (f" with {damage[0]} {DAMAGE_NAMES[damage[1]]}" if damage else "")
    if not isinstance(result.exception, SystemExit) or result.exit_code not in (1, 2):
        problems.append(f"{label}: exit {result.exit_code}, {type(result.exception).__name__}: {result.exception}")
    if "Traceback" in result.output:
        problems.append(f"{label}: a traceback in the output")
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    if len(errors) != 1:
        problems.append(f"{label}: {len(errors)} error lines in {result.output[-500:]!r}")
    elif damaged is not None and relative not in errors[0] and not (relative.startswith(MODEL) and MODEL in errors[0]):
        problems.append(f"{label}: the error does not name the file: {errors[0]}")
    changed = sorted(
        path
        for path in set(before) | set(after)
        if before.get(path) != after.get(path) and not _inside(path, command.outputs)
    )
    if changed:
        problems.append(f"{label}: changed outside the output: {changed[:5]}")
    return problems


def _cases(command: Command, every: bool) -> list[tuple[list[str], tuple | None]]:
    rng = np.random.default_rng([SEED, COMMANDS.index(command)])
    pairs = [(option, value) for option, values in command.invalid.items() for value in values]
    chosen = (
        pairs if every else [pairs[i] for i in rng.choice(len(pairs), min(OPTION_CASES, len(pairs)), replace=False)]
    )
    cases = [(_with_value(command.args, option, value), None) for option, value in chosen]
    sampled = (
        list(command.sampled_reads)
        if every
        else [
            command.sampled_reads[i]
            for i in rng.choice(
                len(command.sampled_reads), min(SAMPLED_READS, len(command.sampled_reads)), replace=False
            )
        ]
        if command.sampled_reads
        else []
    )
    members = dict(command.read_members)
    for relative in [*command.reads, *sampled]:
        args = list(command.args)
        if relative == "model.keras":
            args = _with_value(args, "--model", "model.keras")
        cases.append((args, (relative, _truncate, rng, None)))
        cases.append((args, (relative, _flip, rng, members.get(relative))))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_invalid_values_and_damaged_files_give_one_line_and_change_nothing(world, tmp_path, command):
    world, untouched = world
    if command.needs_torch and torch is None:
        pytest.skip("needs the [import] extra (torch)")
    every = os.environ.get("TFROBUST_DAMAGE_ALL") == "1"
    problems = []
    for number, (args, damage) in enumerate(_cases(command, every)):
        problems += _run_case(world, str(tmp_path / f"case{number}"), command, args, damage)
    assert not problems, "\n".join(problems)
    assert _snapshot(world) == untouched  # every case ran in its own copy


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_every_command_line_runs_on_the_undamaged_world(world, tmp_path, command):
    """The control: what the cases above damage or change works as it is."""
    if command.needs_torch and torch is None:
        pytest.skip("needs the [import] extra (torch)")
    world, _ = world
    case = str(tmp_path / "case")
    shutil.copytree(world, case)
    here = os.getcwd()
    os.chdir(case)
    try:
        result = CliRunner().invoke(cli, list(command.args))
    finally:
        os.chdir(here)
    assert result.exit_code == 0, result.output[-2000:]


# --------------------------------------------------------------------------------------------------
# The integrity checks on their own


def test_saved_model_files_are_checked_against_fingerprint_pb(world, tmp_path):
    from tfrobust.errors import UserError
    from tfrobust.integrity import check_saved_model_files

    root, _ = world
    check_saved_model_files(os.path.join(root, MODEL))  # intact
    for name, field in (
        ("saved_model.pb", "saved_model_checksum"),
        (os.path.join("variables", "variables.index"), "checkpoint_hash"),
    ):
        for seed in range(3):
            copy = str(tmp_path / f"{field}{seed}")
            shutil.copytree(os.path.join(root, MODEL), copy)
            _flip(os.path.join(copy, name), np.random.default_rng(seed))
            with pytest.raises(UserError) as excinfo:
                check_saved_model_files(copy)
            message = str(excinfo.value)
            assert "\n" not in message
            # A flip either breaks the proto (TensorFlow cannot parse it) or changes its hash.
            assert (
                f"{os.path.join(copy, name)} does not match the {field} recorded in fingerprint.pb" in message
                or message.startswith(f"cannot read SavedModel {copy}:")
            ), message
    older = str(tmp_path / "older")
    shutil.copytree(os.path.join(root, MODEL), older)
    os.remove(os.path.join(older, "fingerprint.pb"))
    check_saved_model_files(older)  # a SavedModel of TensorFlow < 2.12 has none: left to the parser


def test_a_bit_flip_in_a_pytorch_tensor_loads_silently_without_the_crc_check(tmp_path):
    """torch.load checks no CRC: a flipped tensor byte loads as another weight. `check_zip_archive` (run by
    `tfrobust import` before torch.load) refuses the file."""
    if torch is None:
        pytest.skip("needs the [import] extra (torch)")
    from tfrobust.errors import UserError
    from tfrobust.integrity import check_zip_archive

    path = str(tmp_path / "weights.pt")
    weights = {"w": torch.arange(1000, dtype=torch.float32)}
    torch.save(weights, path)
    check_zip_archive(path, "a PyTorch checkpoint")  # intact
    member = next(name for name in zipfile.ZipFile(path).namelist() if name.endswith("data/0"))
    _flip(path, np.random.default_rng(0), member)
    assert not torch.equal(torch.load(path, weights_only=True)["w"], weights["w"])  # loaded, silently different
    with pytest.raises(UserError, match=rf"weights.pt is damaged: its member '{member}' does not match its CRC-32"):
        check_zip_archive(path, "a PyTorch checkpoint")
