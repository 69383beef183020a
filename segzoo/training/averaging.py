"""The optimizer's moving average of the weights (Polyak averaging, `--ema-momentum`): swapped
in for validation and saving, the live weights swapped back after."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def averaged_weights(model):
    """Inside the block the model holds its optimizer's moving average of the trainable
    weights (when the optimizer keeps one, `use_ema=True`); the live weights come back after.

    Not keras.callbacks.SwapEMAWeights: on TensorFlow it swaps by a+b / a-b arithmetic, which
    is not exact in float32 and would nudge the live weights at every epoch."""
    from keras import ops

    optimizer = model.optimizer
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "_model_variables_moving_average", None):
        yield
        return
    pairs = [(var, avg) for var, avg in zip(optimizer._trainable_variables,
                                            optimizer._model_variables_moving_average) if avg is not None]
    live = [ops.convert_to_numpy(var) for var, _ in pairs]
    for var, avg in pairs:
        var.assign(avg)
    try:
        yield
    finally:
        for (var, _), value in zip(pairs, live):
            var.assign(value)
