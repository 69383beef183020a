"""A segzoo model as a bioimage.io model package (rdf.yaml + files, zipped): what deepImageJ, QuPath's
bioimage.io extension and bioimageio.core run. `export_bioimageio` (`segzoo export NAME|FOLDER --format
bioimageio --out PKG.zip`) writes it from a zoo name or a model folder (config.json + model.onnx; a
released zoo folder's README.md, figure.png and metrics.json give the documentation and the cover).

The package holds the model's fp32 ONNX file as it is (opset <= 17: deepImageJ's Java onnxruntime is
at most 1.13); its input is the RGB image as 0-255 values, axes batch/y/x/channel (the ONNX graph's
NHWC), with segzoo's normalisation written as `scale_linear` along the channel axis (gain = scale/std,
offset = -mean/std: exactly segzoo.predict.preprocessing.normalize, whose mean/std are on the 0-1 scale
that `scale` makes), sizes min + n * step with step = the stride and a halo of half the tiling overlap.
Its output is the nucleus probability (then the instance maps), 0-1. Test tensors are the bundled
sample tile, the output computed with onnxruntime on exactly that preprocessing; the model's whole
config.json is kept under `config.segzoo` (threshold, instance post-processing, tiling, resolution),
which segzoo.load reads back (segzoo.zoo.bioimageio). No field names a URL or a GitHub user, so
validating the package never reaches the network; bioimage.io's `id` and `maintainers` (a GitHub user)
are assigned at upload and left out.

Before writing, the package is checked with bioimageio.core (`check='test'`: the format, the files and
the test outputs recomputed through its own pipeline) or bioimageio.spec (`'validate'`), from the
optional extra segzoo[bioimageio].
"""

from __future__ import annotations

import datetime
import hashlib
import io
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from segzoo.config import CONFIG_FILENAME, ONNX_FILENAMES, ModelConfig
from segzoo.errors import ModelError, ParityError, UnknownNameError, UsageError
from segzoo.export.bioimageio_check import CHECKS, check_package
from segzoo.io.files import atomic_write_bytes, output_file_problem
from segzoo.io.images import read_image, sample_image_path

log = logging.getLogger(__name__)

FORMAT_VERSION = "0.5.4"
"""The model spec version written: bioimageio.spec 0.5.x reads it (bumping the patch version), and it
keeps `documentation` and `covers` as plain file names, as the Java parsers of deepImageJ (JDLL) and
QuPath read them (0.5.11 made them objects with a sha256)."""
RDF_NAME = "rdf.yaml"
LICENSE = "CC-BY-NC-SA-4.0"  # MoNuSeg 2018's licence, which the weights inherit
MAX_OPSET = 17  # deepImageJ ships onnxruntime up to 1.13, which runs ONNX opset <= 17
PARITY_ATOL = 1e-4
INPUT_ID, OUTPUT_ID = "image", "probabilities"
CARD_FILES = ("README.md", "figure.png", "metrics.json")
COVER_MAX = (1024, 512)  # bioimage.io: covers 2:1 or 1:1, under 500 kB
CITATIONS = {  # (text, doi): MoNuSeg, and each architecture's paper (arXiv's DOI: no URL to check online)
    "monuseg": (("Kumar N, Verma R, Sharma S, Bhargava S, Vahadane A, Sethi A. A Dataset and a Technique for "
                 "Generalized Nuclear Segmentation for Computational Pathology. IEEE TMI 36(7), 2017 (MoNuSeg)"),
                "10.1109/TMI.2017.2677499"),
    "unet": (("Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
              "MICCAI 2015"), "10.1007/978-3-319-24574-4_28"),
    "segnet": (("Badrinarayanan V, Kendall A, Cipolla R. SegNet: A Deep Convolutional Encoder-Decoder Architecture "
                "for Image Segmentation. IEEE TPAMI 39(12), 2017"), "10.1109/TPAMI.2016.2644615"),
    "deeplabv3": (("Chen L-C, Papandreou G, Schroff F, Adam H. Rethinking Atrous Convolution for Semantic Image "
                   "Segmentation. arXiv:1706.05587, 2017 (DeepLabV3)"), "10.48550/arXiv.1706.05587"),
}


