"""Whole-slide prediction on a dask.distributed cluster, the client side: every chunk of every
slide is a task (segzoo.slides.worker.chunk_task).

Called through segzoo.slides.batch.predict_slides(..., client= | workers=); with
segzoo.slides.worker the only modules of segzoo that import dask and distributed (the extra
`segzoo[dask]`).

The client plans each slide (segzoo.slides.pipeline.prepare_slide: resolution, tissue mask,
chunk plan, work folder and resume check) and submits one task per pending chunk, the chunks
of many slides together so the cluster stays busy, keeping about TASKS_PER_THREAD tasks per
worker thread in flight (slides are planned as the cluster needs work). A task carries the
model *source* string, the slide's path, its Grid and Chunk; the worker loads the model once
per process, runs the chunk and saves its ChunkResult to the slide's work folder, returning
only the nucleus count. When all chunks of a slide are done, a client thread streams the
chunk files into the outputs (finish_slide), so neither the client nor a worker holds a
slide's nuclei at once, and the outputs are byte-identical to a single-process run.

Shared file system: the slides, the out folder and a model given as a folder must be visible
to the client and every worker at the same absolute paths (the client checks that each chunk
file a worker reports is there). Faults: a task that raises is retried (`retries`); a killed
worker's tasks are rescheduled by dask on the others; chunk files are written atomically and
idempotently, so a chunk computed twice is harmless; an interrupted client leaves the finished
chunks, and the same call resumes from them.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import distributed

from segzoo.errors import DataError, SegzooError
from segzoo.slides.batch import RunProgress, failure_message
from segzoo.slides.chunks import Chunk
from segzoo.slides.pipeline import FailedChunk, SlideJob, failed_chunk, finish_slide, prepare_slide
from segzoo.slides.worker import ChunkOutcome, ModelKey, chunk_task, peak_rss

log = logging.getLogger(__name__)

TASKS_PER_THREAD = 2     # tasks kept in flight per worker thread
MIN_IN_FLIGHT = 4
NTHREADS_REFRESH_S = 5.0  # how often the client re-reads the cluster's size (it may scale)


def worker_peak_rss(client: distributed.Client) -> dict[str, int]:
    """Peak resident memory (bytes) of each worker process so far: worker address -> bytes."""
    return client.run(peak_rss)


@contextlib.contextmanager
def local_cluster(workers: int, threads_per_worker: int = 1) -> Iterator[distributed.Client]:
    """A Client of a LocalCluster of `workers` worker processes (its dashboard on a free port), closed on exit.
    The workers start with this process's environment (HF_HUB_OFFLINE, HF_HOME, ...)."""
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                                       dashboard_address=":0", silence_logs=logging.WARNING)
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def _connect(client, workers: int | None) -> Iterator[distributed.Client]:
    if workers is not None:
        with local_cluster(workers) as own:
            yield own
    elif isinstance(client, str):
        try:
            own = distributed.Client(client, timeout="30s")
        except (OSError, TimeoutError) as err:
            raise SegzooError(f"cannot connect to the dask scheduler at {client} ({err})") from None
        with own:
            yield own
    else:
        yield client


@dataclass
class _Slide:
    """A slide in progress on the cluster."""

    index: int
    path: Path
    job: SlideJob
    start: float
    remaining: int
    resumed: int
    failed: list[FailedChunk] = field(default_factory=list)
    futures: set = field(default_factory=set)
    error: str | None = None


def predict_on_cluster(predictor, model: ModelKey, files: list[Path], out: Path, options: dict, results: list,
                       *, client=None, workers: int | None = None, keep_chunks: bool = False, progress: bool = True,
                       on_chunk=None, retries: int = 2) -> None:
    """Predict `files` on a cluster, filling results[i] with the SlideSummary of files[i]
    (see the module docstring and segzoo.slides.batch.predict_slides for the arguments)."""
    with _connect(client, workers) as connected:
        log.info("dask cluster: %s, %d worker threads", connected.scheduler.address,
                 sum(connected.nthreads().values()))
        _Run(connected, predictor, model, files, out, options, results, keep_chunks, progress, on_chunk, retries).run()


