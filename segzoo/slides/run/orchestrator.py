"""Whole-slide prediction, one run sequence for every way of running it.

`predict_slides(model, slides, out, options=SlideOptions(...), executor=...)` predicts every
slide of a list into one output folder and returns a SlideSummary per slide. For each slide the
run sequence is the same, whoever executes the chunks:

1. open the slide (a file through segzoo.slides.readers.factory.open_slide, or an open Slide);
2. plan it (segzoo.slides.plan.job.prepare_slide: resolution, tissue, chunks, work folder,
   resume check);
3. run its pending chunks: the executor computes each chunk and saves its ChunkResult to
   `job.chunk_path(chunk)`, then reports it to `SlideRun.chunk_done`;
4. write the outputs from the saved chunks (`SlideRun.finish`: thumbnail, GeoJSON, CSV, tissue
   mask as one set) and remove the work folder, unless keep_chunks or a chunk failed;
5. report: the slide's SlideSummary, and after the run `<out>/segzoo_summary.csv`.

Executors: `LocalExecutor` (segzoo.slides.run.local: this process, one slide after another,
reading, inference and post-processing overlapped in threads) and `dask_executor(client=,
workers=)` (segzoo.slides.run.cluster: chunks of all slides as tasks on a dask.distributed
cluster). Outputs are byte-identical either way.

A slide that fails (unreadable file, no resolution, outputs already present, a failed task) is
reported in its summary and the others go on. Interrupted (Ctrl-C, a killed client), the same
call resumes each slide from the chunk files in its work folder `<out>/<stem>.segzoo-chunks/`
(see segzoo.slides.plan.manifest); unfinished slides are listed with status 'error'.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from segzoo.errors import DataError, MissingDependencyError, SegzooError, UsageError
from segzoo.predict.predictor import Predictor
from segzoo.slides.options import SlideOptions
from segzoo.slides.plan.chunks import Chunk
from segzoo.slides.plan.job import SlideJob, prepare_slide
from segzoo.slides.plan.targets import output_stem
from segzoo.slides.plan.tissue import slide_thumbnail
from segzoo.slides.readers.base import Slide, with_mpp
from segzoo.slides.readers.factory import SLIDE_SUFFIXES, open_slide
from segzoo.slides.results.chunk_result import ChunkResult
from segzoo.slides.results.outputs import THUMBNAIL_MAX_SIDE, write_outputs
from segzoo.slides.results.summary import (
    INTERRUPTED,
    SUMMARY_FILENAME,
    FailedChunk,
    SlideSummary,
    StageSeconds,
    failure_message,
    write_failed_chunks,
    write_summary,
)
from segzoo.slides.run.memory import return_large_allocations
from segzoo.slides.run.progress import RunProgress
from segzoo.zoo.loading import load

log = logging.getLogger(__name__)

ChunkCallback = Callable[[str, Chunk, "int | None"], None]
"""on_chunk(slide, chunk, nuclei): called after each chunk, nuclei None when the chunk could
not be read; an exception from it stops the run (finished chunks stay for a resume)."""


@dataclass(frozen=True)
class SlideInput:
    """One slide of a run: a file path, or an open Slide (the run does not close it), and its
    output stem (None: the file's name without suffix; "slide" for an in-memory slide)."""

    slide: str | os.PathLike | Slide
    name: str | None = None

    @property
    def path(self) -> Path | None:
        if isinstance(self.slide, (str, os.PathLike)):
            return Path(self.slide)
        path = getattr(self.slide, "path", None)
        return None if path is None else Path(path)

    @property
    def label(self) -> str:
        """How summaries and messages name it."""
        return str(self.path) if self.path is not None else "the image"

    @property
    def stem(self) -> str:
        return self.name or ("slide" if self.path is None else output_stem(self.path))


def slide_inputs(slides: Iterable[str | os.PathLike | Slide | SlideInput]) -> list[SlideInput]:
    """The slides of a run, in order: a file as it is, a folder's files with a slide suffix
    (segzoo.slides.readers.factory.SLIDE_SUFFIXES) in name order (hidden files skipped), an open
    Slide or a SlideInput as it is; a file listed twice is kept once. DataError for a path that
    does not exist or a folder without slide files; UsageError when two slides would write the
    same output files."""
    items: list[SlideInput] = []
    for item in slides:
        if isinstance(item, SlideInput):
            items.append(item)
        elif not isinstance(item, (str, os.PathLike)):
            items.append(SlideInput(item))
        elif (path := Path(item)).is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SLIDE_SUFFIXES)
            if not found:
                raise DataError(f"{path}: no slide files in the folder (suffixes {', '.join(SLIDE_SUFFIXES)})")
            items.extend(SlideInput(p) for p in found)
        elif path.exists():
            items.append(SlideInput(path))
        else:
            raise DataError(f"{path}: no such file or folder")
    unique: dict[object, SlideInput] = {}
    for item in items:
        key = item.path.resolve() if isinstance(item.slide, (str, os.PathLike)) else id(item.slide)
        unique.setdefault(key, item)
    seen: dict[str, SlideInput] = {}
    for item in unique.values():
        if item.stem in seen:
            raise UsageError(f"{seen[item.stem].label} and {item.label} would both write {item.stem}.geojson (and the "
                             "rest of the outputs) in one folder; predict them into separate out folders",
                             argument="out")
        seen[item.stem] = item
    return list(unique.values())


