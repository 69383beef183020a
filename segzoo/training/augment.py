"""Seeded patch sampling and augmentation in numpy (backend-independent).

Each patch: a random tile, a random crop with scale jitter (crop side
patch/s, s log-uniform in [scale_min, scale_max], resized back to the patch
size; bilinear for the image, nearest for the mask), a random D4 transform
(4 rotations x flip), and colour jitter in HED stain space (Tellez et al. 2018:
each stain channel scaled by 1+U(-sigma, sigma) and shifted by U(-bias, bias))
plus brightness/contrast jitter. Optional intensity augmentations in the style of
nnU-Net (Isensee et al. 2021), off by default: gamma, Gaussian blur (focus) and
Gaussian noise, each applied with its own probability. The same seed gives the
same patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.color import hed2rgb, rgb2hed

from segzoo.training.targets import instance_targets


@dataclass
class AugmentConfig:
    d4: bool = True
    scale_min: float = 0.8
    scale_max: float = 1.25
    hed_sigma: float = 0.05
    hed_bias: float = 0.02
    brightness: float = 0.1
    contrast: float = 0.1
    gamma_prob: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    blur_prob: float = 0.0
    blur_sigma_range: tuple[float, float] = (0.5, 1.5)
    noise_prob: float = 0.0
    noise_std_max: float = 10.0  # uint8 grey levels

    @classmethod
    def disabled(cls) -> "AugmentConfig":
        return cls(d4=False, scale_min=1.0, scale_max=1.0, hed_sigma=0.0, hed_bias=0.0,
                   brightness=0.0, contrast=0.0)

    @classmethod
    def with_intensity(cls, **kwargs) -> "AugmentConfig":
        """The default augmentation plus nnU-Net's intensity set: gamma (p=0.3), blur (p=0.2),
        noise (p=0.15), which mimic scanner focus, sensor noise and exposure differences
        between the sites of a multi-centre test set."""
        return cls(gamma_prob=0.3, blur_prob=0.2, noise_prob=0.15, **kwargs)


def intensity_jitter(image: np.ndarray, rng: np.random.Generator, aug: AugmentConfig) -> np.ndarray:
    """Gamma, then Gaussian blur, then Gaussian noise, each with its own probability; uint8
    in, uint8 out. Draws nothing from `rng` when every probability is 0, so the default
    patch stream does not change."""
    if aug.gamma_prob <= 0 and aug.blur_prob <= 0 and aug.noise_prob <= 0:
        return image
    out = image.astype(np.float32)
    if aug.gamma_prob > 0 and rng.random() < aug.gamma_prob:
        out = 255.0 * (out / 255.0) ** rng.uniform(*aug.gamma_range)
    if aug.blur_prob > 0 and rng.random() < aug.blur_prob:
        sigma = rng.uniform(*aug.blur_sigma_range)
        out = ndi.gaussian_filter(out, sigma=(sigma, sigma, 0), mode="reflect")
    if aug.noise_prob > 0 and rng.random() < aug.noise_prob:
        out = out + rng.normal(0.0, rng.uniform(0.0, aug.noise_std_max), size=out.shape).astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def hed_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float, bias: float) -> np.ndarray:
    """Perturb haematoxylin/eosin/DAB concentrations; uint8 in, uint8 out."""
    if sigma <= 0 and bias <= 0:
        return image
    hed = rgb2hed(image)
    alpha = rng.uniform(1 - sigma, 1 + sigma, size=3)
    beta = rng.uniform(-bias, bias, size=3)
    rgb = hed2rgb(hed * alpha + beta)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


class PatchSampler:
    """Draws augmented (image uint8 HxWx3, target float32 HxWxC) patches from whole tiles.

    Without `instance_maps` the target is the mask (C = 1). With them, `labels` holds each
    tile's instance labels (None for a mask-only tile) and the target is
    segzoo.training.targets.instance_targets of the augmented patch (C = 2 + len(instance_maps)):
    the labels take the same crop, nearest-neighbour resize and D4 transform as the mask, and
    the maps are computed on the patch, at its scale. The random draws are the same either way."""

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], patch_size: int,
                 augment: AugmentConfig | None = None, *, labels: list[np.ndarray | None] | None = None,
                 instance_maps: list[str] | tuple[str, ...] = ()):
        if not images:
            raise ValueError("PatchSampler needs at least one image")
        if len(images) != len(masks):
            raise ValueError("PatchSampler needs one mask per image")
        self.instance_maps = tuple(instance_maps)
        if self.instance_maps:
            labels = list(labels) if labels is not None else [None] * len(images)
            if len(labels) != len(images):
                raise ValueError("PatchSampler needs one label image (or None) per image")
            self.labels = [None if lab is None else lab.astype(np.int32) for lab in labels]
        else:
            self.labels = [None] * len(images)
        self.target_channels = 2 + len(self.instance_maps) if self.instance_maps else 1
        self.images = images
        self.masks = [m.astype(np.uint8) for m in masks]
        self.patch_size = int(patch_size)
        self.augment = augment or AugmentConfig()
        areas = np.array([im.shape[0] * im.shape[1] for im in images], dtype=np.float64)
        self.tile_probs = areas / areas.sum()

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        aug, p = self.augment, self.patch_size
        index = rng.choice(len(self.images), p=self.tile_probs)
        image, mask, labels = self.images[index], self.masks[index], self.labels[index]
        scale = float(np.exp(rng.uniform(np.log(aug.scale_min), np.log(aug.scale_max))))
        crop = max(int(round(p / scale)), 1)
        h, w = mask.shape
        if h < crop or w < crop:  # small tiles: reflect-pad up to the crop size
            pad = ((0, max(crop - h, 0)), (0, max(crop - w, 0)))
            image = np.pad(image, pad + ((0, 0),), mode="symmetric")
            mask = np.pad(mask, pad, mode="symmetric")
            labels = None if labels is None else np.pad(labels, pad, mode="symmetric")
            h, w = mask.shape
        y = int(rng.integers(0, h - crop + 1))
        x = int(rng.integers(0, w - crop + 1))
        img = image[y:y + crop, x:x + crop]
        msk = mask[y:y + crop, x:x + crop]
        lab = None if labels is None else labels[y:y + crop, x:x + crop]
        if crop != p:
            img = np.asarray(Image.fromarray(img).resize((p, p), Image.BILINEAR))
            msk = np.asarray(Image.fromarray(msk).resize((p, p), Image.NEAREST))
            if lab is not None:  # int32 -> PIL mode "I", nearest: labels stay labels
                lab = np.asarray(Image.fromarray(np.ascontiguousarray(lab)).resize((p, p), Image.NEAREST))
        if aug.d4:
            k = int(rng.integers(4))
            img, msk = np.rot90(img, k), np.rot90(msk, k)
            lab = None if lab is None else np.rot90(lab, k)
            if rng.random() < 0.5:
                img, msk = img[:, ::-1], msk[:, ::-1]
                lab = None if lab is None else lab[:, ::-1]
        img = hed_jitter(np.ascontiguousarray(img), rng, aug.hed_sigma, aug.hed_bias)
        if aug.brightness > 0 or aug.contrast > 0:
            c = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
            b = rng.uniform(-aug.brightness, aug.brightness) * 255.0
            mean = img.mean()
            img = np.clip((img.astype(np.float32) - mean) * c + mean + b, 0, 255).astype(np.uint8)
        img = intensity_jitter(img, rng, aug)
        if self.instance_maps:
            lab = None if lab is None else np.ascontiguousarray(lab)
            return np.ascontiguousarray(img), instance_targets(msk, lab, self.instance_maps)
        return np.ascontiguousarray(img), np.ascontiguousarray(msk, dtype=np.float32)[..., None]
