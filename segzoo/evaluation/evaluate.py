"""Evaluation behind `segzoo evaluate` (and scripts/evaluate.py, the same command).

A model folder and a data folder give the original repo's table (Loss,
Accuracy, Precision, Recall, F1/Dice) plus IoU, AJI and PQ, written as
metrics.json and metrics.md, and optionally a qualitative figure. Pixel
metrics are reported micro-averaged over all pixels (the headline) and as the
mean over images; AJI and PQ are means over images with XML instance labels.
Loss is the pixel binary cross-entropy of the probabilities, mean over images.

A model trained at another scale than the data's (config resolution.mpp vs the data's
`data_mpp`, MoNuSeg's 0.25 um/px by default) is scored on the ground truth's pixels: each tile is
resampled to the model's scale as the slide path reads a level, predicted there, and its nuclei
come back as the slide path writes them (outlines in the tile's pixel coordinates, simplified as
in the GeoJSON), filled with the ground truth's one rule (segzoo.datasets.monuseg.polygon_interior);
so 20x and 40x models are scored on the same pixels by the same rule. Scales within 2% of each
other are not resampled (the slide path's snap). metrics.json records both scales.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from segzoo.config import ModelConfig
from segzoo.datasets.monuseg import MONUSEG_MPP, discover_samples, load_sample, rasterize_regions, scale_image
from segzoo.evaluation.metrics import (
    PixelCounts,
    aggregated_jaccard_index,
    instance_error_rates,
    instance_errors,
    panoptic_quality,
    pixel_counts,
)
from segzoo.io.files import atomic_write_bytes, atomic_write_text
from segzoo.io.outputs import overlay_image
from segzoo.predict.postprocessing import count_nuclei, outputs_to_instances
from segzoo.predict.tiling import BatchRunner, predict_probabilities
from segzoo.provenance import portable_path

log = logging.getLogger("segzoo.evaluate")


def binary_cross_entropy(prob: np.ndarray, truth: np.ndarray, eps: float = 1e-6) -> float:
    p = np.clip(prob.astype(np.float64), eps, 1 - eps)
    t = truth.astype(np.float64)
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def model_scale(config: ModelConfig, data_mpp: float | None) -> float:
    """Model pixels per data pixel: data_mpp / resolution.mpp, snapped to 1.0 within 2% (as the slide
    path reads a level: segzoo.slides.readers.resolution.working_scale); 1.0 when either is unknown."""
    from segzoo.slides.readers.resolution import working_scale

    if data_mpp is None or config.resolution.mpp is None:
        return 1.0
    return working_scale(float(data_mpp), float(config.resolution.mpp))


def labels_on_grid(labels: np.ndarray, factor: float, shape: tuple[int, int]) -> np.ndarray:
    """int32 instance labels on a grid of `shape` from `labels` on a grid `factor` times coarser
    (factor: grid pixels per labels pixel): each nucleus' outline as the slide path writes it
    (segzoo.io.measurements.nucleus_table with scale=factor: point coordinates (x + 0.5) * factor
    - 0.5, simplified as in the GeoJSON), filled with the ground truth's rule, nuclei in label order
    (a later one owns shared pixels)."""
    from segzoo.io.measurements import nucleus_table

    table = nucleus_table(labels, scale=factor)
    return rasterize_regions([table.ring(i) for i in range(len(table.ring_offsets) - 1)], shape)[0]


def _probability_on_grid(prob: np.ndarray, factor: float, shape: tuple[int, int]) -> np.ndarray:
    """A probability map on a grid `factor` times finer (bilinear, pixel edges aligned at 0)."""
    from PIL import Image

    height, width = shape
    box = (0.0, 0.0, width / factor, height / factor)
    return np.asarray(Image.fromarray(prob.astype(np.float32), mode="F").resize((width, height),
                                                                                Image.Resampling.BILINEAR, box=box))


def predict_on_truth_grid(run_batch: BatchRunner, config: ModelConfig, image: np.ndarray, scale: float, *,
                          tta: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prob, mask, labels) of `image` on its own grid, predicted at `scale` model pixels per image
    pixel (see the module docstring); scale 1.0 is a plain prediction."""
    if scale == 1.0:
        return outputs_to_instances(predict_probabilities(run_batch, image, config, tta=tta), config)
    small = scale_image(image, scale)
    prob, _, labels = outputs_to_instances(predict_probabilities(run_batch, small, config, tta=tta), config)
    labels = labels_on_grid(labels, 1.0 / scale, image.shape[:2])
    return _probability_on_grid(prob, 1.0 / scale, image.shape[:2]), labels > 0, labels


