"""SlideOptions: every setting of a whole-slide run, one frozen value checked when it is made.

The same options reach every part of a run (planning, the local and Dask executors, the
outputs, the run's summary table), so adding a slide option is one field here plus its use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from segzoo.errors import UsageError

DEFAULT_HALO = 96
"""Halo in working pixels: the networks' receptive field. With read boxes on the network's
stride grid, probabilities more than 96 px from a read box's edge equal a whole-image pass
(measured for unet and segnet; README, "Whole slides"), and a nucleus owned by a core reaches
at most a nucleus radius into the halo."""


@dataclass(frozen=True)
class SlideOptions:
    """Settings of a whole-slide run, the same for every slide of it.

    mpp: microns per level-0 pixel, overriding each slide's metadata (None: the metadata's).
    chunk_size: chunk core side in working pixels, rounded up to the network stride (None: one
        network tile of segzoo.slides.plan.chunks.CHUNK_TILE_SIZE per chunk).
    halo: working pixels read around each core (rounded up to the stride).
    tissue: predict only chunks on tissue (the tissue mask); False predicts every chunk.
    overwrite: replace existing outputs (else a slide whose outputs exist is refused).
    restart: discard a work folder of another job instead of refusing it.
    keep_chunks: keep the work folder (chunk files, manifest) after the outputs are written.
    tta: test-time augmentation (8 flips and turns) for every chunk.
    retries: times a failed cluster task is run again (Dask only).
    progress: show a progress bar (tqdm) on stderr.
    summary: write the run's table <out>/segzoo_summary.csv (segzoo.slides.results.summary).
    """

    mpp: float | None = None
    chunk_size: int | None = None
    halo: int = DEFAULT_HALO
    tissue: bool = True
    overwrite: bool = False
    restart: bool = False
    keep_chunks: bool = False
    tta: bool = False
    retries: int = 2
    progress: bool = True
    summary: bool = True

    def __post_init__(self) -> None:
        mpp = self.mpp
        if mpp is not None and (isinstance(mpp, bool) or not isinstance(mpp, (int, float))
                                or not math.isfinite(mpp) or mpp <= 0):
            raise UsageError(f"mpp must be a positive number of microns per pixel, got {mpp!r}", argument="mpp")
        if self.chunk_size is not None and (not _is_int(self.chunk_size) or self.chunk_size < 1):
            raise UsageError(f"chunk_size must be an integer >= 1 pixel (or None), got {self.chunk_size!r}",
                             argument="chunk_size")
        if not _is_int(self.halo) or self.halo < 0:
            raise UsageError(f"halo must be an integer >= 0 pixels, got {self.halo!r}", argument="halo")
        if not _is_int(self.retries) or self.retries < 0:
            raise UsageError(f"retries must be an integer >= 0, got {self.retries!r}", argument="retries")

    def replace(self, **changes) -> SlideOptions:
        """A copy with `changes` (checked like a new one); UsageError names an unknown option."""
        unknown = sorted(set(changes) - set(asdict(self)))
        if unknown:
            raise UsageError(f"unknown slide option(s) {', '.join(unknown)}; valid: {', '.join(asdict(self))}",
                             argument=unknown[0])
        return replace(self, **changes)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
