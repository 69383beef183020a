"""Writers for prediction outputs. Every file is written atomically (temporary
file in the target folder, then rename), so a crash never leaves a partial file,
and write_output_set() writes one image's files as a set: all of them or none.

PNG and TIFF outputs carry the Software tag "segzoo <version>" (OUTPUT_SOFTWARE),
so a later run can tell its own earlier outputs from a user's images."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from segzoo.config import atomic_write_bytes

log = logging.getLogger(__name__)

FORMATS = ("mask", "labels", "geojson", "overlay", "csv")
SUFFIXES = {"mask": "_mask.png", "labels": "_labels.tif", "geojson": ".geojson",
            "overlay": "_overlay.png", "csv": "_nuclei.csv"}
OUTPUT_SOFTWARE = "segzoo"  # prefix of the Software tag in segzoo's PNG/TIFF outputs


def _software() -> str:
    from segzoo import __version__

    return f"{OUTPUT_SOFTWARE} {__version__}"


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", _software())
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True, pnginfo=info)
    return buffer.getvalue()


def mask_png_bytes(mask: np.ndarray) -> bytes:
    """Binary mask as an 8-bit PNG: 0 background, 255 nucleus."""
    return _png_bytes(np.where(mask, 255, 0).astype(np.uint8))


def write_mask_png(mask: np.ndarray, path: Path) -> None:
    """Binary mask as an 8-bit PNG: 0 background, 255 nucleus."""
    atomic_write_bytes(path, mask_png_bytes(mask))


def labels_tiff_bytes(labels: np.ndarray) -> bytes:
    """Instance labels as a single-page int32 TIFF (0 background, 1..N nuclei), zlib-compressed."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, labels.astype(np.int32), compression="zlib", software=_software())
    return buffer.getvalue()


def write_labels_tiff(labels: np.ndarray, path: Path) -> None:
    """Instance labels as a single-page int32 TIFF (0 background, 1..N nuclei), zlib-compressed."""
    atomic_write_bytes(path, labels_tiff_bytes(labels))


def overlay_image(image: np.ndarray, labels: np.ndarray, colour=(255, 255, 0)) -> np.ndarray:
    """The image with every nucleus outline drawn in `colour`."""
    from skimage.segmentation import find_boundaries

    out = image.copy()
    out[find_boundaries(labels, mode="inner")] = colour
    return out


def overlay_png_bytes(image: np.ndarray, labels: np.ndarray) -> bytes:
    """The image with nucleus outlines (overlay_image) as an RGB PNG."""
    return _png_bytes(overlay_image(image, labels))


def write_overlay_png(image: np.ndarray, labels: np.ndarray, path: Path) -> None:
    atomic_write_bytes(path, overlay_png_bytes(image, labels))


def measure_nuclei(labels: np.ndarray, image: np.ndarray, prob: np.ndarray | None = None) -> list[dict]:
    """Per nucleus: label, area (px), centroid (x, y), bounding box (x0, y0, x1, y1;
    x1/y1 exclusive), mean R/G/B intensity and mean probability."""
    from skimage.measure import regionprops

    rows = []
    for region in regionprops(labels, intensity_image=image):
        y0, x0, y1, x1 = region.bbox
        cy, cx = region.centroid
        mean_rgb = np.asarray(region.intensity_mean, dtype=float).reshape(-1)
        row = {"label": int(region.label), "area": int(region.area),
               "centroid_x": round(float(cx), 3), "centroid_y": round(float(cy), 3),
               "bbox_x0": int(x0), "bbox_y0": int(y0), "bbox_x1": int(x1), "bbox_y1": int(y1),
               "mean_r": round(float(mean_rgb[0]), 3), "mean_g": round(float(mean_rgb[1]), 3),
               "mean_b": round(float(mean_rgb[2]), 3)}
        if prob is not None:
            row["mean_prob"] = round(float(prob[region.slice][region.image].mean()), 4)
        rows.append(row)
    return rows


