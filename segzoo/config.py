"""The one config.json schema shared by training, evaluation and every runtime.

A model folder holds `config.json` (this schema) and `model.weights.h5`. The
config says how to build the network (architecture + kwargs), how to turn an
image into network input (preprocessing), how to turn probabilities into masks
and nuclei (postprocessing), how to tile large images (inference), and where
the weights came from (provenance). Keras and ONNX runtimes read the same file,
so they produce the same result. This module does not import Keras.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from segzoo.errors import ConfigError
from segzoo.io.files import atomic_write_text

SCHEMA_VERSION = 1
CONFIG_FILENAME = "config.json"
WEIGHTS_FILENAME = "model.weights.h5"
ONNX_FILENAMES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}  # by precision


@dataclass
class Preprocessing:
    """RGB uint8 image -> float32 network input: (x * scale - mean) / std per channel,
    then reflect-padded so height and width are multiples of `pad_to_stride`."""

    scale: float = 1.0 / 255.0
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    pad_to_stride: int = 16
    pad_mode: str = "reflect"

    def validate(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ConfigError("preprocessing.mean and preprocessing.std need the same non-zero length")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"preprocessing.std must be positive, got {self.std}")
        if self.scale <= 0:
            raise ConfigError(f"preprocessing.scale must be positive, got {self.scale}")
        if self.pad_to_stride < 1:
            raise ConfigError(f"preprocessing.pad_to_stride must be >= 1, got {self.pad_to_stride}")
        if self.pad_mode not in ("reflect", "symmetric", "edge", "constant"):
            raise ConfigError(
                f"preprocessing.pad_mode {self.pad_mode!r} is not one of reflect, symmetric, edge, constant")


INSTANCE_MAPS = {
    "distance": "each nucleus pixel's distance to the nucleus outline divided by the largest in that "
                "nucleus: 1 at the centre, falling to 0 at the outline and 0 outside (nuclei separate "
                "where it dips)",
    "boundary": "1 on nucleus outlines (2 pixels thick where two nuclei touch: both sides of the "
                "contact), 0 elsewhere (nuclei separate along it)",
    "horizontal": "HoVer-Net's horizontal map: (x - the nucleus centroid's x) / the largest |x - centroid x| "
                  "in that nucleus, in [-1, 1], stored as (h + 1) / 2 in [0, 1] (0.5 outside nuclei); its "
                  "sign flips from + to - where two nuclei touch side by side",
    "vertical": "HoVer-Net's vertical map: the same along y (nuclei touching one above the other)",
}
"""The learned instance maps an architecture can predict beside the nucleus probability
(architecture_kwargs.instance_maps lists them in output-channel order, after channel 0)."""

INSTANCE_DECODINGS = {"distance": ("distance",), "boundary": ("boundary",), "hv": ("horizontal", "vertical")}
"""postprocessing.instance_map values -> the maps each decodes from (segzoo.predict.postprocessing.
split_outputs turns them into one centre score): 'hv' needs both HoVer-Net maps."""


@dataclass
class Postprocessing:
    """Probabilities -> binary mask (`threshold`) -> nuclei instances.

    Instances are connected components split by a watershed. Without `instance_map` (models
    released before the learned maps) the watershed runs on the distance transform of the mask,
    with one marker per local maximum at least `watershed_min_distance` pixels apart. With
    `instance_map` (a decoding of INSTANCE_DECODINGS whose maps the model predicts) it runs on
    the learned maps turned into a centre score (distance: the map; boundary: 1 - the map; hv:
    1 - the steepest HoVer-Net gradient, clipped to [0, 1]), with one marker per connected region
    where the score is >= `marker_threshold`. Objects smaller than
    `min_object_size` pixels are removed and holes smaller than `fill_holes_size` are filled.
    """

    threshold: float = 0.5
    min_object_size: int = 10
    fill_holes_size: int = 30
    watershed: bool = True
    watershed_min_distance: int = 4
    instance_map: str | None = None
    marker_threshold: float = 0.5

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"postprocessing.threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 < self.marker_threshold < 1.0:
            raise ConfigError(f"postprocessing.marker_threshold must be in (0, 1), got {self.marker_threshold}")
        if self.instance_map is not None and self.instance_map not in INSTANCE_DECODINGS:
            raise ConfigError(f"postprocessing.instance_map {self.instance_map!r} is not one of "
                              f"{', '.join(INSTANCE_DECODINGS)} (or null)")
        for name in ("min_object_size", "fill_holes_size", "watershed_min_distance"):
            if getattr(self, name) < 0:
                raise ConfigError(f"postprocessing.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class Inference:
    """Sliding-window settings for images larger than one tile."""

    tile_size: int = 1024
    overlap: int = 128
    batch_size: int = 1

    def validate(self) -> None:
        if self.tile_size < 1 or self.batch_size < 1:
            raise ConfigError("inference.tile_size and inference.batch_size must be >= 1")
        if not 0 <= self.overlap < self.tile_size:
            raise ConfigError(
                f"inference.overlap must be in [0, tile_size={self.tile_size}), got {self.overlap}")


@dataclass
class Resolution:
    """The scale the model was trained at, in microns per pixel (um/px) of its input images.

    Whole-slide prediction reads the pyramid level nearest at or finer than `mpp` and
    resamples to it, so a 20x slide (about 0.5 um/px) is seen at the model's scale.
    None means unknown: slides then need an explicit --mpp. MoNuSeg 2018 tiles are
    TCGA 40x scans; their XML annotations state 0.2456-0.2527 um/px, nominally 0.25."""

    mpp: float | None = None

    def validate(self) -> None:
        if self.mpp is not None and not (isinstance(self.mpp, (int, float)) and 0 < self.mpp < 100):
            raise ConfigError(f"resolution.mpp must be a positive number of microns per pixel or null, "
                              f"got {self.mpp!r}")


SCALE_TOLERANCE = 1.5
"""An image this many times (or more) coarser or finer than the model's resolution.mpp is at the
wrong scale for it: Predictor.predict and the napari plugin say so, and slides upsampled this much
are warned about (segzoo.slides.plan.grid)."""


def scale_mismatch(mpp: float, model_mpp: float | None) -> tuple[float, str] | None:
    """(ratio >= SCALE_TOLERANCE, 'coarser' or 'finer'): how far an image of `mpp` um/px is from a
    model trained at `model_mpp` um/px; None when within SCALE_TOLERANCE or model_mpp is unknown.
    Both must be positive (callers check the image's mpp)."""
    if model_mpp is None:
        return None
    ratio, side = (mpp / model_mpp, "coarser") if mpp > model_mpp else (model_mpp / mpp, "finer")
    return (ratio, side) if ratio >= SCALE_TOLERANCE else None


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and use it the same way in every runtime."""

    architecture: str
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    inference: Inference = field(default_factory=Inference)
    resolution: Resolution = field(default_factory=Resolution)
    provenance: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    schema_version: int = SCHEMA_VERSION

    def validate(self) -> ModelConfig:
        if not isinstance(self.architecture, str) or not self.architecture:
            raise ConfigError("architecture must be a non-empty string")
        if not isinstance(self.architecture_kwargs, dict):
            raise ConfigError("architecture_kwargs must be an object")
        num_classes = self.architecture_kwargs.get("num_classes", 1)
        if isinstance(num_classes, bool) or num_classes != 1:
            raise ConfigError(
                "architecture_kwargs.num_classes: segzoo models predict one nucleus probability channel; "
                f"num_classes={num_classes!r} is not supported (use 1, or leave it out)")
        maps = self.architecture_kwargs.get("instance_maps") or []
        if not isinstance(maps, list) or any(m not in INSTANCE_MAPS for m in maps) or len(set(maps)) != len(maps):
            raise ConfigError(f"architecture_kwargs.instance_maps must be a list of distinct names from "
                              f"{', '.join(INSTANCE_MAPS)}, got {maps!r}")
        used = self.postprocessing.instance_map
        if used is not None and not set(INSTANCE_DECODINGS[used]) <= set(maps):
            raise ConfigError(f"postprocessing.instance_map {used!r} decodes the maps "
                              f"{list(INSTANCE_DECODINGS[used])}, which this model does not all predict "
                              f"(architecture_kwargs.instance_maps: {maps})")
        if self.schema_version != SCHEMA_VERSION:
            raise ConfigError(
                f"schema_version {self.schema_version} is not supported by this segzoo "
                f"(supports {SCHEMA_VERSION}); upgrade segzoo")
        self.preprocessing.validate()
        self.postprocessing.validate()
        self.inference.validate()
        self.resolution.validate()
        return self

    @property
    def instance_maps(self) -> list[str]:
        """The learned instance maps the network predicts, in channel order after channel 0."""
        return list(self.architecture_kwargs.get("instance_maps") or [])

    @property
    def output_channels(self) -> int:
        """Channels of the network output: the nucleus probability, then the instance maps."""
        return 1 + len(self.instance_maps)

    def training_scale(self) -> float:
        """Model pixels per training-tile pixel: provenance.data_mpp (recorded when training resampled
        its tiles, segzoo train --mpp) over resolution.mpp; 1.0 when the tiles were not resampled."""
        data_mpp, mpp = self.provenance.get("data_mpp"), self.resolution.mpp
        return 1.0 if data_mpp is None or mpp is None else float(data_mpp) / float(mpp)

    def instance_channels(self) -> tuple[int, ...]:
        """The output channels postprocessing.instance_map decodes, in INSTANCE_DECODINGS' order
        (empty: the distance-transform watershed)."""
        used = self.postprocessing.instance_map
        return () if used is None else tuple(1 + self.instance_maps.index(m) for m in INSTANCE_DECODINGS[used])

    @property
    def instance_decodings(self) -> list[str]:
        """The postprocessing.instance_map values this model's maps allow, in INSTANCE_DECODINGS' order."""
        return [name for name, maps in INSTANCE_DECODINGS.items() if set(maps) <= set(self.instance_maps)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> ModelConfig:
        """Parse and validate; unknown or mistyped fields raise ConfigError naming `source`."""
        try:
            if not isinstance(data, dict):
                raise ConfigError(f"expected a JSON object, got {type(data).__name__}")
            data = dict(data)
            sections = {"preprocessing": Preprocessing, "postprocessing": Postprocessing,
                        "inference": Inference, "resolution": Resolution}
            kwargs: dict[str, Any] = {}
            for key, section_cls in sections.items():
                kwargs[key] = _parse_section(section_cls, data.pop(key, {}), key)
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigError(f"unknown field(s) {unknown}; valid fields: {', '.join(sorted(known))}")
            if "architecture" not in data:
                raise ConfigError("missing required field 'architecture'")
            kwargs.update(data)
            return cls(**kwargs).validate()
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "config") -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{source}: not valid JSON ({err})") from None
        return cls.from_dict(data, source=source)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temporary file in the same folder, then rename)."""
        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelConfig:
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILENAME
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config ({err.strerror or err})") from None
        return cls.from_json(text, source=str(path))


_NUMBER_TYPES = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}


def _parse_section(section_cls, value, name: str):
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be an object, got {type(value).__name__}")
    valid = {f.name: f for f in fields(section_cls)}
    unknown = sorted(set(value) - set(valid))
    if unknown:
        raise ConfigError(f"{name} has unknown field(s) {unknown}; valid fields: {', '.join(sorted(valid))}")
    for key, item in value.items():
        expected = valid[key].type
        optional = isinstance(expected, str) and expected.endswith(" | None")
        if optional:
            expected = expected[: -len(" | None")]
            if item is None:
                continue
        expected = {"float": float, "int": int, "str": str, "bool": bool}.get(expected, expected)
        allowed = _NUMBER_TYPES.get(expected)
        if allowed is not None:
            if isinstance(item, bool) and expected is not bool:
                raise ConfigError(f"{name}.{key} must be {expected.__name__}, got bool")
            if not isinstance(item, allowed):
                raise ConfigError(f"{name}.{key} must be {expected.__name__}, got {type(item).__name__}")
        elif not isinstance(item, list):
            raise ConfigError(f"{name}.{key} must be a list, got {type(item).__name__}")
    return section_cls(**value)

