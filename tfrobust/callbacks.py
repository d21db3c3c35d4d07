"""Keras callbacks for training with `fit`: weight averaging and model selection.

Re-exports (each class lives in `tfrobust.training.callbacks`):

- `WeightAveraging(decay=0.999)`: the paper's exponential moving average of the weights, with the
  reference's warm-up (docs/method.md, "Weight averaging");
- `ModelSelection(averaging, validation_data=...)`: PGD-40 accuracy of the raw and averaged weights on
  held-out training images, keeping the best averaged weights (docs/method.md, "Model selection").

Example::

    import tfrobust

    averaging = tfrobust.callbacks.WeightAveraging(decay=0.999)
    selection = tfrobust.callbacks.ModelSelection(averaging, validation_data=held_out.batch(256))
    trainer.fit(dataset, epochs=10, callbacks=[averaging, selection])
"""

from tfrobust.training.callbacks import ModelSelection, WeightAveraging

__all__ = ["ModelSelection", "WeightAveraging"]
