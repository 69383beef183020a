"""The predictor: image in, nuclei probabilities, mask and instance labels out.

Runtime-agnostic: it holds a BatchRunner (see segzoo.inference) and the model's
ModelConfig, so every runtime pre- and post-processes identically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segzoo.config import ModelConfig
from segzoo.imageio import ImageLike, read_image
from segzoo.inference import BatchRunner, predict_probabilities
from segzoo.postprocessing import probabilities_to_instances


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
        return int(len(np.unique(self.labels)) - 1) if self.labels.any() else 0

    def measurements(self) -> list[dict]:
        """Per-nucleus area, centroid, bounding box, mean intensity and probability."""
        from segzoo.writers import measure_nuclei

        return measure_nuclei(self.labels, self.image, self.prob)

    def to_geojson(self, object_type: str = "detection") -> dict:
        """QuPath-ready GeoJSON FeatureCollection of nucleus polygons."""
        from segzoo.writers import geojson_collection

        return geojson_collection(self.labels, self.measurements(), object_type=object_type)


class Predictor:
    """Predict nuclei with one model; build with segzoo.load() or Predictor.from_folder()."""

    def __init__(self, run_batch: BatchRunner, config: ModelConfig, runtime: str = "keras"):
        self.run_batch = run_batch
        self.config = config
        self.runtime = runtime

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "Predictor":
        """Keras runtime from a model folder (config.json + model.weights.h5)."""
        from segzoo.inference import keras_runner
        from segzoo.model_io import load_model

        model, config = load_model(folder)
        return cls(keras_runner(model), config, runtime="keras")

    def predict(self, image: ImageLike, *, tta: bool = False, tile_size: int | None = None,
                overlap: int | None = None, batch_size: int | None = None) -> Prediction:
        rgb = read_image(image)
        prob = predict_probabilities(self.run_batch, rgb, self.config, tile_size=tile_size,
                                     overlap=overlap, batch_size=batch_size, tta=tta)[..., 0]
        mask, labels = probabilities_to_instances(prob, self.config.postprocessing)
        return Prediction(prob=prob.astype(np.float32, copy=False), mask=mask, labels=labels, image=rgb)

    def predict_batch(self, images, *, progress: bool = True, **kwargs):
        """Predict several images (a list, or a folder of images). Yields (source, Prediction
        or the SegzooError it raised), so one bad image does not stop the others."""
        from tqdm import tqdm

        from segzoo.errors import SegzooError

        items = list_images(images) if isinstance(images, (str, os.PathLike)) else list(images)
        for item in tqdm(items, desc="predict", unit="image", disable=not progress):
            try:
                yield item, self.predict(item, **kwargs)
            except SegzooError as err:
                yield item, err

    def __repr__(self) -> str:
        return f"Predictor({self.config.name or self.config.architecture!r}, runtime={self.runtime!r})"


def sample_image_path() -> Path:
    """A 512x512 H&E crop that ships with segzoo (MoNuSeg 2018 training tile, CC BY-NC-SA 4.0)."""
    return Path(__file__).parent / "samples" / "monuseg_sample.png"


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (TIFF, PNG, JPEG) directly inside `folder`, sorted."""
    from segzoo.errors import DataError
    from segzoo.imageio import IMAGE_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
