"""A slide's outputs, streamed from its chunk results to disk and written as one set.

Files (for output stem S): `S.geojson` (QuPath FeatureCollection of nucleus detections),
`S_nuclei.csv` (one row per nucleus), `S_thumbnail.png` (the slide downsampled, longest side
at most THUMBNAIL_MAX_SIDE, with nucleus outlines) and `S_tissue.png` (the tissue mask, when
one was used). The GeoJSON and CSV are written one nucleus at a time, so only one chunk's
nuclei are in memory. Every file goes to a hidden temporary file beside its target first,
and the set is renamed into place only when all of them are complete.

Nucleus ids (GeoJSON `nucleus-<id>`, CSV `label`) are 1..N in chunk order (row-major), then
in each chunk's own order, so they are the same in every run of the same job. Coordinates are
level-0 pixels with pixel centres at integers (see segzoo.slides.results.chunk_result).

No nucleus is written twice. Each chunk keeps the nuclei whose centroid lies in its core, so a
translation-equivariant network with a halo covering its reach never reports one twice; but a
network whose output depends on where its input starts (DeepLabV3's image pooling, a foreign
model) can find a nucleus in two neighbouring chunks with its centroid on either side of their
border. Where an outline of a chunk overlaps one already written by an earlier chunk (row-major)
by more than half of the smaller one's area, the earlier one is kept (it is already written) and
the later one dropped and counted (OutputCounts.duplicates). Overlaps are counted in level-0
pixels whose centre lies inside both outlines (segzoo.datasets.monuseg.polygon_interior's rule,
the one rule outlines are filled with). Memory stays bounded: only outlines whose bounding box
reaches within a read-box margin (the largest seen so far) of their core's right or bottom border
are remembered (a later chunk's read box reaches no further into a core), and only until a chunk
row starts below them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from segzoo.datasets.monuseg import polygon_interior
from segzoo.slides.plan.targets import COLUMNS
from segzoo.slides.results.chunk_result import ChunkResult

THUMBNAIL_MAX_SIDE = 4096
OUTLINE_COLOUR = (255, 255, 0)
CLASSIFICATION = {"name": "Nucleus", "color": [255, 200, 0]}


def _software() -> str:
    from segzoo import __version__

    return f"segzoo {__version__}"


def _png(image: np.ndarray, handle, compress_level: int = 6) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", _software())
    Image.fromarray(image).save(handle, format="PNG", pnginfo=info, compress_level=compress_level)


class _Formatter:
    """GeoJSON Features and CSV rows as text, by %-templates (repr of each number, as json.dumps
    and csv write them): one formatting call per nucleus instead of a JSON encoder pass."""

    def __init__(self, names: list[str]):
        props = json.dumps({"objectType": "detection", "classification": CLASSIFICATION}, separators=(",", ":"))
        self.head = '{"type":"Feature","id":"nucleus-%d","geometry":{"type":"Polygon","coordinates":[['
        self.middle = ']]},"properties":' + props[:-1] + ',"name":"nucleus %d","measurements":'
        self.measurements = "{" + ",".join(f'"{name}":%r' for name in names) + "}}}"
        self.row = "%d," + ",".join(["%r"] * len(names)) + "\r\n"
        self.rings: dict[int, str] = {}

    def ring(self, vertices: np.ndarray) -> str:
        n = len(vertices)
        template = self.rings.get(n)
        if template is None:
            template = self.rings[n] = ",".join(["[%r,%r]"] * n)
        return template % tuple(vertices.ravel().tolist())

    def feature(self, label: int, vertices: np.ndarray, values: tuple) -> str:
        return self.head % label + self.ring(vertices) + self.middle % label + self.measurements % values

    def csv_row(self, label: int, values: tuple) -> str:
        return self.row % ((label,) + values)


def _draw_outlines(draw, result: ChunkResult, downsample: float, keep: np.ndarray) -> None:
    """Draw the nucleus rings of `result` that `keep` marks onto a thumbnail of `downsample`
    level-0 px per pixel."""
    thumb = (result.vertices + 0.5) / downsample - 0.5
    offsets = result.ring_offsets
    for i in np.flatnonzero(keep):
        points = [tuple(p) for p in thumb[offsets[i]:offsets[i + 1]].tolist()]
        draw.line(points, fill=OUTLINE_COLOUR, width=1)


class OutputCounts(NamedTuple):
    """What write_outputs wrote: nuclei (ids 1..nuclei) and duplicates dropped (see the module docstring)."""

    nuclei: int
    duplicates: int


BOX_COLUMNS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")


def _fill(ring: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Bool mask over the level-0 pixel index box (x0, y0, x1, y1): pixels whose centre lies in `ring`."""
    x0, y0, x1, y1 = (int(v) for v in box)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    mask[polygon_interior(ring - (x0, y0), mask.shape)] = True
    return mask


