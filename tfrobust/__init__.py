"""tfrobust: adversarially robust image classifiers in TensorFlow/Keras.

Implements Rebuffi, Gowal et al. 2021, "Fixing Data Augmentation to Improve Adversarial Robustness"
(TRADES + weight averaging) and the evaluation it relies on. Importing the package is cheap; the heavy
modules (TensorFlow) load when a submodule is used.
"""

__version__ = "0.1.0"
