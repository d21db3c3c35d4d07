"""AutoAttack's versions, the `--attack` lists, and what a result records about the reference it follows.

The reference AutoAttack (Croce & Hein 2020; github.com/fra31/auto-attack, `autoattack/autoattack.py`
`AutoAttack.set_version`) has three versions and a custom list (docs/method.md, "AutoAttack versions"):

- `standard` (`--attack aa`): APGD-CE, APGD-T, FAB-T, Square;
- `plus` (`aa-plus`): APGD-CE and APGD-DLR with 5 restarts, untargeted FAB with 5 restarts, Square, APGD-T,
  FAB-T;
- `rand` (`aa-rand`, for randomised defences): APGD-CE and APGD-DLR, 1 restart, each gradient averaged
  over 20 model calls (EOT);
- `custom` (`version="custom", attacks_to_run=[...]`): any attacks in any order. Here a comma list such as
  `apgd-ce,apgd-dlr,square`: each item is a stage of `cascades.STAGES`, the attack as the standard version
  configures it ("apgd-dlr": 1 restart) unless the item names a version's configuration ("apgd-dlr@plus":
  5 restarts). The reference's own custom list uses its constructor's counts instead (APGD and FAB with 5
  restarts), which no version runs; tfrobust's plain names are the standard version's.

`resolve_attack` turns what `--attack` / `evaluate(attack=...)` accepts into stage names (one clear
`UserError` for an unknown item). `reference_record` is what a report records about the protocol it
follows: the reference's version and attack names, and the reference release and commit whose
`set_version` the stage settings were checked against. `eps_record` and `eps_warning` give eps as a
fraction of 255 and warn when it is within 2% of a common value without being equal to it (0.031 for
8/255 = 0.0313725...: a result at 0.031 is not comparable with the leaderboards').
"""

from __future__ import annotations

from collections.abc import Sequence

from tfrobust.errors import UserError
from tfrobust.evaluation.cascades import CASCADES, REFERENCE_ATTACKS, STAGES

# The reference code the versions' settings follow: fra31/auto-attack, release 0.1 (its setup.py), the
# `set_version` of `autoattack/autoattack.py` as of this commit.
REFERENCE_REPOSITORY = "github.com/fra31/auto-attack"
REFERENCE_RELEASE = "0.1"
REFERENCE_COMMIT = "6d836dfa7505ab95f44065c7a1a20deb241da543"

# The reference's version name -> tfrobust's cascade (`cascades.CASCADES`).
AUTOATTACK_VERSIONS = {"standard": "aa", "plus": "aa-plus", "rand": "aa-rand"}

# What the reference says about a version run with a norm it was not tuned for (`set_version`).
VERSION_NORM_NOTES = {
    ("plus", "l1"): 'AutoAttack\'s "plus" version is used with the L1 norm: the reference prints "please check" '
    "(its settings are tuned for Linf and L2)",
}

# Other cascades: the protocol each follows.
OTHER_PROTOCOLS = {
    "aa+mt": "Rebuffi et al. 2021, AA+MT (APGD-CE 5x100, APGD-DLR 5x100, MultiTargeted; docs/method.md, Cascades)",
    "mt": "MultiTargeted as the paper's AA+MT runs it (Gowal et al. 2019; docs/method.md, MultiTargeted)",
    "pgd40": "tfrobust's model-selection PGD-40 (docs/method.md, Model selection)",
}

# Radii that results are commonly reported at, per norm: (value, as written). Linf k/255 for k = 1, 2, 4,
# 8, 16 and 0.3 (MNIST, the reference's default eps); L2 0.25, 0.5 (RobustBench's CIFAR) and 128/255 (the
# paper's); L1 12 (RobustBench's and Croce & Hein 2021's CIFAR-10 L1).
COMMON_EPS: dict[str, tuple[tuple[float, str], ...]] = {
    "linf": tuple((k / 255, f"{k}/255") for k in (1, 2, 4, 8, 16)) + ((0.3, "0.3"),),
    "l2": ((0.25, "0.25"), (0.5, "0.5"), (128 / 255, "128/255")),
    "l1": ((12.0, "12"),),
}
# eps counts as equal to a common value within this relative difference (a float32 round trip of 8/255
# moves it by 6e-8), and as suspiciously close within NEAR_EPS: 2%, so that the case this check is for,
# 0.031 written for 8/255 (1.19% below it), is caught; the common values of a norm lie at least 2x apart,
# except L2 0.5 and 128/255, both common.
SAME_EPS = 1e-6
NEAR_EPS = 0.02


