"""The worker side of slides on a dask.distributed cluster (segzoo.slides.run.cluster): the
chunk task, and the model and open slides each worker process keeps between tasks.

A task (chunk_task) carries plain data: the model's ModelSource (a zoo name, hf:// URI or folder
path, with precision and runtime), the slide's path, its Grid and Chunk, and the chunk file's
path. The worker loads the model on its first task and keeps it (worker_predictor: one per
ModelSource and thread count, checked against the client's model fingerprint), keeps the last
OPEN_SLIDES slides it read open, runs the chunk (run_chunk) and saves the ChunkResult
atomically; it returns a ChunkOutcome (the nucleus count, or the unreadable region's error).
distributed is imported only when running inside a worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from segzoo.errors import DataError, RunError
from segzoo.predict.predictor import Predictor
from segzoo.predict.source import ModelSource
from segzoo.slides.plan.chunks import Chunk
from segzoo.slides.plan.grid import Grid
from segzoo.slides.plan.manifest import fingerprints_differ, model_fingerprint
from segzoo.slides.readers.base import Slide
from segzoo.slides.readers.factory import open_slide
from segzoo.slides.results.chunk_result import ChunkResult
from segzoo.slides.results.summary import StageSeconds
from segzoo.slides.run.chunk_inference import chunk_nuclei, predict_chunk
from segzoo.slides.run.chunk_reading import read_chunk
from segzoo.slides.run.memory import return_large_allocations
from segzoo.zoo.loading import load

log = logging.getLogger(__name__)

OPEN_SLIDES = 4  # slides kept open per worker process


@dataclass(frozen=True)
class ChunkOutcome:
    """What a chunk task returns: nuclei saved (None when the region could not be read, then
    `error` says why), the task's seconds and the worker's address."""

    nuclei: int | None
    error: str | None
    seconds: float
    worker: str
    stages: dict[str, float] = field(default_factory=dict)


_models: dict[tuple[ModelSource, int | None], tuple[Predictor, list[float]]] = {}
_models_lock = threading.Lock()


def _worker_address() -> str:
    try:
        import distributed

        return distributed.get_worker().address
    except (ImportError, ValueError):  # not inside a worker (a test calling the task directly)
        return f"pid {os.getpid()}"


def onnx_threads(host_threads: dict[str, int] | None) -> int | None:
    """Intra-op threads for this worker's onnxruntime sessions: the host's CPUs shared among the
    task threads of the workers on it (host_threads: worker address -> task threads of its
    host), so N single-threaded workers on N cores do not run N x N threads. None (the
    onnxruntime default, every core) outside a worker or for a worker the client did not list."""
    address = _worker_address()
    if not host_threads or address not in host_threads:
        return None
    from dask.system import CPU_COUNT  # the CPUs this process may use (affinity, cgroup quota)

    return max(1, CPU_COUNT // max(host_threads[address], 1))


def worker_predictor(model: ModelSource, fingerprint: list[float] | None = None,
                     host_threads: dict[str, int] | None = None) -> Predictor:
    """This process's Predictor for `model`, loaded on first use and kept (one per source and
    thread count), its onnxruntime session with onnx_threads(host_threads) threads. RunError when
    its outputs differ from `fingerprint` (the client's model_fingerprint): the worker sees other
    model files than the client."""
    threads = onnx_threads(host_threads)
    with _models_lock:
        entry = _models.get((model, threads))
        if entry is None:
            start = time.perf_counter()
            return_large_allocations()  # this worker process runs chunks for as long as it lives
            predictor = load(model.source, precision=model.precision, runtime=model.runtime, threads=threads)
            entry = _models[model, threads] = (predictor, model_fingerprint(predictor))
            log.info("worker %s loaded %s (%s, %s) in %.1f s", _worker_address(), model.source, model.precision,
                     model.runtime, time.perf_counter() - start)
    predictor, own = entry
    if fingerprint is not None and fingerprints_differ(own, fingerprint):
        raise RunError(f"worker {_worker_address()}: the model {model.source!r} ({model.precision}, {model.runtime}) "
                       "loaded there gives other outputs than the client's; every worker must load the same model files")
    return predictor


class _OpenSlides:
    """Slides open in this process, by path: the most recently used OPEN_SLIDES stay open
    (a slide in use by a task is never closed under it)."""

    def __init__(self, size: int = OPEN_SLIDES):
        self.size = size
        self.lock = threading.Lock()
        self.slides: OrderedDict[str, list] = OrderedDict()  # path -> [slide, tasks using it]

    @contextlib.contextmanager
    def use(self, path: str) -> Iterator[Slide]:
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


def run_chunk(predictor: Predictor, slide: Slide, grid: Grid, chunk: Chunk, *, tta: bool = False,
              clock: StageSeconds | None = None) -> ChunkResult:
    """Read, predict and measure one chunk: read_chunk -> predict_chunk -> chunk_nuclei.

    predictor: the model; slide: the open slide; grid, chunk: where the chunk lies; tta: test-time
    augmentation; clock: where to add each stage's seconds (None: not timed). A function of its explicit inputs and the predictor (its run_batch and config) only, so any
    process can compute any chunk; DataError from the read (a corrupt region) propagates for the
    caller to record."""
    clock = clock if clock is not None else StageSeconds()
    with clock.timed("read"):
        image = read_chunk(slide, grid, chunk)
    with clock.timed("network"):
        outputs = predict_chunk(predictor, image, tta=tta)
    with clock.timed("post"):
        return chunk_nuclei(image, outputs, chunk, grid, predictor.config)


def chunk_task(model: ModelSource, fingerprint: list[float] | None, host_threads: dict[str, int] | None, source: str,
               grid: Grid, chunk: Chunk, tta: bool, path: str) -> ChunkOutcome:
    """Run one chunk on this worker and save its ChunkResult to `path` (atomic); returns a ChunkOutcome.

    model, fingerprint, host_threads: see worker_predictor.
    source: the slide file's absolute path.
    grid, chunk: where the chunk lies (the client's plan).
    tta: test-time augmentation.
    path: the chunk file to write.
    A region that cannot be read (DataError from the read) is returned as the outcome's error;
    anything else raises (the task fails and is retried)."""
    start = time.perf_counter()
    predictor = worker_predictor(model, fingerprint, host_threads)
    clock = StageSeconds()
    with _open_slides.use(source) as slide:
        try:
            result = run_chunk(predictor, slide, grid, chunk, tta=tta, clock=clock)
        except DataError as err:
            return ChunkOutcome(None, str(err), time.perf_counter() - start, _worker_address(), clock.seconds)
    with clock.timed("post"):
        result.save(path)
    return ChunkOutcome(result.count, None, time.perf_counter() - start, _worker_address(), clock.seconds)


def peak_rss() -> int:
    """Peak resident memory of this process so far, in bytes: Linux's VmHWM (the high-water mark of
    this process's own memory), else getrusage's ru_maxrss. ru_maxrss alone is not this process's:
    Linux carries it across fork and exec, so a child started by a process that once held 10 GB
    reports 10 GB (seen in the slide benchmark, whose parent builds the 20000 px slide)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes, Linux: KiB
