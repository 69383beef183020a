"""What a slide job produces: its output files (for output stem S: S.geojson, S_nuclei.csv,
S_thumbnail.png, S_tissue.png; written by segzoo.slides.results.outputs) and the per-nucleus
measurement columns."""

from __future__ import annotations

import os
from pathlib import Path

SUFFIXES = {"geojson": ".geojson", "csv": "_nuclei.csv", "thumbnail": "_thumbnail.png", "tissue": "_tissue.png"}

COLUMNS = ("area", "area_um2", "centroid_x", "centroid_y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1",
           "mean_r", "mean_g", "mean_b", "mean_prob")
"""Per-nucleus measurements of a ChunkResult, in this order (segzoo.io.measurements.nucleus_measurements'
columns without 'label'; area_um2 only when the slide's resolution is known)."""


def output_paths(folder: Path, stem: str, *, tissue: bool = True) -> dict[str, Path]:
    """The output files of one slide: key -> path (no 'tissue' when no tissue mask is used)."""
    return {key: Path(folder) / f"{stem}{suffix}" for key, suffix in SUFFIXES.items()
            if key != "tissue" or tissue}


def output_stem(path: str | os.PathLike) -> str:
    """The output file stem of a slide file: its name without the suffix (.ome.tif(f) as one)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return Path(name).stem
