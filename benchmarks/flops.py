"""FLOP accounting shared by the tfrobust and PyTorch TRADES throughput benchmarks.

Pure Python (no TensorFlow, no PyTorch), so both benchmark scripts count the same work the same way.

Model. The pre-activation WideResNet-D-W of docs/method.md ("Model"; Rebuffi,
Gowal et al. 2021, which uses the WRN of Zagoruyko & Komodakis 2016 in its pre-activation form):

* ``init_conv``: 3x3, ``channels`` -> 16, stride 1;
* three groups of ``n = (D - 4) / 6`` blocks with widths 16W, 32W, 64W and strides 1, 2, 2 (the stride
  applies to the first block of a group). A block is ``a = act(BN(x))``, 3x3 conv (stride s) on ``a``,
  ``act(BN)``, 3x3 conv (stride 1); when the block changes width or stride, a 1x1 projection shortcut
  (stride s) also reads ``a``;
* head: ``act(BN)``, global average pool, dense ``64W -> classes``.

Counting rules (the usual "model FLOPs" convention):

* one multiply-accumulate = 2 FLOPs; only convolutions and the dense layer are counted (BatchNorm,
  activations, pooling, normalisation, biases, residual additions, losses and optimiser updates are
  ignored: together well under 1% of a WRN's work);
* "same" padding: a conv with stride s maps H x H to ceil(H/s) x ceil(H/s); padded zeros are counted
  (a dense conv kernel does that work);
* a forward pass costs F; a full backward pass costs 2F (F for the gradient with respect to the layer
  inputs, F for the gradient with respect to the weights).

TRADES step (docs/method.md, "TRADES step" and "Inner maximisation"), per image::

    target     : 1 forward of the clean image (the fixed softmax the attack moves away from)   1F
    attack     : K steps, each a forward and a backward to the input                            K * (1 + b) F
    train loss : forward + full backward of the clean and of the adversarial image            2 * 3F

where ``b`` is what one attack backward is counted as. ``b = 2`` (``attack_backward="full"``, the default)
is the conventional "backward = 2 x forward" count, so an attack step is 3F and TRADES-10 is
``1 + 10*3 + 6 = 37`` forward passes. An attack needs only the input gradient, and frameworks that prune
the weight-gradient branch (PyTorch's ``torch.autograd.grad(loss, x)``, TF's ``tape.gradient(loss, x)``
under a graph) execute only ``b = 1``: ``attack_backward="input"`` counts that, ``1 + 10*2 + 6 = 27``
forward passes, which is the "about 27 forward passes per image for TRADES-10" figure. MFU computed from
the "full" count is 37/27 = 1.37x higher than from the "input" count; report which one you used.

Peak. ``cpu_peak_flops`` = cores x GHz x FLOP/cycle/core. AMD Zen3 has two 256-bit FMA pipes:
2 pipes x 8 fp32 lanes x 2 FLOPs (mul + add) = 32 fp32 FLOP/cycle/core. The clock comes from
``lscpu`` ("CPU max MHz") or ``/proc/cpuinfo`` ("cpu MHz"), else BogoMIPS / 2. Under a hypervisor the
reported MHz is the nominal (TSC) clock; a core that turbos above it makes the true peak higher and the
computed MFU an over-estimate.

Run ``python benchmarks/flops.py`` for a table (add ``--model wrn-28-10`` etc.).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys

ZEN3_FP32_FLOPS_PER_CYCLE = 32  # 2 x 256-bit FMA pipes x 8 fp32 lanes x 2 FLOPs per FMA
_ATTACK_BACKWARD = {"full": 2, "input": 1}


def parse_wrn(name: str) -> tuple[int, int]:
    """``"wrn-28-10"`` (also ``WRN_28_10``, ``wrn28-10``) -> ``(28, 10)``."""
    m = re.fullmatch(r"\s*wrn[-_]?(\d+)[-_x](\d+)\s*", name, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"model name {name!r} is not of the form wrn-DEPTH-WIDTH, e.g. wrn-28-10")
    depth, width = int(m.group(1)), int(m.group(2))
    if depth < 10 or (depth - 4) % 6 != 0 or width < 1:
        raise ValueError(f"WideResNet depth must be 6n+4 (n >= 1) and width >= 1, got {depth}-{width}")
    return depth, width


def _conv_flops(out_hw: int, k: int, cin: int, cout: int) -> int:
    return 2 * out_hw * out_hw * k * k * cin * cout


def wrn_layers(depth: int, width: int, image_size: int = 32, channels: int = 3, classes: int = 10):
    """(name, kind, out_size, kernel, cin, cout, flops) for every conv/dense layer, in forward order."""
    if (depth - 4) % 6 != 0 or depth < 10:
        raise ValueError(f"WideResNet depth must be 6n+4 (n >= 1), got {depth}")
    n = (depth - 4) // 6
    widths = [16, 16 * width, 32 * width, 64 * width]
    layers = []
    hw = image_size
    layers.append(("init_conv", "conv", hw, 3, channels, widths[0], _conv_flops(hw, 3, channels, widths[0])))
    cin = widths[0]
    for g, stride0 in enumerate((1, 2, 2)):
        cout = widths[g + 1]
        for b in range(n):
            stride = stride0 if b == 0 else 1
            out_hw = math.ceil(hw / stride)
            p = f"layer.{g}.block.{b}"
            layers.append((f"{p}.conv_0", "conv", out_hw, 3, cin, cout, _conv_flops(out_hw, 3, cin, cout)))
            layers.append((f"{p}.conv_1", "conv", out_hw, 3, cout, cout, _conv_flops(out_hw, 3, cout, cout)))
            if cin != cout or stride != 1:
                layers.append((f"{p}.shortcut", "conv", out_hw, 1, cin, cout, _conv_flops(out_hw, 1, cin, cout)))
            cin, hw = cout, out_hw
    layers.append(("logits", "dense", 1, 1, cin, classes, 2 * cin * classes))
    return layers


def wrn_forward_flops(depth: int, width: int, image_size: int = 32, channels: int = 3, classes: int = 10) -> int:
    """FLOPs (2 x MACs) of one forward pass of one image through WRN-depth-width (convs + dense only)."""
    return sum(layer[-1] for layer in wrn_layers(depth, width, image_size, channels, classes))


def wrn_num_params(depth: int, width: int, channels: int = 3, classes: int = 10) -> int:
    """Trainable parameters: conv kernels, BN scale/offset, dense kernel + bias (a sanity check)."""
    total = 0
    for _name, kind, _hw, k, cin, cout, _f in wrn_layers(depth, width, 32, channels, classes):
        total += k * k * cin * cout + (cout if kind == "dense" else 0)
    n = (depth - 4) // 6
    widths = [16, 16 * width, 32 * width, 64 * width]
    cin = widths[0]
    for g in range(3):
        cout = widths[g + 1]
        for _ in range(n):
            total += 2 * cin + 2 * cout  # batchnorm_0 (cin), batchnorm_1 (cout)
            cin = cout
    total += 2 * cin  # head batchnorm
    return total


def trades_forward_equivalents(attack_steps: int, attack_backward: str = "full") -> int:
    """TRADES step cost per image in units of one forward pass F (see the module docstring)."""
    try:
        b = _ATTACK_BACKWARD[attack_backward]
    except KeyError:
        raise ValueError(
            f"attack_backward must be one of {sorted(_ATTACK_BACKWARD)}, got {attack_backward!r}"
        ) from None
    if attack_steps < 0:
        raise ValueError("attack_steps must be >= 0")
    return 1 + attack_steps * (1 + b) + 2 * 3


def trades_step_flops(forward_flops: int, attack_steps: int, attack_backward: str = "full") -> int:
    """FLOPs of one TRADES training step for ONE image.

    ``forward_flops`` is F for one image (``wrn_forward_flops``). Default convention: attack step = 3F
    (forward + backward counted as 2F), target = 1F, training loss = 2 x 3F: TRADES-10 = 37F.
    ``attack_backward="input"`` counts only the input-gradient half of the attack backward (2F per attack
    step): TRADES-10 = 27F. Multiply by the batch size for a whole step.
    """
    return int(forward_flops) * trades_forward_equivalents(attack_steps, attack_backward)


# ----------------------------------------------------------------------------------------------- peak


def _read(cmd_or_path) -> str:
    try:
        if isinstance(cmd_or_path, list):
            return subprocess.run(
                cmd_or_path, capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"}
            ).stdout
        with open(cmd_or_path) as f:
            return f.read()
    except (OSError, subprocess.SubprocessError):
        return ""


def detect_cpu() -> dict:
    """Cores, clock and flags of this machine, with where each number came from."""
    lscpu = _read(["lscpu"])
    cpuinfo = _read("/proc/cpuinfo")
    info = {"model": None, "cores": None, "cores_source": None, "ghz": None, "ghz_source": None, "flags": set()}

    def lscpu_field(key):
        m = re.search(rf"^{re.escape(key)}:\s*(.+)$", lscpu, flags=re.MULTILINE)
        return m.group(1).strip() if m else None

    def cpuinfo_field(key):
        m = re.search(rf"^{re.escape(key)}\s*:\s*(.+)$", cpuinfo, flags=re.MULTILINE)
        return m.group(1).strip() if m else None

    info["model"] = lscpu_field("Model name") or cpuinfo_field("model name")
    flags = lscpu_field("Flags") or cpuinfo_field("flags") or ""
    info["flags"] = set(flags.split())

    # Physical cores: lscpu sockets x cores/socket; else /proc/cpuinfo processors / siblings x cpu cores.
    cps, sockets = lscpu_field("Core(s) per socket"), lscpu_field("Socket(s)")
    if cps and sockets and cps.isdigit() and sockets.isdigit():
        info["cores"], info["cores_source"] = int(cps) * int(sockets), "lscpu Core(s) per socket x Socket(s)"
    elif cpuinfo:
        procs = len(re.findall(r"^processor\s*:", cpuinfo, flags=re.MULTILINE))
        siblings, cpu_cores = cpuinfo_field("siblings"), cpuinfo_field("cpu cores")
        if procs and siblings and cpu_cores and siblings.isdigit() and cpu_cores.isdigit() and int(siblings):
            info["cores"] = procs * int(cpu_cores) // int(siblings)
        else:
            info["cores"] = procs or None
        info["cores_source"] = "/proc/cpuinfo"
    if not info["cores"]:
        info["cores"], info["cores_source"] = os.cpu_count() or 1, "os.cpu_count()"
    # A process may be restricted to fewer cores than the machine has.
    try:
        allowed = len(os.sched_getaffinity(0))
        if allowed < info["cores"]:
            info["cores"], info["cores_source"] = allowed, "os.sched_getaffinity (fewer than the machine's cores)"
    except (AttributeError, OSError):
        pass

    max_mhz = lscpu_field("CPU max MHz")
    cur_mhz = lscpu_field("CPU MHz") or cpuinfo_field("cpu MHz")
    bogo = lscpu_field("BogoMIPS") or cpuinfo_field("bogomips")
    if max_mhz:
        info["ghz"], info["ghz_source"] = float(max_mhz) / 1000, "lscpu CPU max MHz"
    elif cur_mhz:
        info["ghz"], info["ghz_source"] = float(cur_mhz) / 1000, "cpu MHz (nominal clock under a hypervisor)"
    elif bogo:
        info["ghz"], info["ghz_source"] = float(bogo) / 2000, "BogoMIPS / 2"
    return info


def cpu_peak_flops(
    cores: int | None = None,
    ghz: float | None = None,
    flops_per_cycle_per_core: float = ZEN3_FP32_FLOPS_PER_CYCLE,
    verbose: bool = True,
) -> float:
    """Peak fp32 FLOP/s = cores x ghz x 1e9 x flops_per_cycle_per_core.

    ``cores`` and ``ghz`` default to what ``detect_cpu`` reads from lscpu / /proc/cpuinfo on this machine;
    ``flops_per_cycle_per_core`` defaults to 32 (AMD Zen3: 2 x 256-bit FMA, no AVX-512). With
    ``verbose`` one line on stderr says what was assumed.
    """
    info = None
    if cores is None or ghz is None:
        info = detect_cpu()
    notes = []
    if cores is None:
        cores = info["cores"]
        notes.append(f"cores={cores} ({info['cores_source']})")
    else:
        notes.append(f"cores={cores} (given)")
    if ghz is None:
        if info["ghz"] is None:
            raise RuntimeError("could not read the CPU clock from lscpu or /proc/cpuinfo; pass ghz=")
        ghz = info["ghz"]
        notes.append(f"ghz={ghz:.3f} ({info['ghz_source']})")
    else:
        notes.append(f"ghz={ghz:.3f} (given)")
    notes.append(
        f"{flops_per_cycle_per_core:g} fp32 FLOP/cycle/core"
        + (" (Zen3: 2x256-bit FMA)" if flops_per_cycle_per_core == ZEN3_FP32_FLOPS_PER_CYCLE else "")
    )
    if info is not None and info["flags"]:
        if "avx512f" in info["flags"] and flops_per_cycle_per_core == ZEN3_FP32_FLOPS_PER_CYCLE:
            notes.append("WARNING: CPU has AVX-512; 32 FLOP/cycle may under-state the peak")
        if not {"avx2", "fma"} <= info["flags"]:
            notes.append("WARNING: no AVX2/FMA flags; 32 FLOP/cycle over-states the peak")
    peak = float(cores) * float(ghz) * 1e9 * float(flops_per_cycle_per_core)
    if verbose:
        print(f"[flops] assumed peak {peak / 1e9:.1f} GFLOP/s: " + ", ".join(notes), file=sys.stderr)
    return peak


def mfu(flops_per_step: float, seconds_per_step: float, peak_flops: float) -> float:
    """Model-FLOP utilisation: useful FLOP/s achieved / peak FLOP/s."""
    return flops_per_step / seconds_per_step / peak_flops


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", help="wrn-D-W (repeatable); default wrn-16-4 and wrn-28-10")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--attack-steps", type=int, default=10)
    args = p.parse_args(argv)
    k = args.attack_steps
    print(
        f"TRADES-{k}: full-backward convention = {trades_forward_equivalents(k, 'full')} F/image, "
        f"input-gradient-only attack = {trades_forward_equivalents(k, 'input')} F/image"
    )
    for name in args.model or ["wrn-16-4", "wrn-28-10"]:
        d, w = parse_wrn(name)
        f = wrn_forward_flops(d, w, args.image_size, 3, args.classes)
        print(
            f"{name}: params {wrn_num_params(d, w, 3, args.classes) / 1e6:.2f}M, forward {f / 1e9:.4f} GFLOP/image, "
            f"TRADES-{k} step {trades_step_flops(f, k) / 1e9:.3f} GFLOP/image (full), "
            f"{trades_step_flops(f, k, 'input') / 1e9:.3f} GFLOP/image (input)"
        )
    peak = cpu_peak_flops()
    print(f"peak {peak / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
