"""A slide's outputs, streamed from its chunk results to disk and written as one set.

Files (for output stem S): `S.geojson` (QuPath FeatureCollection of nucleus detections),
`S_nuclei.csv` (one row per nucleus), `S_thumbnail.png` (the slide downsampled, longest side
at most THUMBNAIL_MAX_SIDE, with nucleus outlines) and `S_tissue.png` (the tissue mask, when
one was used). The GeoJSON and CSV are written one nucleus at a time, so only one chunk's
nuclei are in memory. Every file goes to a hidden temporary file beside its target first,
and the set is renamed into place only when all of them are complete.

Nucleus ids (GeoJSON `nucleus-<id>`, CSV `label`) are 1..N in chunk order (row-major), then
in each chunk's own order, so they are the same in every run of the same job. Coordinates are
level-0 pixels with pixel centres at integers (see segzoo.slides.chunks).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from segzoo.slides.chunks import COLUMNS, ChunkResult

SUFFIXES = {"geojson": ".geojson", "csv": "_nuclei.csv", "thumbnail": "_thumbnail.png", "tissue": "_tissue.png"}
THUMBNAIL_MAX_SIDE = 4096
OUTLINE_COLOUR = (255, 255, 0)
CLASSIFICATION = {"name": "Nucleus", "color": [255, 200, 0]}


def output_paths(folder: Path, stem: str, *, tissue: bool = True) -> dict[str, Path]:
    """The output files of one slide: key -> path (no 'tissue' when no tissue mask is used)."""
    return {key: Path(folder) / f"{stem}{suffix}" for key, suffix in SUFFIXES.items()
            if key != "tissue" or tissue}


def _software() -> str:
    from segzoo import __version__

    return f"segzoo {__version__}"


def _png(image: np.ndarray, handle) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", _software())
    Image.fromarray(image).save(handle, format="PNG", pnginfo=info)


def _feature(label: int, ring: np.ndarray, measurements: dict) -> str:
    """One GeoJSON Feature (compact JSON), the properties of segzoo.writers.geojson_collection."""
    coords = ",".join(f"[{x!r},{y!r}]" for x, y in ring.tolist())
    props = {"objectType": "detection", "classification": CLASSIFICATION, "name": f"nucleus {label}",
             "measurements": measurements}
    properties = json.dumps(props, separators=(",", ":"))
    return (f'{{"type":"Feature","id":"nucleus-{label}","geometry":{{"type":"Polygon","coordinates":[[{coords}]]}},'
            f'"properties":{properties}}}')


def _draw_outlines(draw, result: ChunkResult, downsample: float) -> None:
    """Draw every nucleus ring of `result` onto a thumbnail of `downsample` level-0 px per pixel."""
    thumb = (result.vertices + 0.5) / downsample - 0.5
    offsets = result.ring_offsets
    for i in range(result.count):
        points = [tuple(p) for p in thumb[offsets[i]:offsets[i + 1]].tolist()]
        draw.line(points, fill=OUTLINE_COLOUR, width=1)


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
        umask = os.umask(0)
        os.umask(umask)
        for key, tmp in list(self.temps.items()):
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
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
                  columns: tuple[str, ...] = COLUMNS) -> int:
    """Stream chunk results (in chunk order) into the output files `targets` (output_paths);
    returns the number of nuclei written.

    `thumbnail` (HxWx3 uint8, `thumbnail_downsample` level-0 pixels per pixel) gets the
    outlines; `tissue` (bool) is written when `targets` has 'tissue'; `columns` are the
    measurement columns every result holds (COLUMNS, less area_um2 when the resolution is
    unknown), in CSV order after `label`. All files are complete
    in temporary files before any is renamed into place; on an error none is."""
    from PIL import Image, ImageDraw

    temps = _Temporaries(targets)
    count = 0
    try:
        canvas = Image.fromarray(np.ascontiguousarray(thumbnail[..., :3]))
        draw = ImageDraw.Draw(canvas)
        with temps.open("geojson", "w", encoding="utf-8", newline="") as geojson, \
                temps.open("csv", "w", encoding="utf-8", newline="") as table:
            geojson.write('{"type":"FeatureCollection","features":[')
            names = list(columns)
            writer = csv.writer(table)
            writer.writerow(["label", *names])
            for result in results:
                values = [result.columns[name].tolist() for name in names]
                for i in range(result.count):
                    count += 1
                    row = [v[i] for v in values]
                    writer.writerow([count, *row])
                    geojson.write(("," if count > 1 else "") + _feature(count, result.ring(i), dict(zip(names, row))))
                _draw_outlines(draw, result, thumbnail_downsample)
            geojson.write("]}")
        with temps.open("thumbnail") as handle:
            _png(np.asarray(canvas), handle)
        if "tissue" in targets:
            with temps.open("tissue") as handle:
                _png(np.where(np.asarray(tissue, dtype=bool), 255, 0).astype(np.uint8), handle)
        temps.commit()
    except BaseException:
        temps.discard()
        raise
    return count
