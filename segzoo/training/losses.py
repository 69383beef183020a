"""Training losses on probabilities (the models end in sigmoid/softmax), keras.ops only.

Selectable by name with get_loss(): "bce_dice" (default), "bce", "dice",
"focal", "tversky", "focal_tversky", "lovasz" and "bce_lovasz".
"""

from __future__ import annotations

import keras
from keras import ops

_EPS = 1e-6


def _flat(y_true, y_pred):
    y_true = ops.cast(y_true, y_pred.dtype)
    return y_true, ops.clip(y_pred, _EPS, 1.0 - _EPS)


def soft_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """1 - soft Dice, computed per image over all pixels and classes, then averaged."""
    y_true, y_pred = _flat(y_true, y_pred)
    axes = (1, 2, 3)
    inter = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return ops.mean(1.0 - (2.0 * inter + smooth) / (total + smooth))


def bce_loss(y_true, y_pred):
    y_true, y_pred = _flat(y_true, y_pred)
    if y_pred.shape[-1] not in (None, 1):
        return ops.mean(-ops.sum(y_true * ops.log(y_pred), axis=-1))
    return ops.mean(-(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred)))


def focal_loss(y_true, y_pred, gamma: float = 2.0, alpha: float = 0.25):
    """Binary focal loss (Lin et al. 2017)."""
    y_true, y_pred = _flat(y_true, y_pred)
    p_t = y_true * y_pred + (1.0 - y_true) * (1.0 - y_pred)
    a_t = y_true * alpha + (1.0 - y_true) * (1.0 - alpha)
    return ops.mean(-a_t * ops.power(1.0 - p_t, gamma) * ops.log(p_t))


def tversky_loss(y_true, y_pred, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0):
    """1 - Tversky index (Salehi et al. 2017); beta > alpha weighs misses above false alarms."""
    y_true, y_pred = _flat(y_true, y_pred)
    axes = (1, 2, 3)
    tp = ops.sum(y_true * y_pred, axis=axes)
    fp = ops.sum((1.0 - y_true) * y_pred, axis=axes)
    fn = ops.sum(y_true * (1.0 - y_pred), axis=axes)
    return ops.mean(1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth))


@keras.saving.register_keras_serializable(package="segzoo")
def lovasz_hinge_loss(y_true, y_pred):
    """Binary Lovasz hinge (Berman, Rannen Triki, Blaschko, CVPR 2018): the tight convex
    surrogate of 1 - IoU of the nucleus class, per image, then averaged. IoU is a set measure,
    so unlike per-pixel losses it weighs a pixel by how much it changes the image's overlap.
    Works on the logits recovered from the sigmoid probabilities (binary models only)."""
    y_true, y_pred = _flat(y_true, y_pred)
    if y_pred.shape[-1] not in (None, 1):
        raise ValueError(f"the Lovasz hinge loss is binary; got {y_pred.shape[-1]} output channels")
    n = ops.shape(y_pred)[0]
    labels = ops.reshape(y_true, (n, -1))
    logits = ops.reshape(ops.log(y_pred) - ops.log(1.0 - y_pred), (n, -1))
    errors = 1.0 - logits * (2.0 * labels - 1.0)
    order = ops.flip(ops.argsort(errors, axis=-1), axis=-1)  # largest error first
    errors_sorted = ops.take_along_axis(errors, order, axis=-1)
    gt_sorted = ops.stop_gradient(ops.take_along_axis(labels, order, axis=-1))
    positives = ops.sum(gt_sorted, axis=-1, keepdims=True)
    intersection = positives - ops.cumsum(gt_sorted, axis=-1)
    union = positives + ops.cumsum(1.0 - gt_sorted, axis=-1)  # >= 1 everywhere
    jaccard = 1.0 - intersection / union
    weights = ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=-1)
    return ops.mean(ops.sum(ops.relu(errors_sorted) * weights, axis=-1))


@keras.saving.register_keras_serializable(package="segzoo")
def bce_lovasz_loss(y_true, y_pred):
    return bce_loss(y_true, y_pred) + lovasz_hinge_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="segzoo")
def bce_dice_loss(y_true, y_pred):
    return bce_loss(y_true, y_pred) + soft_dice_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="segzoo")
def focal_tversky_loss(y_true, y_pred):
    return ops.power(tversky_loss(y_true, y_pred), 0.75)


LOSSES = {
    "bce_dice": bce_dice_loss,
    "bce": bce_loss,
    "dice": soft_dice_loss,
    "focal": focal_loss,
    "tversky": tversky_loss,
    "focal_tversky": focal_tversky_loss,
    "lovasz": lovasz_hinge_loss,
    "bce_lovasz": bce_lovasz_loss,
}


@keras.saving.register_keras_serializable(package="segzoo")
class InstanceMapsLoss(keras.losses.Loss):
    """The loss of a model with learned instance maps (output channels: nucleus probability, then
    `maps`), on targets laid out as segzoo.training.targets.instance_targets (mask, weight, maps):
    the named probability loss on channel 0, plus for each map `map_weight` x the binary
    cross-entropy against its (soft) target, averaged over the pixels of the samples whose weight
    is 1 (tiles with instance labels); a batch with none adds 0. So mask-only tiles train the
    probability alone."""

    def __init__(self, base: str = "bce_dice", maps: int = 1, map_weight: float = 1.0,
                 name: str = "instance_maps_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.base = base
        self.maps = int(maps)
        self.map_weight = float(map_weight)
        self.base_fn = get_loss(base)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        loss = self.base_fn(y_true[..., :1], y_pred[..., :1])
        weight = y_true[..., 1:2]
        pixels = ops.maximum(ops.sum(weight), 1.0)
        for i in range(self.maps):
            target = y_true[..., 2 + i:3 + i]
            pred = ops.clip(y_pred[..., 1 + i:2 + i], _EPS, 1.0 - _EPS)
            bce = -(target * ops.log(pred) + (1.0 - target) * ops.log(1.0 - pred))
            loss = loss + self.map_weight * ops.sum(bce * weight) / pixels
        return loss

    def get_config(self) -> dict:
        return {**super().get_config(), "base": self.base, "maps": self.maps, "map_weight": self.map_weight}


def training_loss(name: str, instance_maps: list[str] | tuple[str, ...] = (), map_weight: float = 1.0):
    """The loss a run compiles: get_loss(name), or InstanceMapsLoss around it for a model with
    instance maps (each map's term weighted by `map_weight`)."""
    if not instance_maps:
        return get_loss(name)
    return InstanceMapsLoss(name, len(instance_maps), map_weight)


def get_loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
