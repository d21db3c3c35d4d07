"""`TraceSGD`: the reference's SGD with (Nesterov) momentum, as a Keras optimizer.

The reference (`adversarial_robustness/jax` utils.py `sgd_momentum`) chains optax's
`trace(decay=momentum, nesterov=True)`, `scale_by_schedule(learning_rate)` and `scale(-1)`:

    t <- g + momentum * t                       (the trace holds raw gradients)
    w <- w - lr(k) * (g + momentum * t)         (Nesterov; plain momentum: w <- w - lr(k) * t)

with the trace starting at 0 and k the update count (0-based). PyTorch's `SGD(nesterov=True)` is the same
rule. Keras's `SGD` keeps v <- momentum * v - lr(k) * g, i.e. the learning rate inside the buffer: both agree
while the learning rate is constant and differ whenever it changes (the whole warm-up, the x0.1 drop, the
cosine), so training uses this class (docs/method.md, "Optimizer and schedule").

The trace variables are ordinary Keras optimizer variables (`optimizer.variables`: the iteration count, then
one trace per trainable variable), so tfrobust's checkpoint saves and restores them, and the update runs per
replica under `tf.distribute` like Keras's own optimizers.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfrobust")
class TraceSGD(keras.optimizers.Optimizer):
    """SGD whose momentum trace accumulates raw gradients and whose learning rate scales the update
    afterwards: optax `chain(trace(momentum, nesterov), scale_by_schedule(lr), scale(-1))`."""

    def __init__(
        self, learning_rate=0.1, momentum: float = 0.9, nesterov: bool = True, name: str | None = None, **kwargs
    ):
        super().__init__(learning_rate=learning_rate, name=name or "trace_sgd", **kwargs)
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.traces = self.add_optimizer_variables(variables, "trace")

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        momentum = ops.cast(self.momentum, variable.dtype)
        trace = self.traces[self._get_variable_index(variable)]
        new_trace = ops.add(gradient, ops.multiply(momentum, trace))
        self.assign(trace, new_trace)
        direction = ops.add(gradient, ops.multiply(momentum, new_trace)) if self.nesterov else new_trace
        self.assign_sub(variable, ops.multiply(learning_rate, direction))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov})
        return config
