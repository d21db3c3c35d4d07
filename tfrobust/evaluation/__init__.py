"""Robust accuracy of a model under a cascade of attacks, every success re-verified (`tfrobust eval`).

One job per module, lowest first:

- `cascades.py`: the stages (one configured attack each: AutoAttack's standard, plus and rand versions, the
  paper's AA+MT) and the cascades (stages in order, the CLI's --attack);
- `versions.py`: AutoAttack's versions, the custom `--attack` lists (`resolve_attack`), what a report records
  about the reference it follows, and the eps checks against common radii;
- `checks.py`: AutoAttack's checks against a false sense of security (randomised outputs, Square breaking
  what the gradient attacks missed) and the oneDNN probe;
- `state.py`: the resumable state of a long evaluation, one file per attacked batch;
- `engine.py`: the verdict rules (`verify`, `fixed_layout_logits`, `misclassified`), one attack over a set of
  points (`attack_batches`) and the cascade (`Evaluator`, `EvalResult`);
- `report.py`: the JSON report, its table, the npz of per-example results;
- `api.py`: the Python API (`evaluate`, `autoattack`, `Evaluation`) on any model and the caller's arrays, and
  the steps it shares with the command (`check_options`, `check_data`, `evaluate_arrays`);
- `run.py`: the command: settings, loading, threat model, resume (`run_eval`, `resume_eval`), a client of
  `api.py`.

Example::

    from tfrobust.evaluation import evaluate

    evaluation = evaluate(model, x_test, y_test, attack="aa", eps=8 / 255)  # a keras.Model, a path, a callable
    print(evaluation.table)

The threat model (norms, default radii, checks, resolution from the model's metadata) is
`tfrobust.threat_model`. Every public name of these modules is importable from `tfrobust.evaluation`.
"""

from tfrobust.evaluation.api import (
    AUTOATTACK_VERSIONS,
    Evaluation,
    ModelLike,
    as_logits_model,
    autoattack,
    check_data,
    check_options,
    class_labels,
    evaluate,
    evaluate_arrays,
    warn_if_slow,
)
from tfrobust.evaluation.cascades import (
    CASCADES,
    GRADIENT_STAGES,
    STAGES,
    LogitsFn,
    StageAttack,
)
from tfrobust.evaluation.checks import (
    RANDOMNESS_TOLERANCE,
    SQUARE_MASKING_THRESHOLD,
    check_random_streams,
    check_randomized,
    check_square,
    onednn_enabled,
    onednn_warning,
)
from tfrobust.evaluation.engine import (
    DEFAULT_POOL_SIZE,
    JIT_COMPILE_MODES,
    TOLERANCE,
    VERIFY_ROWS,
    EvalResult,
    Evaluator,
    attack_batches,
    fixed_layout_logits,
    keras_logits_fn,
    misclassified,
    pad_rows,
    resolve_jit_compile,
    verify,
)
from tfrobust.evaluation.report import (
    ROBUSTBENCH_FIELDS,
    format_table,
    make_report,
    robustbench_entry,
    robustbench_path,
    save_examples,
    worst_case,
    write_report,
)
from tfrobust.evaluation.run import (
    EvalSettings,
    model_fingerprint,
    resume_eval,
    run_eval,
)
from tfrobust.evaluation.state import EvalState, GroupResult, state_dir_for
from tfrobust.evaluation.versions import (
    COMMON_EPS,
    autoattack_version,
    eps_record,
    eps_warning,
    reference_record,
    resolve_attack,
)
from tfrobust.threat_model import resolve_threat_model

__all__ = [
    "AUTOATTACK_VERSIONS",
    "CASCADES",
    "COMMON_EPS",
    "DEFAULT_POOL_SIZE",
    "GRADIENT_STAGES",
    "JIT_COMPILE_MODES",
    "RANDOMNESS_TOLERANCE",
    "ROBUSTBENCH_FIELDS",
    "SQUARE_MASKING_THRESHOLD",
    "STAGES",
    "TOLERANCE",
    "VERIFY_ROWS",
    "EvalResult",
    "EvalSettings",
    "EvalState",
    "Evaluation",
    "Evaluator",
    "GroupResult",
    "LogitsFn",
    "ModelLike",
    "StageAttack",
    "as_logits_model",
    "attack_batches",
    "autoattack",
    "autoattack_version",
    "check_data",
    "check_options",
    "check_random_streams",
    "check_randomized",
    "check_square",
    "class_labels",
    "evaluate",
    "eps_record",
    "eps_warning",
    "evaluate_arrays",
    "fixed_layout_logits",
    "format_table",
    "keras_logits_fn",
    "make_report",
    "misclassified",
    "model_fingerprint",
    "pad_rows",
    "reference_record",
    "onednn_enabled",
    "onednn_warning",
    "resolve_attack",
    "resolve_jit_compile",
    "resolve_threat_model",
    "resume_eval",
    "robustbench_entry",
    "robustbench_path",
    "run_eval",
    "save_examples",
    "state_dir_for",
    "verify",
    "warn_if_slow",
    "worst_case",
    "write_report",
]
