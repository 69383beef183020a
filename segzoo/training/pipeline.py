"""The training input pipeline: a seeded stream of normalised patch batches, as tf.data on the
TensorFlow backend and as a thread-prefetched Python generator on the others (JAX, PyTorch)."""

from __future__ import annotations

import collections
import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from segzoo.config import Preprocessing
from segzoo.predict.preprocessing import normalize
from segzoo.training.augment import PatchSampler


def patch_batch(sampler: PatchSampler, batch_size: int, prep: Preprocessing, *, seed: int,
                step: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch `step` of the stream: (images float32 NxPxPx3, targets float32 NxPxPxC: the masks, or
    with instance maps segzoo.training.targets.instance_targets), drawn from
    numpy's generator seeded with (seed, step), so it depends on nothing else."""
    rng = np.random.default_rng([seed, step])
    pairs = [sampler.sample(rng) for _ in range(batch_size)]
    return normalize(np.stack([p[0] for p in pairs]), prep), np.stack([p[1] for p in pairs])


def patch_batches(sampler: PatchSampler, batch_size: int, prep: Preprocessing, *, seed: int,
                  start_step: int = 0, count: int | None = None, workers: int = 1, ahead: int | None = None):
    """Generator of batches start_step, start_step + 1, ... (see patch_batch): `count` of them, or
    without end when count is None; a resumed run continues with exactly the batches it would
    have seen.

    With workers > 1, up to `ahead` batches (default 2 x workers) are drawn in a thread pool
    while the caller trains; each batch is a function of its step alone, so the stream is the
    same for any number of workers."""
    steps = itertools.count(start_step) if count is None else iter(range(start_step, start_step + count))
    if workers <= 1:
        for step in steps:
            yield patch_batch(sampler, batch_size, prep, seed=seed, step=step)
        return
    ahead = ahead or 2 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segzoo-patches") as pool:
        pending: collections.deque = collections.deque()
        try:
            while True:
                for step in itertools.islice(steps, ahead - len(pending)):
                    pending.append(pool.submit(patch_batch, sampler, batch_size, prep, seed=seed, step=step))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def stream_workers() -> int:
    """Threads that draw batches: 1 on TensorFlow (tf.data prefetches in its own thread, and on a
    small CPU more threads would compete with training), up to 8 on other backends, whose
    training runs on an accelerator and would otherwise wait for augmentation."""
    import keras

    return 1 if keras.backend.backend() == "tensorflow" else min(8, os.cpu_count() or 1)


def make_dataset(sampler: PatchSampler, batch_size: int, prep: Preprocessing, *, seed: int,
                 start_step: int = 0):
    """What model.fit consumes: a prefetched tf.data.Dataset on the TensorFlow backend (which
    overlaps augmentation with training in its own thread); on other backends the generator,
    drawing batches in stream_workers() threads."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return patch_batches(sampler, batch_size, prep, seed=seed, start_step=start_step, workers=stream_workers())
    import tensorflow as tf

    p = sampler.patch_size
    channels = len(prep.mean)
    signature = (tf.TensorSpec((batch_size, p, p, channels), tf.float32),
                 tf.TensorSpec((batch_size, p, p, sampler.target_channels), tf.float32))
    dataset = tf.data.Dataset.from_generator(
        lambda: patch_batches(sampler, batch_size, prep, seed=seed, start_step=start_step),
        output_signature=signature)
    return dataset.prefetch(2)
