"""Auto-PGD (APGD) with the CE, DLR and targeted-DLR losses: the gradient attacks of AutoAttack.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML), Algorithm 1 and sec. 3-4; implemented after the reference code
(github.com/fra31/auto-attack, `autoattack/autopgd_base.py`, `APGDAttack` and `APGDAttack_targeted`),
which decides every detail below (docs/method.md, "Sources": the reference AutoAttack code wins for evaluation).

One run, for N iterations (all per example, batched):

- start: Linf x + eps·t/‖t‖∞ with t ~ U[−1, 1]^d; L2 x + eps·t/‖t‖₂ with t ~ N(0, I); clipped to [0, 1];
- step size η = 2·eps; z = P(x_k + η·sign(g)) (L2: η·g/‖g‖₂), x_{k+1} = P(x_k + a(z − x_k) + (1 − a)(x_k −
  x_{k−1})) with a = 1 on the first step and 0.75 after; P projects onto ball ∩ [0, 1] (the
  projections of `projection.py`);
- checkpoints (`checkpoints(N)`): at a checkpoint whose window holds k iterations, halve η if the loss rose
  in at most 0.75·k of those iterations, or if η was not halved at the previous checkpoint and the best
  loss did not improve since; on halving, continue from the best-loss point (and its gradient);
- the returned point is the first iterate that was misclassified (its clean image if none was); the
  example then leaves the run (the reference returns the last one and keeps computing: see `single_run`).

Losses (maximised): cross-entropy; DLR = −(z_y − max_{i≠y} z_i)/(z_π1 − z_π3 + 1e-12); targeted DLR =
−(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2 + 1e-12), z_π sorted decreasingly. APGD-T attacks the k-th target
class = the k-th largest clean logit after the true class, for min(9, K − 1) targets (K classes).
DLR needs K ≥ 3 and targeted DLR K ≥ 4; with fewer classes the attack runs no target/loss it cannot
define and says so in `notes(K)` (AutoAttack's `check_n_classes` warns the same way).

Restarts (and targets) run on the still-robust points only, from the clean image, with independent
stateless random starts (`common.run_targets`). Everything is graph-compatible: the iterations are
a `tf.while_loop`, the runs another.

L1 (Croce & Hein 2021, "Mind the box: l1-APGD for sparse adversarial attacks on image classifiers", ICML;
the reference's L1 branches of the same functions, `single_run_l1` and `l1_stage`): start x + P(t), t ~
N(0, I); sparse sign steps of L1 size η over the top-k gradient coordinates (k adapted to the sparsity of
the best point), projected exactly onto the L1 ball ∩ [0, 1] (`projection.l1_box_projection`); no
momentum; every max(int(0.04·N), 1) iterations η resets to eps (the best point got sparser) or shrinks
by 1.5, within [eps/10, eps]. `use_largereps` (AutoAttack's standard L1 version) runs the N iterations as
three stages at radii 3·eps, 2·eps, eps (30, 30, 40 for N = 100), each from the previous stage's
highest-loss point projected onto the smaller ball.

Expectation over transformation (EOT, for randomised models; the reference's `eot_iter`, used by
AutoAttack's `rand` version with 20): each evaluation of an iterate calls the model `eot_iter` times, each
call a fresh forward pass of the randomised model, and averages the input gradients,
g = (1/N) Σ_j ∇ℓ(f_j(x)). As in the reference (`attack_single_run`: `grad += ...; grad /= eot_iter`, while
`logits` and `loss_indiv` are overwritten by each call), the loss that drives the step-size checks and the
prediction that marks the iterate misclassified are those of the last call (`eot_loss="last"`);
`eot_loss="mean"` averages the loss over the N calls as well, which makes the step-size decisions less
noisy (tfrobust's option, not the reference's). With EOT an example is not dropped at its first
misclassified iterate (one random call may be a lucky draw): it keeps iterating and returns its last
misclassified iterate, as the reference does (`exit_on_success`).

Reference quirk kept on purpose: the first checkpoint's window compares the first iterate's loss with 0
(the reference reads `loss_steps[-1]` of a zero-initialised buffer), so that window's count includes
"loss(x_1) > 0"; this only decides whether the first checkpoint halves.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from tfrobust.attacks import rng
from tfrobust.attacks.common import (
    ModelFn,
    check_counts,
    clean_pass,
    correctly_classified,
    flat_norm,
    no_autograph,
    run_targets,
    select_rows,
    target_count,
    target_notes,
    top_targets,
)
from tfrobust.attacks.projection import (
    check_eps,
    check_norm,
    l1_box_projection,
    make_projection,
)
from tfrobust.errors import UserError

LOSS_NAMES = ("ce", "dlr", "dlr-targeted")
# The loss of an EOT evaluation: the last call's (the reference's) or the mean over the calls.
EOT_LOSSES = ("last", "mean")


def checkpoints(n_iter: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(0-based iterations at which APGD checks its step size, the window length k of each check).

    The reference: k_0 = max(int(0.22N), 1); then k_{j+1} = max(k_j − max(int(0.03N), 1),
    max(int(0.06N), 1)); the j-th check happens after k_0 + … + k_j iterations. N = 100 gives
    (21, 40, 56, 69, 79, 86, 92, 98).
    """
    k = max(int(0.22 * n_iter), 1)
    size_decr = max(int(0.03 * n_iter), 1)
    k_min = max(int(0.06 * n_iter), 1)
    at, windows = [], []
    i = k - 1
    while i < n_iter:
        at.append(i)
        windows.append(k)
        k = max(k - size_decr, k_min)
        i += k
    return tuple(at), tuple(windows)


