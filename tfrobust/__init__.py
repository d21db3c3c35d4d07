"""tfrobust: adversarially robust image classifiers in TensorFlow/Keras.

Implements Rebuffi, Gowal et al. 2021, "Fixing Data Augmentation to Improve Adversarial Robustness"
(TRADES + weight averaging) and the evaluation it relies on. Importing the package is cheap; the heavy
modules (TensorFlow) load when a submodule is used.
"""

import os as _os

# TensorFlow enables its oneDNN kernels by default only on CPUs with AVX512-VNNI/BF16/AMX. On others
# (e.g. an AMD Zen3) turning them on makes the TRADES step ~25% faster (benchmarks/README.md). Only a
# default: a user's own TF_ENABLE_ONEDNN_OPTS wins, and it matters only if this
# module is imported before TensorFlow.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
