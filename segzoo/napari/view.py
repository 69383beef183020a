"""What of an image layer to predict, and where the results go: the layer's pixels as segzoo takes them
(level 0 of a multiscale layer, grey and RGBA noted), the part of it in view (the "field of view only"
option) and the transform that puts a crop's results on the layer.

Coordinates follow napari: data pixel (row r, column c) is centred on (r, c) and covers
[r - 0.5, r + 0.5) x [c - 0.5, c + 0.5), as in segzoo.io.outlines.
"""

from __future__ import annotations

import itertools

import numpy as np

from segzoo.config import scale_mismatch
from segzoo.errors import DataError, UsageError


def canvas_size(viewer) -> tuple[float, float]:
    """The canvas' (height, width) in screen pixels (napari >= 0.6: viewer.canvas.size; before: _canvas_size)."""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    if size is None:
        size = getattr(viewer, "_canvas_size", None)
    if size is None:
        raise UsageError("field of view only: this napari does not say how large its canvas is; "
                         "predict the whole layer instead")
    return float(size[0]), float(size[1])


def camera(viewer):
    """The viewer's camera (napari >= 0.9: viewer.scene.camera; before: viewer.camera)."""
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera


def visible_box(viewer, layer) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1), half-open, of the pixels of the 2-D `layer` any part of which is in view:
    the canvas' corners (camera centre +- half the canvas over the zoom, world coordinates) taken to the
    layer's data coordinates (all four, so a rotated layer is covered), their bounding box, clipped to
    the layer. UsageError in a 3-D view or when none of the layer is in view."""
    if viewer.dims.ndisplay != 2:
        raise UsageError("field of view only works in the 2-D view; switch to 2-D or predict the whole layer")
    height, width = canvas_size(viewer)
    view = camera(viewer)
    zoom = float(view.zoom)
    centre = np.asarray(view.center, dtype=float)[-2:]
    half = np.array([height, width]) / (2 * zoom)
    displayed = list(viewer.dims.displayed)
    point = np.asarray(viewer.dims.point, dtype=float)
    corners = []
    for dy, dx in itertools.product((-1, 1), (-1, 1)):
        world = point.copy()
        world[displayed] = centre + half * (dy, dx)
        corners.append(np.asarray(layer.world_to_data(world), dtype=float)[-2:])
    low, high = np.min(corners, axis=0), np.max(corners, axis=0)
    rows, cols = image_shape(layer)[:2]
    # pixel i covers [i - 0.5, i + 0.5): it shows when that interval meets (low, high)
    r0, c0 = (int(max(0, np.floor(v + 0.5))) for v in low)
    r1, c1 = int(min(rows, np.ceil(high[0] + 0.5))), int(min(cols, np.ceil(high[1] + 0.5)))
    if r1 <= r0 or c1 <= c0:
        raise UsageError(f"field of view only: none of layer {layer.name!r} is in view; "
                         "pan to it or predict the whole layer")
    return r0, r1, c0, c1


def _level0(layer):
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def image_shape(layer) -> tuple[int, ...]:
    """The shape of image layer `layer` (level 0 of a multiscale one): (H, W) grey or (H, W, C) RGB(A).
    DataError for anything that is not one 2-D image."""
    shape = tuple(_level0(layer).shape)
    rgb = bool(getattr(layer, "rgb", False))
    if len(shape) != (3 if rgb else 2):
        kind = "an RGB" if rgb else "a grey"
        raise DataError(f"layer {layer.name!r}: {kind} image of shape {shape} has more than 2 "
                        "dimensions; segzoo segments one 2-D image (H&E RGB)")
    return shape


def layer_image(layer, box: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, list[str]]:
    """The pixels of image layer `layer` (within `box`, see visible_box) as segzoo reads an array
    (HxW grey, HxWx3 RGB or HxWx4 RGBA; segzoo.io.images converts them) and notes on the conversions:
    grey is replicated to RGB, alpha dropped. DataError for anything that is not one 2-D image."""
    image_shape(layer)
    data = _level0(layer)
    if box is not None:
        r0, r1, c0, c1 = box
        data = data[r0:r1, c0:c1]
    image = np.asarray(data)
    notes = []
    if image.ndim == 2:
        notes.append(f"layer {layer.name!r} is grey: replicated to RGB (the models are trained on H&E RGB)")
    elif image.shape[2] == 4:
        notes.append(f"layer {layer.name!r} is RGBA: the alpha channel is dropped")
    return image, notes


def placement(layer, offset: tuple[int, int] = (0, 0)) -> dict:
    """napari layer keyword arguments (scale, translate, rotate, shear, affine) that put an array whose
    pixel (0, 0) is `layer`'s data pixel `offset` (row, col) exactly on `layer`: the layer's own
    transforms, with the offset taken through its rotate/shear/scale into the translation."""
    from napari.utils.transforms import CompositeAffine

    scale = np.asarray(layer.scale, dtype=float)[-2:]
    translate = np.asarray(layer.translate, dtype=float)[-2:]
    rotate = np.asarray(layer.rotate, dtype=float)
    shear = np.asarray(layer.shear, dtype=float)
    linear = CompositeAffine(scale=scale, rotate=rotate, shear=shear, ndim=2).linear_matrix
    return {"scale": tuple(scale), "translate": tuple(translate + linear @ np.asarray(offset, dtype=float)),
            "rotate": rotate, "shear": shear, "affine": np.asarray(layer.affine.affine_matrix)}


MICRON_UNITS = {"micrometer": 1.0, "micrometre": 1.0, "um": 1.0, "µm": 1.0, "micron": 1.0,
                "nanometer": 1e-3, "millimeter": 1e3}
"""napari layer units (pint names) that make its scale a physical pixel size, in micrometres per unit."""


def layer_mpp(layer) -> float | None:
    """The image layer's microns per pixel from its napari scale when its units are physical (a
    reader or the user set them, e.g. `units=("um", "um")`); None when they are pixels or unknown."""
    units = [str(u) for u in getattr(layer, "units", ())][-2:]
    scale = np.asarray(getattr(layer, "scale", ()), dtype=float)[-2:]
    if len(units) != 2 or len(scale) != 2 or units[0] != units[1] or units[0] not in MICRON_UNITS:
        return None
    mpp = float(scale[1]) * MICRON_UNITS[units[0]]
    return mpp if mpp > 0 else None


def scale_note(layer, model_mpp: float | None) -> str | None:
    """A note for the user when the model's scale cannot be checked or does not match: the layer's
    pixel size (layer_mpp) segzoo.config.SCALE_TOLERANCE (1.5x) or more off the model's `model_mpp`
    um/px, or unknown for a model at another scale than MoNuSeg's 40x (0.25). The plugin predicts the
    layer's pixels as they are (segzoo predict on a slide resamples to the model's scale)."""
    if model_mpp is None:
        return None
    mpp = layer_mpp(layer)
    if mpp is None:
        if abs(model_mpp - 0.25) <= 0.01:
            return None
        return (f"the model works at {model_mpp:g} um/px and the layer's pixel size is unknown: its pixels were "
                f"predicted as they are (for a 40x image, about 0.25 um/px, use a 40x model, or `segzoo predict` "
                "on the slide, which resamples)")
    if scale_mismatch(mpp, model_mpp) is None:
        return None
    return (f"layer {layer.name!r} has {mpp:g} um/px, the model {model_mpp:g} um/px: its pixels were predicted as "
            "they are, so nuclei appear at another size than the model was trained on; pick a model at the "
            "layer's scale, or run `segzoo predict` on the slide, which resamples")
