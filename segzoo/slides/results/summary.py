"""What a slide run reports: a SlideSummary per slide (with its FailedChunks), and the run's
summary table `<out>/segzoo_summary.csv` (one row per slide: slide, status, nuclei, tissue Mpx,
seconds, error, ..., duplicates dropped)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from segzoo.errors import SegzooError
from segzoo.io.files import atomic_write_text

SUMMARY_FILENAME = "segzoo_summary.csv"
SUMMARY_COLUMNS = ("slide", "status", "nuclei", "tissue_mpx", "seconds", "chunks", "chunks_resumed",
                   "failed_chunks", "error", "geojson", "duplicates_dropped")
INTERRUPTED = "not finished: the run stopped before this slide was done; run the same command again to resume"


STAGES = ("read", "network", "post")
"""A chunk's stages, timed by StageSeconds: read (reading and resampling its region), network (the
model, with its pre-processing and tiling) and post (instances, measurements, the chunk file)."""


@dataclass
class StageSeconds:
    """Busy seconds per stage (STAGES) summed over chunks. The local executor runs the stages in
    overlapping threads and Dask workers run chunks side by side, so the sum exceeds the wall time;
    per tissue Mpx they say where a slide's time goes (network against post-processing)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the time spent in the with-block to `stage` (one of STAGES)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add({stage: time.perf_counter() - start})

    def add(self, other: dict[str, float] | None) -> None:
        """Add another chunk's (or worker's) seconds."""
        for stage, value in (other or {}).items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + value


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
    """What a run did with one slide. tissue_mpx: megapixels (at the working resolution) of the
    chunk cores planned, i.e. the tissue area processed; chunks_resumed: chunks found finished;
    error: why the slide has no outputs (None when it has them; see SlideSummary.failure), and
    argument: the Python argument that fixes it, when one does (SegzooError.argument);
    outputs_seconds: of `seconds`, those spent writing the outputs; duplicates_dropped: nuclei found
    again by a neighbouring chunk and not written (segzoo.slides.results.outputs); stage_seconds:
    busy seconds of each chunk stage (StageSeconds) over the chunks computed in this run (resumed
    chunks add nothing).
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
    argument: str | None = None
    outputs_seconds: float = 0.0
    duplicates_dropped: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def failure(cls, slide: str, error: str, seconds: float = 0.0, tissue_mpx: float = 0.0,
                chunks: int = 0, chunks_resumed: int = 0, argument: str | None = None) -> SlideSummary:
        """The summary of a slide that got no outputs (unreadable, no resolution, a failed task...)."""
        return cls(slide=slide, outputs={}, nuclei=0, tissue_mpx=tissue_mpx, seconds=seconds, chunks=chunks,
                   chunks_resumed=chunks_resumed, level=None, scale=None, mpp=None, error=error, argument=argument)

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
                "error": self.error, "duplicates_dropped": self.duplicates_dropped,
                "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()}}


def write_summary(path: str | os.PathLike, summaries: Iterable[SlideSummary]) -> Path:
    """Write the run's table (SUMMARY_COLUMNS, one row per slide) as CSV, atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(SUMMARY_COLUMNS)
    for s in summaries:
        failed = "; ".join(f"({f.row}, {f.col}) level-0 x {f.box[0]}-{f.box[2]} y {f.box[1]}-{f.box[3]}: {f.error}"
                           for f in s.failed)
        writer.writerow([s.slide, s.status, s.nuclei, f"{s.tissue_mpx:.3f}", f"{s.seconds:.2f}", s.chunks,
                         s.chunks_resumed, failed, s.error or "", s.outputs.get("geojson", ""), s.duplicates_dropped])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue())
    return path


def failure_message(err: BaseException) -> str:
    """One line for a slide's error: a SegzooError's message, otherwise the type and message."""
    text = str(err) if isinstance(err, SegzooError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split()) or type(err).__name__




def write_failed_chunks(path: str | os.PathLike, failed: Iterable[FailedChunk]) -> Path:
    """Write the chunks that could not be read as JSON (a list of FailedChunk.to_dict), atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps([f.to_dict() for f in failed], indent=1))
    return path