@dataclass
class SlideState:
    """A slide in progress: its job, when it started, chunks still to report, chunks found
    finished, chunks that could not be read, and the error that stopped it (None while running)."""

    index: int
    job: SlideJob
    start: float
    remaining: int
    resumed: int
    failed: list[FailedChunk] = field(default_factory=list)
    error: str | None = None
    stages: StageSeconds = field(default_factory=StageSeconds)


class Executor(Protocol):
    """Runs a SlideRun's chunks: plans each slide with run.plan, computes its pending chunks (saving
    each ChunkResult to job.chunk_path), reports each with run.chunk_done and, once a slide's chunks
    are all reported, calls run.finish."""

    def execute(self, run: SlideRun) -> None: ...


class SlideRun:
    """One run over many slides: the steps every executor calls, and the summaries they fill."""

    def __init__(self, predictor: Predictor, inputs: list[SlideInput], out: Path, options: SlideOptions,
                 on_chunk: ChunkCallback | None = None):
        self.predictor, self.inputs, self.out, self.options = predictor, inputs, out, options
        self.on_chunk = on_chunk
        self.results: list[SlideSummary | None] = [None] * len(inputs)
        self.progress = RunProgress(len(inputs), options.progress)

    @contextlib.contextmanager
    def opened(self, index: int) -> Iterator[Slide]:
        """Slide `index` open: a file opened (with options.mpp) and closed after; an open Slide as it is."""
        item = self.inputs[index]
        if not isinstance(item.slide, (str, os.PathLike)):
            yield item.slide
            return
        with open_slide(item.slide, mpp=self.options.mpp) as slide:
            yield slide

    def plan(self, index: int, slide: Slide, start: float) -> SlideState | None:
        """Plan slide `index` (open as `slide`); None when it failed (its summary says why) or has
        no chunk left to compute (then it is finished here)."""
        try:
            job = prepare_slide(self.predictor, slide, self.out, self.options, name=self.inputs[index].name)
        except Exception as err:  # noqa: BLE001 - one slide's failure is reported, the others go on
            self.fail(index, None, err, start)
            return None
        pending = job.pending()
        state = SlideState(index, job, start, len(pending), len(job.chunks) - len(pending))
        if state.resumed:
            log.info("%s: resuming, %d of %d chunks already done", job.slide_name, state.resumed, len(job.chunks))
        self.progress.planned(job, pending)
        return state

    def chunk_done(self, state: SlideState, chunk: Chunk, nuclei: int | None, error: str | None = None,
                   seconds: dict[str, float] | None = None) -> None:
        """A chunk is done.

        state: its slide's SlideState.
        chunk: the chunk.
        nuclei: nuclei saved in its result file (None when it could not be read).
        error: why its region could not be read (None when it was).
        seconds: its busy seconds per stage (StageSeconds.seconds), when timed."""
        state.stages.add(seconds)
        if error is not None:
            box = chunk.level0_box(state.job.grid)
            log.warning("chunk (%d, %d), level-0 box x %d-%d, y %d-%d of %s: %s; skipped", chunk.row, chunk.col,
                        box[0], box[2], box[1], box[3], state.job.slide_name, error)
            state.failed.append(FailedChunk(chunk.row, chunk.col, box, error))
        state.remaining -= 1
        self.progress.chunk(chunk, nuclei)
        if self.on_chunk is not None:
            self.on_chunk(state.job.slide_name, chunk, nuclei)

    def finish(self, state: SlideState, slide: Slide) -> None:
        """Write the slide's outputs from its saved chunks (streamed, as one set), then remove the
        work folder unless keep_chunks or a chunk failed (failed_chunks.json there lists them; a
        re-run retries them)."""
        job = state.job
        try:
            outputs_start = time.perf_counter()
            thumb, thumb_ds = _thumbnail(job, slide)
            nuclei, duplicates = write_outputs(job.targets, _saved_results(job), thumb, thumb_ds, job.tissue,
                                               job.columns, level0_per_working=job.grid.level0_per_working)
            if duplicates:
                log.info("%s: %d nuclei found again by a neighbouring chunk were written once (the earlier "
                         "chunk's outline kept)", job.slide_name, duplicates)
            if state.failed:
                path = write_failed_chunks(job.work / "failed_chunks.json", state.failed)
                log.warning("%d of %d chunks of %s could not be read (listed in %s); the outputs lack them; "
                            "re-run the same command to retry them", len(state.failed), len(job.chunks),
                            job.slide_name, path)
            elif not self.options.keep_chunks:
                shutil.rmtree(job.work, ignore_errors=True)
        except Exception as err:  # noqa: BLE001 - one slide's failure is reported, the others go on
            self.fail(state.index, job, err, state.start)
            return
        end = time.perf_counter()
        grid = job.grid
        self.results[state.index] = SlideSummary(
            slide=job.slide_name, outputs=dict(job.targets), nuclei=nuclei, tissue_mpx=job.tissue_mpx,
            seconds=end - state.start, chunks=len(job.chunks), chunks_resumed=state.resumed, level=grid.level,
            scale=grid.scale, mpp=grid.mpp, failed=list(state.failed), notes=list(job.notes),
            outputs_seconds=end - outputs_start, duplicates_dropped=duplicates,
            stage_seconds=dict(state.stages.seconds))
        self.progress.slide()

    def fail(self, index: int, job: SlideJob | None, err: BaseException, start: float) -> None:
        """Record a slide as failed (logged as a warning; no outputs).

        index: the slide's place in the run.
        job: its job when it was planned (tissue Mpx and chunks are reported), else None.
        err: the exception (its message, and SegzooError.argument, go to the summary).
        start: perf_counter() when the slide started."""
        label = self.inputs[index].label
        message = failure_message(err)
        log.warning("%s", message if label in message else f"{label}: {message}")
        log.debug("%s failed", label, exc_info=err)
        argument = err.argument if isinstance(err, SegzooError) else None
        seconds = time.perf_counter() - start
        if job is None:
            self.results[index] = SlideSummary.failure(label, message, seconds, argument=argument)
        else:
            self.results[index] = SlideSummary.failure(job.slide_name, message, seconds, job.tissue_mpx,
                                                       len(job.chunks), argument=argument)
        self.progress.slide()

    def summaries(self) -> list[SlideSummary]:
        """Every slide's summary, in order; a slide the run did not reach is INTERRUPTED."""
        return [s if s is not None else SlideSummary.failure(item.label, INTERRUPTED)
                for s, item in zip(self.results, self.inputs)]


