"""Full float32 arithmetic for attacks, re-verification and model selection.

On NVIDIA Ampere and newer GPUs TensorFlow runs float32 matrix products and convolutions in TensorFloat-32
by default (`tf.config.experimental.enable_tensor_float_32_execution`): inputs rounded to a 10-bit
mantissa, a relative error of about 1e-3 instead of float32's 1e-7. Training tolerates that; an
evaluation does not: whether a point near the decision boundary counts as broken, and which candidate an
attack keeps, would depend on the rounding. The reference AutoAttack runs in PyTorch, whose matrix
products default to full float32 (`torch.backends.cuda.matmul.allow_tf32 = False`); its convolutions do
not (`torch.backends.cudnn.allow_tf32 = True`), which the comparison script `benchmarks/aa_reference.py`
turns off. tfrobust therefore runs `tfrobust eval`, `tfrobust audit` and model selection's PGD-40 inside
`full_float32()`, and records the setting in their reports (`numerics_record`). On CPUs the switch
changes nothing.

TF reads the switch when a kernel runs (cuBLAS products, and cuDNN when it picks a convolution
algorithm), so it governs functions traced before it changed too, with one caveat: TF caches the cuDNN
algorithm it autotuned per convolution shape (`ConvParameters`, which does not hold the switch), so a
convolution of a shape first run with TF32 on may keep its algorithm. `tfrobust eval` and `tfrobust audit`
turn TF32 off before their first GPU operation; model selection runs inside a training process whose
convolutions of the same shapes may have been tuned under TF32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow as tf


def tf32_enabled() -> bool:
    """Whether TensorFlow may run float32 products and convolutions in TensorFloat-32 right now."""
    return bool(tf.config.experimental.tensor_float_32_execution_enabled())


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """TensorFloat-32 off inside the block, the previous setting restored after it (nesting is fine).

    The switch is process-wide: a training step running concurrently in another thread would also run
    without TF32 while the block is open.
    """
    previous = tf32_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(previous)


def numerics_record() -> dict[str, bool]:
    """What reports record about the arithmetic in effect: {"tf32": bool}."""
    return {"tf32": tf32_enabled()}
