"""bioimage.io model packages as segzoo models: segzoo.load("PKG.zip" | "rdf.yaml" | "package-folder/").

Reads the package's rdf.yaml with PyYAML and runs its ONNX weights on onnxruntime
(segzoo.runtime.onnx_axes): neither bioimageio.core, bioimageio.spec, Keras nor TensorFlow is imported.
A package segzoo exported (segzoo.export.bioimageio) carries the model's config.json under
`config.segzoo`, so it predicts exactly as the zoo model does. Any other package runs through the same
tiling, instances, outputs and whole-slide path when it is model spec 0.5 with ONNX weights, one input
of y, x and 3 channels (and a batch axis or none) fed the RGB image as 0-255 values, and one output of
the input's height and width with one channel (or no channel axis): its pre-processing (ensure_dtype,
scale_linear, fixed_zero_mean_unit_variance, in any order and number) is folded into the per-channel
(x * scale - mean) / std of ModelConfig.preprocessing, which is exact for a per-channel affine map
with positive gains; its scale comes from the space axes' unit and scale (else slides need their
microns per pixel); its threshold is 0.5, or that of a `binarize` post-processing (which segzoo applies
itself, as it does a `sigmoid`). Anything else is a ModelError naming the rdf field.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from segzoo.config import Inference, ModelConfig, Postprocessing, Preprocessing, Resolution
from segzoo.errors import ChecksumError, ModelError
from segzoo.predict.predictor import Predictor
from segzoo.predict.source import ModelSource
from segzoo.runtime.onnx_axes import AxesRunner, AxisSizes, Layout

log = logging.getLogger(__name__)

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml", "model.yaml")  # bioimageio.spec's names (or '*.<name>')
FOREIGN_ARCHITECTURE = "bioimageio"  # ModelConfig.architecture of a package segzoo did not export
SCALE = 1.0 / 255.0  # the folded preprocessing's scale: mean and std on the 0-1 scale, as segzoo's
LENGTH_UNITS = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "angstrom": 1e-4}
FLOAT_TYPES = ("float32", "float64")
HOLDS_0_255 = ("uint8", "uint16", "uint32", "uint64", "int16", "int32", "int64", *FLOAT_TYPES)


def rdf_name(names) -> str | None:
    """The package description among file `names` (bioimageio.spec's order), or None."""
    names = sorted(names)
    for base in RDF_NAMES:
        for name in names:
            if name == base or name.endswith("." + base):
                return name
    return None


def is_package(path: str | os.PathLike) -> bool:
    """True for a bioimage.io package: a zip holding an rdf.yaml (or bioimageio.yaml), such a yaml file,
    or a folder holding one."""
    path = Path(path)
    if path.is_dir():
        return rdf_name(p.name for p in path.iterdir() if p.is_file()) is not None
    if path.suffix == ".zip" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return rdf_name(n for n in archive.namelist() if "/" not in n) is not None
    return path.is_file() and rdf_name([path.name]) is not None


class Package:
    """The files of a package (a zip, a folder or the folder of its yaml file), read by name."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.suffix == ".zip":
            with zipfile.ZipFile(self.path) as archive:
                self._names = {n for n in archive.namelist() if not n.endswith("/")}
            self.rdf_file = rdf_name(n for n in self._names if "/" not in n)
        else:
            self.root = self.path if self.path.is_dir() else self.path.parent
            self.rdf_file = self.path.name if self.path.is_file() else rdf_name(
                p.name for p in self.root.iterdir() if p.is_file())
        if self.rdf_file is None:
            raise ModelError(f"{self.path}: no {' or '.join(RDF_NAMES)} in it; not a bioimage.io package")

    def read(self, name: str, what: str) -> bytes:
        """The bytes of file `name` (relative to the yaml); ModelError naming `what` (the rdf field)."""
        if "://" in name:
            raise ModelError(f"{self.path}: {what} is a URL ({name}); segzoo reads packaged files only: "
                             "download the package with its files (a zip)")
        try:
            if self.path.suffix == ".zip":
                with zipfile.ZipFile(self.path) as archive:
                    return archive.read(name.removeprefix("./"))
            return (self.root / name).read_bytes()
        except (KeyError, OSError):
            raise ModelError(f"{self.path}: {what} names {name}, which is not in the package") from None

    def rdf(self) -> dict:
        """The parsed yaml (a mapping); ModelError when it does not parse."""
        import yaml

        text = self.read(self.rdf_file, self.rdf_file)
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ModelError(f"{self.path}: {self.rdf_file} is not valid YAML "
                             f"({' '.join(str(err).split())})") from None
        if not isinstance(content, dict):
            raise ModelError(f"{self.path}: {self.rdf_file} is not a YAML mapping")
        return content


@dataclass(frozen=True)
class PackageModel:
    """What segzoo runs of a package: its config, the layout of its ONNX graph and the graph's bytes."""

    config: ModelConfig
    layout: Layout
    onnx: bytes


class Rdf:
    """Field access that names the field in every error: `Rdf(package).get("inputs", 0, "axes")`."""

    def __init__(self, package: Package):
        self.package, self.content = package, package.rdf()

    def error(self, where: tuple, problem: str) -> ModelError:
        return ModelError(f"{self.package.path}: {field_name(where)}: {problem}")

    def get(self, *where, default=..., kind: type | tuple = object):
        value = self.content
        for i, key in enumerate(where):
            if isinstance(value, dict) and key in value or isinstance(value, list) and isinstance(key, int) \
                    and key < len(value):
                value = value[key]
            elif default is not ...:
                return default
            else:
                raise self.error(where[:i + 1], "missing")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.error(where, f"expected {names}, got {type(value).__name__} {value!r}")
        return value


def field_name(where: tuple) -> str:
    """('inputs', 0, 'axes') -> 'inputs[0].axes'."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in where).lstrip(".")


def read_package(path: str | os.PathLike) -> PackageModel:
    """The config, graph layout and ONNX bytes of the package at `path`; ModelError (ChecksumError for a
    weights file that fails its sha256) naming the rdf field segzoo cannot use."""
    rdf = Rdf(Package(path))
    if rdf.get("type", default=None) != "model":
        raise rdf.error(("type",), f"{rdf.get('type', default=None)!r}; segzoo loads model packages ('model')")
    version = str(rdf.get("format_version", kind=(str, int, float)))
    if not version.startswith("0.5."):
        raise rdf.error(("format_version",), f"{version}; segzoo reads model spec 0.5.x (convert it with "
                                             "`bioimageio update-format`, pip install 'segzoo[bioimageio]')")
    for key, count in (("inputs", "one RGB input"), ("outputs", "one probability output")):
        if len(rdf.get(key, kind=list)) != 1:
            raise rdf.error((key,), f"{len(rdf.get(key))} tensors; segzoo runs models with {count}")
    in_order, in_axes = _axes(rdf, "inputs")
    out_order, out_axes = _axes(rdf, "outputs")
    if not {"y", "x", "c"} <= set(in_order):
        raise rdf.error(("inputs", 0, "axes"), f"axes {in_order!r}; segzoo feeds an RGB image: y, x and channel")
    if in_axes["c"]["size"] != 3:
        raise rdf.error(("inputs", 0, "axes", in_order.index("c"), "channel_names"),
                        f"{in_axes['c']['size']} channels; segzoo feeds RGB images (3 channels)")
    if not {"y", "x"} <= set(out_order):
        raise rdf.error(("outputs", 0, "axes"), f"axes {out_order!r}; segzoo needs y and x (a probability map)")
    sizes = {a: _input_size(rdf, in_order.index(a), in_axes[a]) for a in "yx"}
    for a in "yx":
        _check_output_size(rdf, out_order.index(a), out_axes[a], in_axes[a], sizes[a])
    onnx_bytes = _weights(rdf)
    gains, offsets = _fold_preprocessing(rdf, in_axes["c"]["id"])
    threshold, sigmoid = _postprocessing(rdf)
    segzoo = rdf.get("config", default={}, kind=dict).get("segzoo")
    channels = out_axes["c"]["size"] if "c" in out_axes else 1
    batch = in_axes.get("b", {}).get("size")
    if segzoo is not None:
        config = ModelConfig.from_dict(segzoo, source=f"{rdf.package.path}: config.segzoo")
        _compare_preprocessing(rdf, config, gains, offsets)
        stride = config.preprocessing.pad_to_stride  # the network's own rule (min is a tiling hint)
        sizes = {a: AxisSizes(stride, stride) for a in "yx"}
    else:
        config = _foreign_config(rdf, in_axes, out_axes, sizes, gains, offsets, threshold)
    if channels != config.output_channels:
        raise rdf.error(("outputs", 0, "axes", out_order.index("c") if "c" in out_order else 0),
                        f"{channels} output channels; segzoo needs {config.output_channels} (the nucleus "
                        "probability, then the instance maps config.segzoo names)")
    layout = Layout(inputs=in_order, outputs=out_order, sizes=sizes, sigmoid=sigmoid,
                    one_at_a_time="b" not in in_order or batch == 1)
    return PackageModel(config, layout, onnx_bytes)


def _axes(rdf: Rdf, key: str) -> tuple[str, dict[str, dict]]:
    """(axis order as ROLES letters, {letter: the axis with 'index', 'id' and, for channel, 'size'})."""
    order, axes = "", {}
    for i, axis in enumerate(rdf.get(key, 0, "axes", kind=list)):
        where = (key, 0, "axes", i)
        if not isinstance(axis, dict):
            raise rdf.error(where, f"expected a mapping; segzoo reads model spec 0.5 axes, got {axis!r}")
        kind, name = axis.get("type"), axis.get("id")
        role = {"batch": "b", "channel": "c"}.get(kind) or (
            (name or "x") if kind == "space" and (name or "x") in ("y", "x") else None)
        if role is None or role in axes:
            raise rdf.error(where, f"{kind} axis {name!r}; segzoo runs 2D images: axes batch, y, x, channel "
                                   "(each at most once)")
        entry = {**axis, "id": name or {"b": "batch", "c": "channel"}.get(role, role)}
        if role == "c":
            names = rdf.get(*where, "channel_names", kind=list)
            entry["size"] = len(names)
        order += role
        axes[role] = entry
    return order, axes


def _input_size(rdf: Rdf, index: int, axis: dict) -> AxisSizes:
    where = ("inputs", 0, "axes", index, "size")
    size = rdf.get(*where, kind=(int, dict))
    if isinstance(size, int) and not isinstance(size, bool):
        return AxisSizes(fixed=size)
    if isinstance(size, dict) and isinstance(size.get("min"), int) and isinstance(size.get("step"), int) \
            and size["min"] > 0 and size["step"] > 0:
        return AxisSizes(size["min"], size["step"])
    raise rdf.error(where, f"{size!r}; segzoo needs a fixed size or min and step for an input's y and x")


def _check_output_size(rdf: Rdf, index: int, axis: dict, input_axis: dict, sizes: AxisSizes) -> None:
    """The output's y or x must have the input's size: a reference to the same input axis with offset 0
    at the input's scale, or the input's fixed size."""
    where = ("outputs", 0, "axes", index)
    size = rdf.get(*where, "size", kind=(int, dict))
    same = (isinstance(size, dict) and size.get("tensor_id") == rdf.get("inputs", 0, "id", default="input")
            and size.get("axis_id") == input_axis["id"] and not size.get("offset", 0)) or (
        isinstance(size, int) and size == sizes.fixed)
    if not same or axis.get("scale", 1.0) != input_axis.get("scale", 1.0):
        raise rdf.error(where, f"size {size!r}, scale {axis.get('scale', 1.0)}; segzoo needs an output of the "
                               f"input's size (a reference to the input's {input_axis['id']} axis, offset 0, "
                               "same scale), not a smaller or larger one")


def _weights(rdf: Rdf) -> bytes:
    weights = rdf.get("weights", kind=dict)
    if "onnx" not in weights:
        raise rdf.error(("weights",), f"{', '.join(weights) or 'none'}; segzoo runs the 'onnx' weights format "
                                      "on onnxruntime (convert the weights, e.g. `bioimageio add-weights`)")
    source = rdf.get("weights", "onnx", "source", kind=str)
    data = rdf.package.read(source, "weights.onnx.source")
    expected = rdf.get("weights", "onnx", "sha256", default=None)
    actual = hashlib.sha256(data).hexdigest()
    if expected is not None and expected != actual:
        raise ChecksumError(f"{rdf.package.path}: weights.onnx.sha256 is {expected}, but {source} has {actual}",
                            path=rdf.package.path, expected=str(expected), actual=actual)
    return data


def _per_channel(rdf: Rdf, where: tuple, value, channel_id: str, axis) -> list[float]:
    """A scalar, or a list along the channel axis, as 3 floats."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and axis is None:
        return [float(value)] * 3
    if isinstance(value, list) and len(value) in (1, 3) and axis == channel_id \
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return [float(v) for v in value] * (3 // len(value))
    raise rdf.error(where, f"{value!r} along axis {axis!r}; segzoo folds scalars or one value per channel "
                           f"(axis {channel_id!r})")


def _fold_preprocessing(rdf: Rdf, channel_id: str) -> tuple[list[float], list[float]]:
    """Per-channel (a, b) of the input's pre-processing as one map a * x + b (x: the 0-255 image)."""
    gains, offsets = [1.0] * 3, [0.0] * 3
    steps = rdf.get("inputs", 0, "preprocessing", default=[], kind=list)
    for i, step in enumerate(steps):
        where = ("inputs", 0, "preprocessing", i)
        op = rdf.get(*where, "id", kind=str)
        kwargs = rdf.get(*where, "kwargs", default={}, kind=dict)
        axis = kwargs.get("axis")
        if op == "ensure_dtype":
            dtype = kwargs.get("dtype")
            if dtype not in FLOAT_TYPES and not (i == 0 and dtype in HOLDS_0_255):
                raise rdf.error((*where, "kwargs", "dtype"), f"{dtype!r} after other steps (or one that cannot "
                                                              "hold 0-255); segzoo folds float steps only")
        elif op == "scale_linear":
            g = _per_channel(rdf, (*where, "kwargs", "gain"), kwargs.get("gain", 1.0), channel_id, axis)
            o = _per_channel(rdf, (*where, "kwargs", "offset"), kwargs.get("offset", 0.0), channel_id, axis)
            gains, offsets = [a * k for a, k in zip(gains, g)], [b * k + c for b, k, c in zip(offsets, g, o)]
        elif op == "fixed_zero_mean_unit_variance":  # bioimageio.core: (x - mean) / (std + 1e-6)
            m = _per_channel(rdf, (*where, "kwargs", "mean"), kwargs.get("mean"), channel_id, axis)
            s = _per_channel(rdf, (*where, "kwargs", "std"), kwargs.get("std"), channel_id, axis)
            gains = [a / (d + 1e-6) for a, d in zip(gains, s)]
            offsets = [(b - c) / (d + 1e-6) for b, c, d in zip(offsets, m, s)]
        else:
            raise rdf.error((*where, "id"), f"{op!r}; segzoo applies ensure_dtype, scale_linear and "
                                           "fixed_zero_mean_unit_variance (per-image statistics such as "
                                           "zero_mean_unit_variance or scale_range differ from tile to tile)")
    if any(not g > 0 or not math.isfinite(g) for g in gains):
        raise rdf.error(("inputs", 0, "preprocessing"), f"overall gains {gains}; segzoo folds positive gains only")
    return gains, offsets


def _postprocessing(rdf: Rdf) -> tuple[float | None, bool]:
    """(a binarize threshold, whether a sigmoid follows the graph) of the output's post-processing."""
    threshold, sigmoid = None, False
    for i, step in enumerate(rdf.get("outputs", 0, "postprocessing", default=[], kind=list)):
        where = ("outputs", 0, "postprocessing", i)
        op = rdf.get(*where, "id", kind=str)
        kwargs = rdf.get(*where, "kwargs", default={}, kind=dict)
        if op == "sigmoid" and threshold is None:
            sigmoid = True
        elif op == "binarize" and isinstance(kwargs.get("threshold"), (int, float)) and 0 < kwargs["threshold"] < 1:
            threshold = float(kwargs["threshold"])
        elif op != "ensure_dtype" or kwargs.get("dtype") not in FLOAT_TYPES:
            raise rdf.error((*where, "id"), f"{op!r} {kwargs}; segzoo reads a probability: it applies sigmoid, "
                                            "takes binarize's scalar threshold as its own and keeps float dtypes")
    return threshold, sigmoid


def _compare_preprocessing(rdf: Rdf, config: ModelConfig, gains: list[float], offsets: list[float]) -> None:
    """A WARNING when the package's pre-processing is not config.segzoo's (config.segzoo wins)."""
    prep = config.preprocessing
    ours = [(prep.scale / s, -m / s) for m, s in zip(prep.mean, prep.std)]
    if any(not math.isclose(a, g, rel_tol=1e-6) or not math.isclose(b, o, rel_tol=1e-6, abs_tol=1e-6)
           for (a, b), g, o in zip(ours, gains, offsets)):
        log.warning("%s: inputs[0].preprocessing (gain %s, offset %s) is not config.segzoo.preprocessing's "
                    "(gain %s, offset %s); using config.segzoo", rdf.package.path, gains, offsets,
                    [a for a, _ in ours], [b for _, b in ours])


def _mpp(axis: dict) -> float | None:
    unit = LENGTH_UNITS.get(axis.get("unit"))
    scale = axis.get("scale", 1.0)
    return None if unit is None or not isinstance(scale, (int, float)) or scale <= 0 else float(scale) * unit


def _foreign_config(rdf: Rdf, in_axes: dict, out_axes: dict, sizes: dict[str, AxisSizes], gains: list[float],
                    offsets: list[float], threshold: float | None) -> ModelConfig:
    """A ModelConfig for a package segzoo did not export: pre-processing folded (std = SCALE / a,
    mean = -b * std), stride and tile from the sizes, overlap from the halo, scale from the axes."""
    fixed = [s.fixed for s in sizes.values() if s.fixed is not None]
    stride = 1 if fixed else math.lcm(*(s.step for s in sizes.values()))
    tile = min(fixed) if fixed else max(Inference().tile_size, *(s.least for s in sizes.values()))
    halo = max(int(out_axes[a].get("halo", 0) or 0) for a in "yx")
    std = [SCALE / g for g in gains]
    name = str(rdf.get("id", default=None) or rdf.get("name", default="bioimageio model"))
    return ModelConfig(
        architecture=FOREIGN_ARCHITECTURE, name=name,
        preprocessing=Preprocessing(scale=SCALE, mean=[-b * s for b, s in zip(offsets, std)], std=std,
                                    pad_to_stride=stride, pad_mode="reflect"),
        postprocessing=Postprocessing(threshold=0.5 if threshold is None else threshold),
        inference=Inference(tile_size=tile, overlap=min(max(Inference().overlap, 2 * halo), tile // 2)),
        resolution=Resolution(mpp=_mpp(in_axes["x"])),
        provenance={"bioimageio": {"package": str(rdf.package.path), "name": rdf.get("name", default=None),
                                   "format_version": str(rdf.get("format_version"))}},
    ).validate()


def package_predictor(path: str | os.PathLike, *, threads: int | None = None,
                      source: ModelSource | None = None) -> Predictor:
    """A Predictor running the bioimage.io package at `path` (see read_package) on onnxruntime."""
    model = read_package(path)
    runner = AxesRunner(model.onnx, model.layout, threads=threads)
    graph_inputs = runner.session.get_inputs()
    rank = len(graph_inputs[0].shape or ())
    if len(graph_inputs) != 1 or rank != len(model.layout.inputs):
        raise ModelError(f"{path}: weights.onnx: the graph has {len(graph_inputs)} input(s) of rank {rank}; "
                         f"inputs[0].axes describe one of rank {len(model.layout.inputs)}")
    return Predictor(runner, model.config, runtime="onnx", source=source)
