"""Whole-slide prediction: plan the chunks, run them with reading, inference and
post-processing overlapped, resume from finished chunks, and stream the outputs.

`predict_slide(predictor, source, out)` does it all; it is three steps a distributed runner
can split: `prepare_slide` (resolution, tissue, chunk plan, work folder and resume checks:
a SlideJob), `run_chunk` for each pending chunk (segzoo.slides.chunks; each result saved to
`job.chunk_path(chunk)`, from any process), and `finish_slide` (outputs, clean-up, summary).

Planning (working resolution, tissue, chunks) is segzoo.slides.planning's, the work
folder's manifest segzoo.slides.manifest's; their public names are importable from here too.

Work folder `<out>/<stem>.segzoo-chunks/`: `manifest.json` (the job's parameters: model
config and an output fingerprint, slide identity, resolution, chunk size, halo, tissue
settings) and one `chunk_<row>_<col>.npz` per finished chunk. Re-running the same job skips
finished chunks and gives outputs byte-identical to an uninterrupted run; a job with other
parameters is refused (delete the folder or pass restart=True). The folder is removed once
the outputs are written, unless keep_chunks=True or some chunk failed (a re-run retries those).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable

import numpy as np

from segzoo.errors import DataError
from segzoo.io.files import atomic_write_text
from segzoo.slides.chunks import Chunk, ChunkResult, chunk_nuclei, predict_chunk, read_chunk
from segzoo.slides.memory import return_large_allocations
from segzoo.slides.manifest import MANIFEST, fingerprints_differ, model_fingerprint
from segzoo.slides.outputs import THUMBNAIL_MAX_SIDE, write_outputs
from segzoo.slides.planning import (
    DEFAULT_HALO,
    FailedChunk,
    SlideJob,
    SlideSummary,
    failed_chunk,
    output_stem,
    prepare_slide,
    with_mpp,
    working_grid,
)

__all__ = [
    "DEFAULT_HALO",
    "MANIFEST",
    "FailedChunk",
    "SlideJob",
    "SlideSummary",
    "failed_chunk",
    "fingerprints_differ",
    "finish_slide",
    "model_fingerprint",
    "output_stem",
    "predict_slide",
    "prepare_slide",
    "process_chunks",
    "working_grid",
]

log = logging.getLogger(__name__)

QUEUE_SIZE = 2  # chunks waiting between stages (bounds memory: about 2 x (image + probabilities))
_DONE = object()
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
                chunk, image, outputs, error = item
                result = None
                if error is not None:
                    failed.append(failed_chunk(job, chunk, error))
                else:
                    result = chunk_nuclei(image, outputs, chunk, job.grid, predictor.config)
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
            outputs = None if error is not None else predict_chunk(predictor, image, tta=job.tta)
            if not put(post_queue, (chunk, image, outputs, error)):
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
        thumb, thumb_ds = slide_thumbnail(with_mpp(slide, None), max_side=THUMBNAIL_MAX_SIDE)
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
    return_large_allocations()
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
