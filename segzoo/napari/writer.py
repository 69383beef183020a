"""Writer: a Labels layer as segzoo's output file set, with the writers `segzoo predict` uses:
``<stem>_labels.tif`` (int32 label TIFF), ``<stem>.geojson`` (QuPath detections) and ``<stem>_nuclei.csv``
(per-nucleus measurements), written all or none (segzoo.io.files.write_file_set).

The stem is the chosen file name without .tif/.tiff and a trailing ``_labels``. A Labels layer made by the
dock widget carries the image and probability it was predicted from (``metadata["segzoo"]``): the CSV then
has the mean RGB and probability, and the outlines and centroids are in the image layer's pixels (a
field-of-view crop's offset added), as segzoo writes a whole image. Other layers are measured as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segzoo.errors import DataError
from segzoo.io.files import write_file_set
from segzoo.io.measurements import csv_bytes, nucleus_table
from segzoo.io.outputs import geojson_bytes, labels_tiff_bytes, output_targets

FORMATS = ("labels", "geojson", "csv")


def output_stem(path: str | Path) -> tuple[Path, str]:
    """(folder, stem) of the path napari asks to write: 'out/a.tif' and 'out/a_labels.tif' both give (out, 'a')."""
    path = Path(path)
    name = path.name
    for suffix in (".tiff", ".tif"):
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
            break
    if name.endswith("_labels") and len(name) > len("_labels"):
        name = name[:-len("_labels")]
    return path.parent, name


def _fits(array, shape) -> np.ndarray | None:
    return array if isinstance(array, np.ndarray) and array.shape[:2] == shape else None


def write_labels(path: str, data, meta: dict) -> list[str]:
    """napari's single-layer writer hook for Labels: the file set at `path` (see the module docstring);
    returns the paths written."""
    labels = np.asarray(data)
    name = meta.get("name", "labels")
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise DataError(f"layer {name!r}: segzoo writes 2-D integer labels, got {labels.shape} {labels.dtype}")
    info = (meta.get("metadata") or {}).get("segzoo") or {}
    image = _fits(info.get("image"), labels.shape)
    prob = _fits(info.get("prob"), labels.shape)
    x0, y0 = info.get("offset_xy", (0, 0))
    table = nucleus_table(labels, image if image is not None and image.ndim == 3 else None, prob, offset=(x0, y0))
    folder, stem = output_stem(path)
    targets = output_targets(folder, stem, FORMATS)
    write_file_set(targets, {"labels": lambda: labels_tiff_bytes(labels),
                             "geojson": lambda: geojson_bytes(table.to_geojson()),
                             "csv": lambda: csv_bytes(table.rows())})
    return [str(targets[f]) for f in FORMATS]
