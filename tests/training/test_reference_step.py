"""tfrobust's TRADES training step equals the reference's, written here independently in PyTorch (float64).

The reference is DeepMind's `adversarial_robustness/jax` (experiment.py `_train_fn` / `_trades_loss_fn`,
attacks.py `Adam` / `PGD` / `untargeted_kl_divergence` / `linf_project_fn`, utils.py `sgd_momentum` /
`ema_update` / `weight_decay` / `kl_divergence`, model_zoo.py `WideResNet` on Haiku's `BatchNorm` with its
zero-debiased `ExponentialMovingAverage`), read rule by rule:

- BatchNorm in the clean pass and in the attack: batch mean and biased variance, no update
  (`is_training=False, test_local_stats=True`); in the adversarial pass of the loss: batch statistics and
  one update hidden <- d hidden + (1 - d) stat, average = hidden / (1 - d^n) (d = 0.99, eps 1e-5,
  (x - mean) * scale * rsqrt(var + eps) + offset);
- attack: minimise sum_b sum_k p_bk log softmax(f(x'))_bk (p = clean softmax) with optax Adam (b1 0.9,
  b2 0.999, eps 1e-9) at lr 0.1 for steps 0-4 and 0.01 after, each step followed by
  clip(x + clip(x' - x, -eps, eps), 0, 1);
- loss: mean CE(clean, y) + 6 mean KL(adv, clean) with KL = CE(adv, p) - CE(clean, p), p = softmax(clean)
  not stopped, + 5e-4 * 0.5 * sum w^2 over conv kernels and the logits' w and b;
- update: optax trace(0.9, nesterov) then lr(count): t <- g + 0.9 t, w <- w - lr (g + 0.9 t);
- weight average after update t: avg <- (1 - d_t) w + d_t avg, d_t = min(tau, (1 + t) / (10 + t)).

The attack is compared iterate by iterate: each implementation gets tfrobust's previous iterate (and the
reference builds its Adam state from its own gradients at those iterates), since end to end a pixel whose
gradient is at rounding level may take either sign. The loss, gradients and update are computed by the
reference on the adversarial images tfrobust's step attacked with.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import randomize_weights

from tfrobust.attacks.pgd import trades_attack
from tfrobust.models.batch_norm import frozen_batch_statistics
from tfrobust.models.wide_resnet import wide_resnet
from tfrobust.training.callbacks import WeightAveraging
from tfrobust.training.optimizers import TraceSGD
from tfrobust.training.schedules import WarmupSchedule
from tfrobust.training.trainer import AdversarialTrainer

torch = pytest.importorskip("torch")
F = torch.nn.functional

EPS = 8.0 / 255.0
MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.2, 0.3)
BATCH, SIZE, CLASSES, BETA, WD, MOMENTUM, BN_DECAY, TAU = 8, 8, 10, 6.0, 5e-4, 0.9, 0.99, 0.999


# ------------------------------------------------------------------ the reference, in PyTorch float64


def t64(array) -> torch.Tensor:
    return torch.tensor(np.asarray(array), dtype=torch.float64)


def nchw(images) -> torch.Tensor:
    return t64(images).permute(0, 3, 1, 2)


class Reference:
    """The reference WRN-10-2 (no bias, Haiku 'SAME' padding, pre-activation blocks, 1x1 projection on the
    activated input when the width changes; equal to model_zoo.WideResNet for width >= 2) and its state."""

    def __init__(self, network: keras.Model):
        self.params = {}  # Keras weight path -> float64 leaf tensor (trainable weights)
        self.hidden = {}  # BatchNorm layer -> (hidden mean, hidden variance), Haiku's EMA state
        self.counter = {}  # BatchNorm layer -> updates so far
        self.average = {}  # Haiku's EMA "average", what inference reads
        for w in network.trainable_weights:
            self.params[w.path] = t64(w.numpy())
        for layer in network.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                c = layer.gamma.shape[0]
                self.hidden[layer.name] = (torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64))
                self.counter[layer.name] = 0
        self.trace = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.avg = {k: v.clone() for k, v in self.params.items()}
        self.step_count = 0  # optax scale_by_schedule's count and jaxline's global_step

    def p(self, name):
        return self.params[name]

    def conv(self, x, name, stride, ksize):
        w = self.p(f"{name}/kernel").permute(3, 2, 0, 1)
        if ksize == 3:
            x = F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))  # TF/Haiku 'SAME' on even sizes
        return F.conv2d(x, w, stride=stride)

    def bn(self, x, name, stats):
        mean = x.mean(dim=(0, 2, 3))
        var = (x * x).mean(dim=(0, 2, 3)) - mean * mean  # Haiku: E[x^2] - E[x]^2, the biased variance
        if stats is not None:
            stats[name] = (mean.detach(), var.detach())
        inv = self.p(f"{name}/gamma") * torch.rsqrt(var + 1e-5)
        return (x - mean[None, :, None, None]) * inv[None, :, None, None] + self.p(f"{name}/beta")[None, :, None, None]

    @staticmethod
    def act(x):
        return x * torch.sigmoid(x)

    def logits(self, images, stats=None):
        x = (images - t64(MEAN)[None, :, None, None]) / t64(STD)[None, :, None, None]
        x = self.conv(x, "init_conv", 1, 3)
        for g, stride in enumerate((1, 2, 2)):  # widths 32, 64, 128: every block changes the width
            name = f"layer_{g}_block_0"
            a = self.act(self.bn(x, f"{name}_batchnorm_0", stats))
            out = self.conv(a, f"{name}_conv_0", stride, 3)
            out = self.act(self.bn(out, f"{name}_batchnorm_1", stats))
            out = self.conv(out, f"{name}_conv_1", 1, 3)
            x = self.conv(a, f"{name}_shortcut", stride, 1) + out
        x = self.act(self.bn(x, "batchnorm", stats)).mean(dim=(2, 3))
        return x @ self.p("logits/kernel") + self.p("logits/bias")

    # -- attack (attacks.py)

    def attack_step(self, x_clean, x_k, target, adam_state, k):
        """One reference PGD step from iterate x_k: returns x_{k+1} and the new Adam state."""
        x_k = x_k.clone().requires_grad_(True)
        loss = (target * F.log_softmax(self.logits(x_k), dim=-1)).sum()  # untargeted_kl_divergence, summed
        (g,) = torch.autograd.grad(loss, x_k)
        m, v, count = adam_state
        count += 1
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        m_hat, v_hat = m / (1 - 0.9**count), v / (1 - 0.999**count)
        lr = 0.1 if k < 5 else 0.01  # optax.piecewise_constant_schedule(0.1, {5: 0.1})
        x_next = x_k.detach() - lr * m_hat / (torch.sqrt(v_hat) + 1e-9)  # minimises: scale(-1)
        x_next = torch.clamp(x_clean + torch.clamp(x_next - x_clean, -EPS, EPS), 0.0, 1.0)
        return x_next, (m, v, count)

    # -- loss, gradients, update (experiment.py, utils.py)

    def loss_and_grads(self, images, adv_images, labels):
        for v in self.params.values():
            v.requires_grad_(True)
        clean = self.logits(images)
        stats = {}
        adv = self.logits(adv_images, stats)
        p = F.softmax(clean, dim=-1)
        ce = lambda logits, probs: -(probs * F.log_softmax(logits, dim=-1)).sum(-1)  # noqa: E731
        clean_loss = ce(clean, labels).mean()
        kl = (ce(adv, p) - ce(clean, p)).mean()
        decayed = [v for k, v in self.params.items() if k.endswith("/kernel") or k == "logits/bias"]
        loss = clean_loss + BETA * kl + WD * 0.5 * sum((v * v).sum() for v in decayed)
        grads = torch.autograd.grad(loss, list(self.params.values()))
        for v in self.params.values():
            v.requires_grad_(False)
        return loss.detach(), dict(zip(self.params, grads)), stats, clean.detach(), adv.detach()

    def apply(self, grads, stats, lr):
        for k in self.params:
            self.trace[k] = grads[k] + MOMENTUM * self.trace[k]
            self.params[k] = self.params[k] - lr * (grads[k] + MOMENTUM * self.trace[k])
        for name, (mean, var) in stats.items():
            hm, hv = self.hidden[name]
            self.counter[name] += 1
            hm, hv = BN_DECAY * hm + (1 - BN_DECAY) * mean, BN_DECAY * hv + (1 - BN_DECAY) * var
            self.hidden[name] = (hm, hv)
            debias = 1 - BN_DECAY ** self.counter[name]
            self.average[name] = (hm / debias, hv / debias)
        d = min(TAU, (1 + self.step_count) / (10 + self.step_count))
        self.avg = {k: (1 - d) * self.params[k] + d * self.avg[k] for k in self.params}
        self.step_count += 1


# ------------------------------------------------------------------ tfrobust side


class RecordingAttack:
    """The training attack, keeping what it returned and the seed it was given."""

    def __init__(self, inner):
        self.inner = inner
        self.last = tf.Variable(tf.zeros([BATCH, SIZE, SIZE, 3]), trainable=False)
        self.seed = tf.Variable(tf.zeros([2], tf.int64), trainable=False)

    def __call__(self, model_fn, x, target, seed):
        adv = self.inner(model_fn, x, target, seed)
        self.last.assign(adv)
        self.seed.assign(tf.cast(seed, tf.int64))
        return adv


class RecordingProjection:
    """The attack's projection, keeping every point it returns: the start x_0, then x_1, x_2, ... (run
    eagerly, `tf.while_loop` calls the step in Python)."""

    def __init__(self, inner):
        self.inner, self.norm, self.eps = inner, inner.norm, inner.eps
        self.points = []

    def project(self, x_adv, x):
        out = self.inner.project(x_adv, x)
        self.points.append(out.numpy())
        return out


def setup(schedule, seed=0):
    keras.utils.set_random_seed(seed)
    network = wide_resnet(depth=10, width=2, input_shape=(SIZE, SIZE, 3), num_classes=CLASSES, mean=MEAN, std=STD)
    randomize_weights(network, seed)  # nonzero logits layer, and moving statistics the first update replaces
    attack = RecordingAttack(trades_attack("linf", EPS, num_steps=10))
    trainer = AdversarialTrainer(network, loss="trades", attack=attack, beta=BETA, weight_decay=WD, seed=7)
    trainer.compile(optimizer=TraceSGD(learning_rate=schedule, momentum=MOMENTUM, nesterov=True))
    trainer.optimizer.build(network.trainable_variables)
    averaging = WeightAveraging(network, decay=TAU)
    return network, trainer, attack, averaging


def batch(seed):
    rng = np.random.default_rng(100 + seed)
    images = rng.uniform(0.0, 1.0, (BATCH, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, BATCH)]
    return images, labels


def bn_layers(network):
    return [layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)]


def assert_close(actual, expected, what, rtol=2e-4, atol_scale=2e-5):
    expected = expected.detach().numpy() if hasattr(expected, "detach") else np.asarray(expected)
    actual = np.asarray(actual, np.float64)
    atol = atol_scale * max(float(np.abs(expected).max()), 1e-3)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# ------------------------------------------------------------------ tests


def test_one_step_equals_the_reference():
    network, trainer, attack, averaging = setup(schedule=0.1)
    ref = Reference(network)
    images, labels = batch(0)
    x, y = tf.constant(images), tf.constant(labels)
    x_ref, y_ref = nchw(images), t64(labels)

    # Clean logits: batch statistics, no update.
    with frozen_batch_statistics(network):
        clean = network(x, training=True)
    ref_clean = ref.logits(x_ref)
    assert_close(clean.numpy(), ref_clean, "clean logits")
    assert float(tf.reduce_max(tf.abs(clean))) > 0.5  # a non-trivial function

    # The attack, iterate by iterate, from tfrobust's random start with this step's seed.
    target = tf.nn.softmax(clean)
    seed = trainer._step_seed()

    def model_fn(images):
        return network(images, training=True)

    recorder = RecordingProjection(attack.inner.projection)
    with frozen_batch_statistics(network):
        last = dataclasses.replace(attack.inner, projection=recorder)(model_fn, x, target, seed).numpy()
    iterates = recorder.points  # x_0 (the projected random start), x_1, ..., x_10
    assert len(iterates) == 11
    np.testing.assert_array_equal(iterates[-1], last)
    x0 = iterates[0]
    assert np.abs(x0 - images).max() <= EPS + 1e-6 and x0.min() >= 0 and x0.max() <= 1
    assert np.abs(x0 - images).max() > 0.5 * EPS  # a random start, not the clean image
    ref_target = F.softmax(ref_clean, dim=-1)
    adam_state = (torch.zeros_like(x_ref), torch.zeros_like(x_ref), 0)
    moved = 0.0
    for k in range(10):
        x_next, adam_state = ref.attack_step(x_ref, nchw(iterates[k]), ref_target, adam_state, k)
        expected = x_next.permute(0, 2, 3, 1).numpy()
        # Float32 noise: Adam divides by sqrt(v), so where successive gradients nearly cancel a gradient's
        # rounding error shows in the step (measured: at most 2.2e-4 of the step's lr); 1e-3 of it is allowed.
        lr = 0.1 if k < 5 else 0.01
        np.testing.assert_allclose(iterates[k + 1], expected, atol=1e-3 * lr, err_msg=f"attack iterate {k + 1}")
        moved = max(moved, float(np.abs(iterates[k + 1] - iterates[k]).max()))
    assert moved > 0.005  # the steps are not trivially zero

    # tfrobust's loss and gradients; the state is put back before the full step.
    saved = [w.numpy().copy() for w in network.weights]
    out = trainer.loss_and_gradients(x, y)
    adv = out["adv_images"].numpy()
    np.testing.assert_array_equal(adv, iterates[10])  # the step attacks as the iterates above
    for w, value in zip(network.weights, saved):
        w.assign(value)

    loss, grads, stats, _, ref_adv_logits = ref.loss_and_grads(x_ref, nchw(adv), y_ref)
    assert_close(out["adv_logits"].numpy(), ref_adv_logits, "adversarial logits")
    assert_close(float(out["total"]), loss, "loss")
    assert set(grads) == {w.path for w in network.trainable_variables}
    for w, g in zip(network.trainable_variables, out["gradients"]):
        assert_close(g.numpy(), grads[w.path], f"gradient of {w.path}")

    # The whole step (compiled, as fit runs it) and the weight average.
    tf.function(trainer.train_step)((x, y))
    averaging.on_train_batch_end(0)
    # Compiled, the attack rounds differently from the eager calls above (float32 noise as in the iterates);
    # the reference updates with the gradients at the points this step actually used.
    np.testing.assert_allclose(attack.last.numpy(), adv, atol=1e-4)
    _, grads, stats, _, _ = ref.loss_and_grads(x_ref, nchw(attack.last.numpy()), y_ref)
    ref.apply(grads, stats, lr=0.1)
    for w in network.trainable_variables:
        assert_close(w.numpy(), ref.params[w.path], f"updated {w.path}")
    for w, a in zip(network.trainable_variables, averaging.averages):
        assert_close(a.numpy(), ref.avg[w.path], f"average of {w.path}")
    for layer in bn_layers(network):
        mean, var = ref.average[layer.name]
        assert_close(layer.moving_mean.numpy(), mean, f"{layer.name} moving mean")
        assert_close(layer.moving_variance.numpy(), var, f"{layer.name} moving variance")
        assert int(layer.moving_updates.numpy()) == 1


def test_three_steps_across_learning_rate_changes_equal_the_reference():
    # Warm-up over 2 steps: lr 0, 0.1, then 0.2 (optax linear_schedule from 0, then the constant part).
    schedule = WarmupSchedule(peak=0.2, warmup_steps=2, total_steps=30, kind="piecewise")
    network, trainer, attack, averaging = setup(schedule=schedule, seed=1)
    ref = Reference(network)
    keras_rule = {k: v.clone() for k, v in ref.params.items()}  # Keras SGD: v <- 0.9 v - lr g; w += 0.9 v - lr g
    keras_velocity = {k: torch.zeros_like(v) for k, v in ref.params.items()}
    step = tf.function(trainer.train_step)
    for s in range(3):
        images, labels = batch(s)
        step((tf.constant(images), tf.constant(labels)))
        averaging.on_train_batch_end(s)
        lr = float(schedule(s))
        assert lr == pytest.approx((0.0, 0.1, 0.2)[s])
        _, grads, stats, _, _ = ref.loss_and_grads(nchw(images), nchw(attack.last.numpy()), t64(labels))
        ref.apply(grads, stats, lr=lr)
        for k in keras_velocity:
            keras_velocity[k] = MOMENTUM * keras_velocity[k] - lr * grads[k]
            keras_rule[k] = keras_rule[k] + MOMENTUM * keras_velocity[k] - lr * grads[k]
        for w, trace in zip(network.trainable_variables, trainer.optimizer.traces):
            assert_close(w.numpy(), ref.params[w.path], f"step {s}: {w.path}")
            assert_close(trace.numpy(), ref.trace[w.path], f"step {s}: trace of {w.path}")
        for w, a in zip(network.trainable_variables, averaging.averages):
            assert_close(a.numpy(), ref.avg[w.path], f"step {s}: average of {w.path}")
        for layer in bn_layers(network):
            mean, var = ref.average[layer.name]
            assert_close(layer.moving_mean.numpy(), mean, f"step {s}: {layer.name} moving mean")
            assert_close(layer.moving_variance.numpy(), var, f"step {s}: {layer.name} moving variance")
    assert int(trainer.optimizer.iterations.numpy()) == 3
    # The test tells the rules apart: Keras's SGD (lr inside the momentum buffer) ends far outside the
    # tolerance after the same three steps.
    gap = max(float((keras_rule[k] - ref.params[k]).abs().max() / ref.params[k].abs().max()) for k in ref.params)
    assert gap > 1e-2
