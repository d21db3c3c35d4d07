"""Plumbing shared by the attacks: the logits-function type, seeds, labels and target classes, the checks
of an attack's configuration, and the one loop of runs (target classes × restarts) of the evaluation
attacks (APGD, FAB-T, Square, MultiTargeted).

The loop follows the reference AutoAttack code (Croce & Hein 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", github.com/fra31/auto-attack:
`autoattack/autopgd_base.py` `APGDAttack_targeted.perturb`, `autoattack/fab_base.py` `FABAttack.perturb`,
`autoattack/square.py` `SquareAttack.perturb`): a point that is misclassified on its clean input is never
attacked; each run (a restart, or one target class) starts again from the clean image and attacks only the
points still robust; per example, the first run that finds a misclassified point supplies the returned
adversarial example; points never broken come back as their clean image. Running only on the survivors is
what makes a cascade cheap: on a robust model most points fall in the first run.

An attack supplies one run as a function and lets `run_targets` drive it::

    def single_run(x, y, target, restart, seed, live=None):   # the still-robust points only
        ...
        return x_adv, broken                                   # [b, ...], [b] bool

    x, y, logits = clean_pass(model_fn, images, labels, "MyAttack")
    targets = top_targets(logits, y, target_count(9, logits.shape[-1]))
    x_adv = run_targets(single_run, x, y, correctly_classified(logits, y), seed, n_restarts=1, targets=targets)

Fixed shapes (`fixed_shape=True`, the attacks' field of that name, for XLA, which compiles only tensors of a
static shape): no tensor changes its number of rows. Where the default gathers the still-robust points
into a smaller batch, `run_targets` moves them to the front of a batch of the full size, in their order
(`partition`), and passes `single_run` the rows that hold them as `live` ([B] bool; None by default); a run
masks the rows that leave it instead of dropping them. The live rows are then the rows of the default's
smaller batch, at the same positions, and the random draws of a run match row for row: a Philox draw of
shape [B, ...] begins with the draw of shape [b, ...] (`rng`), and draws made per remaining point (Square's
windows) are taken at each row's `rank` among the remaining ones. The other rows are computed and discarded;
rows never interact (the model runs in inference mode), so the live rows' results are the default's.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfrobust.attacks import rng
from tfrobust.attacks.projection import norm_of
from tfrobust.errors import UserError

# images [B, H, W, C] float32 in [0, 1] -> logits [B, K]; the caller fixes training flags and BatchNorm.
ModelFn = Callable[[tf.Tensor], tf.Tensor]

# (clean images of the survivors [b, ...], their labels [b] int32, their target class [b] int32 or None for
# an untargeted attack, the restart number of this target [int32 scalar], the run's seed [2]; under fixed
# shapes a sixth argument, the live rows [b] bool) -> (adversarial images [b, ...], broken [b] bool)
SingleRun = Callable[..., tuple[tf.Tensor, tf.Tensor]]

# The attacks' loops are explicit tf.while_loop/tf.cond, so AutoGraph has nothing to convert; converting
# these functions anyway makes tracing several times slower (seconds per attack). Applied to every
# attack's `__call__`, `single_run` and to `run_targets`.
no_autograph = tf.autograph.experimental.do_not_convert

# The order of the runs in `run_targets`.
TARGET_MAJOR = "target_major"  # every restart of target 0, then of target 1, ... (AutoAttack)
CYCLE = "cycle"  # run r towards target r mod T (Gowal et al. 2019, Algorithm 1)
ORDERS = (TARGET_MAJOR, CYCLE)


def as_seed(seed: tf.Tensor) -> tf.Tensor:
    """An int32/int64 seed tensor for `rng` and the `tf.random.stateless_*` functions.

    Integer tensors keep their dtype and shape; other dtypes are cast to int64. A shape-[2] seed comes back
    as a shape-[2] seed; the shape is not checked here (the random ops reject any other shape).
    """
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    return seed


def class_ids(labels: tf.Tensor) -> tf.Tensor:
    """int32 [B] class ids from one-hot/soft labels [B, K] (argmax) or from class ids [B]."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 1:
        return tf.cast(labels, tf.int32)
    return tf.cast(tf.argmax(labels, axis=-1), tf.int32)


