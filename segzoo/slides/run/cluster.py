"""The Dask executor: whole-slide prediction on a dask.distributed cluster, the client side;
every chunk of every slide is a task (segzoo.slides.run.worker.chunk_task).

Made by segzoo.slides.run.orchestrator.dask_executor(client= | workers=); with
segzoo.slides.run.worker the only modules of segzoo that import dask and distributed (the extra
`segzoo[dask]`).

The client plans each slide (SlideRun.plan) and submits one task per pending chunk, the chunks
of many slides together so the cluster stays busy, keeping about TASKS_PER_THREAD tasks per
worker thread in flight (slides are planned as the cluster needs work). A task carries the
model's ModelSource, the slide's path, its Grid and Chunk; the worker loads the model once per
process, runs the chunk and saves its ChunkResult to the slide's work folder, returning only the
nucleus count. When all chunks of a slide are done, a client thread writes the outputs from the
chunk files (SlideRun.finish), so neither the client nor a worker holds a slide's nuclei at once,
and the outputs are byte-identical to a local run.

Shared file system: the slides, the out folder and a model given as a folder must be visible
to the client and every worker at the same absolute paths (the client checks that each chunk
file a worker reports is there). Faults: a task that raises is retried (options.retries); a
killed worker's tasks are rescheduled by dask on the others; chunk files are written atomically
and idempotently, so a chunk computed twice is harmless; an interrupted client leaves the
finished chunks, and the same call resumes from them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import distributed

from segzoo.errors import RunError, UsageError
from segzoo.slides.plan.chunks import Chunk
from segzoo.slides.results.summary import failure_message
from segzoo.slides.run.orchestrator import SlideRun, SlideState
from segzoo.slides.run.worker import ChunkOutcome, chunk_task, peak_rss

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
            raise RunError(f"cannot connect to the dask scheduler at {client} ({err})") from None
        with own:
            yield own
    else:
        yield client


class DaskExecutor:
    """Runs a SlideRun's chunks as tasks on a cluster: `client` (a distributed.Client or a scheduler
    address) or `workers` (a LocalCluster of that many processes, started for the run)."""

    def __init__(self, client=None, workers: int | None = None):
        self.client, self.workers = client, workers

    def execute(self, run: SlideRun) -> None:
        model = run.predictor.source
        if model is None:
            raise UsageError("a Predictor built by hand cannot be sent to Dask workers; build it with "
                             "segzoo.load(...) so each worker can load the same model", argument="model")
        in_memory = [item.label for item in run.inputs if item.path is None
                     or not isinstance(item.slide, (str, os.PathLike))]
        if in_memory:
            raise UsageError(f"{in_memory[0]}: an open slide cannot be sent to Dask workers; give its file path",
                             argument="slides")
        with _connect(self.client, self.workers) as connected:
            log.info("dask cluster: %s, %d worker threads", connected.scheduler.address,
                     sum(connected.nthreads().values()))
            _ClusterRun(connected, run).run()


class _ClusterRun:
    """One SlideRun on a connected cluster: plans slides as the cluster needs work, submits their
    chunks, reports results, and writes each slide's outputs in a finisher thread."""

    def __init__(self, client: distributed.Client, run: SlideRun):
        self.client, self.run_ = client, run
        self.model = run.predictor.source
        self.fingerprint = None
        self.token = uuid.uuid4().hex[:10]
        self.finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segzoo-finish")
        self.finishing: list = []
        self.in_flight: dict = {}  # dask Future -> (SlideState, Chunk)
        self.futures: dict[int, set] = {}  # slide index -> its futures in flight
        self.window, self.window_at = MIN_IN_FLIGHT, -NTHREADS_REFRESH_S
        self.host_threads: dict[str, int] = {}

    def _plan(self, index: int) -> SlideState | None:
        run = self.run_
        start = time.perf_counter()
        try:
            with run.opened(index) as slide:
                state = run.plan(index, slide, start)
        except Exception as err:  # noqa: BLE001 - one slide's failure is reported, the others go on
            run.fail(index, None, err, start)
            return None
        if state is not None:
            self.futures[index] = set()
        return state

    def _work(self) -> Iterator[tuple[SlideState, Chunk]]:
        """(slide, chunk) pairs to submit, planning each slide when its turn comes."""
        for index in range(len(self.run_.inputs)):
            state = self._plan(index)
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
                str(Path(job.source).resolve()), job.grid, chunk, job.tta, str(job.chunk_path(chunk)),
                key=f"segzoo-chunk-{self.token}-{state.index}-{chunk.row}-{chunk.col}",
                retries=self.run_.options.retries, priority=-state.index, pure=False)
            self.in_flight[future] = (state, chunk)
            self.futures[state.index].add(future)
            pending.add(future)

    def _done(self, future) -> None:
        state, chunk = self.in_flight.pop(future)
        self.futures[state.index].discard(future)
        if state.error is not None or future.status == "cancelled":
            return
        if future.status == "error":
            err = future.exception()
            self._error(state, f"chunk ({chunk.row}, {chunk.col}) failed on the cluster: {failure_message(err)}")
            return
        outcome: ChunkOutcome = future.result()
        future.release()
        job = state.job
        if outcome.error is None and not job.chunk_path(chunk).exists():
            self._error(state, f"worker {outcome.worker} wrote {job.chunk_path(chunk)}, which is not visible here: "
                               "the out folder must be on a file system shared by the client and every worker")
            return
        self.run_.chunk_done(state, chunk, outcome.nuclei, outcome.error, outcome.stages)
        if state.remaining == 0:
            self._finish(state)

    def _error(self, state: SlideState, message: str) -> None:
        state.error = message
        if self.futures[state.index]:
            self.client.cancel(list(self.futures[state.index]))
        self.run_.fail(state.index, state.job, RunError(message), state.start)

    def _finish(self, state: SlideState) -> None:
        self.finishing.append(self.finisher.submit(self._write, state))

    def _write(self, state: SlideState) -> None:
        """Write a slide's outputs from its chunk files (in the finisher thread)."""
        try:
            with self.run_.opened(state.index) as slide:
                self.run_.finish(state, slide)
        except Exception as err:  # noqa: BLE001 - one slide's failure is reported, the others go on
            self.run_.fail(state.index, state.job, err, state.start)

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