def export_bioimageio(source: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                      check: str = "test", saved_model: bool = False) -> dict:
    """Write the bioimage.io package of `source` (a zoo name or a model folder with config.json and
    model.onnx) to the zip file `out`, after checking it (`check`: 'test' runs bioimageio.core's test,
    'validate' bioimageio.spec's validation, 'none' skips both). `saved_model`: also a TensorFlow
    SavedModel of the Keras weights (segzoo.export.bioimageio_tf). Returns {"path", "bytes", "opset",
    "max_abs_diff" (packaged preprocessing + ONNX vs segzoo's normalize + ONNX on the test tile),
    "checked", "name", "weights"}."""
    if check not in CHECKS:
        raise UnknownNameError(f"unknown check {check!r}; valid checks: {', '.join(CHECKS)}", argument="check")
    out = Path(out)
    problem = output_file_problem(out, overwrite=overwrite)
    if problem:
        raise UsageError(problem.replace("pass --overwrite", "pass overwrite=True"), argument="overwrite")
    folder, card = _model_files(source)
    config = ModelConfig.load(folder / CONFIG_FILENAME)
    onnx_bytes = (folder / ONNX_FILENAMES["fp32"]).read_bytes()
    opset = _check_onnx(folder / ONNX_FILENAMES["fp32"])
    tile = test_tile(config)
    gain, offset = scale_linear(config)
    test_output, max_diff = _test_output(onnx_bytes, tile, config, gain, offset)
    name = config.name or folder.name
    files = {"model.onnx": onnx_bytes, "test_input.npy": _npy(tile[None].astype(np.float32)),
             "test_output.npy": _npy(test_output), "sample_input.png": _png(tile),
             "sample_output.tif": _tif(test_output[0]), "cover.jpg": _cover(card, tile, test_output[0, ..., 0]),
             "README.md": documentation(name, config, card).encode("utf-8")}
    if (card / "metrics.json").is_file():
        files["metrics.json"] = (card / "metrics.json").read_bytes()
    tf_version = None
    if saved_model:
        from segzoo.export.bioimageio_tf import SAVED_MODEL_FILE, keras_folder, saved_model_zip

        files[SAVED_MODEL_FILE], tf_version = saved_model_zip(keras_folder(source), INPUT_ID, OUTPUT_ID)
    rdf = describe(name, config, files, opset=opset, tensorflow=tf_version)
    files[RDF_NAME] = yaml_text(rdf).encode("utf-8")
    data = _zip(files)
    with tempfile.TemporaryDirectory(prefix="segzoo-bioimageio-") as tmp:
        staged = Path(tmp) / out.name
        staged.write_bytes(data)
        check_package(staged, check)
    atomic_write_bytes(out, data)
    return {"path": str(out), "bytes": len(data), "opset": opset, "max_abs_diff": max_diff, "checked": check,
            "name": rdf["name"], "weights": list(rdf["weights"])}


def _model_files(source: str | os.PathLike) -> tuple[Path, Path]:
    """(folder with config.json + model.onnx, folder with the card files): a model folder is both; a zoo
    name's verified files come from the Hub cache or the bundled copy, its card from the bundled copy."""
    from segzoo.zoo.registry import bundled_folder
    from segzoo.zoo.sources import resolve_zoo

    path = Path(source)
    if path.is_dir():
        folder = card = path
    elif os.sep in os.fspath(source) or path.suffix:
        raise UsageError(f"{source}: not a model folder or a zoo name", argument="source")
    else:
        folder = resolve_zoo(os.fspath(source), runtime="onnx")
        card = folder if (folder / "README.md").is_file() else (bundled_folder(os.fspath(source)) or folder)
    for filename in (CONFIG_FILENAME, ONNX_FILENAMES["fp32"]):
        if not (folder / filename).is_file():
            raise ModelError(f"{folder}: no {filename}; a bioimage.io package needs config.json and model.onnx "
                             "(`segzoo export FOLDER --out FOLDER/model.onnx` writes the ONNX file)")
    return folder, card


