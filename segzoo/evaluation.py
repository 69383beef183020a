"""Evaluation behind `scripts/evaluate.py` and `segzoo evaluate`.

A model folder and a data folder give the original repo's table (Loss,
Accuracy, Precision, Recall, F1/Dice) plus IoU, AJI and PQ, written as
metrics.json and metrics.md, and optionally a qualitative figure. Pixel
metrics are reported micro-averaged over all pixels (the headline) and as the
mean over images; AJI and PQ are means over images with XML instance labels.
Loss is the pixel binary cross-entropy of the probabilities, mean over images.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from segzoo.config import ModelConfig
from segzoo.datasets.monuseg import discover_samples, load_sample
from segzoo.errors import SegzooError
from segzoo.io.files import atomic_write_bytes, atomic_write_text
from segzoo.metrics import (
    PixelCounts,
    aggregated_jaccard_index,
    instance_error_rates,
    instance_errors,
    panoptic_quality,
    pixel_counts,
)
from segzoo.predict.postprocessing import probabilities_to_instances
from segzoo.predict.tiling import BatchRunner, predict_probabilities
from segzoo.provenance import portable_path

log = logging.getLogger("segzoo.evaluate")


def binary_cross_entropy(prob: np.ndarray, truth: np.ndarray, eps: float = 1e-6) -> float:
    p = np.clip(prob.astype(np.float64), eps, 1 - eps)
    t = truth.astype(np.float64)
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def evaluate(run_batch: BatchRunner, config: ModelConfig, data: str | Path, *, tta: bool = False,
             figure_stems: int = 0) -> tuple[dict, list]:
    """Metrics dict (see module docstring) and up to `figure_stems` (image, truth, pred) triples."""
    samples = discover_samples(data)
    per_image, figures = [], []
    total = PixelCounts()
    error_totals = {"truth": 0, "pred": 0, "split": 0, "merged": 0, "unmatched": 0}
    for sample in samples:
        gt = load_sample(sample)
        prob = predict_probabilities(run_batch, gt.image, config, tta=tta)[..., 0]
        mask, labels = probabilities_to_instances(prob, config.postprocessing)
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
        row["nuclei_true"] = int(len(np.unique(gt.labels)) - 1) if gt.labels is not None else None
        row["nuclei_pred"] = int(labels.max() and len(np.unique(labels)) - 1)
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
    from skimage.segmentation import find_boundaries

    rows = []
    for image, truth, pred in figures:
        h, w = image.shape[:2]
        y, x = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
        box = (slice(y, y + crop), slice(x, x + crop))
        image, truth, pred = image[box], truth[box], pred[box]
        panels = [image]
        for labels, colour in ((truth, (0, 255, 0)), (pred, (255, 255, 0))):
            over = image.copy()
            over[find_boundaries(labels, mode="inner")] = colour
            panels.append(over)
        rows.append(np.concatenate(panels, axis=1))
    width = max(r.shape[1] for r in rows)
    canvas = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    import io

    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG", optimize=True)
    atomic_write_bytes(path, buffer.getvalue())


def build_parser() -> argparse.ArgumentParser:
    from segzoo.cli import OneLineParser, non_empty, non_negative_int

    p = OneLineParser(prog="segzoo evaluate", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="model folder (config.json + model.weights.h5)")
    p.add_argument("--data", required=True, help="data folder, e.g. ../shared/monuseg/test")
    p.add_argument("--out", default=None, type=non_empty,
                   help="folder for metrics.json/metrics.md (default: the model folder)")
    p.add_argument("--tta", action="store_true",
                   help="D4 test-time augmentation (8 passes); writes metrics_tta.json/.md instead")
    p.add_argument("--figure", type=non_negative_int, default=0, metavar="N",
                   help="write figure.png with the first N images")
    p.add_argument("--name", default=None, help="model name in the table (default: config name)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from segzoo.io.files import output_folder_problem

    # Where the tables go is checked before the evaluation, not after it.
    if args.out is not None:
        problem = output_folder_problem(args.out)
        problem = problem and f"--out {problem}"
    else:  # the model folder itself; load_model reports a missing one
        problem = output_folder_problem(args.model) if Path(args.model).is_dir() else None
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        from segzoo.models.folders import load_model
        from segzoo.runtime.keras import keras_runner

        model, config = load_model(args.model)
        started = time.monotonic()
        metrics, figures = evaluate(keras_runner(model), config, args.data, tta=args.tta,
                                    figure_stems=args.figure)
        metrics["model"] = config.name or Path(args.model).name
        metrics["params"] = int(model.count_params())
        out = Path(args.out or args.model)
        name = args.name or metrics["model"]
        stem = metrics_stem(args.tta)
        atomic_write_text(out / f"{stem}.json", json.dumps(metrics, indent=2) + "\n")
        table = markdown_table(metrics, name)
        atomic_write_text(out / f"{stem}.md", table)
        if figures:
            render_figure(figures, out / "figure.png")
    except SegzooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table)
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')} in {time.monotonic() - started:.0f} s")
    return 0