def resolve_attack(attack: str | Sequence[str]) -> tuple[str, ...]:
    """The stage names `attack` runs, in order: a cascade of `CASCADES` ("aa", "aa-plus", "aa-rand",
    "aa+mt", ...), one stage of `STAGES` ("fab@plus"), a comma list of stages ("apgd-ce,apgd-dlr,square"),
    or a sequence of stage names. Anything else raises one `UserError` naming the unknown item."""
    if isinstance(attack, str):
        if attack in CASCADES:
            return CASCADES[attack]
        items = [item.strip() for item in attack.split(",")]
    elif isinstance(attack, Sequence) and all(isinstance(item, str) for item in attack):
        items = [item.strip() for item in attack]
    else:
        raise UserError(f"attack must be a cascade name or a list of attacks, got {attack!r}")
    if not items or not all(items):
        raise UserError(
            f"empty attack in {attack!r}: give a cascade ({', '.join(CASCADES)}) or a comma list of "
            f"attacks ({', '.join(STAGES)})"
        )
    unknown = [item for item in items if item not in STAGES]
    if unknown:
        where = "" if isinstance(attack, str) and "," not in attack else f" in {attack!r}"
        raise UserError(
            f"unknown attack {unknown[0]!r}{where}; choose a cascade ({', '.join(CASCADES)}) or a comma "
            f"list of attacks ({', '.join(STAGES)})"
        )
    return tuple(items)


def attack_label(attack: str | Sequence[str]) -> str:
    """`attack` as the report and the default report name write it: a string as given, a list joined by
    commas."""
    return attack if isinstance(attack, str) else ",".join(attack)


def autoattack_version(attack: str | Sequence[str]) -> str | None:
    """The reference's version `attack` runs: "standard", "plus", "rand", "custom" (only AutoAttack's
    attacks, in any order), or None (a protocol of its own: AA+MT, MultiTargeted, PGD-40, or a list
    mixing them in)."""
    label = attack_label(attack)
    for version, cascade in AUTOATTACK_VERSIONS.items():
        if label == cascade:
            return version
    stages = resolve_attack(attack)
    return "custom" if all(stage in REFERENCE_ATTACKS for stage in stages) else None


def reference_record(attack: str | Sequence[str]) -> dict:
    """What a report records about the protocol `attack` follows (`follows`, in words; `version`;
    `attacks_to_run`, the reference's names of the stages' attacks; the reference's repository, release and
    the commit whose `set_version` the settings were checked against)."""
    version = autoattack_version(attack)
    stages = resolve_attack(attack)
    if version is None:
        label = attack_label(attack)
        return {"follows": OTHER_PROTOCOLS.get(label, "tfrobust stages " + ",".join(stages)), "version": None}
    return {
        "follows": f"fra31/auto-attack {version}",
        "version": version,
        "attacks_to_run": [REFERENCE_ATTACKS[stage] for stage in stages],
        "repository": REFERENCE_REPOSITORY,
        "release": REFERENCE_RELEASE,
        "commit": REFERENCE_COMMIT,
    }


def version_notes(attack: str | Sequence[str], norm: str) -> tuple[str, ...]:
    """The reference's caveats for `attack`'s version with `norm` (`VERSION_NORM_NOTES`)."""
    note = VERSION_NORM_NOTES.get((autoattack_version(attack), norm))
    return (note,) if note else ()


def eps_record(eps: float) -> dict:
    """eps as given and as a multiple of 1/255, rounded to 4 places (8/255 -> 8.0, 0.031 -> 7.905)."""
    return {"eps": eps, "eps_255": round(float(eps) * 255, 4)}


def eps_warning(norm: str, eps: float) -> str | None:
    """A warning when eps lies within 2% (`NEAR_EPS`) of a common radius of `norm` (`COMMON_EPS`) without
    being equal to any of them (relative difference above 1e-6), else None."""
    common = COMMON_EPS.get(norm, ())
    if any(abs(eps - value) <= SAME_EPS * value for value, _ in common):
        return None
    near = [(value, text) for value, text in common if abs(eps - value) <= NEAR_EPS * value]
    if not near:
        return None
    value, text = min(near, key=lambda pair: abs(eps - pair[0]))
    return (
        f"eps {eps:.6g} ({eps * 255:.4f}/255) is within {100 * abs(eps - value) / value:.2f}% of the common "
        f"{norm} radius {text} = {value:.10g} but not equal to it: results at {text} (leaderboards, papers) are "
        f"not comparable with this one; for {text}, pass eps {value!r}"
    )
