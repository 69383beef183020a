"""The validation split of a training folder: by stem, deterministic (never the test set)."""

from __future__ import annotations

import numpy as np

from segzoo.datasets.monuseg import LoadedSample, Sample, load_sample
from segzoo.errors import UsageError


def split_train_val(samples: list[Sample], val_fraction: float, seed: int,
                    val_stems: list[str] | None = None) -> tuple[list[Sample], list[Sample]]:
    """(train, validation): the samples named by `val_stems` if given, else a seeded random
    `val_fraction` of them (at least one when the fraction is > 0); UsageError when no
    training sample would be left or a stem is unknown."""
    if val_stems:
        known = {s.stem for s in samples}
        unknown = sorted(set(val_stems) - known)
        if unknown:
            raise UsageError(f"val_stems not found in the data folder: {unknown}", argument="val_stems")
        val = [s for s in samples if s.stem in val_stems]
    else:
        n_val = int(round(len(samples) * val_fraction))
        if val_fraction > 0:
            n_val = max(n_val, 1)
        if n_val >= len(samples):
            raise UsageError(
                f"validation split of {n_val} leaves no training images out of {len(samples)}",
                argument="val_fraction")
        order = np.random.default_rng(seed).permutation(len(samples))
        val_idx = set(order[:n_val].tolist())
        val = [s for i, s in enumerate(samples) if i in val_idx]
    train = [s for s in samples if s not in val]
    return train, val


def load_images_and_masks(samples: list[Sample], *, labels: bool = False,
                          scale: float = 1.0) -> tuple[list[np.ndarray], ...]:
    """(images HxWx3 uint8, masks HxW bool) of the samples, in order; with `labels`, also their
    instance labels (HxW int32 from the XML regions, None for a mask-only sample). `scale`: model
    pixels per tile pixel (segzoo.datasets.monuseg.load_sample)."""
    loaded: list[LoadedSample] = [load_sample(s, scale) for s in samples]
    images, masks = [s.image for s in loaded], [s.mask for s in loaded]
    return (images, masks, [s.labels for s in loaded]) if labels else (images, masks)