def evaluate(run_batch: BatchRunner, config: ModelConfig, data: str | Path, *, tta: bool = False,
             figure_stems: int = 0, data_mpp: float | None = MONUSEG_MPP) -> tuple[dict, list]:
    """Metrics dict (see module docstring) and up to `figure_stems` (image, truth, pred) triples.

    run_batch: the model's runner; config: its config (resolution.mpp: its scale).
    data: a data folder with ground truth (segzoo.datasets.monuseg.discover_samples).
    tta: D4 test-time augmentation.
    figure_stems: images to return for the figure.
    data_mpp: microns per pixel of the data (None: assume the model's scale)."""
    samples = discover_samples(data)
    scale = model_scale(config, data_mpp)
    if scale != 1.0:
        log.info("tiles at %.4g um/px predicted at the model's %.4g um/px (scale %.4g) and scored at theirs",
                 data_mpp, config.resolution.mpp, scale)
    per_image, figures = [], []
    total = PixelCounts()
    error_totals = {"truth": 0, "pred": 0, "split": 0, "merged": 0, "unmatched": 0}
    for sample in samples:
        gt = load_sample(sample)
        prob, mask, labels = predict_on_truth_grid(run_batch, config, gt.image, scale, tta=tta)
        counts = pixel_counts(mask, gt.mask)
        total = total + counts
        row = {"image": sample.stem, "loss": binary_cross_entropy(prob, gt.mask), **counts.metrics()}
        if gt.labels is not None:
            row["aji"] = aggregated_jaccard_index(gt.labels, labels)
            pq = panoptic_quality(gt.labels, labels)
            row.update(pq=pq["pq"], dq=pq["dq"], sq=pq["sq"])
            errors = instance_errors(gt.labels, labels)
            row.update(split=errors["split"], merged=errors["merged"], unmatched=errors["unmatched"])
            for key in error_totals:
                error_totals[key] += errors[key]
        row["nuclei_true"] = count_nuclei(gt.labels) if gt.labels is not None else None
        row["nuclei_pred"] = count_nuclei(labels)
        per_image.append(row)
        log.info("%s: dice %.4f%s", sample.stem, row["dice"],
                 f"  aji {row['aji']:.4f}  pq {row['pq']:.4f}" if "aji" in row else "")
        if len(figures) < figure_stems:
            figures.append((gt.image, gt.labels if gt.labels is not None else gt.mask, labels))
    micro = total.metrics()
    keys = ["loss", "accuracy", "precision", "recall", "dice", "iou", "aji", "pq", "dq", "sq"]
    mean = {}
    for key in keys:
        values = [row[key] for row in per_image if row.get(key) is not None]
        if values:
            mean[key] = float(np.mean(values))
    metrics = {
        "dataset": portable_path(data),  # relative to the working folder: names no machine
        "n_images": len(per_image),
        "n_images_with_instances": sum("aji" in r for r in per_image),
        "threshold": config.postprocessing.threshold,
        "tta": tta,
        "scales": {"model_mpp": config.resolution.mpp, "data_mpp": data_mpp, "model_pixels_per_data_pixel": scale},
        "micro": micro,
        "mean": mean,
        "instance_errors": {**error_totals, **instance_error_rates(error_totals)} if error_totals["truth"] else None,
        "per_image": per_image,
        "notes": ("micro: pixel counts summed over all images; mean: average of per-image values. "
                  "Ground truth: XML polygons rasterised with segzoo.datasets.monuseg's rule (pixel centre inside, "
                  "top-left rule on the outline), the PNG masks' convention. "
                  "AJI/PQ: instance labels from the predictor's post-processing vs XML regions. "
                  "instance_errors, pooled over the images with XML: split = annotated nuclei covered >= 20% "
                  "each by two or more predicted nuclei lying >= 50% inside them (rate of annotated), merged = "
                  "predicted nuclei covering >= 50% of each of two or more annotated ones, unmatched = predicted "
                  "nuclei touching no annotated one (rates of predicted)."),
    }
    return metrics, figures


