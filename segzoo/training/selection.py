"""Settings chosen on the validation split after training: the decision threshold (Dice) and
the watershed distance (AJI on the validation tiles with XML instances); both are stored in
the run's config.json with the scores they were chosen by."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from segzoo.config import CONFIG_FILENAME, ModelConfig
from segzoo.datasets.monuseg import discover_samples, load_sample
from segzoo.evaluation.metrics import PixelCounts, aggregated_jaccard_index, panoptic_quality, pixel_counts
from segzoo.predict.postprocessing import outputs_to_instances
from segzoo.predict.tiling import predict_probabilities
from segzoo.runtime.keras import keras_runner

log = logging.getLogger("segzoo.train")

# Decision thresholds swept on the validation split. From 0.20: the deeplabv3 run with weight
# averaging (runs of stop 13) chose 0.30, the old lower edge, with Dice still rising below it.
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.20, 0.71, 0.05))
WATERSHED_MIN_DISTANCES = (3, 4, 5, 6, 8)
MARKER_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def predict_outputs(model, config: ModelConfig, images: list[np.ndarray], tta: bool) -> list[np.ndarray]:
    """A Keras model's HxWxK outputs (nucleus probability, then instance maps) for each image
    (tiled as `config` says)."""
    run = keras_runner(model)
    return [predict_probabilities(run, image, config, tta=tta) for image in images]


def predict_probs(model, config: ModelConfig, images: list[np.ndarray], tta: bool) -> list[np.ndarray]:
    """A Keras model's HxW nucleus probabilities for each image (tiled as `config` says)."""
    return [out[..., 0] for out in predict_outputs(model, config, images, tta)]


def dice_at(probs: list[np.ndarray], masks: list[np.ndarray], threshold: float) -> float:
    """Micro Dice (pixel counts summed over the images) of probs >= threshold against masks."""
    total = PixelCounts()
    for prob, mask in zip(probs, masks):
        total = total + pixel_counts(prob >= threshold, mask)
    return total.metrics()["dice"]


def choose_threshold(out: Path, val_images, val_masks, tta: bool) -> None:
    """Sweep THRESHOLDS on the validation split with the saved (best) weights; store the best."""
    from segzoo.models.folders import load_model

    if not val_images:
        log.info("no validation split: keeping threshold 0.5")
        return
    model, config = load_model(out)
    probs = predict_probs(model, config, val_images, tta)
    scores = {t: dice_at(probs, val_masks, t) for t in THRESHOLDS}
    best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))
    config.postprocessing.threshold = float(best)
    config.provenance["threshold_selection"] = {
        "split": "validation", "tta": tta, "dice_by_threshold": {str(k): round(v, 5) for k, v in scores.items()}}
    config.save(out / CONFIG_FILENAME)
    log.info("threshold %.2f chosen on validation (Dice %.4f; at 0.50: %.4f)", best, scores[best], scores[0.5])


def instance_settings(config: ModelConfig) -> list[dict]:
    """The post-processing settings tune_postprocessing compares: the distance-transform watershed
    at each WATERSHED_MIN_DISTANCES, and for a model with instance maps each of its maps (the
    designs compared) at each MARKER_THRESHOLDS; the transform stays a candidate, so a map is
    chosen only where it beats it."""
    transform = [{"instance_map": None, "watershed_min_distance": d} for d in WATERSHED_MIN_DISTANCES]
    return transform + [{"instance_map": m, "marker_threshold": t}
                        for m in config.instance_decodings for t in MARKER_THRESHOLDS]


def setting_key(setting: dict) -> str:
    """A setting as one string for the provenance: 'watershed_min_distance=4', 'distance@0.5'."""
    if setting["instance_map"] is None:
        return f"watershed_min_distance={setting['watershed_min_distance']}"
    return f"{setting['instance_map']}@{setting['marker_threshold']}"


def tune_postprocessing(folder: str | Path, data: str | Path, scale: float | None = None) -> dict | None:
    """Choose the instance post-processing by mean AJI on the validation tiles that have XML
    instance labels (the config's provenance names them): watershed_min_distance for a model
    without instance maps; the instance map and marker_threshold for one with them (so two maps
    trained side by side are compared on validation here). Stores the choice, and every
    setting's AJI and PQ (and each setting's AJI per image, in `images` order, for paired
    comparisons: paired_difference), in config.json. scale: model pixels per tile pixel (the tiles and their
    instance labels are compared at the model's scale, as in training); None: the model's own,
    config.training_scale()."""
    from segzoo.models.folders import load_model

    folder = Path(folder)
    model, config = load_model(folder)
    val_stems = set(config.provenance.get("val_stems", []))
    samples = [s for s in discover_samples(data) if s.stem in val_stems and s.annotation is not None]
    if not samples:
        log.info("no validation tiles with XML instances: keeping watershed_min_distance %d",
                 config.postprocessing.watershed_min_distance)
        return None
    samples.sort(key=lambda s: s.stem)
    loaded = [load_sample(s, config.training_scale() if scale is None else scale) for s in samples]
    outputs = predict_outputs(model, config, [s.image for s in loaded], False)
    settings = instance_settings(config)
    aji, pq, per_image = {}, {}, {}
    original = config.postprocessing
    for setting in settings:
        config.postprocessing = dataclasses.replace(original, **setting)
        labels = [outputs_to_instances(out, config)[2] for out in outputs]
        per_image[setting_key(setting)] = [aggregated_jaccard_index(s.labels, p) for s, p in zip(loaded, labels)]
        aji[setting_key(setting)] = float(np.mean(per_image[setting_key(setting)]))
        pq[setting_key(setting)] = float(np.mean([panoptic_quality(s.labels, p)["pq"]
                                                  for s, p in zip(loaded, labels)]))
    best = max(settings, key=lambda st: (aji[setting_key(st)], -settings.index(st)))
    config.postprocessing = dataclasses.replace(original, **best)
    config.provenance["postprocessing_selection"] = {
        "split": "validation", "images": sorted(s.stem for s in samples), "chosen": setting_key(best),
        "aji": {k: round(v, 5) for k, v in aji.items()}, "pq": {k: round(v, 5) for k, v in pq.items()},
        "aji_per_image": {k: [round(v, 5) for v in values] for k, values in per_image.items()}}
    config.save(folder / CONFIG_FILENAME)
    log.info("post-processing %s chosen on %d validation tile(s) (AJI %.4f, PQ %.4f)", setting_key(best),
             len(samples), aji[setting_key(best)], pq[setting_key(best)])
    return aji


def paired_difference(first: list[float], second: list[float]) -> dict:
    """Mean of the per-image differences first - second, its standard error (sample standard
    deviation / sqrt(n)) and n: how a choice between two settings scored on the same images is
    reported."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"paired_difference needs two equal-length non-empty lists, got {len(first)} and {len(second)}")
    d = a - b
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "se": se, "n": len(d)}