def _saved_results(job: SlideJob) -> Iterator[ChunkResult]:
    """The job's saved chunk results, in chunk order (row-major)."""
    for chunk in job.chunks:
        path = job.chunk_path(chunk)
        if path.exists():
            yield ChunkResult.load(path)


def _thumbnail(job: SlideJob, slide: Slide) -> tuple[np.ndarray, float]:
    """The outputs' thumbnail (largest side THUMBNAIL_MAX_SIDE) and its level-0 pixels per pixel;
    white when the slide cannot give it (a corrupt region: outlines on white rather than no outputs)."""
    try:  # mpp None: slide_thumbnail's largest-side rule, the finest thumbnail within THUMBNAIL_MAX_SIDE
        return slide_thumbnail(with_mpp(slide, None), max_side=THUMBNAIL_MAX_SIDE)
    except DataError as err:
        log.warning("%s: the thumbnail could not be read (%s); drawing the outlines on white", job.slide_name, err)
        w0, h0 = slide.level_dimensions[0]
        downsample = max(1.0, max(w0, h0) / THUMBNAIL_MAX_SIDE)
        return np.full((math.ceil(h0 / downsample), math.ceil(w0 / downsample), 3), 255, np.uint8), downsample


def dask_executor(client=None, workers: int | None = None) -> Executor:
    """An executor on a dask.distributed cluster: `client` (a distributed.Client or a scheduler
    address 'tcp://host:port') or `workers` (a local cluster of that many single-threaded worker
    processes, started for the run). Needs the extra segzoo[dask] (MissingDependencyError)."""
    if (client is None) == (workers is None):
        raise UsageError("give either a cluster (client=, a distributed.Client or scheduler address) or a number "
                         "of local workers (workers=), not both" if client is not None else
                         "give a cluster (client=) or a number of local workers (workers=)", argument="workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UsageError(f"workers must be a positive number of worker processes, got {workers!r}",
                         argument="workers")
    try:
        from segzoo.slides.run.cluster import DaskExecutor
    except ImportError as err:
        raise MissingDependencyError(f"running on a dask cluster needs dask.distributed ({err}); install it with: "
                                     "pip install 'segzoo[dask]'") from None
    return DaskExecutor(client=client, workers=workers)