def metrics_stem(tta: bool) -> str:
    """File stem for a model folder's metrics: the default predictor's, or with D4 TTA beside it."""
    return "metrics_tta" if tta else "metrics"


def markdown_table(metrics: dict, name: str) -> str:
    m, a = metrics["micro"], metrics["mean"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    header = "| Model | Loss | Accuracy | Precision | Recall | F1/Dice | IoU | AJI | PQ |\n"
    header += "|---|---|---|---|---|---|---|---|---|\n"
    row = (f"| {name} | {fmt(a.get('loss'))} | {fmt(m['accuracy'])} | {fmt(m['precision'])} | "
           f"{fmt(m['recall'])} | {fmt(m['dice'])} | {fmt(m['iou'])} | {fmt(a.get('aji'))} | "
           f"{fmt(a.get('pq'))} |\n")
    note = (f"\n{metrics['n_images']} images from `{metrics['dataset']}`; pixel metrics micro-averaged "
            f"over all pixels (per-image mean Dice {fmt(a.get('dice'))}); Loss, AJI and PQ are means "
            f"over images; threshold {metrics['threshold']}; TTA {'on' if metrics['tta'] else 'off'}.\n")
    return header + row + note


def render_figure(figures: list, path: Path, crop: int = 400) -> None:
    """Rows of (image | ground-truth outlines | predicted outlines) as one PNG, each
    a centred crop of at most `crop` pixels so outlines stay visible and the file small."""
    from PIL import Image

    rows = []
    for image, truth, pred in figures:
        h, w = image.shape[:2]
        y, x = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
        box = (slice(y, y + crop), slice(x, x + crop))
        image, truth, pred = image[box], truth[box], pred[box]
        panels = [image, overlay_image(image, truth, colour=(0, 255, 0)), overlay_image(image, pred)]
        rows.append(np.concatenate(panels, axis=1))
    width = max(r.shape[1] for r in rows)
    canvas = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG", optimize=True)
    atomic_write_bytes(path, buffer.getvalue())


def evaluate_folder(model: str | os.PathLike, data: str | os.PathLike, *, out: str | os.PathLike | None = None,
                    tta: bool = False, figure: int = 0, name: str | None = None,
                    data_mpp: float | None = MONUSEG_MPP) -> tuple[dict, str, list[Path]]:
    """Evaluate the Keras model folder `model` on `data` and write <stem>.json and <stem>.md
    (metrics_stem: metrics or metrics_tta) and, with `figure` images, figure.png into `out`
    (default: the model folder). Returns (metrics, the markdown table, the files written)."""
    from segzoo.models.folders import load_model
    from segzoo.runtime.keras import keras_runner

    keras_model, config = load_model(model)
    metrics, figures = evaluate(keras_runner(keras_model), config, data, tta=tta, figure_stems=figure,
                                data_mpp=data_mpp)
    metrics["model"] = config.name or Path(model).name
    metrics["params"] = int(keras_model.count_params())
    folder = Path(out if out is not None else model)
    stem = metrics_stem(tta)
    table = markdown_table(metrics, name or metrics["model"])
    written = [folder / f"{stem}.json", folder / f"{stem}.md"]
    atomic_write_text(written[0], json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(written[1], table)
    if figures:
        written.append(folder / "figure.png")
        render_figure(figures, written[-1])
    return metrics, table, written
