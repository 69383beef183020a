"""segzoo: a model zoo for nuclei segmentation in H&E histology images.

Importing segzoo is cheap: Keras/TensorFlow are imported only by the functions
that need them (model building, training, the Keras runtime).
"""

from __future__ import annotations

__version__ = "0.1.0"

from segzoo.config import ModelConfig
from segzoo.errors import ConfigError, DataError, SegzooError, UnknownNameError
from segzoo.models.architectures import list_architectures


def create_model(name: str, **kwargs):
    """Build an untrained Keras model of architecture `name` (see list_architectures())."""
    from segzoo.models.architectures import create_model as _create

    return _create(name, **kwargs)


def load(source, *, runtime: str = "auto", revision: str | None = None, cache_dir=None,
         precision: str = "fp32", threads: int | None = None):
    """A Predictor from a zoo name, 'hf://org/repo[@rev]', a model folder or an .onnx file (see
    segzoo.zoo.loading); precision='int8' runs the int8 ONNX file on onnxruntime."""
    from segzoo.zoo.loading import load as _load

    return _load(source, runtime=runtime, revision=revision, cache_dir=cache_dir, precision=precision,
                 threads=threads)


def predict_slides(model, slides, out, *, options=None, executor=None, on_chunk=None,
                   precision: str = "fp32", runtime: str = "auto"):
    """Nuclei of whole slides into the folder `out`; one SlideSummary per slide, in order.

    model: a Predictor, or what load() takes (loaded with `precision` and `runtime`); slides: slide
    files, folders of them, or open Slides (segzoo.slides.run.orchestrator.SlideInput); options: a
    segzoo.slides.options.SlideOptions (mpp, chunk_size, halo, tissue, overwrite, restart, ...);
    executor: None runs here with overlapped threads, segzoo.slides.run.orchestrator.dask_executor(
    client=..., workers=...) on a dask.distributed cluster; on_chunk(slide, chunk, nuclei or None)
    after each chunk. See segzoo.slides.run.orchestrator."""
    from segzoo.slides.run.orchestrator import predict_slides as _predict

    return _predict(model, slides, out, options=options, executor=executor, on_chunk=on_chunk,
                    precision=precision, runtime=runtime)


def list_models() -> list[str]:
    """Names of the trained models in the zoo."""
    from segzoo.zoo.registry import list_models as _list

    return _list()


def save_model(model, folder, config: ModelConfig, *, overwrite: bool = False):
    """Write `folder/config.json` + `folder/model.weights.h5` atomically."""
    from segzoo.models.folders import save_model as _save

    return _save(model, folder, config, overwrite=overwrite)


def load_keras_model(folder):
    """Load a model folder; returns (keras_model, ModelConfig)."""
    from segzoo.models.folders import load_model as _load

    return _load(folder)


__all__ = [
    "__version__",
    "ConfigError",
    "DataError",
    "ModelConfig",
    "SegzooError",
    "UnknownNameError",
    "create_model",
    "list_architectures",
    "list_models",
    "load",
    "load_keras_model",
    "predict_slides",
    "save_model",
]
