"""The progress bar of a slide run (tqdm on stderr)."""

from __future__ import annotations

from segzoo.slides.plan.chunks import Chunk
from segzoo.slides.plan.job import SlideJob


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

    def planned(self, job: SlideJob, pending: list[Chunk]) -> None:
        """A slide was planned: its tissue joins the total, its finished chunks (all but `pending`,
        job.pending() as the caller found it) count as done."""
        self.bar.total += sum(c.core_pixels for c in job.chunks)
        done = sum(c.core_pixels for c in job.chunks) - sum(c.core_pixels for c in pending)
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
