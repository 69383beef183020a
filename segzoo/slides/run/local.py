"""The local executor: slides one after another in this process, each slide's chunks through
three overlapped stages (read, network, post-processing). Imports neither dask nor distributed."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from segzoo.errors import DataError
from segzoo.predict.predictor import Predictor
from segzoo.slides.plan.chunks import Chunk
from segzoo.slides.plan.job import SlideJob
from segzoo.slides.readers.base import Slide
from segzoo.slides.results.summary import StageSeconds
from segzoo.slides.run.chunk_inference import chunk_nuclei, predict_chunk
from segzoo.slides.run.chunk_reading import read_chunk
from segzoo.slides.run.orchestrator import SlideRun

QUEUE_SIZE = 2  # chunks waiting between stages (bounds memory: about 2 x (image + probabilities))
_DONE = object()


@dataclass
class _ChunkWork:
    """One chunk on its way through the stages: its image (None when unreadable: `error`), the
    network's outputs once predicted, and its busy seconds per stage."""

    chunk: Chunk
    image: np.ndarray | None
    error: DataError | None = None
    outputs: np.ndarray | None = None
    clock: StageSeconds = field(default_factory=StageSeconds)


ChunkReport = Callable[[Chunk, "int | None", "str | None", "dict[str, float]"], None]
"""done(chunk, nuclei or None, error or None, busy seconds per stage) after each chunk is saved or
found unreadable."""


class LocalExecutor:
    """Runs a SlideRun here: each slide opened once, planned, its chunks run by process_chunks,
    its outputs written; a slide that fails is recorded and the next one goes on."""

    def execute(self, run: SlideRun) -> None:
        for index in range(len(run.inputs)):
            start = time.perf_counter()
            try:
                with run.opened(index) as slide:
                    state = run.plan(index, slide, start)
                    if state is None:
                        continue
                    try:
                        process_chunks(state.job, run.predictor, slide,
                                       lambda chunk, nuclei, error, seconds, state=state: run.chunk_done(
                                           state, chunk, nuclei, error, seconds))
                    except Exception as err:  # noqa: BLE001 - one slide's failure is reported, the others go on
                        run.fail(index, state.job, err, start)
                        continue
                    run.finish(state, slide)
            except Exception as err:  # noqa: BLE001 - opening failed: reported, the others go on
                run.fail(index, None, err, start)


def process_chunks(job: SlideJob, predictor: Predictor, slide: Slide, done: ChunkReport) -> None:
    """Run the job's pending chunks, saving each result to job.chunk_path(chunk) and then calling
    done(chunk, nuclei, None, seconds), or done(chunk, None, error, seconds) for a chunk whose read
    raised DataError (a corrupt region); seconds: the chunk's busy seconds per stage (StageSeconds).

    Three stages overlap: a reader thread reads chunk images ahead, the calling thread runs the
    network, a post-processing thread finds, measures and saves each chunk's nuclei
    (onnxruntime, scipy and scikit-image release the GIL). Queues of QUEUE_SIZE chunks between
    the stages bound memory. An exception from `done` (or any stage) stops the run and
    propagates, leaving the chunks saved so far."""
    pending = job.pending()
    stop = threading.Event()
    errors: list[BaseException] = []
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
                work = _ChunkWork(chunk, None)
                try:
                    with work.clock.timed("read"):
                        work.image = read_chunk(slide, job.grid, chunk)
                except DataError as err:
                    work.error = err
                if not put(read_queue, work):
                    return
            put(read_queue, _DONE)
        except BaseException as err:  # noqa: BLE001  (re-raised in the calling thread)
            errors.append(err)
            stop.set()

    def post() -> None:
        try:
            while (work := get(post_queue)) is not _DONE:
                if work.error is not None:
                    done(work.chunk, None, str(work.error), work.clock.seconds)
                    continue
                with work.clock.timed("post"):
                    result = chunk_nuclei(work.image, work.outputs, work.chunk, job.grid, predictor.config)
                    result.save(job.chunk_path(work.chunk))
                done(work.chunk, result.count, None, work.clock.seconds)
        except BaseException as err:  # noqa: BLE001  (re-raised in the calling thread)
            errors.append(err)
            stop.set()

    threads = [threading.Thread(target=reader, name="segzoo-slide-reader", daemon=True),
               threading.Thread(target=post, name="segzoo-slide-post", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while (work := get(read_queue)) is not _DONE:
            if work.error is None:
                with work.clock.timed("network"):
                    work.outputs = predict_chunk(predictor, work.image, tta=job.tta)
            if not put(post_queue, work):
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
    if errors:
        raise errors[0]
