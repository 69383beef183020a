#!/usr/bin/env python
"""Speed and memory of the zoo's runtimes, end to end (segzoo.evaluation.benchmark): writes
benchmark.json and benchmark.md (the README's Speed section, via scripts/update_readme.py).

    python scripts/benchmark.py --models unet-monuseg --json benchmark.json --markdown benchmark.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from segzoo.evaluation.benchmark import RUNTIMES, markdown, run_benchmark
from segzoo.evaluation.slide_accuracy import accuracy_markdown, build_truth_slides, slide_accuracy
from segzoo.evaluation.slide_benchmark import run_slide_benchmark, slide_markdown
from segzoo.io.files import atomic_write_text
from segzoo.io.images import sample_image_path

ROOT = Path(__file__).resolve().parents[1]


def default_tile() -> Path:
    """The first MoNuSeg test tile under SEGZOO_MONUSEG, else the sample image."""
    data = os.environ.get("SEGZOO_MONUSEG")
    if data and (Path(data) / "test" / "images").is_dir():
        return min((Path(data) / "test" / "images").iterdir())
    return sample_image_path()


def zoo_folder(model: str) -> Path:
    """A folder as given, else model_cards/<model>."""
    return Path(model) if Path(model).is_dir() else ROOT / "model_cards" / model


def slide_accuracy_rows(models: list[str], test: Path, folder: Path) -> list[dict]:
    """Each model (int8) on the truth slides' 40x and 20x copies, scored per test tile."""
    import tempfile

    import segzoo

    info = build_truth_slides(test, folder)
    rows = []
    for model in models:
        predictor = segzoo.load(zoo_folder(model), precision="int8")
        for key in ("40x", "20x"):
            with tempfile.TemporaryDirectory(prefix="segzoo-accuracy-") as out:
                row = slide_accuracy(predictor, info[key], info, test, out)
            row["model"] = model
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "per_tile"}), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=None, help="zoo names or folders (default: all in model_cards/)")
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    p.add_argument("--image", type=Path, default=None, help="tile to time (default: first MoNuSeg test tile)")
    p.add_argument("--repeats", type=int, default=5, help="timed predictions per process")
    p.add_argument("--rounds", type=int, default=3,
                   help="processes per (model, runtime), interleaved across runtimes so that a machine "
                        "that speeds up or slows down during the run does not bias the ratios")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--large", type=int, default=10000, help="side of the large synthetic image (0: skip)")
    p.add_argument("--large-runtime", default="onnx-fp32", choices=list(RUNTIMES))
    p.add_argument("--large-models", nargs="+", default=None,
                   help="models to run the large image on (default: the first model)")
    p.add_argument("--slide", type=int, default=0, metavar="SIDE",
                   help="also the whole-slide benchmark on a SIDE x SIDE synthetic 40x slide built from the "
                        "MoNuSeg test tiles, and its 20x copy (e.g. 20000; 0: skip)")
    p.add_argument("--slide-dir", type=Path, default=ROOT / "runs" / "benchmark-slides",
                   help="where the synthetic slides are built (reused when built with the same settings)")
    p.add_argument("--slide-models", nargs="+", default=None, help="models for the slide rows (default: --models)")
    p.add_argument("--slide-precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    p.add_argument("--slide-dask-model", default=None,
                   help="model for the Dask rows (1 worker x 2 threads, 2 workers x 1 thread; default: the first; none: no Dask rows)")
    p.add_argument("--slide-accuracy", nargs="+", default=None, metavar="MODEL",
                   help="also score these models (int8) on the MoNuSeg test tiles laid out as a 40x slide and "
                        "its 20x copy (segzoo.evaluation.slide_accuracy)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    models = args.models or sorted(p.name for p in (ROOT / "model_cards").iterdir() if p.is_dir())
    result = run_benchmark({m: zoo_folder(m) for m in models}, args.image or default_tile(), argv,
                           runtimes=args.runtimes, repeats=args.repeats, rounds=args.rounds, warmup=args.warmup,
                           large=args.large, large_runtime=args.large_runtime, large_models=args.large_models)
    table = markdown(result["tile"], result["large"], result["meta"])
    if args.slide:
        data = os.environ.get("SEGZOO_MONUSEG")
        if not data:
            p.error("--slide builds its slide from the MoNuSeg test tiles: set SEGZOO_MONUSEG")
        tiles = sorted((Path(data) / "test" / "images").glob("*.tif"))
        result["slide"] = run_slide_benchmark({m: zoo_folder(m) for m in args.slide_models or models}, tiles,
                                              result["tile"], args.slide_dir, side=args.slide,
                                              precisions=tuple(args.slide_precisions),
                                              dask_model=None if args.slide_dask_model == "none" else
                                              args.slide_dask_model or models[0])
        result["meta"].update(slide_side=args.slide, tissue_fraction=0.5)
        table += "\n" + slide_markdown(result["slide"], result["meta"])
    if args.slide_accuracy:
        data = os.environ.get("SEGZOO_MONUSEG")
        if not data:
            p.error("--slide-accuracy scores the MoNuSeg test tiles: set SEGZOO_MONUSEG")
        result["slide_accuracy"] = slide_accuracy_rows(args.slide_accuracy, Path(data) / "test", args.slide_dir)
        table += "\n" + accuracy_markdown(result["slide_accuracy"])
    print(table)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
