#!/usr/bin/env python
"""Regenerate README.md's zoo, results and benchmark sections from committed files:
segzoo/zoo_registry.json, model_cards/*/metrics.json (evaluation) and benchmark.json
(scripts/benchmark.py).

    python scripts/update_readme.py
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def results_table() -> str:
    bench = {}
    if (ROOT / "benchmark.json").is_file():
        data = json.loads((ROOT / "benchmark.json").read_text())
        for row in data["tile"]:
            bench.setdefault(row["model"], {})[row["runtime"]] = row["median_ms"]
    lines = ["| Model | Loss | Accuracy | Precision | Recall | F1/Dice | IoU | AJI | PQ | "
             "F1/Dice / AJI with TTA | params | CPU ms / 1000x1000 (Keras / ONNX fp32 / int8) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for folder in sorted(p for p in (ROOT / "model_cards").iterdir() if (p / "metrics.json").is_file()):
        m = json.loads((folder / "metrics.json").read_text())
        micro, mean = m["micro"], m["mean"]
        times = bench.get(folder.name, {})
        ms = " / ".join(f"{times[k]:.0f}" if k in times else "-" for k in ("keras", "onnx-fp32", "onnx-int8"))
        tta = "-"
        if (folder / "metrics_tta.json").is_file():
            t = json.loads((folder / "metrics_tta.json").read_text())
            tta = f"{t['micro']['dice']:.4f} / {t['mean'].get('aji', float('nan')):.4f}"
        lines.append(f"| {folder.name} | {mean['loss']:.4f} | {micro['accuracy']:.4f} | {micro['precision']:.4f} | "
                     f"{micro['recall']:.4f} | {micro['dice']:.4f} | {micro['iou']:.4f} | "
                     f"{mean.get('aji', float('nan')):.4f} | {mean.get('pq', float('nan')):.4f} | {tta} | "
                     f"{m.get('params', 0) / 1e6:.2f}M | {ms} |")
    return "\n".join(lines)


def zoo_table() -> str:
    """One row per entry of segzoo/zoo_registry.json (what segzoo.load accepts by name)."""
    registry = json.loads((ROOT / "segzoo" / "zoo_registry.json").read_text())["models"]
    lines = ["| name | architecture | Hub repo | files |", "|---|---|---|---|"]
    for name, entry in sorted(registry.items()):
        lines.append(f"| `{name}` | `{entry['architecture']}` | `{entry['repo_id']}` | "
                     f"{', '.join(f'`{f}`' for f in entry['files'])} |")
    return "\n".join(lines)


def replace(text: str, key: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {key}:start -->\n).*?(<!-- {key}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {key}:start --> ... <!-- {key}:end --> markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def render(text: str) -> str:
    """README text with its generated sections replaced by what the committed files say."""
    text = replace(text, "zoo", zoo_table())
    text = replace(text, "results", results_table())
    if (ROOT / "benchmark.md").is_file():
        text = replace(text, "benchmark", (ROOT / "benchmark.md").read_text().rstrip())
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date; write nothing")
    args = p.parse_args(argv)
    readme = ROOT / "README.md"
    current = readme.read_text()
    text = render(current)
    if args.check:
        if text != current:
            print("README.md is out of date: run python scripts/update_readme.py", file=sys.stderr)
            return 1
        print("README.md is up to date")
        return 0
    from segzoo.io.files import atomic_write_text

    atomic_write_text(readme, text)
    print("updated README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
