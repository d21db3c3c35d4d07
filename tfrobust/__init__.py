"""tfrobust: adversarially robust image classifiers in TensorFlow/Keras.

Implements Rebuffi, Gowal et al. 2021, "Fixing Data Augmentation to Improve Adversarial Robustness"
(TRADES + weight averaging) and the evaluation it relies on. Importing the package is cheap; the heavy
modules (TensorFlow) load when a public name is first used (PEP 562 module `__getattr__`).

Public API (docs/api.md):
    tfrobust.AdversarialTrainer   a keras.Model that trains any Keras classifier adversarially with fit
    tfrobust.callbacks            WeightAveraging, ModelSelection
    tfrobust.layers               CutMix, MixUp, Cutout, PadCrop, Ricap, AutoAugment, RandAugment
    tfrobust.evaluate             clean and robust accuracy of any model (AutoAttack by default), an Evaluation
    tfrobust.autoattack           AutoAttack's adversarial images for any model
    tfrobust.export_model         any Keras classifier as a SavedModel for TF Serving, with its threat model
    tfrobust.attacks              the attacks as objects called on any differentiable callable

Example::

    import keras, tfrobust

    trainer = tfrobust.AdversarialTrainer(model, loss="trades", eps=8 / 255, norm="linf", beta=6.0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    trainer.fit(dataset, epochs=10, callbacks=[tfrobust.callbacks.WeightAveraging(decay=0.999)])
"""

import os as _os

# TensorFlow enables its oneDNN kernels by default only on CPUs with AVX512-VNNI/BF16/AMX. On others
# (e.g. an AMD Zen3) turning them on makes the TRADES step ~25% faster (benchmarks/README.md). Only a
# default: a user's own TF_ENABLE_ONEDNN_OPTS wins, and it matters only if this
# module is imported before TensorFlow.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

__all__ = [
    "AdversarialTrainer",
    "Evaluation",
    "attacks",
    "autoattack",
    "callbacks",
    "evaluate",
    "export_model",
    "layers",
]

# Public name -> the module that defines it (a module itself where the name is a submodule).
_LAZY = {
    "AdversarialTrainer": "tfrobust.training.trainer",
    "callbacks": "tfrobust.callbacks",
    "layers": "tfrobust.layers",
    "evaluate": "tfrobust.evaluation",
    "autoattack": "tfrobust.evaluation",
    "Evaluation": "tfrobust.evaluation",
    "export_model": "tfrobust.export",
    "attacks": "tfrobust.attacks",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tfrobust' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__ == f"tfrobust.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
