"""Swish / SiLU, x * sigmoid(x), whose gradient runs as one fused kernel where shapes are static.

The paper's networks use Swish (Ramachandran et al. 2017; the reference's `jax.nn.swish` /
`torch.nn.SiLU`). Its value is TensorFlow's `tf.nn.silu`, which oneDNN's graph rewriter fuses into one
kernel (`_MklSwish`). Its gradient,

    d/dx [x sigmoid(x)] = sigmoid(x) (1 + x (1 - sigmoid(x))),

is the formula of `tf.nn.silu`'s own gradient, but TensorFlow runs it as six elementwise kernels (sigmoid,
subtract, three multiplies, add), each a pass over the feature map in memory. A TRADES-10 step takes
thirteen such gradients per activation (ten attack steps, the clean and the adversarial pass), and on a CPU
those passes cost about a tenth of the step (docs/xla.md, "CPU"). Here the gradient is one XLA-compiled
function: one pass that reads x and the incoming gradient and writes the result.

XLA compiles once per input shape (about 0.1 s on a CPU), so the fused gradient is used only where the
shape is static (the training step, whose batches all have one shape, and attacks compiled with a fixed
shape) and the tensor has at least `FUSED_MIN_ELEMENTS` elements: below 2^18 (1 MiB of float32) the six
passes run from the CPU's caches and the compilation would not pay for itself. Where a dimension is free
(the evaluation attacks without XLA, whose batches shrink as points break; an exported serving
signature), for small tensors and in eager mode, `swish` is `tf.nn.silu` itself, value and gradient.
Inside an XLA-compiled program the function is inlined, and XLA fuses the whole of it anyway.

Example::

    import keras
    from tfrobust.models.swish import swish

    layer = keras.layers.Activation(swish)  # serialises as "tfrobust>swish"
"""

from __future__ import annotations

import keras
import tensorflow as tf

FUSED_MIN_ELEMENTS = 2**18
_FUSED_GRADIENTS: dict[tf.DType, tf.types.experimental.PolymorphicFunction] = {}


def _fused_gradient(dtype: tf.DType):
    """One XLA function per dtype, traced once for any shape (XLA compiles each concrete shape once)."""
    if dtype not in _FUSED_GRADIENTS:
        spec = tf.TensorSpec(None, dtype)

        @tf.function(jit_compile=True, input_signature=[spec, spec])
        def swish_gradient(x, dy):
            s = tf.sigmoid(x)
            return dy * (s * (1.0 + x * (1.0 - s)))

        _FUSED_GRADIENTS[dtype] = swish_gradient
    return _FUSED_GRADIENTS[dtype]


@tf.custom_gradient
def _swish_static(x):
    def grad(dy):
        return _fused_gradient(x.dtype)(x, dy)

    return x * tf.sigmoid(x), grad


@keras.saving.register_keras_serializable(package="tfrobust")
def swish(x):
    """x * sigmoid(x) (Ramachandran et al. 2017), with a one-kernel gradient where `x`'s shape is static and
    large (module docstring).

    Example::

        y = swish(tf.constant([-1.0, 0.0, 2.0]))  # [-0.269, 0.0, 1.762]
    """
    x = tf.convert_to_tensor(x)
    if tf.executing_eagerly() or not x.shape.is_fully_defined() or x.shape.num_elements() < FUSED_MIN_ELEMENTS:
        return tf.nn.silu(x)
    return _swish_static(x)
