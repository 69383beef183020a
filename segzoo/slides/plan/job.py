"""Planning one slide's job: the working grid, the tissue mask, the chunks and the work folder
(prepare_slide -> SlideJob). All outputs are in level-0 pixels of the slide."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segzoo.errors import DataError, UsageError
from segzoo.io.files import atomic_write_text
from segzoo.predict.predictor import Predictor
from segzoo.slides.options import SlideOptions
from segzoo.slides.plan.chunks import CHUNK_TILE_SIZE, Chunk, plan_chunks
from segzoo.slides.plan.grid import Grid, slide_name, working_grid
from segzoo.slides.plan.manifest import MANIFEST, check_work, job_manifest
from segzoo.slides.plan.targets import COLUMNS, output_paths, output_stem
from segzoo.slides.readers.base import Slide, with_mpp

log = logging.getLogger(__name__)

ASSUMED_MPP = 0.25  # for the tissue mask's sizes only, when neither slide nor model has a resolution


@dataclass
class SlideJob:
    """One slide's planned work (see prepare_slide), plain data: a process that opens
    `source` (the slide file; None for an in-memory slide) can run any of its chunks
    (segzoo.slides.run.worker.run_chunk with `grid`) and save the result to chunk_path(chunk)."""

    source: Path | None
    slide_name: str
    stem: str
    out: Path
    work: Path
    targets: dict[str, Path]
    grid: Grid
    chunks: list[Chunk]
    columns: tuple[str, ...]
    tissue: np.ndarray | None
    tta: bool
    manifest: dict
    resumed: bool
    notes: list[str]

    def chunk_path(self, chunk: Chunk) -> Path:
        return self.work / f"{chunk.name}.npz"

    def pending(self) -> list[Chunk]:
        """Planned chunks without a result file, in order."""
        return [c for c in self.chunks if not self.chunk_path(c).exists()]

    @property
    def tissue_mpx(self) -> float:
        return sum(c.core_pixels for c in self.chunks) / 1e6


def _stem(slide: Slide) -> str:
    path = getattr(slide, "path", None)
    return "slide" if path is None else output_stem(path)


def prepare_slide(predictor: Predictor, slide: Slide, out: str | os.PathLike, options: SlideOptions,
                  name: str | None = None) -> SlideJob:
    """Plan one slide: resolution (working_grid), tissue mask, chunks, work folder.

    predictor: the model (its config and fingerprint); slide: the open slide; out: the output folder;
    options: the run's SlideOptions; name: the output stem (None: the slide file's, "slide" in memory).
    options.chunk_size None makes each chunk's read box one network tile of the slide path
    (segzoo.slides.plan.chunks.CHUNK_TILE_SIZE - 2 halo), so the network runs once per chunk with no
    overlap inside it. Raises UsageError when the outputs exist and this is not a resume (argument
    overwrite), or when the work folder holds another job (argument restart)."""
    out = Path(out)
    config = predictor.config
    stride = int(config.preprocessing.pad_to_stride)
    halo = -(-options.halo // stride) * stride
    chunk_size = options.chunk_size
    if chunk_size is None:
        chunk_size = max(CHUNK_TILE_SIZE - 2 * halo, stride) // stride * stride
    chunk_size = -(-int(chunk_size) // stride) * stride
    tissue, tta = options.tissue, options.tta
    grid, notes = working_grid(slide, config, options.mpp)
    grid = Grid(**{**grid.to_dict(), "stride": stride})
    stem = name or _stem(slide)
    targets = output_paths(out, stem, tissue=tissue)
    work = out / f"{stem}.segzoo-chunks"
    manifest = job_manifest(predictor, slide, grid, chunk_size, halo, tissue, tta)
    resumed = check_work(work, manifest, options.restart)
    if not resumed:
        existing = [str(p) for p in targets.values() if p.exists()]
        if existing and not options.overwrite:
            raise UsageError(f"outputs exist: {', '.join(existing)}; pass overwrite=True to replace them",
                             argument="overwrite")
        if work.exists():  # restart
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(work / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    mask = None
    tissue_downsample = None
    if tissue:
        from segzoo.slides.plan.tissue import THUMBNAIL_MPP, slide_thumbnail, tissue_mask

        view = with_mpp(slide, grid.mpp or config.resolution.mpp or ASSUMED_MPP)
        try:
            thumb, thumb_ds = slide_thumbnail(view, THUMBNAIL_MPP)
        except DataError as err:
            notes.append(f"the tissue mask of {slide_name(slide)} could not be computed ({err}); "
                         "predicting every chunk")
            log.warning("%s", notes[-1])
        else:
            mask = tissue_mask(thumb, view.mpp * thumb_ds)
            tissue_downsample = thumb_ds / grid.level0_per_working  # working pixels per mask pixel
    chunks = plan_chunks((grid.width, grid.height), chunk_size, halo, mask, tissue_downsample, stride)
    if tissue and not chunks:
        notes.append(f"no tissue found in {slide_name(slide)} (the tissue mask is empty), so nothing was "
                     "predicted and the outputs are empty; pass tissue=False to predict the whole slide")
        log.warning("%s", notes[-1])
    columns = tuple(c for c in COLUMNS if c != "area_um2" or grid.mpp is not None)
    path = getattr(slide, "path", None)
    return SlideJob(source=None if path is None else Path(path), slide_name=slide_name(slide), stem=stem, out=out,
                    work=work, targets=targets, grid=grid, chunks=chunks, columns=columns, tissue=mask, tta=tta,
                    manifest=manifest, resumed=resumed, notes=notes)
