#!/usr/bin/env python
"""Regenerate README.md's results and benchmark sections from committed files:
model_cards/*/metrics.json (evaluation) and benchmark.json (scripts/benchmark.py).

    python scripts/update_readme.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def results_table() -> str:
    bench = {}
    if (ROOT / "benchmark.json").is_file():
        data = json.loads((ROOT / "benchmark.json").read_text())
        for row in data["tile"]:
            bench.setdefault(row["model"], {})[row["runtime"]] = row["median_ms"]
    lines = ["| Model | Loss | Accuracy | Precision | Recall | F1/Dice | IoU | AJI | PQ | params | "
             "CPU ms / 1000x1000 (Keras / ONNX) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for folder in sorted(p for p in (ROOT / "model_cards").iterdir() if (p / "metrics.json").is_file()):
        m = json.loads((folder / "metrics.json").read_text())
        micro, mean = m["micro"], m["mean"]
        times = bench.get(folder.name, {})
        ms = " / ".join(f"{times[k]:.0f}" if k in times else "-" for k in ("keras", "onnx-fp32"))
        lines.append(f"| {folder.name} | {mean['loss']:.4f} | {micro['accuracy']:.4f} | {micro['precision']:.4f} | "
                     f"{micro['recall']:.4f} | {micro['dice']:.4f} | {micro['iou']:.4f} | "
                     f"{mean.get('aji', float('nan')):.4f} | {mean.get('pq', float('nan')):.4f} | "
                     f"{m.get('params', 0) / 1e6:.2f}M | {ms} |")
    return "\n".join(lines)


def replace(text: str, key: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {key}:start -->\n).*?(<!-- {key}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {key}:start --> ... <!-- {key}:end --> markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main() -> int:
    readme = ROOT / "README.md"
    text = replace(readme.read_text(), "results", results_table())
    if (ROOT / "benchmark.md").is_file():
        text = replace(text, "benchmark", (ROOT / "benchmark.md").read_text().rstrip())
    readme.write_text(text)
    print("updated README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