class _Run:
    def __init__(self, client, predictor, model: ModelKey, files, out, options, results, keep_chunks, progress,
                 on_chunk, retries):
        self.client, self.predictor, self.model = client, predictor, model
        self.files, self.out, self.options, self.results = files, out, options, results
        self.keep_chunks, self.on_chunk, self.retries = keep_chunks, on_chunk, retries
        self.token = uuid.uuid4().hex[:10]
        self.bar = RunProgress(len(files), progress)
        self.finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segzoo-finish")
        self.finishing: list = []
        self.in_flight: dict = {}  # dask Future -> (_Slide, Chunk)
        self.window, self.window_at = MIN_IN_FLIGHT, -NTHREADS_REFRESH_S
        self.host_threads: dict[str, int] = {}

    # -- planning ---------------------------------------------------------------------------------

    def _plan(self, index: int, path: Path) -> _Slide | None:
        from segzoo.slides.reader import open_slide

        start = time.perf_counter()
        job = None
        try:
            slide = open_slide(path, mpp=self.options["mpp"])
            try:
                job = prepare_slide(self.predictor, slide, self.out, **self.options)
            finally:
                slide.close()
        except Exception as err:  # noqa: BLE001 - one slide's failure is reported, the others go on
            self._fail(index, path, job, err, start)
            return None
        pending = job.pending()
        state = _Slide(index, path, job, start, len(pending), len(job.chunks) - len(pending))
        if state.resumed:
            log.info("%s: resuming, %d of %d chunks already done", job.slide_name, state.resumed, len(job.chunks))
        self.bar.planned(job)
        return state

    def _work(self) -> Iterator[tuple[_Slide, Chunk]]:
        """(slide, chunk) pairs to submit, planning each slide when its turn comes."""
        for index, path in enumerate(self.files):
            state = self._plan(index, path)
            if state is None:
                continue
            if state.remaining == 0:
                self._finish(state)
                continue
            for chunk in state.job.pending():
                if state.error is not None:
                    break
                yield state, chunk

    def _window(self) -> int:
        """Tasks to keep in flight; refreshes host_threads (worker -> task threads on its host)."""
        now = time.monotonic()
        if now - self.window_at >= NTHREADS_REFRESH_S:
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
            per_host: dict[str, int] = {}
            for info in workers.values():
                per_host[info["host"]] = per_host.get(info["host"], 0) + int(info["nthreads"])
            self.host_threads = {address: per_host[info["host"]] for address, info in workers.items()}
            threads = sum(int(info["nthreads"]) for info in workers.values())
            self.window, self.window_at = max(TASKS_PER_THREAD * threads, MIN_IN_FLIGHT), now
        return self.window

    def _submit(self, work: Iterator, pending: distributed.as_completed) -> None:
        while len(self.in_flight) < self._window():
            item = next(work, None)
            if item is None:
                return
            state, chunk = item
            job = state.job
            future = self.client.submit(
                chunk_task, self.model, job.manifest["model"]["fingerprint"], self.host_threads,
                str(Path(job.source).resolve()),
                job.grid, chunk, job.tta, str(job.chunk_path(chunk)),
                key=f"segzoo-chunk-{self.token}-{state.index}-{chunk.row}-{chunk.col}", retries=self.retries,
                priority=-state.index, pure=False)
            self.in_flight[future] = (state, chunk)
            state.futures.add(future)
            pending.add(future)

    # -- results ----------------------------------------------------------------------------------

    def _done(self, future) -> None:
        state, chunk = self.in_flight.pop(future)
        state.futures.discard(future)
        if state.error is not None or future.status == "cancelled":
            return
        if future.status == "error":
            err = future.exception()
            self._error(state, f"chunk ({chunk.row}, {chunk.col}) failed on the cluster: {failure_message(err)}")
            return
        outcome: ChunkOutcome = future.result()
        future.release()
        job = state.job
        if outcome.error is not None:
            state.failed.append(failed_chunk(job, chunk, DataError(outcome.error)))
        elif not job.chunk_path(chunk).exists():
            self._error(state, f"worker {outcome.worker} wrote {job.chunk_path(chunk)}, which is not visible here: "
                               "the out folder must be on a file system shared by the client and every worker")
            return
        state.remaining -= 1
        self.bar.chunk(chunk, outcome.nuclei)
        if self.on_chunk is not None:
            self.on_chunk(job.slide_name, chunk, outcome.nuclei)
        if state.remaining == 0:
            self._finish(state)

    def _error(self, state: _Slide, message: str) -> None:
        state.error = message
        if state.futures:
            self.client.cancel(list(state.futures))
        self._fail(state.index, state.path, state.job, SegzooError(message), state.start)

    def _fail(self, index: int, path: Path, job: SlideJob | None, err: BaseException, start: float) -> None:
        from segzoo.slides.batch import _failed

        self.results[index] = _failed(path, job, err, time.perf_counter() - start)
        self.bar.slide()

    def _finish(self, state: _Slide) -> None:
        self.finishing.append(self.finisher.submit(self._write, state))

    def _write(self, state: _Slide) -> None:
        """Write a slide's outputs from its chunk files (in the finisher thread)."""
        from segzoo.slides.reader import open_slide

        job = state.job
        try:
            slide = open_slide(state.path, mpp=self.options["mpp"])
            try:
                self.results[state.index] = finish_slide(
                    job, slide, state.failed, keep_chunks=self.keep_chunks, chunks_resumed=state.resumed,
                    seconds=time.perf_counter() - state.start)
            finally:
                slide.close()
        except Exception as err:  # noqa: BLE001 - one slide's failure is reported, the others go on
            self._fail(state.index, state.path, job, err, state.start)
            return
        self.bar.slide()

    def run(self) -> None:
        pending = distributed.as_completed()
        work = self._work()
        try:
            self._submit(work, pending)
            for future in pending:
                self._done(future)
                self._submit(work, pending)
            for finishing in self.finishing:
                finishing.result()
        except BaseException:
            if self.in_flight:
                self.client.cancel(list(self.in_flight))
            raise
        finally:
            self.finisher.shutdown(wait=True, cancel_futures=True)
            self.bar.close()
