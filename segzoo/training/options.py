"""The settings of one training run: `segzoo train`'s options as a dataclass (the CLI builds it
from its arguments and takes its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segzoo.datasets.monuseg import MONUSEG_MPP
from segzoo.errors import UnknownNameError, UsageError
from segzoo.training.augment import AugmentConfig

SCHEDULES = ("cosine", "constant")
DTYPE_POLICIES = ("float32", "mixed_bfloat16")
KEEP = ("best", "last")
LOSS_NAMES = ("bce_dice", "bce", "dice", "focal", "tversky", "focal_tversky", "lovasz", "bce_lovasz")
"""The losses of segzoo.training.losses.LOSSES by name, listed here so options and the CLI's parser
can name them without importing Keras (a test keeps the two equal)."""


@dataclass
class TrainOptions:
    """One run. data: training folder (MoNuSeg layout); out: run folder (becomes a model
    folder). architecture (a registered name) unless init_from (a model folder, zoo name or
    hf:// URI) gives it; settings_from: a validated model whose threshold and post-processing
    a refit takes. mpp: the model's scale in microns per pixel (None: the data's, data_mpp);
    every tile is brought to it (segzoo.datasets.monuseg.load_sample with scale data_mpp / mpp). Sizes in pixels, lr the peak AdamW learning rate, max_minutes a wall-clock
    budget (None: none). See `segzoo train --help` for each option."""

    data: str
    out: str
    architecture: str | None = None
    init_from: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    patch_size: int = 256
    batch_size: int = 8
    epochs: int = 40
    steps_per_epoch: int = 50
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 100
    ema_momentum: float | None = None
    dtype_policy: str = "float32"
    precise_bn: int = 0
    loss: str = "bce_dice"
    map_loss_weight: float = 1.0
    freeze_trunk: bool = False
    settings_from: str | None = None
    val_fraction: float = 0.2
    val_stems: list[str] | None = None
    val_tta: bool = False
    keep: str = "best"
    no_augment: bool = False
    hed_sigma: float = AugmentConfig.hed_sigma
    intensity_augment: bool = False
    scale_jitter: tuple[float, float] = (AugmentConfig.scale_min, AugmentConfig.scale_max)
    min_object_size: int = 10
    mpp: float | None = None
    data_mpp: float = MONUSEG_MPP
    seed: int = 0
    max_minutes: float | None = None
    resume: bool = False
    overwrite: bool = False

    def check(self) -> TrainOptions:
        """UsageError (UnknownNameError for an unknown name) naming the option for settings no
        run can use (the `argument` is the field); returns self."""
        if not isinstance(self.arch_kwargs, dict):
            raise UsageError("arch_kwargs must be a JSON object (a dict)", argument="arch_kwargs")
        if int(self.arch_kwargs.get("num_classes", 1)) != 1:
            raise UsageError("MoNuSeg training is binary (nuclei vs background); use num_classes=1",
                             argument="arch_kwargs")
        if not self.architecture and not self.init_from:
            raise UsageError("give architecture or init_from", argument="architecture")
        if self.schedule not in SCHEDULES:
            raise UnknownNameError(f"unknown schedule {self.schedule!r}; valid schedules: {', '.join(SCHEDULES)}",
                                   argument="schedule")
        if self.dtype_policy not in DTYPE_POLICIES:
            raise UnknownNameError(f"unknown dtype policy {self.dtype_policy!r}; valid: {', '.join(DTYPE_POLICIES)}",
                                   argument="dtype_policy")
        if self.loss not in LOSS_NAMES:
            raise UnknownNameError(f"unknown loss {self.loss!r}; valid losses: {', '.join(LOSS_NAMES)}",
                                   argument="loss")
        if not self.map_loss_weight > 0:
            raise UsageError(f"map_loss_weight must be > 0, got {self.map_loss_weight}", argument="map_loss_weight")
        if self.freeze_trunk and not self.init_from:
            raise UsageError("freeze_trunk trains only the instance-map head of an init_from model; give init_from",
                             argument="init_from")
        if self.keep not in KEEP:
            raise UnknownNameError(f"unknown keep {self.keep!r}; valid: {', '.join(KEEP)}", argument="keep")
        for name in ("mpp", "data_mpp"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < 100):
                raise UsageError(f"{name} must be a positive number of microns per pixel, got {value!r}",
                                 argument=name)
        if self.resume and self.overwrite:
            raise UsageError("resume and overwrite exclude each other", argument="overwrite")
        return self

    @property
    def scale(self) -> float:
        """Model pixels per data pixel: data_mpp / mpp (1.0 when mpp is None)."""
        return 1.0 if self.mpp is None else self.data_mpp / self.mpp

    def augmentation(self) -> AugmentConfig:
        """The patch augmentation these options ask for."""
        if self.no_augment:
            return AugmentConfig.disabled()
        make = AugmentConfig.with_intensity if self.intensity_augment else AugmentConfig
        return make(hed_sigma=self.hed_sigma, scale_min=self.scale_jitter[0], scale_max=self.scale_jitter[1])
