"""PyTorch reference for tfrobust's TRADES train-step throughput benchmark (CPU).

What it measures: wall time of one full TRADES training step (Zhang et al. 2019) as Rebuffi, Gowal et al.
2021 ("Fixing Data Augmentation to Improve Adversarial Robustness", paper/rebuffi2021-fixing-data-
augmentation.txt) train it, with the details of docs/method.md ("Model", "TRADES step",
"Inner maximisation", "BatchNorm during a step", "Optimizer and schedule"), on synthetic data:

1. target: softmax of the clean logits (BatchNorm on batch statistics, running statistics NOT updated),
   no gradient;
2. attack: uniform random start in the Linf ball of radius eps (8/255), clipped to [0, 1]; K (10) Adam
   steps (lr 0.1 for the first half, 0.01 after; beta1 0.9, beta2 0.999, eps 1e-8) *maximising*
   sum over the batch of KL(softmax(clean) || softmax(adv)); after each step project onto the ball and
   [0, 1]. BatchNorm uses the batch statistics and does not update the running ones. Only the gradient
   with respect to the input is computed (``torch.autograd.grad(loss, x_adv)``: the weight-gradient half
   of every conv backward is skipped);
3. training loss: clean forward (running statistics frozen) and adversarial forward (the only pass that
   updates the running statistics), CE(clean logits, labels) + 6 * mean KL(softmax(clean) ||
   softmax(adv)), gradients through both logit sets, plus coupled weight decay 0.5 * 5e-4 * sum w^2 over
   conv kernels and the dense kernel and bias (not BatchNorm); backward; SGD Nesterov (momentum 0.9,
   lr 0.1 = max(0.1 * batch / 256, 0.1)).

How BatchNorm's running statistics are frozen (the cheapest correct way): every BatchNorm is a
``BatchNorm2d`` subclass with a ``frozen_stats`` switch; when set, its forward calls
``F.batch_norm(x, None, None, weight, bias, training=True)`` - batch statistics, and no running
buffers are passed at all, so nothing is read, written or copied (no save/restore of buffers, no
momentum-0 update that would still write the buffers and bump ``num_batches_tracked``).

Model: pre-activation WideResNet-D-W with SiLU (docs/method.md, "Model"): per-channel normalisation
inside the model (CIFAR-10 mean/std), ``init_conv`` 3x3 -> 16; groups of (D-4)/6 blocks with widths
16W/32W/64W and strides 1/2/2; block a = SiLU(BN(x)), conv_0 (3x3, stride s) on a, SiLU(BN), conv_1
(3x3); a 1x1 projection shortcut reads a when width or stride changes, otherwise the residual adds the
raw x; stride-2 convs pad bottom/right only (TF "same": ``F.pad(a, (0, 1, 0, 1))`` then a padding-0
conv); head SiLU(BN) -> global average pool -> dense (zero-initialised, as in the reference). BatchNorm
momentum 0.01 (= decay 0.99), eps 1e-5; no conv bias. Module names follow the published checkpoints
(``init_conv``, ``layer.G.block.B.{batchnorm_0,conv_0,batchnorm_1,conv_1,shortcut}``, ``batchnorm``,
``logits``).

Reported: images/s = batch * timed steps / wall time of the timed steps, seconds per step (mean and
median), and MFU = useful FLOP/s / peak FLOP/s, with the FLOPs from ``benchmarks/flops.py`` (one shared
convention with the TF benchmark: default "full" = 37 F per image for TRADES-10; the "input" count,
27 F, which is what this script actually executes, is reported beside it) and the peak from
``flops.cpu_peak_flops`` (cores x clock x 32 fp32 FLOP/cycle on Zen3).

Run (2 cores, on a quiet machine; timings taken while other jobs run are meaningless)::

    python benchmarks/torch_trades_step.py --model wrn-16-4 --batch-size 128 --json torch_wrn16-4.json
    python benchmarks/torch_trades_step.py --model wrn-10-1 --batch-size 8 --steps 1 --warmup 1 --check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flops  # noqa: E402  (benchmarks/flops.py, shared with the TF benchmark)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
BN_MOMENTUM = 0.01  # PyTorch momentum = 1 - decay; decay 0.99 in the reference
BN_EPS = 1e-5


# --------------------------------------------------------------------------------------------- model


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, with ``frozen_stats`` set, normalises with batch statistics and leaves the
    running statistics untouched (docs/method.md, "BatchNorm during a step")."""

    frozen_stats = False

    def forward(self, x):
        if self.training and self.frozen_stats:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


