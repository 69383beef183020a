"""Predicting many slides in one run, in this process or on a dask.distributed cluster.

`predict_slides(model, slides, out)` predicts every slide of a list (slide files, or folders
whose slide files are taken in name order) into one output folder, and writes the run's
summary table `<out>/segzoo_summary.csv` (one row per slide: slide, status, nuclei, tissue
Mpx, seconds, error, ...). A slide that fails (unreadable file, no resolution, outputs
already present, a failed task) is reported there with its error, and the others go on.

Without `client` or `workers` the slides run here one after another through
segzoo.slides.pipeline (prepare_slide, process_chunks, finish_slide), and neither dask nor
distributed is imported. With either, the chunks of all slides are tasks on a cluster
(segzoo.slides.distributed); the outputs are byte-identical to this process's.

Interrupted (Ctrl-C, a killed client), the same call resumes each slide from the chunk
files already in its work folder `<out>/<stem>.segzoo-chunks/` (see segzoo.slides.pipeline).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from segzoo.errors import DataError, SegzooError
from segzoo.io.files import atomic_write_text
from segzoo.slides.chunks import Chunk
from segzoo.slides.pipeline import (
    DEFAULT_HALO,
    SlideJob,
    SlideSummary,
    finish_slide,
    output_stem,
    prepare_slide,
    process_chunks,
)
from segzoo.slides.reader import SLIDE_SUFFIXES

log = logging.getLogger(__name__)

SUMMARY_FILENAME = "segzoo_summary.csv"
SUMMARY_COLUMNS = ("slide", "status", "nuclei", "tissue_mpx", "seconds", "chunks", "chunks_resumed",
                   "failed_chunks", "error", "geojson")
INTERRUPTED = "not finished: the run stopped before this slide was done; run the same command again to resume"

ChunkCallback = Callable[[str, Chunk, "int | None"], None]
"""on_chunk(slide, chunk, nuclei): called after each chunk, nuclei None when the chunk could
not be read; an exception from it stops the run (finished chunks stay for a resume)."""


def slide_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The slide files of `paths`, in order: a file as it is, a folder's files with a slide
    suffix (segzoo.slides.reader.SLIDE_SUFFIXES) in name order, hidden files skipped, a file
    listed twice kept once. DataError for a path that does not exist or a folder without slide
    files."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SLIDE_SUFFIXES)
            if not found:
                raise DataError(f"{path}: no slide files in the folder (suffixes {', '.join(SLIDE_SUFFIXES)})")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    unique: dict[Path, Path] = {}
    for path in files:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def check_stems(files: list[Path]) -> None:
    """SegzooError when two slides would write the same output files (same stem, one out folder)."""
    seen: dict[str, Path] = {}
    for path in files:
        stem = output_stem(path)
        if stem in seen:
            raise SegzooError(f"{seen[stem]} and {path} would both write {stem}.geojson (and the rest of "
                              "the outputs) in one folder; predict them into separate --out folders")
        seen[stem] = path


def write_summary(path: str | os.PathLike, summaries: Iterable[SlideSummary]) -> Path:
    """Write the run's table (SUMMARY_COLUMNS, one row per slide) as CSV, atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(SUMMARY_COLUMNS)
    for s in summaries:
        failed = "; ".join(f"({f.row}, {f.col}) level-0 x {f.box[0]}-{f.box[2]} y {f.box[1]}-{f.box[3]}: {f.error}"
                           for f in s.failed)
        writer.writerow([s.slide, s.status, s.nuclei, f"{s.tissue_mpx:.3f}", f"{s.seconds:.2f}", s.chunks,
                         s.chunks_resumed, failed, s.error or "", s.outputs.get("geojson", "")])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue())
    return path


def failure_message(err: BaseException) -> str:
    """One line for a slide's error: a SegzooError's message, otherwise the type and message."""
    text = str(err) if isinstance(err, SegzooError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split()) or type(err).__name__