def clean_pass(
    model_fn: ModelFn, x: tf.Tensor, labels: tf.Tensor, owner: str
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(clean images as a float32 constant, class ids [B] int32, clean float32 logits [B, K]).

    The number of classes K must be static (the targets and the losses are built when tracing); `owner`
    names the attack in the error otherwise.
    """
    x = tf.stop_gradient(tf.convert_to_tensor(x, tf.float32))
    y = class_ids(labels)
    logits = tf.cast(model_fn(x), tf.float32)
    if logits.shape[-1] is None:
        raise UserError(f"{owner} needs a model whose number of classes is known when tracing")
    return x, y, logits


def correctly_classified(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """[B] bool: argmax(logits) == y, the reference's `acc = y_pred == y` (the points an attack attacks)."""
    return tf.equal(tf.cast(tf.argmax(logits, axis=-1), tf.int32), y)


def target_count(requested: int, num_classes: int) -> int:
    """Target classes a targeted attack can run on a K-class model: min(requested, K − 1), at least 0."""
    return max(0, min(requested, num_classes - 1))


def top_targets(logits: tf.Tensor, y: tf.Tensor, num_targets: int) -> tf.Tensor:
    """[B, num_targets] int32: the classes other than y ordered by decreasing clean logit.

    The reference's k-th target is the k-th largest clean logit after the true class (it sorts the clean
    output and takes position −(k+1); for a correctly classified point the largest is y). Masking y out
    first gives the same classes for the points the cascade attacks and a sensible answer for the others.
    Ties break towards the lower class index (`tf.math.top_k` is stable).
    """
    logits = tf.cast(logits, tf.float32)
    if num_targets == 0:
        return tf.zeros([tf.shape(logits)[0], 0], tf.int32)
    masked = tf.where(tf.one_hot(y, tf.shape(logits)[-1]) > 0, tf.constant(-float("inf")), logits)
    return tf.math.top_k(masked, k=num_targets).indices


def flat_norm(t: tf.Tensor, norm: str) -> tf.Tensor:
    """Per-example norm shaped [B, 1, ..., 1] to broadcast against `t` (projection.norm_of, reshaped)."""
    return tf.reshape(norm_of(t, norm), [-1] + [1] * (t.shape.rank - 1))


def check_counts(owner: str, **counts: int) -> None:
    """Each count (iterations, restarts, targets...) of an attack's configuration is a positive int."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{owner} {name} must be a positive int, got {value!r}")


def target_notes(owner: str, used: int, requested: int, num_classes: int) -> tuple[str, ...]:
    """The report's note when a targeted attack runs fewer targets than configured (few classes)."""
    if used < requested:
        return (f"{owner} uses {used} target classes instead of {requested}: the model has only {num_classes} classes",)
    return ()


def num_runs(n_restarts: int, num_targets: int | None, order: str = TARGET_MAJOR) -> int:
    """How many runs `run_targets` makes: n_restarts untargeted (num_targets None); T·n_restarts in
    target-major order; n_restarts in cycle order (0 when T = 0: no target to run)."""
    if order not in ORDERS:
        raise ValueError(f"unknown run order {order!r}; choose one of {', '.join(ORDERS)}")
    if num_targets is None:
        return n_restarts
    if order == TARGET_MAJOR:
        return num_targets * n_restarts
    return n_restarts if num_targets else 0


def run_schedule(
    r: tf.Tensor, n_restarts: int, num_targets: int | None, order: str = TARGET_MAJOR
) -> tuple[tf.Tensor | None, tf.Tensor]:
    """(target column, restart number) of run r.

    Untargeted: (None, r). Target-major (AutoAttack's `for target_class: for counter in range(n_restarts)`):
    (r // n_restarts, r mod n_restarts). Cycle (Gowal et al. 2019, Algorithm 1): (r mod T, r // T).
    """
    if num_targets is None:
        return None, r
    if order == TARGET_MAJOR:
        return r // n_restarts, r % n_restarts
    return r % num_targets, r // num_targets


def select_rows(mask: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Row i of `a` where `mask[i]` holds, of `b` elsewhere: `tf.where(mask[:, None, ...], a, b)`.

    `mask` is [B] bool, `a` and `b` [B, ...] of one shape. TensorFlow's `Select` with a vector condition
    copies whole rows, where `tf.where`'s broadcasting `SelectV2` tests every element: 33 against 238 µs
    for [35, 32, 32, 3] float32 and 72 against 1,581 µs for 250 such rows on an AMD EPYC (Zen5) CPU, and the
    attacks select the best and the returned points this way at every iteration. The result is the same
    selection, bit for bit; XLA compiles it too.

    Example::

        best = select_rows(losses > best_loss, x_new, best)  # rows that improved take the new point
    """
    return tf.raw_ops.Select(condition=mask, x=a, y=b)


def partition(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(order [B] int32, count): a permutation of the rows that puts the rows where `mask` holds first and
    the others after them, each group in its own order, and the number of rows where it holds.

    `tf.gather(t, order)[:count]` is `tf.boolean_mask(t, mask)`, at a static shape (fixed shapes, above).
    """
    m = tf.cast(mask, tf.int32)
    count = tf.reduce_sum(m)
    position = tf.where(mask, tf.cumsum(m, exclusive=True), count + tf.cumsum(1 - m, exclusive=True))
    order = tf.scatter_nd(position[:, None], tf.range(tf.size(m)), tf.shape(m))
    return order, count


def rank(mask: tf.Tensor) -> tf.Tensor:
    """[B] int32: per row where `mask` holds, its position among those rows (the row it has in
    `tf.boolean_mask(t, mask)`); elsewhere the number of such rows before it (a valid row, discarded)."""
    return tf.cumsum(tf.cast(mask, tf.int32), exclusive=True)


@no_autograph
def run_targets(
    single_run: SingleRun,
    x: tf.Tensor,
    y: tf.Tensor,
    robust: tf.Tensor,
    seed: tf.Tensor,
    *,
    n_restarts: int,
    targets: tf.Tensor | None = None,
    order: str = TARGET_MAJOR,
    fixed_shape: bool = False,
) -> tf.Tensor:
    """Runs `single_run` `num_runs(...)` times, each time on the still-robust points only; returns x_adv.

    Args:
      single_run: one run on a subset of the points (see `SingleRun`); it gets the survivors' column of
        `targets` for its run (None when `targets` is None) and the run's restart number.
      x, y: clean images [B, ...] and class ids [B] int32.
      robust: [B] bool, the points to attack (clean-misclassified points are never attacked).
      seed: [2] seed; run r gets `rng.fold_in(seed, r)`, r the run's index in the order of the runs, so
        runs draw independent random starts and the result depends only on the seed.
      n_restarts: runs per target (target-major), runs in all (cycle, untargeted).
      targets: [B, T] int32 target classes (`top_targets`), or None for an untargeted attack.
      order: TARGET_MAJOR or CYCLE (see `run_schedule`).
      fixed_shape: the still-robust points are moved to the front of a full-size batch and passed with
        `live` (see "Fixed shapes" in the module docstring) instead of gathered into a smaller batch.

    Per example, the first run that breaks it supplies its returned point; the others come back as x. The
    loop over runs is a `tf.while_loop` (the traced graph holds one copy of the attack whatever the number
    of runs); an empty survivor set skips the run, and no runs at all (e.g. a loss the model's classes
    cannot define) returns x without tracing `single_run`.
    """
    num_targets = None if targets is None else int(targets.shape[1])
    runs = num_runs(n_restarts, num_targets, order)
    if runs == 0:
        return x
    seed = as_seed(seed)

    def body(r, adv, robust):
        if fixed_shape:
            return fixed_body(r, adv, robust)
        idx = tf.where(robust)[:, 0]
        column, restart = run_schedule(r, n_restarts, num_targets, order)

        def attack():
            target = None if targets is None else tf.gather(targets[:, column], idx)
            adv_s, broken_s = single_run(tf.gather(x, idx), tf.gather(y, idx), target, restart, rng.fold_in(seed, r))
            old = tf.gather(adv, idx)
            new_adv = tf.tensor_scatter_nd_update(adv, idx[:, None], select_rows(broken_s, adv_s, old))
            new_robust = tf.tensor_scatter_nd_update(robust, idx[:, None], tf.logical_not(broken_s))
            return new_adv, new_robust

        adv, robust = tf.cond(tf.size(idx) > 0, attack, lambda: (adv, robust))
        return r + 1, adv, robust

    def fixed_body(r, adv, robust):
        # The survivors first, in their order, at the shape of the batch; `live` marks their rows.
        rows, count = partition(robust)
        column, restart = run_schedule(r, n_restarts, num_targets, order)
        live = tf.range(tf.size(rows)) < count

        def attack():
            target = None if targets is None else tf.gather(targets[:, column], rows)
            adv_s, broken_s = single_run(
                tf.gather(x, rows), tf.gather(y, rows), target, restart, rng.fold_in(seed, r), live
            )
            broken_s = tf.logical_and(broken_s, live)
            old = tf.gather(adv, rows)
            new_adv = tf.tensor_scatter_nd_update(adv, rows[:, None], select_rows(broken_s, adv_s, old))
            new_robust = tf.tensor_scatter_nd_update(
                robust, rows[:, None], tf.logical_and(tf.gather(robust, rows), tf.logical_not(broken_s))
            )
            return new_adv, new_robust

        adv, robust = tf.cond(count > 0, attack, lambda: (adv, robust))
        return r + 1, adv, robust

    _, adv, _ = tf.while_loop(
        lambda r, *_: r < runs, body, (tf.constant(0, tf.int32), x, robust), maximum_iterations=runs
    )
    return adv