def predict_slides(model: Predictor | str | os.PathLike, slides: Iterable[str | os.PathLike | Slide | SlideInput],
                   out: str | os.PathLike, *, options: SlideOptions | None = None, executor: Executor | None = None,
                   on_chunk: ChunkCallback | None = None, precision: str = "fp32",
                   runtime: str = "auto") -> list[SlideSummary]:
    """Predict the nuclei of every slide into the folder `out` (see the module docstring).

    model: a Predictor, or what segzoo.load takes (a zoo name, 'hf://org/repo[@rev]', a folder),
        loaded here with `precision` and `runtime`.
    slides: slide files, folders of them, open Slides or SlideInputs (slide_inputs).
    out: the output folder (made when missing; absolute paths are used, for cluster workers).
    options: SlideOptions (None: the defaults).
    executor: LocalExecutor() when None; dask_executor(client=, workers=) for a cluster, where
        each worker loads the model from predictor.source and reads the slides and writes the
        chunk files at the same absolute paths (a shared file system).
    on_chunk: ChunkCallback after each chunk.
    Returns one SlideSummary per slide, in order: status 'ok', 'partial' (some chunks unreadable)
    or 'error' (no outputs; summary.error says why)."""
    options = options or SlideOptions()
    inputs = slide_inputs(slides)
    out = Path(out).resolve()  # workers may run in other folders: every path they get is absolute
    if not isinstance(model, Predictor):
        model = load(model, precision=precision, runtime=runtime)
    if executor is None:
        from segzoo.slides.run.local import LocalExecutor

        executor = LocalExecutor()
    return_large_allocations()
    run = SlideRun(model, inputs, out, options, on_chunk)
    try:
        executor.execute(run)
    finally:
        run.progress.close()
        if options.summary:
            path = write_summary(out / SUMMARY_FILENAME, run.summaries())
            log.info("run summary: %s", path)
    return run.summaries()