@contextmanager
def frozen_bn_stats(model: nn.Module):
    """Inside the block, BatchNorm in train mode uses batch stats and does not update running stats."""
    bns = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    for m in bns:
        m.frozen_stats = True
    try:
        yield
    finally:
        for m in bns:
            m.frozen_stats = False


def _bn(c):
    return BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.batchnorm_0 = _bn(cin)
        self.conv_0 = nn.Conv2d(cin, cout, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = _bn(cout)
        self.conv_1 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.has_shortcut = cin != cout or stride != 1
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, padding=0, bias=False) if self.has_shortcut else None
        # TF "same": stride 1 pads 1 on every side; stride 2 (even input) pads only bottom/right.
        self._pad = (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1)
        if stride not in (1, 2):
            raise ValueError("stride must be 1 or 2")

    def forward(self, x):
        a = F.silu(self.batchnorm_0(x))
        out = self.conv_0(F.pad(a, self._pad))
        out = self.conv_1(F.silu(self.batchnorm_1(out)))
        return (self.shortcut(a) if self.has_shortcut else x) + out


class _BlockGroup(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.block = nn.Sequential(*[_Block(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.block(x)


class WideResNet(nn.Module):
    """Pre-activation WRN-depth-width with SiLU, inputs NCHW float in [0, 1] (docs/method.md, "Model")."""

    def __init__(self, depth=28, width=10, num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD, in_channels=3):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError("depth must be 6n+4")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.init_conv = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(
            _BlockGroup(n, widths[0], widths[1], 1),
            _BlockGroup(n, widths[1], widths[2], 2),
            _BlockGroup(n, widths[2], widths[3], 2),
        )
        self.batchnorm = _bn(widths[3])
        self.logits = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.logits.weight)  # zero-initialised logits layer (reference)
        nn.init.zeros_(self.logits.bias)

    def forward(self, x):
        out = self.init_conv((x - self.mean) / self.std)
        out = self.layer(out)
        out = F.silu(self.batchnorm(out))
        out = out.mean(dim=(2, 3))
        return self.logits(out)


def decay_params(model: nn.Module):
    """Conv kernels, dense kernel and dense bias: the parameters under coupled L2 (not BatchNorm)."""
    ps = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ps += [m.bias for m in model.modules() if isinstance(m, nn.Linear) and m.bias is not None]
    return ps


# ----------------------------------------------------------------------------------------- TRADES


def kl_div(p_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """Per-example KL(p_clean || softmax(logits_adv)), with p_clean a probability vector."""
    log_p = torch.log(p_clean.clamp_min(1e-12))
    return (p_clean * (log_p - F.log_softmax(logits_adv, dim=1))).sum(dim=1)


def trades_attack(
    model, x, p_clean, eps=8 / 255, steps=10, lr=0.1, lr_low=0.01, betas=(0.9, 0.999), adam_eps=1e-8, generator=None
):
    """Adam inner maximisation of sum_batch KL(p_clean || softmax(model(x_adv))) in the Linf ball.

    Caller must hold ``frozen_bn_stats(model)`` (train-mode BN on batch stats, running stats untouched).
    lr is ``lr`` for the first half of the steps (5 of 10) and ``lr_low`` after (docs/method.md,
    "Inner maximisation").
    """
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    x_adv = (x + (2 * noise - 1) * eps).clamp_(0.0, 1.0)
    lo, hi = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)  # ball ∩ [0, 1], eps-ball nonempty
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    b1, b2 = betas
    switch = (steps + 1) // 2
    for t in range(1, steps + 1):
        x_adv.requires_grad_(True)
        x_in = x_adv.view_as(x_adv)  # a free non-leaf view: lets FlopCounterMode (--check) see the step
        loss = kl_div(p_clean, model(x_in)).sum()
        (g,) = torch.autograd.grad(loss, x_in)  # input gradient only
        x_adv = x_adv.detach()
        with torch.no_grad():
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            step = (lr if t <= switch else lr_low) / (1 - b1**t)
            denom = (v / (1 - b2**t)).sqrt_().add_(adam_eps)
            x_adv.addcdiv_(m, denom, value=step)  # ascent
            x_adv = torch.minimum(torch.maximum(x_adv, lo), hi)
    return x_adv.detach()


def trades_step(
    model, optimizer, x, y, decay, *, eps=8 / 255, attack_steps=10, beta=6.0, weight_decay=5e-4, generator=None
):
    """One full TRADES training step; returns (loss, x_adv) as detached tensors."""
    model.train()
    with frozen_bn_stats(model):
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)  # the fixed target (stop-gradient)
        x_adv = trades_attack(model, x, p_clean, eps=eps, steps=attack_steps, generator=generator)
        logits_clean = model(x)  # batch stats, running stats untouched
    logits_adv = model(x_adv)  # the only pass that updates the running statistics
    ce = F.cross_entropy(logits_clean, y)
    kl = kl_div(F.softmax(logits_clean, dim=1), logits_adv).mean()
    l2 = sum((p * p).sum() for p in decay)
    loss = ce + beta * kl + 0.5 * weight_decay * l2
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), x_adv


# --------------------------------------------------------------------------------------------- run


def measured_matmul_peak(dtype) -> float:
    """FLOP/s of an 8192^3 matrix product on the current GPU (median of 10 after 3 warm-ups): the MFU
    denominator on a GPU, measured rather than read off a datasheet. In float32 the product runs on the
    tensor cores (TF32) as cuDNN's convolutions do by default (`cudnn.allow_tf32`): a plain float32
    product would give a denominator 15x too small (the H200 run of 2026-11-27 recorded in
    benchmarks/results/h200_wrn-28-10_b512_fp32.json has that wrong denominator)."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    a = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    b = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    times = []
    for i in range(13):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 2 * 8192**3 / statistics.median(times)


def build(args):
    depth, width = flops.parse_wrn(args.model)
    torch.manual_seed(args.seed)
    model = WideResNet(depth, width, num_classes=args.classes)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(args.device)
    model.mean, model.std = model.mean.to(args.device), model.std.to(args.device)
    lr = max(0.1 * args.batch_size / 256, 0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size, generator=gen, device=args.device)
    y = torch.randint(0, args.classes, (args.batch_size,), generator=gen, device=args.device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return (depth, width), model, optimizer, x, y, gen


def run_check(args):
    """On a tiny batch: attack output in the eps ball and [0, 1]; running stats unchanged by the target
    pass, the attack and the clean pass, changed by the adversarial pass; forward FLOPs counted by
    PyTorch's FlopCounterMode equal flops.wrn_forward_flops; and the FLOPs PyTorch executes per step."""
    from torch.utils.flop_counter import FlopCounterMode

    (depth, width), model, optimizer, x, y, gen = build(args)
    x, y = x[: args.check_batch], y[: args.check_batch]
    decay = decay_params(model)
    eps = args.eps / 255
    ok = True

    def report(name, cond, extra=""):
        nonlocal ok
        ok &= bool(cond)
        print(f"[check] {'PASS' if cond else 'FAIL'} {name}{(': ' + extra) if extra else ''}")

    # One step first so the (zero-initialised) logits layer is non-zero and the attack gradient is too.
    trades_step(model, optimizer, x, y, decay, eps=eps, attack_steps=args.attack_steps, generator=gen)

    bufs = {k: v.clone() for k, v in model.named_buffers()}
    model.train()
    with frozen_bn_stats(model):
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
            start_gen = torch.Generator().manual_seed(123)
            x_start = (x + (2 * torch.rand(x.shape, generator=start_gen) - 1) * eps).clamp(0, 1)
            kl_start = kl_div(p_clean, model(x_start)).sum().item()
        x_adv = trades_attack(
            model, x, p_clean, eps=eps, steps=args.attack_steps, generator=torch.Generator().manual_seed(123)
        )
        with torch.no_grad():
            kl_end = kl_div(p_clean, model(x_adv)).sum().item()
            model(x)  # the clean pass of the loss, also frozen
    linf = (x_adv - x).abs().amax().item()
    report("attack result inside the Linf ball", linf <= eps + 1e-6, f"max |x_adv - x| = {linf:.6f} <= eps {eps:.6f}")
    report(
        "attack result inside [0, 1]",
        x_adv.min().item() >= 0 and x_adv.max().item() <= 1,
        f"range [{x_adv.min().item():.4f}, {x_adv.max().item():.4f}]",
    )
    same = all(torch.equal(v, bufs[k]) for k, v in model.named_buffers())
    report("running stats (and num_batches_tracked) unchanged by target pass + attack + clean pass", same)
    report("attack increases the KL over its random start", kl_end > kl_start, f"sum KL {kl_start:.4g} -> {kl_end:.4g}")
    before = {k: v.clone() for k, v in model.named_buffers()}
    with torch.no_grad():
        model(x_adv)
    changed = any(not torch.equal(v, before[k]) for k, v in model.named_buffers() if "running_" in k)
    report("the adversarial (non-frozen) pass does update the running stats", changed)

    f_model = flops.wrn_forward_flops(depth, width, args.image_size, 3, args.classes)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x[:1])
    report(
        "FlopCounterMode forward FLOPs == flops.wrn_forward_flops",
        fc.get_total_flops() == f_model,
        f"{fc.get_total_flops()} vs {f_model}",
    )
    with FlopCounterMode(display=False) as fc:
        trades_step(model, optimizer, x, y, decay, eps=eps, attack_steps=args.attack_steps, generator=gen)
    executed = fc.get_total_flops() / (f_model * x.shape[0])
    expect = flops.trades_forward_equivalents(args.attack_steps, "input")
    # The training backward needs no gradient w.r.t. the images, so autograd also skips the input-gradient
    # half of init_conv in the clean and the adversarial backward: 2 x init_conv FLOPs below the convention.
    init_conv = flops.wrn_layers(depth, width, args.image_size, 3, args.classes)[0][-1]
    expect_exact = expect - 2 * init_conv / f_model
    report(
        "FLOPs PyTorch executes per step == the 'input' convention (less 2 x init_conv input-grad)",
        abs(executed - expect_exact) < 1e-6,
        f"{executed:.4f} F/image executed (expected {expect_exact:.4f}); conventions: input {expect}, "
        f"full {flops.trades_forward_equivalents(args.attack_steps, 'full')}",
    )
    print(f"[check] {'ALL PASS' if ok else 'SOME CHECKS FAILED'}")
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(description="Time one TRADES training step of a WideResNet in PyTorch (CPU).")
    p.add_argument("--model", default="wrn-16-4", help="wrn-DEPTH-WIDTH (default wrn-16-4)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's default)")
    p.add_argument("--eps", type=float, default=8.0, help="Linf radius in 1/255 units (default 8)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and data")
    p.add_argument(
        "--flop-convention",
        choices=["full", "input"],
        default="full",
        help="which flops.py convention the headline MFU uses (both are reported)",
    )
    p.add_argument("--ghz", type=float, default=None, help="override the detected clock for the peak")
    p.add_argument("--flops-per-cycle", type=float, default=flops.ZEN3_FP32_FLOPS_PER_CYCLE)
    p.add_argument(
        "--check", action="store_true", help="run correctness checks on a tiny batch before timing (exit 1 on failure)"
    )
    p.add_argument("--check-batch", type=int, default=4)
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON to OUT")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: a GPU step, timed with synchronisation")
    p.add_argument("--bf16", action="store_true", help="cuda only: bfloat16 autocast (the tfrobust GPU setting)")
    args = p.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.check and not run_check(args):
        sys.exit(1)

    (depth, width), model, optimizer, x, y, gen = build(args)
    decay = decay_params(model)
    n_params = sum(q.numel() for q in model.parameters())
    kw = dict(eps=args.eps / 255, attack_steps=args.attack_steps, generator=gen)

    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)  # GPU work is asynchronous: sync before reading clocks
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and args.bf16 else contextlib.nullcontext()
    with autocast:
        for _ in range(args.warmup):
            trades_step(model, optimizer, x, y, decay, **kw)
        sync()
        times = []
        loss = None
        t_all = time.perf_counter()
        for _ in range(args.steps):
            t0 = time.perf_counter()
            loss, _ = trades_step(model, optimizer, x, y, decay, **kw)
            sync()
            times.append(time.perf_counter() - t0)
        wall = time.perf_counter() - t_all

    f_fwd = flops.wrn_forward_flops(depth, width, args.image_size, 3, args.classes)
    step_flops = {c: flops.trades_step_flops(f_fwd, args.attack_steps, c) * args.batch_size for c in ("full", "input")}
    if cuda:
        peak = measured_matmul_peak(torch.bfloat16 if args.bf16 else torch.float32)
    else:
        peak = flops.cpu_peak_flops(ghz=args.ghz, flops_per_cycle_per_core=args.flops_per_cycle)
    sec = wall / args.steps if args.steps else float("nan")
    res = {
        "framework": "pytorch",
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "cpu_model": flops.detect_cpu()["model"],
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "bf16_autocast": bool(cuda and args.bf16),
        "peak_source": "measured 8192^3 matmul, same dtype" if cuda else "cpu_peak_flops",
        "model": f"wrn-{depth}-{width}",
        "params": n_params,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "attack_steps": args.attack_steps,
        "channels_last": args.channels_last,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "wall_s": wall,
        "sec_per_step": sec,
        "sec_per_step_median": statistics.median(times) if times else float("nan"),
        "step_times_s": times,
        "images_per_s": args.batch_size * args.steps / wall if wall > 0 else float("nan"),
        "forward_flops_per_image": f_fwd,
        "step_flops": step_flops[args.flop_convention],
        "flop_convention": args.flop_convention,
        "forward_equivalents_per_image": flops.trades_forward_equivalents(args.attack_steps, args.flop_convention),
        "peak_flops": peak,
        "achieved_flops_per_s": step_flops[args.flop_convention] / sec,
        "mfu": flops.mfu(step_flops[args.flop_convention], sec, peak),
        "mfu_full": flops.mfu(step_flops["full"], sec, peak),
        "mfu_input": flops.mfu(step_flops["input"], sec, peak),
        "final_loss": float(loss) if loss is not None else None,
    }
    print(
        f"torch {res['torch_version']} on {res['device']} ({res['cpu_capability']}, {res['threads']} threads) {res['model']} "
        f"batch {args.batch_size} TRADES-{args.attack_steps}{' channels_last' if args.channels_last else ''}"
    )
    print(
        f"  {res['images_per_s']:.2f} images/s, {sec:.3f} s/step (median {res['sec_per_step_median']:.3f}) "
        f"over {args.steps} steps after {args.warmup} warm-up"
    )
    print(
        f"  {res['achieved_flops_per_s'] / 1e9:.2f} GFLOP/s of a {peak / 1e9:.1f} GFLOP/s peak: "
        f"MFU {100 * res['mfu']:.2f}% ({args.flop_convention}: {res['forward_equivalents_per_image']} F/image; "
        f"full {100 * res['mfu_full']:.2f}%, input {100 * res['mfu_input']:.2f}%), loss {res['final_loss']:.4f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"  wrote {args.json}")
    return res


if __name__ == "__main__":
    main()