def largereps_schedule(n_iter: int) -> tuple[tuple[float, int], ...]:
    """(radius as a multiple of eps, iterations) of each stage of APGD-L1's `use_largereps` schedule.

    The reference's `perturb` (fra31/auto-attack, `autoattack/autopgd_base.py`): radii 3·eps, 2·eps, eps;
    iterations ceil(0.3·N), ceil(0.3·N) and the rest (30, 30, 40 for N = 100), computed in Python floating
    point as there.
    """
    first = math.ceil(0.3 * n_iter)
    return (3.0, first), (2.0, first), (1.0, n_iter - 2 * first)


def l1_check_interval(n_iter: int) -> int:
    """Iterations between APGD-L1's sparsity and step-size checks: max(int(0.04·N), 1) for a run (or a
    `use_largereps` stage) of N iterations (the reference's `attack_single_run`, L1 branch)."""
    return max(int(0.04 * n_iter), 1)


def _sorted_desc(logits: tf.Tensor, n: int) -> tf.Tensor:
    return tf.math.top_k(logits, k=n).values


def dlr_loss(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """DLR = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12) per example (Croce & Hein 2020, eq. 6).

    Scale-invariant (a positive rescaling of the logits leaves it unchanged) and shift-invariant, which is
    why it resists the gradient masking that large logits cause for CE. Needs at least 3 classes.
    """
    logits = tf.cast(logits, tf.float32)
    top = _sorted_desc(logits, 3)
    z_y = tf.gather(logits, y, batch_dims=1)
    is_y = tf.one_hot(y, tf.shape(logits)[-1]) > 0
    best_other = tf.reduce_max(tf.where(is_y, tf.constant(-float("inf")), logits), axis=-1)
    return -(z_y - best_other) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Targeted DLR = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12) per example (Croce & Hein 2020,
    eq. 7; the reference's `dlr_loss_targeted`). Needs at least 4 classes."""
    logits = tf.cast(logits, tf.float32)
    top = _sorted_desc(logits, 4)
    z_y = tf.gather(logits, y, batch_dims=1)
    z_t = tf.gather(logits, target, batch_dims=1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def ce_loss(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Cross-entropy of the true class, per example."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(logits, tf.float32))


@dataclasses.dataclass(frozen=True)
class APGD:
    """APGD-CE (`loss="ce"`), APGD-DLR (`"dlr"`) or APGD-T (`"dlr-targeted"`); see the module docstring.

    AutoAttack standard: `APGD(norm, eps, "ce")` (1 restart × 100) and `APGD(norm, eps, "dlr-targeted")`
    (9 targets × 1 restart × 100). The paper's AA+MT: `APGD(norm, eps, "ce", n_restarts=5)` and
    `APGD(norm, eps, "dlr", n_restarts=5)`. AutoAttack rand (a randomised model): `APGD(norm, eps, "ce",
    eot_iter=20)` and `APGD(norm, eps, "dlr", eot_iter=20)`.

    Call: `attack(model_fn, x, labels, seed) -> x_adv`, labels one-hot [B, K] or class ids [B], seed an
    int [2] tensor. Per example, x_adv is a misclassified point of ball ∩ [0, 1] when one was found,
    else the clean image.

    Example::

        attack = attacks.APGD("linf", 8 / 255, loss="dlr", n_restarts=5)   # the paper's AA+MT APGD-DLR stage
        x_adv = attack(lambda x: model(x, training=False), images, labels, tf.constant([0, 0]))
        attack.notes(num_classes=2)      # ("APGD-DLR skipped: the DLR loss needs at least 3 classes, ...",)
    """

    norm: str
    eps: float
    loss: str = "ce"
    n_iter: int = 100
    n_restarts: int = 1
    n_target_classes: int = 9
    rho: float = 0.75
    # L1 only: the reference's `use_largereps` (radii 3·eps, 2·eps, eps; `largereps_schedule`). The
    # reference class's default is False; AutoAttack's standard L1 version sets it for APGD-CE and APGD-T.
    use_largereps: bool = False
    # Model calls averaged per gradient (EOT, see the module docstring): 1 for a deterministic model,
    # 20 in AutoAttack's `rand` version.
    eot_iter: int = 1
    eot_loss: str = "last"  # "last" (the reference's) or "mean" (the loss averaged over the eot_iter calls)
    # Drop an example from the run at its first misclassified iterate (None: when eot_iter == 1).
    exit_on_success: bool | None = None
    # Every tensor at the batch's shape, the examples that leave a run masked instead of dropped, as XLA
    # needs (`common.run_targets`, "Fixed shapes"); the same per-example results.
    fixed_shape: bool = False

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_eps(self.eps)
        if self.loss not in LOSS_NAMES:
            raise UserError(f"unknown APGD loss {self.loss!r}; choose one of {', '.join(LOSS_NAMES)}")
        check_counts(
            "APGD",
            n_iter=self.n_iter,
            n_restarts=self.n_restarts,
            n_target_classes=self.n_target_classes,
            eot_iter=self.eot_iter,
        )
        if not isinstance(self.use_largereps, bool):
            raise UserError(f"APGD use_largereps must be True or False, got {self.use_largereps!r}")
        if self.use_largereps and self.norm != "l1":
            raise UserError(f"APGD use_largereps is the L1 schedule (the reference's); norm is {self.norm!r}")
        if self.use_largereps and largereps_schedule(self.n_iter)[-1][1] < 1:
            iterations = ", ".join(str(n) for _, n in largereps_schedule(self.n_iter))
            raise UserError(
                f"APGD use_largereps with n_iter={self.n_iter} leaves no iteration at eps (stages of "
                f"{iterations} iterations at 3·eps, 2·eps, eps): use n_iter = 3 or at least 5"
            )
        if self.eot_loss not in EOT_LOSSES:
            raise UserError(f"unknown APGD eot_loss {self.eot_loss!r}; choose one of {', '.join(EOT_LOSSES)}")
        if self.exit_on_success is not None and not isinstance(self.exit_on_success, bool):
            raise UserError(f"APGD exit_on_success must be None, True or False, got {self.exit_on_success!r}")
        if not isinstance(self.fixed_shape, bool):
            raise UserError(f"APGD fixed_shape must be True or False, got {self.fixed_shape!r}")

    @property
    def exits_on_success(self) -> bool:
        """Whether an example leaves a run at its first misclassified iterate (`exit_on_success`, by default
        for a deterministic model only: eot_iter == 1)."""
        return self.eot_iter == 1 if self.exit_on_success is None else self.exit_on_success

    @property
    def targeted(self) -> bool:
        return self.loss == "dlr-targeted"

    def num_targets(self, num_classes: int) -> int:
        """Target classes actually attacked (1 for the untargeted losses); 0 when the loss is undefined."""
        if self.loss == "dlr" and num_classes < 3:
            return 0
        if not self.targeted:
            return 1
        return 0 if num_classes < 4 else target_count(self.n_target_classes, num_classes)

    def notes(self, num_classes: int) -> tuple[str, ...]:
        """Why this attack does less than configured on a K-class model (empty when it runs in full)."""
        if self.loss == "dlr" and num_classes < 3:
            return (f"APGD-DLR skipped: the DLR loss needs at least 3 classes, the model has {num_classes}",)
        if self.targeted and num_classes < 4:
            return (f"APGD-T skipped: the targeted DLR loss needs at least 4 classes, the model has {num_classes}",)
        if self.targeted:
            return target_notes("APGD-T", self.num_targets(num_classes), self.n_target_classes, num_classes)
        return ()

    @no_autograph
    def __call__(self, model_fn: ModelFn, x: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        x, y, logits = clean_pass(model_fn, x, labels, "APGD")
        num_targets = self.num_targets(logits.shape[-1])
        # Clean-misclassified points are never attacked (the reference's `acc = y_pred == y`).
        robust = correctly_classified(logits, y)

        def run(xs, ys, target, restart, run_seed, live=None):
            return self.single_run(model_fn, xs, ys, target, run_seed, live)

        if num_targets == 0:
            return x  # a loss the model's classes cannot define (see `notes`): nothing to run
        targets = top_targets(logits, y, num_targets) if self.targeted else None
        return run_targets(
            run, x, y, robust, seed, n_restarts=self.n_restarts, targets=targets, fixed_shape=self.fixed_shape
        )

    def _evaluate(
        self, model_fn: ModelFn, x_k: tf.Tensor, y_k: tf.Tensor, target_k: tf.Tensor | None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(misclassified [b] bool, per-example losses [b], input gradient of the summed loss) at x_k.

        With `eot_iter` N > 1 (EOT, the reference's `attack_single_run`): N model calls, the gradient the
        mean of their gradients (summed in call order, then divided by N, as the reference), the loss and
        the prediction the last call's (`eot_loss="mean"`: the loss the mean of the N losses). The calls
        run in a `tf.while_loop`, so each executes the model's random operations afresh.
        """

        def call(x_k):
            with tf.GradientTape(watch_accessed_variables=False) as tape:  # input gradient only
                tape.watch(x_k)
                logits = tf.cast(model_fn(x_k), tf.float32)
                losses = self._loss(logits, y_k, target_k)
                total = tf.reduce_sum(losses)  # summed: each example's gradient is its own
            grad = tape.gradient(total, x_k, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            misclassified = tf.not_equal(tf.cast(tf.argmax(logits, axis=-1), tf.int32), y_k)
            return misclassified, losses, grad

        if self.eot_iter == 1:
            return call(x_k)

        def body(j, wrong, losses, loss_sum, grad_sum):
            wrong, losses, grad = call(x_k)
            return j + 1, wrong, losses, loss_sum + losses, grad_sum + grad

        batch = tf.shape(x_k)[0]
        zeros = tf.zeros([batch])
        _, wrong, losses, loss_sum, grad_sum = tf.while_loop(
            lambda j, *_: j < self.eot_iter,
            body,
            (tf.constant(0), tf.zeros([batch], tf.bool), zeros, zeros, tf.zeros_like(x_k)),
            maximum_iterations=self.eot_iter,
        )
        if self.eot_loss == "mean":
            losses = loss_sum / float(self.eot_iter)
        return wrong, losses, grad_sum / float(self.eot_iter)

    def _loss(self, logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor | None) -> tf.Tensor:
        if self.loss == "ce":
            return ce_loss(logits, y)
        if self.loss == "dlr":
            return dlr_loss(logits, y)
        return targeted_dlr_loss(logits, y, target)

    @no_autograph
    def single_run(
        self,
        model_fn: ModelFn,
        x: tf.Tensor,
        y: tf.Tensor,
        target: tf.Tensor | None,
        seed: tf.Tensor,
        live: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One APGD run from a random start on every example of `x`: (x_adv, misclassified).

        An example leaves the run at its first misclassified iterate, which is what it returns. The
        reference keeps iterating on it and returns its last misclassified iterate instead; both are
        verified adversarial examples, every other example follows exactly the reference's trajectory
        (the model is applied in inference mode, so examples do not interact), and the run's success flags
        are the same. Dropping them is what makes the first stage of a cascade cheap: on most models the
        bulk of the points fall within a few iterations, and the reference pays 100 for each.

        L1 runs `single_run_l1` (with `use_largereps`, every stage of the schedule).

        With `exits_on_success` False (EOT on a randomised model, by default), every example runs all
        iterations and returns its last misclassified iterate, the reference's `x_best_adv`.

        `live` ([b] bool, fixed shapes only): the rows to attack; the others are computed and discarded.
        With `fixed_shape`, an example that leaves the run is masked (its row computed and discarded)
        instead of dropped; the loop runs while some live example remains.
        """
        if self.norm == "l1":
            return self.single_run_l1(model_fn, x, y, target, seed, live)
        projection = make_projection(self.norm, self.eps)
        eps = tf.constant(self.eps, tf.float32)
        rank = x.shape.rank
        per_example = [-1] + [1] * (rank - 1)

        def direction(t: tf.Tensor) -> tf.Tensor:
            # The reference's `normalize`: t / (‖t‖ + 1e-12); Linf: sign steps instead (below).
            return t / (flat_norm(t, self.norm) + 1e-12)

        if self.norm == "linf":
            t = rng.uniform(tf.shape(x), seed, -1.0, 1.0)
        else:
            t = rng.normal(tf.shape(x), seed)
        x_adv = tf.clip_by_value(x + eps * direction(t), 0.0, 1.0)

        def evaluate(x_k, y_k, target_k):
            return self._evaluate(model_fn, x_k, y_k, target_k)

        batch = tf.shape(x)[0]
        wrong, losses, grad = evaluate(x_adv, y, target)
        at, windows = checkpoints(self.n_iter)
        is_check = tf.constant([i in at for i in range(self.n_iter)], tf.bool)
        window = tf.constant([windows[at.index(i)] if i in at else 0 for i in range(self.n_iter)], tf.float32)

        # Per active example (the first axis shrinks as examples are broken and leave the run).
        active = dict(
            index=tf.range(batch),  # position in the batch
            x=x,
            y=y,
            x_adv=x_adv,
            x_old=x_adv,
            grad=grad,
            step=tf.fill([batch], 2.0 * eps),
            x_best=x_adv,
            grad_best=grad,
            loss_best=losses,
            prev_loss=tf.zeros([batch]),  # the reference's zero-initialised loss_steps[-1]
            n_increase=tf.zeros([batch]),
            loss_best_last_check=losses,
            reduced_last_check=tf.ones([batch], tf.bool),
        )
        if target is not None:
            active["target"] = target
        # A start that is already misclassified is the example's adversarial point (the reference's
        # x_best_adv before the first step).
        out_adv = select_rows(wrong, x_adv, x)
        if self.fixed_shape:
            active["live"] = _live_rows(live, batch)
            if self.exits_on_success:
                active["live"] = tf.logical_and(active["live"], tf.logical_not(wrong))
        elif self.exits_on_success:
            active = {k: tf.boolean_mask(v, tf.logical_not(wrong)) for k, v in active.items()}

        def body(i, out_adv, out_wrong, s):
            a = tf.where(i > 0, 0.75, 1.0)
            step = tf.reshape(s["step"], per_example)
            x_k, x_c = s["x_adv"], s["x"]
            if self.norm == "linf":
                z = projection.project(x_k + step * tf.sign(s["grad"]), x_c)
            else:
                z = projection.project(x_k + step * direction(s["grad"]), x_c)
            x_new = projection.project(x_k + a * (z - x_k) + (1.0 - a) * (x_k - s["x_old"]), x_c)

            misclassified, losses, grad = evaluate(x_new, s["y"], s.get("target"))
            out_adv, out_wrong = _record(s, misclassified, x_new, out_adv, out_wrong, self.fixed_shape)

            improved = losses > s["loss_best"]
            x_best = select_rows(improved, x_new, s["x_best"])
            grad_best = select_rows(improved, grad, s["grad_best"])
            loss_best = tf.where(improved, losses, s["loss_best"])
            n_increase = s["n_increase"] + tf.cast(losses > s["prev_loss"], tf.float32)

            def check():
                k = window[i]
                oscillating = n_increase <= k * self.rho
                no_improvement = tf.logical_and(
                    tf.logical_not(s["reduced_last_check"]), s["loss_best_last_check"] >= loss_best
                )
                halve = tf.logical_or(oscillating, no_improvement)
                return (
                    tf.where(halve, s["step"] / 2.0, s["step"]),
                    select_rows(halve, x_best, x_new),
                    select_rows(halve, grad_best, grad),
                    tf.zeros_like(n_increase),
                    loss_best,
                    halve,
                )

            def no_check():
                return (s["step"], x_new, grad, n_increase, s["loss_best_last_check"], s["reduced_last_check"])

            step, x_next, grad_next, n_increase, loss_best_last_check, reduced = tf.cond(is_check[i], check, no_check)
            s = dict(
                s,
                x_adv=x_next,
                # The momentum term uses the point this step started from, also after a restart from the
                # best point (the reference sets x_adv_old before the step and never resets it).
                x_old=x_k,
                grad=grad_next,
                step=step,
                x_best=x_best,
                grad_best=grad_best,
                loss_best=loss_best,
                prev_loss=losses,
                n_increase=n_increase,
                loss_best_last_check=loss_best_last_check,
                reduced_last_check=reduced,
            )
            if not self.exits_on_success:
                return i + 1, out_adv, out_wrong, s  # the last misclassified iterate wins (the reference's)
            return i + 1, out_adv, out_wrong, _leave(s, tf.logical_not(misclassified), self.fixed_shape)

        def cond(i, out_adv, out_wrong, s):
            return tf.logical_and(i < self.n_iter, _any_left(s, self.fixed_shape))

        invariants = {k: tf.TensorShape([None]).concatenate(v.shape[1:]) for k, v in active.items()}
        _, out_adv, out_wrong, _ = tf.while_loop(
            cond,
            body,
            (tf.constant(0, tf.int32), out_adv, wrong, active),
            shape_invariants=(tf.TensorShape([]), out_adv.shape, wrong.shape, invariants),
            maximum_iterations=self.n_iter,
        )
        return out_adv, out_wrong

    @no_autograph
    def single_run_l1(
        self,
        model_fn: ModelFn,
        x: tf.Tensor,
        y: tf.Tensor,
        target: tf.Tensor | None,
        seed: tf.Tensor,
        live: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One APGD-L1 run on every example of `x`: (x_adv, misclassified), as `single_run`.

        Without `use_largereps`: one `l1_stage` of N iterations at eps from the reference's random start,
        x + t + (P(t) − t) with t ~ N(0, I) and P the L1 ∩ box projection at eps (`l1_box_projection`).
        With it (the reference's `decr_eps_pgd`): the start x + t projected at 3·eps, then one stage per
        radius of `largereps_schedule`, each starting from the previous stage's highest-loss point
        projected onto its own ball; only the last stage, at eps, can break a point (the points the larger
        radii misclassify lie outside the threat model), and only it drops a broken example early.

        The start is computed in float32 as the reference computes it, x + t + (P(t) − t), not as x + P(t):
        the rounding of x + t leaves about half the coordinates that P sets to 0 a few ulp away from x, and
        the reference's sparsity count ‖x_start − x‖₀ (the first stage's `topk` and `sp_old`) counts them.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        t = rng.normal(tf.shape(x), seed)
        if not self.use_largereps:
            start = x + t + (l1_box_projection(t, x, self.eps) - t)  # `attack_single_run` without x_init
            return self.l1_stage(
                model_fn, x, y, target, start, self.eps, self.n_iter, from_start=False, last=True, live=live
            )
        stages = largereps_schedule(self.n_iter)
        start = _l1_step_to_ball(x, x + t, stages[0][0] * self.eps)  # `decr_eps_pgd`'s x_init
        for number, (multiple, n_iter) in enumerate(stages):
            last = number == len(stages) - 1
            radius = multiple * self.eps
            start = _l1_step_to_ball(x, start, radius)
            result = self.l1_stage(model_fn, x, y, target, start, radius, n_iter, from_start=True, last=last, live=live)
            if not last:
                start = result[0]
        return result

    @no_autograph
    def l1_stage(
        self,
        model_fn: ModelFn,
        x: tf.Tensor,
        y: tf.Tensor,
        target: tf.Tensor | None,
        start: tf.Tensor,
        eps: float,
        n_iter: int,
        *,
        from_start: bool,
        last: bool,
        live: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, ...]:
        """n_iter APGD-L1 iterations at radius `eps` from `start` (the reference's `attack_single_run`, L1).

        Per example, with η the step size (η₀ = eps) and k the sparsity (`topk`, a fraction of the D
        coordinates):

        - step: keep the gradient's coordinates with |g_i| ≥ the value at position int((1 − k)·D) of |g|
          sorted ascending (the largest ones, ties included), s = sign of those, then
          x' = x_k + η·s/(‖s‖₁ + 1e-10), projected onto the L1 ball ∩ box (no momentum: the L1 branch has
          none);
        - the best-loss point and its gradient are tracked as for Linf/L2;
        - every `l1_check_interval(n_iter)` iterations: m = ‖x_best − x‖₀; if m/m_prev < 0.95 (the best
          point got sparser) η resets to eps and the run continues from the best point and its gradient,
          else η /= 1.5; η stays in [eps/10, eps]; k = m/D/1.5 and m_prev = m.

        k₀ = 0.2 and m_prev = D from the random start (`from_start=False`); from a given start (`use_largereps`
        stages) k₀ = ‖start − x‖₀/D/1.5 and m_prev = ‖start − x‖₀.

        Returns (x_adv, misclassified) when `last` (the run's result; examples leave at their first
        misclassified iterate, as in `single_run`), else (x_best,) for the next stage: every example runs
        all n_iter iterations, a misclassification counting for nothing at a radius above the threat
        model's. `live` and `fixed_shape` as in `single_run`.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        rank = x.shape.rank
        per_example = [-1] + [1] * (rank - 1)
        dim = 1
        for size in x.shape[1:]:
            dim *= int(size)  # static: the sparsity works on counts of coordinates
        batch = tf.shape(x)[0]
        eps_t = tf.constant(eps, tf.float32)
        check_every = l1_check_interval(n_iter)

        def l0(t: tf.Tensor) -> tf.Tensor:
            return tf.reduce_sum(tf.cast(tf.not_equal(tf.reshape(t, [tf.shape(t)[0], -1]), 0.0), tf.float32), axis=1)

        x_adv = tf.clip_by_value(start, 0.0, 1.0)
        wrong, losses, grad = self._evaluate(model_fn, x_adv, y, target)
        if from_start:
            sparsity = l0(x_adv - x)
            topk = sparsity / dim / 1.5
        else:
            topk = tf.fill([batch], 0.2)
            sparsity = tf.fill([batch], float(dim))
        active = {
            "index": tf.range(batch),
            "x": x,
            "y": y,
            "x_adv": x_adv,
            "grad": grad,
            "step": tf.fill([batch], eps_t),
            "x_best": x_adv,
            "grad_best": grad,
            "loss_best": losses,
            "topk": topk,
            "sp_old": sparsity,
        }
        if target is not None:
            active["target"] = target
        out_adv = select_rows(wrong, x_adv, x)
        if self.fixed_shape:
            active["live"] = _live_rows(live, batch)
            if last:
                active["live"] = tf.logical_and(active["live"], tf.logical_not(wrong))
        elif last:
            active = {k: tf.boolean_mask(v, tf.logical_not(wrong)) for k, v in active.items()}

        def body(i, out_adv, out_wrong, s):
            g = s["grad"]
            n = tf.shape(g)[0]
            magnitude = tf.reshape(tf.abs(g), [n, dim])
            position = tf.cast(tf.clip_by_value((1.0 - s["topk"]) * dim, 0.0, dim - 1.0), tf.int32)
            threshold = tf.gather(tf.sort(magnitude, axis=1), position[:, None], batch_dims=1)
            sparse = tf.sign(g) * tf.reshape(tf.cast(magnitude >= threshold, tf.float32), tf.shape(g))
            count = tf.reduce_sum(tf.reshape(tf.abs(sparse), [n, dim]), axis=1)
            moved = s["x_adv"] + tf.reshape(s["step"], per_example) * sparse / tf.reshape(count + 1e-10, per_example)
            x_new = _l1_step_to_ball(s["x"], moved, eps)

            misclassified, losses, grad = self._evaluate(model_fn, x_new, s["y"], s.get("target"))
            if last:
                out_adv, out_wrong = _record(s, misclassified, x_new, out_adv, out_wrong, self.fixed_shape)

            improved = losses > s["loss_best"]
            x_best = select_rows(improved, x_new, s["x_best"])
            grad_best = select_rows(improved, grad, s["grad_best"])
            loss_best = tf.where(improved, losses, s["loss_best"])

            def check():
                sp_curr = l0(x_best - s["x"])
                sparser = sp_curr / s["sp_old"] < 0.95  # 0/0 and m/0 compare False, as in the reference
                step = tf.clip_by_value(tf.where(sparser, eps_t, s["step"] / 1.5), eps / 10.0, eps)
                return (
                    step,
                    sp_curr / dim / 1.5,
                    sp_curr,
                    select_rows(sparser, x_best, x_new),
                    select_rows(sparser, grad_best, grad),
                )

            def no_check():
                return s["step"], s["topk"], s["sp_old"], x_new, grad

            step, topk, sp_old, x_next, grad_next = tf.cond(tf.equal((i + 1) % check_every, 0), check, no_check)
            s = dict(
                s,
                x_adv=x_next,
                grad=grad_next,
                step=step,
                x_best=x_best,
                grad_best=grad_best,
                loss_best=loss_best,
                topk=topk,
                sp_old=sp_old,
            )
            if last:
                s = _leave(s, tf.logical_not(misclassified), self.fixed_shape)
            return i + 1, out_adv, out_wrong, s

        def cond(i, out_adv, out_wrong, s):
            return tf.logical_and(i < n_iter, _any_left(s, self.fixed_shape))

        invariants = {k: tf.TensorShape([None]).concatenate(v.shape[1:]) for k, v in active.items()}
        _, out_adv, out_wrong, s = tf.while_loop(
            cond,
            body,
            (tf.constant(0, tf.int32), out_adv, wrong, active),
            shape_invariants=(tf.TensorShape([]), out_adv.shape, wrong.shape, invariants),
            maximum_iterations=max(n_iter, 1),
        )
        if last:
            return out_adv, out_wrong
        return (s["x_best"],)


def _live_rows(live: tf.Tensor | None, batch: tf.Tensor) -> tf.Tensor:
    """The rows a fixed-shape run attacks: `live`, or every row."""
    return tf.ones([batch], tf.bool) if live is None else tf.convert_to_tensor(live, tf.bool)


def _record(
    s: dict, misclassified: tf.Tensor, x_new: tf.Tensor, out_adv: tf.Tensor, out_wrong: tf.Tensor, fixed_shape: bool
) -> tuple[tf.Tensor, tf.Tensor]:
    """(out_adv, out_wrong) with the active examples misclassified at `x_new` recorded at their rows.

    Dropping examples keeps their batch positions in `s["index"]`; with fixed shapes the rows never move
    and the rows that left the run (`s["live"]` false) are not recorded.
    """
    if fixed_shape:
        hit = tf.logical_and(misclassified, s["live"])
        return select_rows(hit, x_new, out_adv), tf.logical_or(out_wrong, hit)
    broken = tf.boolean_mask(s["index"], misclassified)[:, None]
    out_adv = tf.tensor_scatter_nd_update(out_adv, broken, tf.boolean_mask(x_new, misclassified))
    out_wrong = tf.tensor_scatter_nd_update(out_wrong, broken, tf.ones_like(broken[:, 0], tf.bool))
    return out_adv, out_wrong


def _leave(s: dict, keep: tf.Tensor, fixed_shape: bool) -> dict:
    """The run's state with the examples where `keep` is false gone: dropped, or masked (fixed shapes)."""
    if fixed_shape:
        return dict(s, live=tf.logical_and(s["live"], keep))
    return {k: tf.boolean_mask(v, keep) for k, v in s.items()}


def _any_left(s: dict, fixed_shape: bool) -> tf.Tensor:
    """Whether some example is still in the run."""
    if fixed_shape:
        return tf.reduce_any(s["live"])
    return tf.size(s["index"]) > 0


def _l1_step_to_ball(x: tf.Tensor, point: tf.Tensor, eps: float) -> tf.Tensor:
    """`point` moved onto the L1 ball of radius eps around x ∩ [0, 1], in the reference's arithmetic:
    δ = point − x, then x + δ + (P(δ) − δ) in float32 (`autopgd_base.py`: `x + delta_u + delta_p` with
    `delta_p = L1_projection(x, delta_u, eps)`), clipped to [0, 1].

    Where P sets a coordinate to 0 the correction is −δ_i exactly, so the coordinate returns to x_i up to
    the rounding of x + δ (exactly when δ_i = point_i − x_i is exact, as for an iterate near x). The final
    clip only removes the ulp by which the sum can leave the box; the reference leaves it.
    """
    delta = point - x
    correction = l1_box_projection(delta, x, eps) - delta
    return tf.clip_by_value(x + delta + correction, 0.0, 1.0)


def apgd_ce(norm: str, eps: float, n_restarts: int = 1, n_iter: int = 100) -> APGD:
    """AutoAttack's first attack: APGD on cross-entropy (1 restart × 100 iterations).

    Example::

        attack = attacks.apgd_ce("linf", 8 / 255)      # APGD("linf", 8 / 255, "ce")
        x_adv = attack(lambda x: model(x, training=False), images, labels, tf.constant([0, 0]))
    """
    return APGD(norm, eps, "ce", n_iter=n_iter, n_restarts=n_restarts)


def apgd_dlr(norm: str, eps: float, n_restarts: int = 1, n_iter: int = 100) -> APGD:
    """Untargeted APGD on the DLR loss (the paper's AA+MT uses 5 restarts × 100).

    Example::

        attack = attacks.apgd_dlr("linf", 8 / 255, n_restarts=5)    # needs at least 3 classes
        x_adv = attack(lambda x: model(x, training=False), images, labels, tf.constant([0, 0]))
    """
    return APGD(norm, eps, "dlr", n_iter=n_iter, n_restarts=n_restarts)


def apgd_t(norm: str, eps: float, n_target_classes: int = 9, n_restarts: int = 1, n_iter: int = 100) -> APGD:
    """AutoAttack's APGD-T: targeted DLR towards each of the top-9 clean-logit classes (1 restart × 100).

    Example::

        attack = attacks.apgd_t("l2", 128 / 255)       # 9 target classes x 1 restart x 100 iterations
        model_fn = lambda x: model(x, training=False)
        x_adv = tf.function(attack)(model_fn, images, labels, tf.constant([0, 1]))   # as one graph
        attack.num_targets(num_classes=5)               # 4: min(9, K - 1) targets on a 5-class model
    """
    return APGD(norm, eps, "dlr-targeted", n_iter=n_iter, n_restarts=n_restarts, n_target_classes=n_target_classes)
