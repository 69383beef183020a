"""int8 static quantization (onnxruntime.quantization, QDQ) calibrated on image files (training
tiles: a folder of images or a dataset folder, see segzoo.io.images.find_images)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from segzoo.config import ModelConfig
from segzoo.errors import DataError
from segzoo.io.files import atomic_write_bytes, refuse_overwrite
from segzoo.io.images import find_images, read_image
from segzoo.predict.preprocessing import normalize
from segzoo.runtime.onnx_format import INPUT_NAME, META_CONFIG, META_VERSION, metadata, read_segzoo_onnx, sign


def calibration_batches(folder: str | os.PathLike, config: ModelConfig, *, patches: int = 32, size: int = 256,
                        seed: int = 0, scale: float = 1.0) -> list[np.ndarray]:
    """`patches` normalised random crops (1 x size x size x 3, size cut to the images and the
    model's stride) of the images of `folder` (find_images: a folder of images, or a dataset
    folder's images/), taken from the images in turn with a seeded generator; `scale` (model
    pixels per image pixel) brings the images to the model's scale first."""
    from segzoo.datasets.monuseg import scale_image

    rng = np.random.default_rng(seed)
    images = [scale_image(read_image(path), scale) for path in find_images(folder)]
    stride = config.preprocessing.pad_to_stride
    smallest = min(min(im.shape[:2]) for im in images)
    size = min(size, smallest) // stride * stride
    if size < stride:
        raise DataError(f"{folder}: images are smaller than the model stride {stride}; cannot calibrate")
    out = []
    for i in range(patches):
        image = images[i % len(images)]
        h, w = image.shape[:2]
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        out.append(normalize(image[None, y:y + size, x:x + size], config.preprocessing))
    return out


def quantize_int8(onnx_path: str | os.PathLike, out: str | os.PathLike, calibration: str | os.PathLike, *,
                  patches: int = 32, overwrite: bool = False, scale: float | None = None) -> dict:
    """Write an int8 QDQ copy of a segzoo ONNX file, keeping its config metadata.

    onnx_path: the fp32 segzoo ONNX file; out: the int8 file written.
    calibration: a folder of images (find_images) at the data's scale.
    patches: calibration crops; overwrite: replace `out`.
    scale: model pixels per calibration-image pixel (None: the model's config.training_scale())."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(out)
    refuse_overwrite(out, overwrite)
    data, config = read_segzoo_onnx(onnx_path)
    batches = calibration_batches(calibration, config, patches=patches,
                                  scale=config.training_scale() if scale is None else scale)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches)

        def get_next(self):
            batch = next(self.items, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre, q = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        fp32.write_bytes(data)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        model = onnx.load(str(q))
    meta = metadata(onnx.load_model_from_string(data))
    sign(model, meta[META_CONFIG], version=meta[META_VERSION], extra={"segzoo_quantization": "int8-qdq-static"})
    payload = model.SerializeToString()
    atomic_write_bytes(out, payload)
    return {"path": str(out), "bytes": len(payload)}