def csv_bytes(rows: list[dict]) -> bytes:
    """measure_nuclei() rows as UTF-8 CSV with a header (the header alone when there are no rows)."""
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else ["label", "area", "centroid_x", "centroid_y", "bbox_x0", "bbox_y0",
                                         "bbox_x1", "bbox_y1", "mean_r", "mean_g", "mean_b", "mean_prob"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_csv(rows: list[dict], path: Path) -> None:
    atomic_write_bytes(path, csv_bytes(rows))


def nucleus_polygons(labels: np.ndarray) -> dict[int, list[list[float]]]:
    """Outer outline of each nucleus as a closed ring of [x, y] image pixel coordinates.

    Traced with marching squares at level 0.5 around the pixel centres of the
    nucleus (its largest outline when a label has several parts).
    """
    from skimage.measure import find_contours, regionprops

    polygons = {}
    for region in regionprops(labels):
        y0, x0, _, _ = region.bbox
        padded = np.pad(region.image.astype(np.uint8), 1)
        contours = find_contours(padded, 0.5)
        if not contours:
            continue
        ring = max(contours, key=len)
        coords = [[round(float(c) + x0 - 1, 2), round(float(r) + y0 - 1, 2)] for r, c in ring]
        if coords[0] != coords[-1]:
            coords.append(coords[0])
        if len(coords) >= 4:
            polygons[int(region.label)] = coords
    return polygons


def geojson_collection(labels: np.ndarray, measurements: list[dict] | None = None, *,
                       object_type: str = "detection", classification: str = "Nucleus") -> dict:
    """A GeoJSON FeatureCollection QuPath imports: one Polygon per nucleus in image
    pixel coordinates, properties.objectType 'detection' (or 'annotation') and a
    classification; measurements go to properties.measurements."""
    if object_type not in ("detection", "annotation"):
        raise ValueError(f"object_type must be 'detection' or 'annotation', got {object_type!r}")
    by_label = {m["label"]: m for m in measurements or []}
    features = []
    for label, ring in nucleus_polygons(labels).items():
        props = {"objectType": object_type, "classification": {"name": classification, "color": [255, 200, 0]},
                 "name": f"nucleus {label}"}
        if label in by_label:
            props["measurements"] = {k: v for k, v in by_label[label].items() if k != "label"}
        features.append({"type": "Feature", "id": f"nucleus-{label}",
                         "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props})
    return {"type": "FeatureCollection", "features": features}


def geojson_bytes(collection: dict) -> bytes:
    """A GeoJSON dict as compact UTF-8 JSON."""
    return json.dumps(collection, separators=(",", ":")).encode("utf-8")


def write_geojson(collection: dict, path: Path) -> None:
    atomic_write_bytes(path, geojson_bytes(collection))


def output_folder_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be used (or created) as an output folder, as one sentence naming the
    path; None when it is a writable folder or can be created inside one. Touches nothing."""
    if not os.fspath(path):
        return "the output path is empty; give a folder"
    path = Path(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        for parent in path.parents:
            try:
                st = os.stat(parent)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as err:
                return f"{parent}: {err.strerror}"
            if not stat.S_ISDIR(st.st_mode):
                return f"{path}: cannot create this folder, {parent} is a file"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{path}: cannot create this folder, {parent} is not writable"
            return None
        return None
    except OSError as err:
        return f"{path}: {err.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path}: exists and is not a folder; give a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path}: folder is not writable"
    return None


def output_file_problem(path: str | os.PathLike, *, overwrite: bool) -> str | None:
    """Why a file cannot be written at `path` (a folder is there, it exists without
    `overwrite`, its folder cannot be created), as one sentence; None when it can."""
    if not os.fspath(path):
        return "the output path is empty; give a file"
    path = Path(path)
    if os.path.isdir(path):
        return f"{path}: is a folder; give a file path"
    if os.path.lexists(path) and not overwrite:
        return f"{path}: exists; pass --overwrite to replace it"
    return output_folder_problem(path.parent)


def output_targets(folder: Path, stem: str, formats) -> dict[str, Path]:
    """{format: folder/<stem><suffix>} for each of `formats` (see SUFFIXES)."""
    return {f: Path(folder) / f"{stem}{SUFFIXES[f]}" for f in formats}


def outputs_among(paths: list[Path]) -> dict[Path, Path]:
    """The files of one folder listing that are named like an output of another file in it:
    {output: image}, e.g. a_mask.png -> a.png when a.png (or a.tif, ...) is listed too."""
    by_stem: dict[str, Path] = {}
    for path in sorted(paths, key=lambda p: p.name):
        by_stem.setdefault(path.stem, path)
    found = {}
    for path in paths:
        for suffix in SUFFIXES.values():
            if path.name.endswith(suffix) and len(path.name) > len(suffix):
                source = by_stem.get(path.name[:-len(suffix)])
                if source is not None and source != path:
                    found[path] = source
                    break
    return found


def is_segzoo_output(path: Path) -> bool:
    """True when the PNG or TIFF file at `path` carries segzoo's Software tag (it is an
    output of an earlier run, so --overwrite may replace it); False otherwise or unreadable."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as img:
                software = img.info.get("Software", "")
        elif path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                tag = tif.pages[0].tags.get("Software")
                software = tag.value if tag is not None else ""
        else:
            return False
    except Exception:  # noqa: BLE001  (unreadable or not an image: not ours)
        return False
    return isinstance(software, str) and software.split(" ")[0] == OUTPUT_SOFTWARE


def _write_temporary(target: Path, data: bytes) -> Path:
    """`data` in a new hidden temporary file beside `target`, with normal permissions."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def _hard_link_backup(target: Path) -> Path | None:
    """A hidden hard link to the existing `target` (its old content survives a rename onto
    `target`), or None where the file system has no hard links."""
    backup = target.parent / f".{target.name}.{secrets.token_hex(6)}.bak"
    try:
        os.link(target, backup)
    except OSError:
        return None
    return backup


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_output_set(targets: dict[str, Path], render: dict[str, Callable[[], bytes]]) -> None:
    """Write one image's output files so that afterwards all of them are in place or none changed.

    `render[key]()` gives the bytes of `targets[key]`. Every file is rendered first, then
    written to a temporary file in its target folder (created if needed), then all are
    renamed into place. On any error or interrupt (OSError such as ENOSPC, KeyboardInterrupt)
    the temporaries are deleted, files of this set that did not exist before are removed and
    replaced files get their old content back (kept through a hard link; a file system without
    hard links cannot restore them, which is logged); then the exception propagates.
    """
    data = {key: render[key]() for key in targets}
    temps: dict[str, Path] = {}
    existed: dict[str, bool] = {}
    backups: dict[str, Path | None] = {}
    renamed: list[str] = []
    try:
        for key, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            temps[key] = _write_temporary(target, data[key])
        for key, target in targets.items():
            existed[key] = os.path.lexists(target)
            backups[key] = _hard_link_backup(target) if existed[key] else None
        for key, target in targets.items():
            os.replace(temps[key], target)
            del temps[key]
            renamed.append(key)
    except BaseException:
        lost = []
        for key in renamed:
            target, backup = targets[key], backups.get(key)
            try:
                if backup is not None:
                    os.replace(backup, target)
                elif not existed[key]:
                    _remove(target)
                else:
                    lost.append(str(target))
            except OSError:
                lost.append(str(target))
        for path in list(temps.values()) + [b for b in backups.values() if b is not None]:
            try:
                _remove(path)
            except OSError:
                pass
        if lost:
            log.warning("replaced and could not restore: %s", ", ".join(lost))
        raise
    for backup in backups.values():
        if backup is not None:
            try:
                _remove(backup)
            except OSError:
                log.warning("could not remove the backup %s", backup)
