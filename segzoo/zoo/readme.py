"""The README's generated sections, from committed files: the zoo table (segzoo/zoo_registry.json),
the results table (model_cards/*/metrics.json and metrics_tta.json, benchmark.json's times)
and the benchmark sections (benchmark.md: the tile tables to Speed, the whole-slide table to
Whole slides). scripts/update_readme.py writes them; a test checks
that README.md is what render() gives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from segzoo.errors import DataError
from segzoo.zoo.registry import REGISTRY_FILE


TILE_MPP = 0.25
"""The results table times a 1000x1000 tile's worth of tissue at 0.25 um/px (a MoNuSeg tile)."""


def results_table(root: Path) -> str:
    """One row per zoo folder root/model_cards/<name>/ with metrics.json: its scale (config
    resolution.mpp), test metrics (metrics_tta.json's Dice / AJI beside them), instance error rates
    and the benchmark's median times (root/benchmark.json) per 1000x1000 tile at 0.25 um/px: a model
    at `mpp` sees that tissue as (0.25 / mpp)^2 of its 1000x1000 benchmark tile, so a 20x model's
    time is a quarter of its tile's."""
    bench = {}
    if (root / "benchmark.json").is_file():
        data = json.loads((root / "benchmark.json").read_text())
        for row in data["tile"]:
            bench.setdefault(row["model"], {})[row["runtime"]] = row["median_ms"]
    lines = ["| Model | um/px | Loss | Accuracy | Precision | Recall | F1/Dice | IoU | AJI | PQ | "
             "split / merge / unmatched | F1/Dice / AJI with TTA | params | "
             "CPU ms per 1000x1000 px at 0.25 um/px (Keras / ONNX fp32 / int8) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for folder in sorted(p for p in (root / "model_cards").iterdir() if (p / "metrics.json").is_file()):
        m = json.loads((folder / "metrics.json").read_text())
        micro, mean = m["micro"], m["mean"]
        mpp = json.loads((folder / "config.json").read_text()).get("resolution", {}).get("mpp") \
            if (folder / "config.json").is_file() else None
        area = (TILE_MPP / mpp) ** 2 if mpp else 1.0
        times = bench.get(folder.name, {})
        ms = " / ".join(f"{times[k] * area:.0f}" if k in times else "-" for k in ("keras", "onnx-fp32", "onnx-int8"))
        tta = "-"
        if (folder / "metrics_tta.json").is_file():
            t = json.loads((folder / "metrics_tta.json").read_text())
            tta = f"{t['micro']['dice']:.4f} / {t['mean'].get('aji', float('nan')):.4f}"
        errors = m.get("instance_errors", {})
        rates = (" / ".join(f"{errors[k]:.3f}" for k in ("split_rate", "merge_rate", "unmatched_rate"))
                 if "split_rate" in errors else "-")
        lines.append(f"| {folder.name} | {mpp if mpp else '-'} | {mean['loss']:.4f} | {micro['accuracy']:.4f} | "
                     f"{micro['precision']:.4f} | {micro['recall']:.4f} | {micro['dice']:.4f} | {micro['iou']:.4f} | "
                     f"{mean.get('aji', float('nan')):.4f} | {mean.get('pq', float('nan')):.4f} | {rates} | {tta} | "
                     f"{m.get('params', 0) / 1e6:.2f}M | {ms} |")
    return "\n".join(lines)


def zoo_table(root: Path) -> str:
    """One row per entry of root/segzoo/zoo_registry.json (what segzoo.load accepts by name)."""
    registry = json.loads((root / "segzoo" / REGISTRY_FILE).read_text())["models"]
    lines = ["| name | architecture | Hub repo | files |", "|---|---|---|---|"]
    for name, entry in sorted(registry.items()):
        lines.append(f"| `{name}` | `{entry['architecture']}` | `{entry['repo_id']}` | "
                     f"{', '.join(f'`{f}`' for f in entry['files'])} |")
    return "\n".join(lines)


def replace(text: str, key: str, body: str) -> str:
    """`text` with the lines between <!-- key:start --> and <!-- key:end --> set to `body`;
    DataError when the markers are missing."""
    pattern = re.compile(rf"(<!-- {key}:start -->\n).*?(<!-- {key}:end -->)", re.S)
    if not pattern.search(text):
        raise DataError(f"README.md has no <!-- {key}:start --> ... <!-- {key}:end --> markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def render(text: str, root: Path) -> str:
    """README text with its generated sections (zoo, results, benchmark) replaced by what the
    files of the checkout at `root` say."""
    text = replace(text, "zoo", zoo_table(root))
    text = replace(text, "results", results_table(root))
    if (root / "benchmark.md").is_file():
        tile, _, slides = (root / "benchmark.md").read_text().partition(SLIDES_HEADING)
        text = replace(text, "benchmark", tile.rstrip())
        if slides:
            text = replace(text, "slides", (SLIDES_HEADING + slides).rstrip())
    return text


SLIDES_HEADING = "Whole slides:"
"""The line that starts the whole-slide table in benchmark.md (segzoo.evaluation.slide_benchmark):
it goes to the README's Whole slides section, the tile tables before it to Speed."""
