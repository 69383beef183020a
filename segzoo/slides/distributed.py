"""Whole-slide prediction on a dask.distributed cluster: every chunk of every slide is a task.

Called through segzoo.slides.batch.predict_slides(..., client= | workers=); the only module of
segzoo that imports dask and distributed (the extra `segzoo[dask]`).

The client plans each slide (segzoo.slides.pipeline.prepare_slide: resolution, tissue mask,
chunk plan, work folder and resume check) and submits one task per pending chunk, the chunks
of many slides together so the cluster stays busy, keeping about two tasks per worker thread
in flight (slides are planned as the cluster needs work). A task carries plain data: the
model *source* (zoo name, hf:// URI or folder path, with precision and runtime), the slide's
path, the Grid and Chunk. On the worker it loads the model once per process (a cache keyed
by source, precision and runtime; its outputs are checked against the client's model
fingerprint) and keeps the slides it reads open (a small cache), runs
segzoo.slides.chunks.run_chunk and saves the ChunkResult to the slide's work folder
atomically; it returns only the nucleus count (or the unreadable region's error). When all
chunks of a slide are done, a client thread streams the chunk files into the outputs
(finish_slide), so neither the client nor a worker holds a slide's nuclei at once, and the
outputs are byte-identical to a single-process run.

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
import os
import resource
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import distributed

from segzoo.errors import DataError, SegzooError
from segzoo.slides.batch import RunProgress, failure_message
from segzoo.slides.chunks import Chunk, Grid, run_chunk
from segzoo.slides.pipeline import FailedChunk, SlideJob, failed_chunk, finish_slide, prepare_slide

log = logging.getLogger(__name__)

ModelKey = tuple[str, str, str]  # (source, precision, runtime): what a worker passes to segzoo.load
TASKS_PER_THREAD = 2     # tasks kept in flight per worker thread
MIN_IN_FLIGHT = 4
NTHREADS_REFRESH_S = 5.0  # how often the client re-reads the cluster's size (it may scale)
OPEN_SLIDES = 4           # slides kept open per worker process


# ---------------------------------------------------------------------------------------------
# worker side


@dataclass(frozen=True)
class ChunkOutcome:
    """What a chunk task returns: nuclei saved (None when the region could not be read, then
    `error` says why), the task's seconds and the worker's address."""

    nuclei: int | None
    error: str | None
    seconds: float
    worker: str


_models: dict[tuple[ModelKey, int | None], tuple[object, list[float]]] = {}
_models_lock = threading.Lock()


def _worker_address() -> str:
    try:
        return distributed.get_worker().address
    except ValueError:  # not inside a worker (a test calling the task directly)
        return f"pid {os.getpid()}"


def onnx_threads(host_threads: dict[str, int] | None) -> int | None:
    """Intra-op threads for this worker's onnxruntime sessions: the host's CPUs shared among the
    task threads of the workers on it (host_threads: worker address -> task threads of its
    host), so N single-threaded workers on N cores do not run N x N threads. None (the
    onnxruntime default, every core) outside a worker or for a worker the client did not list."""
    from dask.system import CPU_COUNT

    address = _worker_address()
    if not host_threads or address not in host_threads:
        return None
    return max(1, CPU_COUNT // max(host_threads[address], 1))


def _set_onnx_threads(predictor, threads: int) -> None:
    """Rebuild an onnxruntime predictor's session with `threads` intra-op threads (the same
    model bytes and options); other runtimes are left as they are."""
    session = getattr(predictor.run_batch, "session", None)
    data = getattr(session, "_model_bytes", None)  # onnxruntime keeps the bytes a session was built from
    if predictor.runtime != "onnx" or not isinstance(data, bytes):
        log.debug("%r: cannot set its onnxruntime threads; using its own", predictor)
        return
    import numpy as np
    import onnxruntime as ort

    options = session.get_session_options()
    options.intra_op_num_threads = threads
    rebuilt = ort.InferenceSession(data, sess_options=options, providers=session.get_providers())
    input_name, output_name = rebuilt.get_inputs()[0].name, rebuilt.get_outputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return rebuilt.run([output_name], {input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    run.session = rebuilt  # type: ignore[attr-defined]
    predictor.run_batch = run


def worker_predictor(model: ModelKey, fingerprint: list[float] | None = None,
                     host_threads: dict[str, int] | None = None):
    """This process's Predictor for `model`, loaded on first use and kept (one per key), its
    onnxruntime sessions with onnx_threads(host_threads) threads. SegzooError when its outputs
    differ from `fingerprint` (the client's model_fingerprint): the worker sees other model
    files than the client."""
    from segzoo.slides.pipeline import fingerprints_differ, model_fingerprint

    threads = onnx_threads(host_threads)
    with _models_lock:
        entry = _models.get((model, threads))
        if entry is None:
            import segzoo

            source, precision, runtime = model
            start = time.perf_counter()
            predictor = segzoo.load(source, precision=precision, runtime=runtime)
            if threads is not None:
                _set_onnx_threads(predictor, threads)
            entry = _models[model, threads] = (predictor, model_fingerprint(predictor))
            log.info("worker %s loaded %s (%s, %s) in %.1f s", _worker_address(), source, precision, runtime,
                     time.perf_counter() - start)
    predictor, own = entry
    if fingerprint is not None and fingerprints_differ(own, fingerprint):
        raise SegzooError(f"worker {_worker_address()}: the model {model[0]!r} ({model[1]}, {model[2]}) loaded there "
                          "gives other outputs than the client's; every worker must load the same model files")
    return predictor


class _OpenSlides:
    """Slides open in this process, by path: the most recently used OPEN_SLIDES stay open
    (a slide in use by a task is never closed under it)."""

    def __init__(self, size: int = OPEN_SLIDES):
        self.size = size
        self.lock = threading.Lock()
        self.slides: OrderedDict[str, list] = OrderedDict()  # path -> [slide, tasks using it]

    @contextlib.contextmanager
    def use(self, path: str):
        from segzoo.slides.reader import open_slide

        with self.lock:
            entry = self.slides.get(path)
            if entry is None:
                entry = self.slides[path] = [open_slide(path), 0]
            self.slides.move_to_end(path)
            entry[1] += 1
        try:
            yield entry[0]
        finally:
            with self.lock:
                entry[1] -= 1
                for key in [k for k, (_, users) in self.slides.items() if users == 0][:max(len(self.slides) - self.size, 0)]:
                    self.slides.pop(key)[0].close()


_open_slides = _OpenSlides()


def chunk_task(model: ModelKey, fingerprint: list[float] | None, host_threads: dict[str, int] | None, source: str,
               grid: Grid, chunk: Chunk, tta: bool, path: str) -> ChunkOutcome:
    """Run one chunk on this worker and save its ChunkResult to `path` (atomic); returns a
    ChunkOutcome. A region that cannot be read (DataError from the read) is returned as the
    outcome's error; anything else raises (the task fails and is retried). model,
    fingerprint, host_threads: see worker_predictor."""
    start = time.perf_counter()
    predictor = worker_predictor(model, fingerprint, host_threads)
    with _open_slides.use(source) as slide:
        try:
            result = run_chunk(predictor, slide, grid, chunk, tta=tta)
        except DataError as err:
            return ChunkOutcome(None, str(err), time.perf_counter() - start, _worker_address())
    result.save(path)
    return ChunkOutcome(result.count, None, time.perf_counter() - start, _worker_address())


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes, Linux: KiB


def worker_peak_rss(client: distributed.Client) -> dict[str, int]:
    """Peak resident memory (bytes) of each worker process so far: worker address -> bytes."""
    return client.run(_peak_rss)


# ---------------------------------------------------------------------------------------------
# client side


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
