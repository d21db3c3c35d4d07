"""Does a row's output depend on the rest of its batch? PyTorch + cuDNN on a GPU, with and without TF32.

The question behind `tfrobust.evaluation.fixed_layout_logits`: re-verification classifies every example in
batches of one fixed shape, which is enough only if, at a fixed shape, a row's logits do not depend on the
other rows. The GPU machine has no TensorFlow, so this measures the same cuDNN
kernels through PyTorch: a WRN-28-10 in the published layout (`tests/torch_reference.py`), random weights
(logits layer N(0, 0.1)), random [0, 1] images; one fixed image placed at a random row of 12 batches of 64
(other rows random, or zero in every third), against the same image in batches of 1, 7, 63, 65 and 250;
for cuDNN's autotuning off and on (`cudnn.benchmark`), TF32 on and off; and the logits' error against a
float64 forward of the same weights, TF32 on and off.

    python benchmarks/gpu_row_independence.py --out benchmarks/results/h200_torch_row_independence.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from torch_reference import RefWideResNet  # noqa: E402

NORMALISATION = ((0.49, 0.48, 0.45), (0.25, 0.24, 0.26), "swish")


def set_tf32(enabled: bool) -> None:
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    torch.manual_seed(0)
    model = RefWideResNet(28, 10, 10, *NORMALISATION).eval().cuda()
    torch.nn.init.normal_(model.logits.weight, std=0.1)
    model.mean, model.std = model.mean.cuda(), model.std.cuda()
    rng = np.random.default_rng(1)

    def uniform(*shape):
        return torch.tensor(rng.uniform(size=shape).astype(np.float32)).cuda()

    def logits(x):
        with torch.no_grad():
            return model(x).double().cpu().numpy()

    example = uniform(1, 3, 32, 32)
    for benchmark in (False, True):
        for tf32 in (True, False):
            torch.backends.cudnn.benchmark = benchmark
            set_tf32(tf32)
            reference, worst = None, 0.0
            for trial in range(12):
                batch = uniform(64, 3, 32, 32)
                if trial % 3 == 0:
                    batch.zero_()
                row = int(rng.integers(64))
                batch[row] = example[0]
                out = logits(batch)[row]
                reference = out if reference is None else reference
                worst = max(worst, float(np.abs(out - reference).max()))
            sizes = {
                n: float(np.abs(logits(example.repeat(n, 1, 1, 1))[0] - reference).max()) for n in (1, 7, 63, 65, 250)
            }
            key = f"bench={benchmark},tf32={tf32}"
            result[key] = {"fixed64": worst, "sizes": sizes}
            print(key, result[key], flush=True)

    torch.backends.cudnn.benchmark = False
    x = uniform(256, 3, 32, 32)
    exact_model = RefWideResNet(28, 10, 10, *NORMALISATION).double().eval().cuda()
    exact_model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    exact_model.mean, exact_model.std = model.mean.double(), model.std.double()
    with torch.no_grad():
        exact = exact_model(x.double()).cpu().numpy()
    for tf32 in (True, False):
        set_tf32(tf32)
        got = logits(x)
        key = f"f64,tf32={tf32}"
        result[key] = {
            "maxabs": float(np.abs(got - exact).max()),
            "scale": float(np.abs(exact).max()),
            "argmax_diff": int((got.argmax(-1) != exact.argmax(-1)).sum()),
        }
        print(key, result[key], flush=True)
    with open(args.out, "x") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
