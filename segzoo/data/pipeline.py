"""The training input pipeline: a seeded tf.data stream of normalised patch batches."""

from __future__ import annotations

import numpy as np

from segzoo.config import Preprocessing
from segzoo.data.augment import PatchSampler
from segzoo.preprocessing import normalize


def patch_batches(sampler: PatchSampler, batch_size: int, prep: Preprocessing, *, seed: int,
                  start_step: int = 0):
    """Infinite generator of (images float32 NxPxPx3, masks float32 NxPxPx1).

    Batch i is drawn from numpy's generator seeded with (seed, i), so a resumed
    run continues with exactly the batches it would have seen.
    """
    step = start_step
    while True:
        rng = np.random.default_rng([seed, step])
        pairs = [sampler.sample(rng) for _ in range(batch_size)]
        images = normalize(np.stack([p[0] for p in pairs]), prep)
        masks = np.stack([p[1] for p in pairs])
        yield images, masks
        step += 1


def make_dataset(sampler: PatchSampler, batch_size: int, prep: Preprocessing, *, seed: int,
                 start_step: int = 0):
    """tf.data.Dataset over patch_batches, prefetched so augmentation overlaps training."""
    import tensorflow as tf

    p = sampler.patch_size
    channels = len(prep.mean)
    signature = (tf.TensorSpec((batch_size, p, p, channels), tf.float32),
                 tf.TensorSpec((batch_size, p, p, 1), tf.float32))
    dataset = tf.data.Dataset.from_generator(
        lambda: patch_batches(sampler, batch_size, prep, seed=seed, start_step=start_step),
        output_signature=signature)
    return dataset.prefetch(2)