def _check_onnx(path: Path) -> int:
    """The default-domain opset of the segzoo ONNX file `path` (its metadata and checksum verified);
    ModelError when it is above MAX_OPSET."""
    import onnx

    from segzoo.runtime.onnx_format import read_segzoo_onnx

    data, _ = read_segzoo_onnx(path)
    model = onnx.load_model_from_string(data)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset > MAX_OPSET:
        raise ModelError(f"{path}: ONNX opset {opset}; deepImageJ's onnxruntime (<= 1.13) runs opset <= {MAX_OPSET}: "
                         f"re-export it with `segzoo export --opset {MAX_OPSET}`")
    return opset


def sizes(config: ModelConfig) -> tuple[int, int, int]:
    """(min, step, halo) of the package's y and x axes: step = the stride; halo = half the tiling overlap
    (the border segzoo's tiles blend away); min = the first stride multiple >= 4 halos (half of a tile
    of that size is inside its halo) and >= one stride."""
    step = config.preprocessing.pad_to_stride
    halo = config.inference.overlap // 2
    return -(-max(4 * halo, step) // step) * step, step, halo


def test_tile(config: ModelConfig) -> np.ndarray:
    """The bundled sample tile (uint8 HxWx3), cropped at the bottom/right to a size the package accepts:
    min + n * step (segzoo.io.images.sample_image_path)."""
    image = read_image(sample_image_path())
    least, step, _ = sizes(config)
    h, w = ((s - least) // step * step + least for s in image.shape[:2])
    if min(h, w) < least:
        raise ModelError(f"the sample tile {image.shape[:2]} is smaller than the package's minimum size {least}")
    return image[:h, :w]


def scale_linear(config: ModelConfig) -> tuple[list[float], list[float]]:
    """Per-channel (gain, offset) of scale_linear on the 0-255 input that equal segzoo's normalize,
    (x * scale - mean) / std: gain = scale / std, offset = -mean / std (mean and std are on the scale
    `scale` makes: 0-1 for the zoo's scale 1/255)."""
    prep = config.preprocessing
    return ([prep.scale / s for s in prep.std], [-m / s for m, s in zip(prep.mean, prep.std)])


def apply_scale_linear(batch: np.ndarray, gain: list[float], offset: list[float]) -> np.ndarray:
    """float32 x * gain + offset along the last axis, computed as bioimageio.core does (float64 factors,
    then ensure_dtype float32)."""
    return (batch.astype(np.float32) * np.asarray(gain) + np.asarray(offset)).astype(np.float32)


def _test_output(onnx_bytes: bytes, tile: np.ndarray, config: ModelConfig, gain, offset) -> tuple[np.ndarray, float]:
    """(the ONNX output on the packaged preprocessing of `tile`, its max difference from segzoo's own
    normalize + ONNX); ParityError above PARITY_ATOL."""
    from segzoo.predict.preprocessing import normalize
    from segzoo.runtime.onnx import onnx_runner

    run = onnx_runner(onnx_bytes)
    packaged = np.asarray(run(apply_scale_linear(tile[None], gain, offset)), dtype=np.float32)
    ours = run(normalize(tile, config.preprocessing)[None])
    diff = float(np.max(np.abs(packaged - ours)))
    if diff > PARITY_ATOL:
        raise ParityError(f"the packaged scale_linear preprocessing changes the output by {diff:.2e} "
                          f"(> {PARITY_ATOL}) against segzoo's normalize")
    return packaged, diff


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _tif(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.ascontiguousarray(array[..., 0] if array.shape[-1] == 1 else array))
    return buffer.getvalue()


def _cover(card: Path, tile: np.ndarray, prob: np.ndarray) -> bytes:
    """cover.jpg, 2:1 and at most COVER_MAX: the first row of figure.png's panels (image | ground truth |
    prediction) without the ground truth; without figure.png, the test tile beside it with the nucleus
    probability in green."""
    from PIL import Image

    if (card / "figure.png").is_file():
        figure = Image.open(card / "figure.png").convert("RGB")
        panel = figure.width // 3
        if figure.height >= panel > 0:
            left, right = figure.crop((0, 0, panel, panel)), figure.crop((2 * panel, 0, 3 * panel, panel))
        else:
            side = min(figure.size)
            left = right = figure.crop((0, 0, side, side))
    else:
        shown = tile.astype(np.float32)
        shown[..., 1] = np.maximum(shown[..., 1], 255 * prob)
        left, right = Image.fromarray(tile), Image.fromarray(shown.astype(np.uint8))
    side = min(left.height, COVER_MAX[1])
    cover = Image.new("RGB", (2 * side, side))
    cover.paste(left.resize((side, side)), (0, 0))
    cover.paste(right.resize((side, side)), (side, 0))
    buffer = io.BytesIO()
    cover.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def documentation(name: str, config: ModelConfig, card: Path) -> str:
    """The package's README.md: what the package computes and what it leaves to segzoo, how it was
    validated, then the model card (its Hub front matter dropped)."""
    text = (card / "README.md").read_text(encoding="utf-8") if (card / "README.md").is_file() else ""
    body = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.DOTALL).strip() or f"# {name}"
    least, step, halo = sizes(config)
    post = config.postprocessing
    instances = (f"the learned `{post.instance_map}` map (marker threshold {post.marker_threshold})"
                 if post.instance_map else f"a distance-transform watershed (minimum distance "
                 f"{post.watershed_min_distance} px)")
    channels = ", ".join(["nucleus probability", *config.instance_maps])
    return f"""{body}

## bioimage.io package

This package runs `{name}` in deepImageJ, QuPath's bioimage.io extension and bioimageio.core. Input
`{INPUT_ID}`: an RGB image as 0-255 values (axes batch, y, x, channel), at {config.resolution.mpp or '?'} um per
pixel (40x); height and width {least} + n * {step} pixels (any image fits once padded; segzoo pads by
reflection). Pre-processing: `scale_linear` along the channel axis, the same (x / 255 - mean) / std as
segzoo. Output `{OUTPUT_ID}`: {channels}, 0-1, at the input's size; tiles should overlap by {2 * halo} px
(a halo of {halo} px each side). The package ends there: segzoo's post-processing (threshold
{post.threshold}, objects under {post.min_object_size} px removed, holes under {post.fill_holes_size} px
filled, touching nuclei split by {instances}) is in `config.segzoo` (the model's whole config.json), which
`segzoo.load("this-package.zip")` applies: `segzoo predict --model this-package.zip tile.png --out out/`.

## Validation

The test tensors are the sample H&E tile that ships with segzoo (MoNuSeg-derived), the output computed
with onnxruntime on exactly this pre-processing; `bioimageio test` reproduces it. To validate the model
on unseen data, score its masks at the threshold above against annotated nuclei (Dice, AJI, PQ), as
`segzoo evaluate {name} --data TILES/` does; the MoNuSeg 2018 test results are in the sections above and
in `metrics.json`. Not validated for other stains, magnifications or scanners; not for diagnosis. The other
files the card names (Keras weights, training logs, figure) are in the model's Hugging Face repo.
"""


def describe(name: str, config: ModelConfig, files: dict[str, bytes], *, opset: int,
             tensorflow: str | None = None) -> dict:
    """The rdf.yaml content (format FORMAT_VERSION) for the package files `files` (with the SavedModel
    written by TensorFlow `tensorflow`, when given)."""
    from segzoo import __version__

    def sha(filename: str) -> str:
        return hashlib.sha256(files[filename]).hexdigest()

    least, step, halo = sizes(config)
    gain, offset = scale_linear(config)
    arch = config.architecture
    units = {"unit": "micrometer", "scale": config.resolution.mpp} if config.resolution.mpp else {}

    def space(axis_id: str, size: dict) -> dict:
        return {"type": "space", "id": axis_id, "size": size, **units}

    output_space = [space(a, {"tensor_id": INPUT_ID, "axis_id": a}) for a in "yx"]
    if halo:
        output_space = [{**axis, "halo": halo} for axis in output_space]
    cite = [CITATIONS["monuseg"], *([CITATIONS[arch]] if arch in CITATIONS else [])]
    rdf = {
        "type": "model", "format_version": FORMAT_VERSION, "name": f"segzoo-{name}",
        "description": (f"Nucleus segmentation of H&E histology (40x, {config.resolution.mpp or '?'} um/px): "
                        f"{arch} trained on MoNuSeg 2018 by segzoo; outputs the nucleus probability (segzoo's "
                        f"threshold {config.postprocessing.threshold} and instance post-processing are in "
                        "config.segzoo)."),
        "authors": [{"name": "segzoo contributors"}],
        "cite": [{"text": text, "doi": doi} for text, doi in cite],
        "license": LICENSE,
        "tags": ["segzoo", name, arch, "nuclei", "tissue", "2d", "semantic-segmentation", "whole-slide-imaging",
                 "transmission-light-microscopy", "histology", "h-and-e", "pathology", "monuseg", "onnx",
                 "deepimagej", "qupath"],
        "documentation": "README.md",
        "covers": ["cover.jpg"],
        "attachments": [{"source": f, "sha256": sha(f)} for f in ("metrics.json",) if f in files],
        "timestamp": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "inputs": [{
            "id": INPUT_ID,
            "description": "RGB H&E image, 0-255 values (8-bit)",
            "axes": [{"type": "batch"}, *(space(a, {"min": least, "step": step}) for a in "yx"),
                     {"type": "channel", "channel_names": ["red", "green", "blue"]}],
            "test_tensor": {"source": "test_input.npy", "sha256": sha("test_input.npy")},
            "sample_tensor": {"source": "sample_input.png", "sha256": sha("sample_input.png")},
            "data": {"type": "float32", "range": [0.0, 255.0]},
            "preprocessing": [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                              {"id": "scale_linear", "kwargs": {"axis": "channel", "gain": gain, "offset": offset}}],
        }],
        "outputs": [{
            "id": OUTPUT_ID,
            "description": "nucleus probability" + (", then the instance maps " + ", ".join(config.instance_maps)
                                                    if config.instance_maps else ""),
            "axes": [{"type": "batch"}, *output_space,
                     {"type": "channel", "channel_names": ["nucleus", *config.instance_maps]}],
            "test_tensor": {"source": "test_output.npy", "sha256": sha("test_output.npy")},
            "sample_tensor": {"source": "sample_output.tif", "sha256": sha("sample_output.tif")},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": {"onnx": {
            "source": "model.onnx", "sha256": sha("model.onnx"), "opset_version": opset,
            "comment": f"segzoo's ONNX export of the Keras model (tf2onnx, NHWC), segzoo {__version__}"}},
        "config": {"segzoo": config.to_dict()},
    }
    if tensorflow:  # no `parent`: both formats come from the Keras weights, which the package does not hold
        rdf["weights"]["tensorflow_saved_model_bundle"] = {
            "source": "tf_saved_model.zip", "sha256": sha("tf_saved_model.zip"), "tensorflow_version": tensorflow,
            "comment": "Keras 3 SavedModel (keras.export.ExportArchive), endpoint 'serve' -> {probabilities}"}
    return rdf


def yaml_text(content: dict) -> str:
    """YAML of `content` (block style, keys in the order given)."""
    import yaml

    return yaml.safe_dump(content, sort_keys=False, allow_unicode=True, width=110)


def _zip(files: dict[str, bytes]) -> bytes:
    """A zip of `files`, rdf.yaml first, with fixed timestamps (the same files give the same bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for filename in sorted(files, key=lambda f: (f != RDF_NAME, f)):
            info = zipfile.ZipInfo(filename, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            archive.writestr(info, files[filename])
    return buffer.getvalue()
