"""Planning a slide job: the working resolution, the tissue mask, the chunks and the work
folder (prepare_slide -> SlideJob), and what a job reports (SlideSummary, FailedChunk).

Working resolution: the model's `config.resolution.mpp`. The slide's microns per pixel come
from its metadata or `mpp=`; the level read is segzoo.slides.reader.best_level's and the
scale working_scale's (levels within 2% of the model are read without resampling). A plain
image (ArraySlide) without mpp is assumed to be at the model's resolution (logged at INFO);
a slide file without mpp is an error; a model whose config has no resolution reads level 0
as it is (logged as a warning). All outputs are in level-0 pixels of the slide.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from segzoo.config import ModelConfig
from segzoo.errors import DataError, SegzooError
from segzoo.io.files import atomic_write_text
from segzoo.slides.base import ArraySlide
from segzoo.slides.chunks import CHUNK_TILE_SIZE, COLUMNS, Chunk, Grid, plan_chunks
from segzoo.slides.manifest import MANIFEST, check_work, job_manifest
from segzoo.slides.outputs import output_paths

log = logging.getLogger(__name__)

DEFAULT_HALO = 96
"""Halo in working pixels. Measured on MoNuSeg test tiles (unet and segnet, fp32 and int8):
with read boxes on the network's stride grid, probabilities more than 96 px from a read box
edge are bit-identical to a whole-image pass (the networks' receptive field); nuclei owned
by a core reach at most a nucleus radius (< 32 px at 40x) into the halo. deeplabv3's
image-pooling branch averages over its whole input, so its chunks never equal a whole-image
pass exactly (measured on a MoNuSeg tile: 91% of nuclei matched at IoU >= 0.9 with 832 px
chunks, against 100% for unet and segnet)."""
ASSUMED_MPP = 0.25  # for the tissue mask's sizes only, when neither slide nor model has a resolution



@dataclass(frozen=True)
class FailedChunk:
    """A chunk that could not be read: grid index, level-0 box (x0, y0, x1, y1) and the error."""

    row: int
    col: int
    box: tuple[int, int, int, int]
    error: str

    def to_dict(self) -> dict:
        return {"row": self.row, "col": self.col, "box": list(self.box), "error": self.error}


@dataclass
class SlideSummary:
    """What predict_slide did. tissue_mpx: megapixels (at the working resolution) of the chunk
    cores planned, i.e. the tissue area processed; chunks_resumed: chunks found finished;
    error: why the slide has no outputs (None when it has them; see SlideSummary.failure).
    status: 'ok', 'partial' (some chunks unreadable, listed in failed) or 'error'."""

    slide: str
    outputs: dict[str, Path]
    nuclei: int
    tissue_mpx: float
    seconds: float
    chunks: int
    chunks_resumed: int
    level: int | None
    scale: float | None
    mpp: float | None
    failed: list[FailedChunk] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @classmethod
    def failure(cls, slide: str, error: str, seconds: float = 0.0, tissue_mpx: float = 0.0,
                chunks: int = 0, chunks_resumed: int = 0) -> SlideSummary:
        """The summary of a slide that got no outputs (unreadable, no resolution, a failed task...)."""
        return cls(slide=slide, outputs={}, nuclei=0, tissue_mpx=tissue_mpx, seconds=seconds, chunks=chunks,
                   chunks_resumed=chunks_resumed, level=None, scale=None, mpp=None, error=error)

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None

    @property
    def status(self) -> str:
        return "error" if self.error is not None else "partial" if self.failed else "ok"

    def to_dict(self) -> dict:
        return {"slide": self.slide, "outputs": {k: str(v) for k, v in self.outputs.items()}, "nuclei": self.nuclei,
                "tissue_mpx": round(self.tissue_mpx, 3), "seconds": round(self.seconds, 2), "chunks": self.chunks,
                "chunks_resumed": self.chunks_resumed, "level": self.level, "scale": self.scale, "mpp": self.mpp,
                "failed": [f.to_dict() for f in self.failed], "notes": self.notes, "status": self.status,
                "error": self.error}


@dataclass
class SlideJob:
    """One slide's planned work (see prepare_slide), plain data: a process that opens
    `source` (the slide file; None for an in-memory slide) can run any of its chunks
    (run_chunk with `grid`) and save the result to chunk_path(chunk)."""

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



def working_grid(slide, config: ModelConfig, mpp: float | None = None) -> tuple[Grid, list[str]]:
    """(Grid, notes): the level and scale at which `slide` is read for a model with `config`.

    `mpp` (microns per level-0 pixel) overrides the slide's. Raises SegzooError for a slide
    file with no resolution and no override (a plain in-memory image is assumed to be at the
    model's resolution)."""
    from segzoo.slides.resolution import best_level, working_scale

    name = _slide_name(slide)
    target = config.resolution.mpp
    slide_mpp = mpp if mpp is not None else slide.mpp
    if mpp is not None and not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise SegzooError(f"mpp must be a positive number of microns per pixel, got {mpp!r}")
    notes = []
    level, scale = 0, 1.0
    if target is None:
        notes.append(f"the model config has no resolution.mpp, so {name} is read at level 0 as it is "
                     "(its scale is assumed to be the model's)")
        log.warning("%s", notes[-1])
    elif slide_mpp is None:
        if not isinstance(slide, ArraySlide):
            raise SegzooError(f"{name} has no microns-per-pixel in its metadata; pass --mpp "
                              f"(the model was trained at {target} um/px)")
        notes.append(f"{name} has no resolution in its metadata; assuming the model's {target} um/px")
        log.info("%s", notes[-1])
    else:
        view = SimpleNamespace(mpp=float(slide_mpp), level_downsamples=slide.level_downsamples, path=slide.path)
        level, level_mpp = best_level(view, target)
        scale = working_scale(level_mpp, target)
        if scale != 1.0:
            notes.append(f"{name}: level {level} ({level_mpp:.4f} um/px) resampled by {scale:.4f} to the "
                         f"model's {target} um/px")
            log.info("%s", notes[-1])
    width, height = slide.level_dimensions[level]
    downsample = float(slide.level_downsamples[level])
    grid = Grid(level=level, scale=float(scale), downsample=downsample,
                width=max(math.ceil(width * scale - 1e-6), 1), height=max(math.ceil(height * scale - 1e-6), 1),
                mpp=None if slide_mpp is None else float(slide_mpp), stride=1)
    return grid, notes


def _slide_name(slide) -> str:
    return str(slide.path) if getattr(slide, "path", None) is not None else "the image"


def _stem(slide) -> str:
    path = getattr(slide, "path", None)
    return "slide" if path is None else output_stem(path)


def output_stem(path: str | os.PathLike) -> str:
    """The output file stem of a slide file: its name without the suffix (.ome.tif(f) as one)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return Path(name).stem



def prepare_slide(predictor, slide, out: str | os.PathLike, *, mpp: float | None = None,
                  chunk_size: int | None = None, halo: int = DEFAULT_HALO, tissue: bool = True,
                  overwrite: bool = False, restart: bool = False, tta: bool = False,
                  name: str | None = None) -> SlideJob:
    """Plan one slide: resolution (working_grid), tissue mask, chunks, work folder.

    chunk_size None makes each chunk's read box one network tile of the slide path
    (segzoo.slides.chunks.CHUNK_TILE_SIZE - 2 halo), so the network runs once per chunk with no
    overlap inside it. Raises SegzooError when the
    outputs exist and this is not a resume (pass overwrite=True), or when the work folder
    holds another job (restart=True discards it)."""
    out = Path(out)
    config = predictor.config
    stride = int(config.preprocessing.pad_to_stride)
    halo = int(halo)
    if halo < 0:
        raise SegzooError(f"halo must be >= 0 pixels, got {halo}")
    halo = -(-halo // stride) * stride
    if chunk_size is None:
        chunk_size = max(CHUNK_TILE_SIZE - 2 * halo, stride) // stride * stride
    if int(chunk_size) < 1:
        raise SegzooError(f"chunk_size must be >= 1 pixel, got {chunk_size}")
    chunk_size = -(-int(chunk_size) // stride) * stride
    grid, notes = working_grid(slide, config, mpp)
    grid = Grid(**{**grid.to_dict(), "stride": stride})
    stem = name or _stem(slide)
    targets = output_paths(out, stem, tissue=tissue)
    work = out / f"{stem}.segzoo-chunks"
    manifest = job_manifest(predictor, slide, grid, chunk_size, halo, tissue, tta)
    resumed = check_work(work, manifest, restart)
    if not resumed:
        existing = [str(p) for p in targets.values() if p.exists()]
        if existing and not overwrite:
            raise SegzooError(f"outputs exist: {', '.join(existing)}; pass --overwrite to replace them")
        if work.exists():  # restart
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(work / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    mask = None
    tissue_downsample = None
    if tissue:
        from segzoo.slides.tissue import THUMBNAIL_MPP, slide_thumbnail, tissue_mask

        view = with_mpp(slide, grid.mpp or config.resolution.mpp or ASSUMED_MPP)
        try:
            thumb, thumb_ds = slide_thumbnail(view, THUMBNAIL_MPP)
        except DataError as err:
            notes.append(f"the tissue mask of {_slide_name(slide)} could not be computed ({err}); "
                         "predicting every chunk")
            log.warning("%s", notes[-1])
        else:
            mask = tissue_mask(thumb, view.mpp * thumb_ds)
            tissue_downsample = thumb_ds / grid.level0_per_working  # working pixels per mask pixel
    chunks = plan_chunks((grid.width, grid.height), chunk_size, halo, mask, tissue_downsample, stride)
    if tissue and not chunks:
        notes.append(f"no tissue found in {_slide_name(slide)} (the tissue mask is empty), so nothing was "
                     "predicted and the outputs are empty; pass --no-tissue-mask to predict the whole slide")
        log.warning("%s", notes[-1])
    columns = tuple(c for c in COLUMNS if c != "area_um2" or grid.mpp is not None)
    path = getattr(slide, "path", None)
    return SlideJob(source=None if path is None else Path(path), slide_name=_slide_name(slide), stem=stem, out=out,
                    work=work, targets=targets, grid=grid, chunks=chunks, columns=columns, tissue=mask, tta=tta,
                    manifest=manifest, resumed=resumed, notes=notes)


class _MppView:
    """A slide seen with another level-0 mpp (reads go to the slide itself)."""

    def __init__(self, slide, mpp: float | None):
        self._slide, self.mpp = slide, mpp

    def __getattr__(self, name):
        return getattr(self._slide, name)


def with_mpp(slide, mpp: float | None):
    """`slide` seen with another level-0 mpp (itself when it already has it)."""
    return slide if slide.mpp == mpp else _MppView(slide, mpp)


def failed_chunk(job: SlideJob, chunk: Chunk, error: BaseException) -> FailedChunk:
    """Record (and log as a warning) a chunk whose region could not be read."""
    box = chunk.level0_box(job.grid)
    log.warning("chunk (%d, %d), level-0 box x %d-%d, y %d-%d of %s: %s; skipped", chunk.row, chunk.col,
                box[0], box[2], box[1], box[3], job.slide_name, error)
    return FailedChunk(chunk.row, chunk.col, box, str(error))
