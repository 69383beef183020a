"""Whole-slide prediction: plan the chunks, run them with reading, inference and
post-processing overlapped, resume from finished chunks, and stream the outputs.

`predict_slide(predictor, source, out)` does it all; it is three steps a distributed runner
can split: `prepare_slide` (resolution, tissue, chunk plan, work folder and resume checks:
a SlideJob), `run_chunk` for each pending chunk (segzoo.slides.chunks; each result saved to
`job.chunk_path(chunk)`, from any process), and `finish_slide` (outputs, clean-up, summary).

Working resolution: the model's `config.resolution.mpp`. The slide's microns per pixel come
from its metadata or `mpp=`; the level read is segzoo.slides.reader.best_level's and the
scale working_scale's (levels within 2% of the model are read without resampling). A plain
image (ArraySlide) without mpp is assumed to be at the model's resolution (logged at INFO);
a slide file without mpp is an error; a model whose config has no resolution reads level 0
as it is (logged as a warning). All outputs are in level-0 pixels of the slide.

Work folder `<out>/<stem>.segzoo-chunks/`: `manifest.json` (the job's parameters: model
config and an output fingerprint, slide identity, resolution, chunk size, halo, tissue
settings) and one `chunk_<row>_<col>.npz` per finished chunk. Re-running the same job skips
finished chunks and gives outputs byte-identical to an uninterrupted run; a job with other
parameters is refused (delete the folder or pass restart=True). The folder is removed once
the outputs are written, unless keep_chunks=True or some chunk failed (a re-run retries those).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from segzoo.config import ModelConfig
from segzoo.errors import DataError, SegzooError
from segzoo.io.files import atomic_write_text
from segzoo.slides.base import ArraySlide
from segzoo.slides.chunks import COLUMNS, Chunk, ChunkResult, Grid, chunk_nuclei, plan_chunks, predict_chunk, read_chunk
from segzoo.slides.outputs import THUMBNAIL_MAX_SIDE, output_paths, write_outputs

log = logging.getLogger(__name__)

DEFAULT_HALO = 96
"""Halo in working pixels. Measured on MoNuSeg test tiles (unet and segnet, fp32 and int8):
with read boxes on the network's stride grid, probabilities more than 96 px from a read box
edge are bit-identical to a whole-image pass (the networks' receptive field); nuclei owned
by a core reach at most a nucleus radius (< 32 px at 40x) into the halo. deeplabv3's
image-pooling branch averages over its whole input, so its chunks never equal a whole-image
pass exactly (measured on a MoNuSeg tile: 91% of nuclei matched at IoU >= 0.9 with 832 px
chunks, against 100% for unet and segnet)."""
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
QUEUE_SIZE = 2  # chunks waiting between stages (bounds memory: about 2 x (image + probabilities))
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


# ---------------------------------------------------------------------------------------------
# resolution


def working_grid(slide, config: ModelConfig, mpp: float | None = None) -> tuple[Grid, list[str]]:
    """(Grid, notes): the level and scale at which `slide` is read for a model with `config`.

    `mpp` (microns per level-0 pixel) overrides the slide's. Raises SegzooError for a slide
    file with no resolution and no override (a plain in-memory image is assumed to be at the
    model's resolution)."""
    from segzoo.slides.reader import best_level, working_scale

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


# ---------------------------------------------------------------------------------------------
# manifest and resume


def model_fingerprint(predictor) -> list[float]:
    """The model's probabilities at 64 points of a fixed 64x64 pseudo-random input: two models
    (weights, precision or runtime) that disagree here are not the same model for resuming."""
    from segzoo.predict.tiling import predict_probabilities

    rng = np.random.default_rng(20260101)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    prob = predict_probabilities(predictor.run_batch, image, predictor.config)[4::8, 4::8, 0]
    return [round(float(v), 6) for v in prob.ravel()]


def fingerprints_differ(a: list[float], b: list[float], tolerance: float = 1e-3) -> bool:
    """Whether two model_fingerprint values come from different models (any point off by > tolerance)."""
    return len(a) != len(b) or max((abs(x - y) for x, y in zip(a, b)), default=0.0) > tolerance


def _slide_identity(slide) -> dict:
    path = getattr(slide, "path", None)
    identity: dict = {"level_dimensions": [list(d) for d in slide.level_dimensions]}
    if isinstance(slide, ArraySlide) and path is None:
        identity["sha256"] = hashlib.sha256(np.ascontiguousarray(slide.image).tobytes()).hexdigest()
    elif path is not None:
        stat = Path(path).stat()
        identity.update(path=str(Path(path).resolve()), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return identity


def _manifest(predictor, slide, grid: Grid, chunk_size: int, halo: int, tissue: bool, tta: bool) -> dict:
    config = predictor.config.to_dict()
    config.pop("provenance", None)
    return {"format": "segzoo slide chunks", "version": MANIFEST_VERSION,
            "model": {"config": config, "runtime": getattr(predictor, "runtime", None),
                      "fingerprint": model_fingerprint(predictor)},
            "slide": _slide_identity(slide), "grid": grid.to_dict(), "chunk_size": chunk_size, "halo": halo,
            "tissue": {"enabled": tissue, "method": "segzoo.slides.tissue.tissue_mask"}, "tta": tta}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ (the model fingerprint within 1e-3)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if name == "model.fingerprint" and isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            if fingerprints_differ(a, b):
                out.append("model weights (its outputs differ)")
        elif isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{name}."))
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def _check_work(work: Path, manifest: dict, restart: bool) -> bool:
    """True when `work` holds a job with the same manifest (a resume), False when it holds none
    or restart is set; SegzooError when it holds another job (or something else)."""
    path = work / MANIFEST
    if restart or not work.exists():
        return False
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SegzooError(f"{path}: unreadable ({err}); delete {work} or pass --restart") from None
        differences = _differences(old, manifest)
        if differences:
            raise SegzooError(f"{work} holds chunks of a job with other parameters ({'; '.join(differences[:5])}); "
                              "delete it or pass --restart to start over")
        return True
    if any(work.iterdir()):
        raise SegzooError(f"{work} exists without a {MANIFEST}; delete it or pass --restart")
    return False


# ---------------------------------------------------------------------------------------------
# the three steps


def prepare_slide(predictor, slide, out: str | os.PathLike, *, mpp: float | None = None,
                  chunk_size: int | None = None, halo: int = DEFAULT_HALO, tissue: bool = True,
                  overwrite: bool = False, restart: bool = False, tta: bool = False,
                  name: str | None = None) -> SlideJob:
    """Plan one slide: resolution (working_grid), tissue mask, chunks, work folder.

    chunk_size None makes each chunk's read box one network tile (config tile_size - 2 halo),
    so the network runs once per chunk with no overlap inside it. Raises SegzooError when the
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
        chunk_size = max(config.inference.tile_size - 2 * halo, stride) // stride * stride
    if int(chunk_size) < 1:
        raise SegzooError(f"chunk_size must be >= 1 pixel, got {chunk_size}")
    chunk_size = -(-int(chunk_size) // stride) * stride
    grid, notes = working_grid(slide, config, mpp)
    grid = Grid(**{**grid.to_dict(), "stride": stride})
    stem = name or _stem(slide)
    targets = output_paths(out, stem, tissue=tissue)
    work = out / f"{stem}.segzoo-chunks"
    manifest = _manifest(predictor, slide, grid, chunk_size, halo, tissue, tta)
    resumed = _check_work(work, manifest, restart)
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

        view = _with_mpp(slide, grid.mpp or config.resolution.mpp or ASSUMED_MPP)
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
    return SlideJob(source=None if path is None else Path(path), slide_name=_slide_name(slide), stem=stem, out=out, work=work, targets=targets, grid=grid,
                    chunks=chunks, columns=columns, tissue=mask, tta=tta, manifest=manifest, resumed=resumed,
                    notes=notes)


class _MppView:
    """A slide seen with another level-0 mpp (reads go to the slide itself)."""

    def __init__(self, slide, mpp: float | None):
        self._slide, self.mpp = slide, mpp

    def __getattr__(self, name):
        return getattr(self._slide, name)


def _with_mpp(slide, mpp: float | None):
    return slide if slide.mpp == mpp else _MppView(slide, mpp)


def failed_chunk(job: SlideJob, chunk: Chunk, error: BaseException) -> FailedChunk:
    """Record (and log as a warning) a chunk whose region could not be read."""
    box = chunk.level0_box(job.grid)
    log.warning("chunk (%d, %d), level-0 box x %d-%d, y %d-%d of %s: %s; skipped", chunk.row, chunk.col,
                box[0], box[2], box[1], box[3], job.slide_name, error)
    return FailedChunk(chunk.row, chunk.col, box, str(error))


_DONE = object()


def process_chunks(job: SlideJob, predictor, slide, *, progress: bool = True,
                   on_chunk: Callable[[Chunk, ChunkResult | None], None] | None = None) -> tuple[list[FailedChunk], int]:
    """Run the job's pending chunks, saving each result to job.chunk_path(chunk); returns
    (failed chunks, nuclei found in this call).

    Three stages overlap: a reader thread reads chunk images ahead, the calling thread runs
    the network, a post-processing thread finds, measures and saves each chunk's nuclei
    (onnxruntime, scipy and scikit-image release the GIL). Queues of QUEUE_SIZE chunks
    between the stages bound memory. A read that raises DataError (a corrupt region) is
    recorded and the chunk skipped. `on_chunk(chunk, result or None if it failed)` is called
    after each chunk is saved; an exception from it (or any stage) stops the run and
    propagates, leaving the chunks saved so far."""
    from tqdm import tqdm

    pending = job.pending()
    total = sum(c.core_pixels for c in job.chunks)
    bar = tqdm(total=total, initial=total - sum(c.core_pixels for c in pending), unit="Mpx", unit_scale=1e-6,
               desc=job.stem,
               disable=not progress, dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} tissue Mpx "
               "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
    stop = threading.Event()
    errors: list[BaseException] = []
    failed: list[FailedChunk] = []
    found = [0]
    read_queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
    post_queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(q: queue.Queue):  # _DONE once stopped (an error or interrupt): queued chunks are dropped
        while not stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE

    def reader() -> None:
        try:
            for chunk in pending:
                try:
                    item = (chunk, read_chunk(slide, job.grid, chunk), None)
                except DataError as err:
                    item = (chunk, None, err)
                if not put(read_queue, item):
                    return
            put(read_queue, _DONE)
        except BaseException as err:  # noqa: BLE001  (re-raised in the calling thread)
            errors.append(err)
            stop.set()

    def post() -> None:
        try:
            while (item := get(post_queue)) is not _DONE:
                chunk, image, prob, error = item
                result = None
                if error is not None:
                    failed.append(failed_chunk(job, chunk, error))
                else:
                    result = chunk_nuclei(image, prob, chunk, job.grid, predictor.config.postprocessing)
                    result.save(job.chunk_path(chunk))
                    found[0] += result.count
                bar.set_postfix_str(f"{found[0]} nuclei", refresh=False)
                bar.update(chunk.core_pixels)
                if on_chunk is not None:
                    on_chunk(chunk, result)
        except BaseException as err:  # noqa: BLE001  (re-raised in the calling thread)
            errors.append(err)
            stop.set()

    threads = [threading.Thread(target=reader, name="segzoo-slide-reader", daemon=True),
               threading.Thread(target=post, name="segzoo-slide-post", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while (item := get(read_queue)) is not _DONE:
            chunk, image, error = item
            prob = None if error is not None else predict_chunk(predictor, image, tta=job.tta)
            if not put(post_queue, (chunk, image, prob, error)):
                break
        put(post_queue, _DONE)
        threads[1].join()
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        bar.close()
    if errors:
        raise errors[0]
    return failed, found[0]


def _results(job: SlideJob):
    for chunk in job.chunks:
        path = job.chunk_path(chunk)
        if path.exists():
            yield ChunkResult.load(path)


def finish_slide(job: SlideJob, slide, failed: list[FailedChunk], *, keep_chunks: bool = False,
                 seconds: float = 0.0, chunks_resumed: int = 0) -> SlideSummary:
    """Write the outputs from the job's saved chunks (streamed, as one set), then remove the
    work folder unless keep_chunks or a chunk failed (its failures go to failed_chunks.json
    there, and a re-run retries them)."""
    from segzoo.slides.tissue import slide_thumbnail

    # mpp None: slide_thumbnail's largest-side rule, the finest thumbnail within THUMBNAIL_MAX_SIDE
    try:
        thumb, thumb_ds = slide_thumbnail(_with_mpp(slide, None), max_side=THUMBNAIL_MAX_SIDE)
    except DataError as err:  # a corrupt region: outlines on white rather than no outputs
        log.warning("%s: the thumbnail could not be read (%s); drawing the outlines on white", job.slide_name, err)
        w0, h0 = slide.level_dimensions[0]
        thumb_ds = max(1.0, max(w0, h0) / THUMBNAIL_MAX_SIDE)
        thumb = np.full((math.ceil(h0 / thumb_ds), math.ceil(w0 / thumb_ds), 3), 255, np.uint8)
    nuclei = write_outputs(job.targets, _results(job), thumb, thumb_ds, job.tissue, job.columns)
    if failed:
        atomic_write_text(job.work / "failed_chunks.json",
                          json.dumps([f.to_dict() for f in failed], indent=1))
        log.warning("%d of %d chunks of %s could not be read (listed in %s); the outputs lack them; "
                    "re-run the same command to retry them", len(failed), len(job.chunks), job.slide_name,
                    job.work / "failed_chunks.json")
    elif not keep_chunks:
        shutil.rmtree(job.work, ignore_errors=True)
    grid = job.grid
    return SlideSummary(slide=job.slide_name, outputs=dict(job.targets), nuclei=nuclei, tissue_mpx=job.tissue_mpx,
                        seconds=seconds, chunks=len(job.chunks), chunks_resumed=chunks_resumed, level=grid.level,
                        scale=grid.scale, mpp=grid.mpp, failed=list(failed), notes=list(job.notes))


def predict_slide(predictor, source, out: str | os.PathLike, *, mpp: float | None = None,
                  chunk_size: int | None = None, halo: int = DEFAULT_HALO, tissue: bool = True,
                  overwrite: bool = False, restart: bool = False, keep_chunks: bool = False,
                  progress: bool = True, tta: bool = False, name: str | None = None,
                  on_chunk: Callable[[Chunk, ChunkResult | None], None] | None = None) -> SlideSummary:
    """Predict the nuclei of a whole slide into `out` (see the module docstring).

    source: a slide path (segzoo.slides.reader.open_slide) or an open Slide (not closed here).
    mpp overrides the slide's microns per level-0 pixel; chunk_size/halo are working pixels
    (rounded up to the network stride; chunk_size None: one network tile per chunk); tissue
    False predicts every chunk. Returns a SlideSummary; summary.failed lists unreadable chunks
    (the CLI exits non-zero then). Outputs: see segzoo.slides.outputs."""
    start = time.perf_counter()
    if isinstance(source, (str, os.PathLike)):
        from segzoo.slides.reader import open_slide

        slide, owned = open_slide(source, mpp=mpp), True
    else:
        slide, owned = source, False
    try:
        job = prepare_slide(predictor, slide, out, mpp=mpp, chunk_size=chunk_size, halo=halo, tissue=tissue,
                            overwrite=overwrite, restart=restart, tta=tta, name=name)
        resumed = len(job.chunks) - len(job.pending())
        if resumed:
            log.info("%s: resuming, %d of %d chunks already done", job.slide_name, resumed, len(job.chunks))
        failed, _ = process_chunks(job, predictor, slide, progress=progress, on_chunk=on_chunk)
        return finish_slide(job, slide, failed, keep_chunks=keep_chunks, chunks_resumed=resumed,
                            seconds=time.perf_counter() - start)
    finally:
        if owned:
            slide.close()
