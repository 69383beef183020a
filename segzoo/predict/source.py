"""ModelSource: where a Predictor's model came from, so another process can load the same model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSource:
    """What segzoo.load built a Predictor from: `source` (a zoo name, 'hf://org/repo@revision', or an
    absolute model folder or .onnx path), `precision` ('fp32' or 'int8') and the `runtime` it chose
    ('onnx' or 'keras'). A Dask worker loads the same model from it (segzoo.slides.run.worker)."""

    source: str
    precision: str
    runtime: str