class RunProgress:
    """One progress bar over all slides of a run: tissue Mpx done / planned. Slides are planned
    as the run reaches them, so the total grows until the last slide is planned."""

    def __init__(self, slides: int, enabled: bool = True):
        from tqdm import tqdm

        self.slides, self.done, self.nuclei = slides, 0, 0
        self.bar = tqdm(total=0, unit="Mpx", unit_scale=1e-6, desc="slides", disable=not enabled,
                        dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} tissue Mpx "
                        "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"{self.done}/{self.slides} slides, {self.nuclei} nuclei", refresh=False)

    def planned(self, job: SlideJob) -> None:
        """A slide was planned: its tissue joins the total, its finished chunks count as done."""
        self.bar.total += sum(c.core_pixels for c in job.chunks)
        done = sum(c.core_pixels for c in job.chunks) - sum(c.core_pixels for c in job.pending())
        self.bar.update(done)
        self.bar.refresh()

    def chunk(self, chunk: Chunk, nuclei: int | None) -> None:
        self.nuclei += nuclei or 0
        self._postfix()
        self.bar.update(chunk.core_pixels)

    def slide(self) -> None:
        self.done += 1
        self._postfix()
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def predict_slides(model: str, slides: Iterable[str | os.PathLike], out: str | os.PathLike, *, client=None,
                   workers: int | None = None, precision: str = "fp32", runtime: str = "auto",
                   mpp: float | None = None, chunk_size: int | None = None, halo: int = DEFAULT_HALO,
                   tissue: bool = True, overwrite: bool = False, restart: bool = False, keep_chunks: bool = False,
                   tta: bool = False, progress: bool = True, predictor=None, on_chunk: ChunkCallback | None = None,
                   retries: int = 2, summary: bool = True) -> list[SlideSummary]:
    """Predict the nuclei of every slide in `slides` into the folder `out`; one SlideSummary per
    slide file, in order (see the module docstring).

    model: what segzoo.load takes (a zoo name, 'hf://org/repo[@rev]' or a model folder), loaded
    with `precision` and `runtime`; `predictor` (already loaded from it) saves loading it here.
    client: a distributed.Client or a scheduler address ('tcp://host:port'); workers: start a
    local cluster of that many worker processes (one thread each) for the run. With either,
    each worker loads `model` itself (once), so a zoo name, hf:// URI or a folder on a shared
    file system; `out` and the slides must be on a file system every worker sees at the same
    paths (the workers read the slides and write the chunk files there). Slide options
    (mpp, chunk_size, halo, tissue, overwrite, restart, keep_chunks, tta) are predict_slide's,
    the same for every slide. retries: times a failed cluster task is run again (a killed
    worker's tasks are rescheduled by dask regardless). summary: write
    `<out>/segzoo_summary.csv` (also when the run is interrupted: unfinished slides are listed
    with status 'error'). Returns the summaries; summary.status is 'ok', 'partial' (some chunks
    unreadable) or 'error' (no outputs; summary.error says why)."""
    files = slide_files(slides)
    check_stems(files)
    out = Path(out).resolve()  # workers may run in other folders: every path they get is absolute
    options = {"mpp": mpp, "chunk_size": chunk_size, "halo": halo, "tissue": tissue, "overwrite": overwrite,
               "restart": restart, "tta": tta}
    if client is not None and workers is not None:
        raise SegzooError("give either a cluster (client / --dask ADDRESS) or a number of local workers, not both")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise SegzooError(f"workers must be a positive number of worker processes, got {workers!r}")
    if predictor is None:
        import segzoo

        predictor = segzoo.load(model, precision=precision, runtime=runtime)
    results: list[SlideSummary | None] = [None] * len(files)
    try:
        if client is None and workers is None:
            _predict_here(predictor, files, out, options, results, keep_chunks, progress, on_chunk)
        else:
            try:
                from segzoo.slides import distributed
            except ImportError as err:
                raise SegzooError(f"running on a dask cluster needs dask.distributed ({err}); install it with: "
                                  "pip install 'segzoo[dask]'") from None
            distributed.predict_on_cluster(predictor, (model, precision, runtime), files, out, options, results,
                                           client=client, workers=workers, keep_chunks=keep_chunks,
                                           progress=progress, on_chunk=on_chunk, retries=retries)
    finally:
        if summary:
            rows = [s if s is not None else SlideSummary.failure(str(f), INTERRUPTED) for s, f in zip(results, files)]
            path = write_summary(out / SUMMARY_FILENAME, rows)
            log.info("run summary: %s", path)
    return [s for s in results if s is not None]


def _predict_here(predictor, files: list[Path], out: Path, options: dict, results: list, keep_chunks: bool,
                  progress: bool, on_chunk: ChunkCallback | None) -> None:
    """The single-process run: one slide after another, each with its stages overlapped."""
    from segzoo.slides.reader import open_slide

    bar = RunProgress(len(files), progress)
    try:
        for index, path in enumerate(files):
            start = time.perf_counter()
            job = None
            try:
                slide = open_slide(path, mpp=options["mpp"])
                try:
                    job = prepare_slide(predictor, slide, out, **options)
                    bar.planned(job)
                    resumed = len(job.chunks) - len(job.pending())

                    def chunk_done(chunk, result, name=job.slide_name):
                        nuclei = None if result is None else result.count
                        bar.chunk(chunk, nuclei)
                        if on_chunk is not None:
                            on_chunk(name, chunk, nuclei)

                    failed, _ = process_chunks(job, predictor, slide, progress=False, on_chunk=chunk_done)
                    results[index] = finish_slide(job, slide, failed, keep_chunks=keep_chunks,
                                                  chunks_resumed=resumed, seconds=time.perf_counter() - start)
                finally:
                    slide.close()
            except Exception as err:  # noqa: BLE001 - one slide's failure is reported, the others go on
                results[index] = _failed(path, job, err, time.perf_counter() - start)
            bar.slide()
    finally:
        bar.close()


def _failed(path: Path, job: SlideJob | None, err: BaseException, seconds: float) -> SlideSummary:
    message = failure_message(err)
    log.warning("%s", message if str(path) in message else f"{path}: {message}")
    log.debug("%s failed", path, exc_info=err)
    if job is None:
        return SlideSummary.failure(str(path), message, seconds)
    return SlideSummary.failure(job.slide_name, message, seconds, job.tissue_mpx, len(job.chunks))
