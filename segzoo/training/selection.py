"""Settings chosen on the validation split after training: the decision threshold (Dice) and
the watershed distance (AJI on the validation tiles with XML instances); both are stored in
the run's config.json with the scores they were chosen by."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segzoo.config import CONFIG_FILENAME, ModelConfig
from segzoo.datasets.monuseg import discover_samples, load_sample
from segzoo.evaluation.metrics import PixelCounts, aggregated_jaccard_index, pixel_counts
from segzoo.predict.postprocessing import probabilities_to_instances
from segzoo.predict.tiling import predict_probabilities
from segzoo.runtime.keras import keras_runner

log = logging.getLogger("segzoo.train")

# Decision thresholds swept on the validation split. From 0.20: the deeplabv3 run with weight
# averaging (runs of stop 13) chose 0.30, the old lower edge, with Dice still rising below it.
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.20, 0.71, 0.05))
WATERSHED_MIN_DISTANCES = (3, 4, 5, 6, 8)


def predict_probs(model, config: ModelConfig, images: list[np.ndarray], tta: bool) -> list[np.ndarray]:
    """A Keras model's HxW nucleus probabilities for each image (tiled as `config` says)."""
    run = keras_runner(model)
    return [predict_probabilities(run, image, config, tta=tta)[..., 0] for image in images]


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


def tune_postprocessing(folder: str | Path, data: str | Path) -> dict | None:
    """Choose watershed_min_distance by mean AJI on the validation tiles that have XML
    instance labels (the config's provenance names them); stores it in config.json."""
    from segzoo.models.folders import load_model

    folder = Path(folder)
    model, config = load_model(folder)
    val_stems = set(config.provenance.get("val_stems", []))
    samples = [s for s in discover_samples(data) if s.stem in val_stems and s.annotation is not None]
    if not samples:
        log.info("no validation tiles with XML instances: keeping watershed_min_distance %d",
                 config.postprocessing.watershed_min_distance)
        return None
    loaded = [load_sample(s) for s in samples]
    probs = predict_probs(model, config, [s.image for s in loaded], False)
    scores = {}
    for distance in WATERSHED_MIN_DISTANCES:
        config.postprocessing.watershed_min_distance = distance
        scores[distance] = float(np.mean([
            aggregated_jaccard_index(s.labels, probabilities_to_instances(p, config.postprocessing)[1])
            for s, p in zip(loaded, probs)]))
    best = max(scores, key=lambda d: (scores[d], -d))
    config.postprocessing.watershed_min_distance = best
    config.provenance["postprocessing_selection"] = {
        "split": "validation", "images": sorted(s.stem for s in samples),
        "aji_by_watershed_min_distance": {str(k): round(v, 5) for k, v in scores.items()}}
    config.save(folder / CONFIG_FILENAME)
    log.info("watershed_min_distance %d chosen on %d validation tile(s) (AJI %.4f)", best, len(samples), scores[best])
    return scores