def overlaps_more_than_half(ring_a: np.ndarray, box_a: np.ndarray, ring_b: np.ndarray, box_b: np.ndarray) -> bool:
    """Whether two outlines (level-0 rings with their bbox columns) share more than half of the
    smaller one's pixels (level-0 pixel centres inside each)."""
    box = np.concatenate([np.minimum(box_a[:2], box_b[:2]), np.maximum(box_a[2:], box_b[2:])])
    a, b = _fill(ring_a, box), _fill(ring_b, box)
    return 2 * int(np.count_nonzero(a & b)) > min(int(a.sum()), int(b.sum()))


class _WrittenNearBorders:
    """Outlines already written that a later chunk may find again (see the module docstring).

    level0_per_working: f of the slide's grid (chunk boxes are working pixels, outlines level-0)."""

    def __init__(self, level0_per_working: float):
        self.f = float(level0_per_working)
        self.margin = 0  # the largest read-box margin seen (working px): how far a read box reaches into a core
        self.row: int | None = None
        self.boxes = np.zeros((0, 4), np.int64)
        self.areas = np.zeros(0)  # the area column (level-0 pixels)
        self.rings: list[np.ndarray] = []

    def _forget_above(self, y: float) -> None:
        keep = self.boxes[:, 3] > y
        self.boxes, self.areas = self.boxes[keep], self.areas[keep]
        self.rings = [ring for ring, k in zip(self.rings, keep) if k]

    def keep(self, result: ChunkResult) -> np.ndarray:
        """Which nuclei of `result` to write (False: a duplicate of one written); remembers those written
        near its core's right and bottom borders."""
        chunk, f = result.chunk, self.f
        core, read = chunk.core, chunk.read
        self.margin = max(self.margin, core[0] - read[0], core[1] - read[1], read[2] - core[2], read[3] - core[3])
        if chunk.row != self.row:  # no read box of this row or a later one reaches above its top
            self.row = chunk.row
            self._forget_above(math.floor(read[1] * f))
        keep = np.ones(result.count, bool)
        if not result.count:
            return keep
        boxes = np.stack([np.asarray(result.columns[name], np.int64) for name in BOX_COLUMNS], axis=1)
        x0, y0, x1, y1 = math.floor(read[0] * f), math.floor(read[1] * f), math.ceil(read[2] * f), math.ceil(read[3] * f)
        near = np.flatnonzero((self.boxes[:, 0] < x1) & (self.boxes[:, 2] > x0)
                              & (self.boxes[:, 1] < y1) & (self.boxes[:, 3] > y0))
        if near.size:
            old = self.boxes[near]
            touching = ((boxes[:, None, 0] < old[None, :, 2]) & (old[None, :, 0] < boxes[:, None, 2])
                        & (boxes[:, None, 1] < old[None, :, 3]) & (old[None, :, 1] < boxes[:, None, 3]))
            # Pixels shared are at most the boxes' intersection: outlines whose boxes share under a
            # quarter of the smaller area (a strip along touching neighbours) are not filled at all.
            # At f = 1 the area column is at most an outline's filled pixels (outlines give a nucleus'
            # pixels back, holes filled), so no duplicate is skipped; at other f it is within an
            # outline-wide band of them.
            width = np.minimum(boxes[:, None, 2], old[None, :, 2]) - np.maximum(boxes[:, None, 0], old[None, :, 0])
            height = np.minimum(boxes[:, None, 3], old[None, :, 3]) - np.maximum(boxes[:, None, 1], old[None, :, 1])
            smaller = np.minimum(np.asarray(result.columns["area"], np.float64)[:, None], self.areas[near][None, :])
            touching &= 4 * width * height > smaller
            for i, j in zip(*np.nonzero(touching)):
                if keep[i] and overlaps_more_than_half(result.ring(i), boxes[i], self.rings[near[j]], old[j]):
                    keep[i] = False
        reach = math.ceil(self.margin * f) + 1  # level-0 px a later read box can reach into this core
        remember = keep & ((boxes[:, 2] > core[2] * f - reach) | (boxes[:, 3] > core[3] * f - reach))
        for i in np.flatnonzero(remember):
            self.rings.append(result.ring(i).copy())
        self.boxes = np.concatenate([self.boxes, boxes[remember]])
        self.areas = np.concatenate([self.areas, np.asarray(result.columns["area"], np.float64)[remember]])
        return keep


