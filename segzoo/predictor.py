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
        return Prediction(prob=prob.astype(np.float32), mask=mask, labels=labels, image=rgb)

    def __repr__(self) -> str:
        return f"Predictor({self.config.name or self.config.architecture!r}, runtime={self.runtime!r})"


def sample_image_path() -> Path:
    """A 512x512 H&E crop that ships with segzoo (MoNuSeg 2018 training tile, CC BY-NC-SA 4.0)."""
    return Path(__file__).parent / "samples" / "monuseg_sample.png"
