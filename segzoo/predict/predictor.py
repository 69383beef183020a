"""The predictor: image in, nuclei probabilities, mask and instance labels out.

Runtime-agnostic: it holds a BatchRunner (see segzoo.predict.tiling) and the model's
ModelConfig, so every runtime pre- and post-processes identically. Every batch's
output is checked to be one probability channel at the input's size (ModelOutputError
otherwise), and no-data regions (black padding, pure white fill; see
segzoo.predict.postprocessing.no_data_mask) get probability 0, so no nucleus.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from segzoo.config import ModelConfig, scale_mismatch
from segzoo.errors import ModelOutputError, SegzooError, UsageError
from segzoo.io.images import ImageLike, list_images, read_image
from segzoo.predict.postprocessing import count_nuclei, no_data_mask, outputs_to_instances
from segzoo.predict.preprocessing import fill_no_data
from segzoo.predict.source import ModelSource
from segzoo.predict.tiling import BatchRunner, predict_probabilities

if TYPE_CHECKING:
    from segzoo.io.measurements import NucleusTable

log = logging.getLogger(__name__)


def predict_outputs(run_batch: BatchRunner, rgb: np.ndarray, config: ModelConfig, **tiling) -> np.ndarray:
    """Network outputs (HxWxK float32: the nucleus probability, then the model's instance maps) of
    an HxWx3 uint8 image: no-data regions (segzoo.predict.postprocessing.no_data_mask) filled with
    mirrored tissue for the network (segzoo.predict.preprocessing.fill_no_data) and given
    probability 0 afterwards. `tiling`: predict_probabilities's tile_size, overlap, batch_size, tta."""
    no_data = no_data_mask(rgb)
    has_no_data = bool(no_data.any())
    outputs = predict_probabilities(run_batch, fill_no_data(rgb, no_data) if has_no_data else rgb, config, **tiling)
    if has_no_data:
        outputs = np.array(outputs, dtype=np.float32)  # writable copy (runners may return read-only views)
        outputs[no_data, 0] = 0.0
    return outputs


class CheckedRunner:
    """A BatchRunner that refuses output which is not (N, H, W, K) for an (N, H, W, C) batch, where K
    is the config's output_channels (1 + its instance maps).

    Every runtime's output goes through it, so a model that downsamples (output half the
    input size) or predicts several classes fails on its first batch with a message naming
    the model and both shapes, instead of giving mis-sized masks or channel 0 of K. The
    check is a shape comparison per batch. Other attributes (e.g. an onnx runner's
    `session`) are those of the wrapped runner.
    """

    def __init__(self, run_batch: BatchRunner, model: str, channels: int = 1):
        self.wrapped = run_batch
        self.model = model
        self.channels = channels

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.wrapped(batch)
        shape = tuple(getattr(out, "shape", ()))
        expected = (*batch.shape[:3], self.channels)
        if shape != expected:
            if len(shape) == 4 and shape[:3] == expected[:3]:
                problem = (f"{shape[3]} output channels; the config says {self.channels}: one nucleus "
                           "probability channel (num_classes=1), then one per architecture_kwargs.instance_maps")
            else:
                problem = ("the output must be (N, H, W, 1) at the input's height and width "
                           "(a model whose output is smaller or larger than its input is not supported)")
            raise ModelOutputError(
                f"model {self.model!r}: input batch of shape {tuple(batch.shape)} gave output of shape "
                f"{shape}; {problem}")
        return out

    def __getattr__(self, name: str):
        wrapped = self.__dict__.get("wrapped")
        if wrapped is None:
            raise AttributeError(name)
        return getattr(wrapped, name)


@dataclass
class Prediction:
    """prob: float32 HxW nucleus probability; mask: bool HxW at the config's threshold;
    labels: int32 HxW nucleus instances (0 = background); image: the uint8 RGB input."""

    prob: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    image: np.ndarray

    @property
    def num_nuclei(self) -> int:
        return count_nuclei(self.labels)

    def nuclei(self) -> NucleusTable:
        """segzoo.io.measurements.NucleusTable of every nucleus (measurements, and outlines simplified to
        within segzoo.io.outlines.SIMPLIFY_TOLERANCE px; image pixel coordinates), computed on first use and
        kept while labels, image and prob are the same objects (changed in place, it goes stale)."""
        key = (id(self.labels), id(self.image), id(self.prob))
        cached = self.__dict__.get("_nuclei")
        if cached is None or cached[0] != key:
            from segzoo.io.measurements import nucleus_table

            cached = self.__dict__["_nuclei"] = (key, nucleus_table(self.labels, self.image, self.prob))
        return cached[1]

    def measurements(self) -> list[dict]:
        """Per-nucleus area, centroid, bounding box, mean intensity and probability (see nuclei())."""
        return self.nuclei().rows()

    def to_geojson(self, object_type: str = "detection") -> dict:
        """QuPath-ready GeoJSON FeatureCollection of nucleus polygons (see nuclei())."""
        return self.nuclei().to_geojson(object_type=object_type)


def warn_scale(mpp: float, config: ModelConfig) -> None:
    """Log a WARNING when an image of `mpp` um/px is SCALE_TOLERANCE (1.5x) or more coarser or finer
    than the model's config.resolution.mpp (nothing when that is unknown); UsageError (argument 'mpp') for a bad mpp."""
    if isinstance(mpp, bool) or not isinstance(mpp, (int, float)) or not math.isfinite(mpp) or mpp <= 0:
        raise UsageError(f"mpp must be a positive number of microns per pixel, got {mpp!r}", argument="mpp")
    model_mpp = config.resolution.mpp
    mismatch = scale_mismatch(mpp, model_mpp)
    if mismatch is None:
        return
    ratio, side = mismatch
    log.warning("the image (%g um/px) is %.1fx %s than the model's scale (%g um/px) and is predicted as it is "
                "(Predictor.predict does not resample), so nuclei appear at another size than the model was trained "
                "on and accuracy drops; segzoo.predict_slides resamples to the model's scale", mpp, ratio, side,
                model_mpp)


class Predictor:
    """Predict nuclei with one model: a runtime's BatchRunner and the model's config (segzoo.load()
    builds one from a zoo name, an hf:// URI, a model folder or an .onnx file)."""

    def __init__(self, run_batch: BatchRunner, config: ModelConfig, runtime: str = "keras",
                 source: ModelSource | None = None):
        self.config = config
        self.runtime = runtime
        self.run_batch = run_batch
        # What segzoo.load() built it from, so Dask workers can load the same model themselves;
        # None for a Predictor built by hand.
        self.source = source

    @property
    def run_batch(self) -> CheckedRunner:
        """The runtime's BatchRunner, wrapped so every output's shape is checked (CheckedRunner)."""
        return self._run_batch

    @run_batch.setter
    def run_batch(self, run_batch: BatchRunner) -> None:
        if isinstance(run_batch, CheckedRunner):
            run_batch = run_batch.wrapped
        self._run_batch = CheckedRunner(run_batch, self.config.name or self.config.architecture,
                                        self.config.output_channels)

    def predict(self, image: ImageLike, *, tta: bool = False, tile_size: int | None = None,
                overlap: int | None = None, batch_size: int | None = None, mpp: float | None = None) -> Prediction:
        """Nuclei in one image (path, PIL image or HxWx3 array; see segzoo.io.images).

        No-data regions (segzoo.predict.postprocessing.no_data_mask: black padding, pure white fill)
        are filled with mirrored tissue for the network (segzoo.predict.preprocessing.fill_no_data)
        and get prob 0, so no nucleus is found there; `image` stays the input as read.

        `mpp`: the image's microns per pixel, when known. The image is predicted as it is, never
        resampled here; when it is 1.5x or more coarser or finer than the model's
        config.resolution.mpp, a WARNING names both scales and that segzoo.predict_slides resamples
        to the model's scale. (segzoo.predict does not import the zoo, so unlike predict_slides'
        warning this one cannot name the zoo models trained at the image's scale.)"""
        if mpp is not None:
            warn_scale(mpp, self.config)
        rgb = read_image(image)
        outputs = predict_outputs(self.run_batch, rgb, self.config, tile_size=tile_size, overlap=overlap,
                                  batch_size=batch_size, tta=tta)
        prob, mask, labels = outputs_to_instances(outputs, self.config)
        return Prediction(prob=prob, mask=mask, labels=labels, image=rgb)

    def predict_batch(self, images, *, progress: bool = True, **kwargs):
        """Predict several images (a list, or a folder of images). Yields (source, Prediction
        or the SegzooError it raised), so one bad image does not stop the others; a
        ModelOutputError (the model's fault, not the image's) is raised."""
        from tqdm import tqdm

        items = list_images(images) if isinstance(images, (str, os.PathLike)) else list(images)
        for item in tqdm(items, desc="predict", unit="image", disable=not progress):
            try:
                yield item, self.predict(item, **kwargs)
            except ModelOutputError:
                raise  # the model, not the image, is at fault: every image would fail the same way
            except SegzooError as err:
                yield item, err

    def __repr__(self) -> str:
        return f"Predictor({self.config.name or self.config.architecture!r}, runtime={self.runtime!r})"

