"""`TraceSGD`: the reference's SGD with (Nesterov) momentum, as a Keras optimizer; and
`StepCountingLossScaleOptimizer`, the dynamic loss scaling of `--precision mixed_float16`.

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


@keras.saving.register_keras_serializable(package="tfrobust")
class StepCountingLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras's dynamic loss scaling for float16 training, whose skipped steps still count as steps.

    `keras.optimizers.LossScaleOptimizer` (what `keras.Model.compile` wraps an optimizer in under a
    `mixed_float16` policy): the train step multiplies the loss by the scale (`scale_loss`) before the
    gradient; `apply_gradients` divides the gradients by it and, when every gradient is finite, lets the
    wrapped optimizer update. A non-finite gradient (float16 overflow) skips the update and halves the
    scale; after `dynamic_growth_steps` finite steps in a row the scale doubles. Initial scale 2**15, growth
    period 2000: Keras's defaults.

    One difference: Keras's wrapped optimizer counts only applied updates in `iterations`, so each skipped
    step delays the learning-rate schedule by a step and moves it off the epochs it is defined by (warm-up
    and decay in epochs of the data, docs/method.md, "Optimizer and schedule"). Here a skipped step advances
    `iterations` too: the schedule and the attack's seed (`AdversarialTrainer._step_seed`) stay functions of
    the step number, as in a float32 or bfloat16 run.

    Example::

        optimizer = StepCountingLossScaleOptimizer(TraceSGD(0.1, momentum=0.9))  # what compile wraps under fp16
    """

    def __init__(self, inner_optimizer, initial_scale=2.0**15, dynamic_growth_steps=2000, name=None, **kwargs):
        # Keras's name for the optimizer it wraps: checkpoint keys `loss_scale_optimizer/dynamic_scale`, ...
        super().__init__(
            inner_optimizer,
            initial_scale=initial_scale,
            dynamic_growth_steps=dynamic_growth_steps,
            name=name or "loss_scale_optimizer",
            **kwargs,
        )

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)