class _Temporaries:
    """Hidden temporary files beside their targets, renamed into place together by commit()."""

    def __init__(self, targets: dict[str, Path]):
        self.targets = targets
        self.temps: dict[str, Path] = {}

    def open(self, key: str, mode: str = "wb", **kwargs):
        target = self.targets[key]
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        self.temps[key] = Path(tmp)
        return os.fdopen(fd, mode, **kwargs)

    def commit(self) -> None:
        from segzoo.io.files import FILE_MODE

        for key, tmp in list(self.temps.items()):
            os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; the umask is read once, in segzoo.io.files
        for key, tmp in list(self.temps.items()):
            os.replace(tmp, self.targets[key])
            del self.temps[key]

    def discard(self) -> None:
        for tmp in self.temps.values():
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self.temps.clear()


def write_outputs(targets: dict[str, Path], results: Iterable[ChunkResult], thumbnail: np.ndarray,
                  thumbnail_downsample: float, tissue: np.ndarray | None = None,
                  columns: tuple[str, ...] = COLUMNS, *, level0_per_working: float = 1.0) -> OutputCounts:
    """Stream chunk results into the output files; returns the nuclei written and the duplicates
    dropped (OutputCounts; a nucleus an earlier chunk wrote, see the module docstring).

    targets: key -> path (segzoo.slides.plan.targets.output_paths).
    results: ChunkResults in chunk order.
    thumbnail: HxWx3 uint8; gets the outlines.
    thumbnail_downsample: level-0 pixels per thumbnail pixel.
    tissue: bool mask, written when `targets` has 'tissue'.
    columns: the measurement columns every result holds (COLUMNS, less area_um2 when the
        resolution is unknown), in CSV order after `label`; the bbox columns are always there.
    level0_per_working: level-0 pixels per working pixel (the grid's f), to place chunk boxes.
    All files are complete in temporary files before any is renamed into place; on an error none is."""
    from PIL import Image, ImageDraw

    temps = _Temporaries(targets)
    count = duplicates = 0
    written = _WrittenNearBorders(level0_per_working)
    try:
        canvas = Image.fromarray(np.ascontiguousarray(thumbnail[..., :3]))
        draw = ImageDraw.Draw(canvas)
        with temps.open("geojson", "w", encoding="utf-8", newline="") as geojson, \
                temps.open("csv", "w", encoding="utf-8", newline="") as table:
            geojson.write('{"type":"FeatureCollection","features":[')
            names = list(columns)
            table.write(",".join(["label", *names]) + "\r\n")
            text = _Formatter(names)
            for result in results:
                keep = written.keep(result)
                duplicates += int(np.count_nonzero(~keep))
                values = [result.columns[name].tolist() for name in names]
                for i, row in enumerate(zip(*values)):
                    if not keep[i]:
                        continue
                    count += 1
                    table.write(text.csv_row(count, row))
                    geojson.write(("," if count > 1 else "") + text.feature(count, result.ring(i), row))
                _draw_outlines(draw, result, thumbnail_downsample, keep)
            geojson.write("]}")
        with temps.open("thumbnail") as handle:
            _png(np.asarray(canvas), handle, compress_level=1)  # 2x faster than 6 at 4096 px, 15% larger
        if "tissue" in targets:
            with temps.open("tissue") as handle:
                _png(np.where(np.asarray(tissue, dtype=bool), 255, 0).astype(np.uint8), handle)
        temps.commit()
    except BaseException:
        temps.discard()
        raise
    return OutputCounts(count, duplicates)
