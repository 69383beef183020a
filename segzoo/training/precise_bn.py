"""Precise BatchNorm (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): `--precise-bn N`."""

from __future__ import annotations


def recompute_batchnorm_statistics(model, batches) -> int:
    """Set each BatchNormalization layer's moving mean and variance to the mean of its batch
    statistics over `batches` (normalised image arrays), with the weights fixed.

    The moving averages kept during training (momentum 0.99) follow the last ~100 batches, so
    they keep moving at the end of a cosine schedule when the weights hardly do. Returns how
    many batches were used."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    count = 0
    try:
        for count, batch in enumerate(batches, start=1):
            for layer in norms:  # a running mean: batch k gets weight 1/k
                layer.momentum = (count - 1) / count
            model(batch, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return count
