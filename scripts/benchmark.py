#!/usr/bin/env python
"""Speed and memory of the zoo's runtimes, end to end (read, tile, blend, threshold, instances).

Each measurement runs in its own process so peak RSS belongs to that runtime alone.
For a 1000x1000 tile: median and p95 latency over --repeats runs after --warmup runs,
megapixels/s, peak RSS and throughput relative to Keras, and the network's forward pass
alone on the same padded tile (the part the runtime changes). For a large synthetic image
(the tile repeated to --large x --large): wall time, megapixels/s and peak RSS.

    python scripts/benchmark.py --models unet-monuseg --json benchmark.json --markdown benchmark.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = {"keras": ("keras", "model.weights.h5"), "onnx-fp32": ("onnx", "model.onnx"),
            "onnx-int8": ("onnx", "model.int8.onnx")}


def default_tile() -> Path:
    data = os.environ.get("SEGZOO_MONUSEG")
    if data and (Path(data) / "test" / "images").is_dir():
        return sorted((Path(data) / "test" / "images").iterdir())[0]
    sys.path.insert(0, str(ROOT))
    from segzoo.predictor import sample_image_path

    return sample_image_path()


def child(args) -> None:
    """Measure one (model, runtime) in this process and print a JSON line."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    import segzoo
    from segzoo.imageio import read_image

    folder = resolve_folder(args.model)
    runtime, filename = RUNTIMES[args.runtime]
    if runtime == "onnx":
        predictor = segzoo.load(folder / filename)
    else:
        predictor = segzoo.load(folder, runtime="keras")
    result = {"model": args.model, "runtime": args.runtime}
    if args.large:
        tile = read_image(args.image)
        reps = -(-args.large // min(tile.shape[:2]))
        image = np.tile(tile, (reps, reps, 1))[:args.large, :args.large]
        del tile
        start = time.perf_counter()
        out = predictor.predict(image)
        wall = time.perf_counter() - start
        result.update(size=args.large, wall_s=wall, mp_per_s=image.shape[0] * image.shape[1] / 1e6 / wall,
                      nuclei=out.num_nuclei)
    else:
        rgb = read_image(args.image)
        shape = rgb.shape
        for _ in range(args.warmup):
            predictor.predict(args.image)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = predictor.predict(args.image)
            times.append(time.perf_counter() - start)
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        # The network alone on the same (normalised, stride-padded) tile: what the runtime changes.
        from segzoo.preprocessing import normalize, pad_to_multiple

        prep = predictor.config.preprocessing
        batch = pad_to_multiple(normalize(rgb, prep), prep.pad_to_stride, prep.pad_mode)[0][None]
        forward = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predictor.run_batch(batch)
            forward.append(time.perf_counter() - start)
        result["forward_ms"] = 1000 * statistics.median(forward)
        result.update(size=f"{shape[1]}x{shape[0]}", median_ms=1000 * statistics.median(times),
                      p95_ms=1000 * p95, mp_per_s=shape[0] * shape[1] / 1e6 / statistics.median(times),
                      repeats=args.repeats, nuclei=out.num_nuclei)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def resolve_folder(model: str) -> Path:
    path = Path(model)
    if path.is_dir():
        return path
    return ROOT / "model_cards" / model


def run_child(model: str, runtime: str, image: Path, *, repeats: int, warmup: int, large: int = 0) -> dict | None:
    cmd = [sys.executable, __file__, "--child", "--models", model, "--runtime", runtime, "--image", str(image),
           "--repeats", str(repeats), "--warmup", str(warmup), "--large", str(large)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"warning: {model}/{runtime} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None


def markdown(rows: list[dict], large_rows: list[dict], meta: dict) -> str:
    lines = [f"Benchmark: {meta['cpu_count']} CPU cores, {meta['machine']}, Python {meta['python']}; "
             f"end to end per image (read, tiles, blend, threshold, instances); "
             f"{meta['repeats']} repeats after {meta['warmup']} warm-up.", "",
             "| model | runtime | tile | median ms | p95 ms | MP/s | peak RSS MB | speed vs Keras "
             "| network alone ms | network speed vs Keras |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    keras = {r["model"]: r for r in rows if r["runtime"] == "keras"}

    def ratio(r: dict, key: str) -> str:
        base = keras.get(r["model"], {}).get(key)
        return f"{base / r[key]:.2f}x" if base and r.get(key) else "-"

    for r in rows:
        forward = f"{r['forward_ms']:.0f}" if r.get("forward_ms") else "-"
        lines.append(f"| {r['model']} | {r['runtime']} | {r['size']} | {r['median_ms']:.0f} | {r['p95_ms']:.0f} | "
                     f"{r['mp_per_s']:.2f} | {r['peak_rss_mb']:.0f} | {ratio(r, 'median_ms')} | {forward} | "
                     f"{ratio(r, 'forward_ms')} |")
    if large_rows:
        lines += ["", "| model | runtime | image | wall s | MP/s | peak RSS MB |", "|---|---|---|---|---|---|"]
        for r in large_rows:
            lines.append(f"| {r['model']} | {r['runtime']} | {r['size']}x{r['size']} | {r['wall_s']:.1f} | "
                         f"{r['mp_per_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=None, help="zoo names or folders (default: all in model_cards/)")
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    p.add_argument("--image", type=Path, default=None, help="tile to time (default: first MoNuSeg test tile)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--large", type=int, default=10000, help="side of the large synthetic image (0: skip)")
    p.add_argument("--large-runtime", default="onnx-fp32", choices=list(RUNTIMES))
    p.add_argument("--large-models", nargs="+", default=None,
                   help="models to run the large image on (default: the first model)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--runtime", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.model = args.models[0]
        child(args)
        return 0
    from segzoo.config import atomic_write_text

    image = args.image or default_tile()
    models = args.models or sorted(p.name for p in (ROOT / "model_cards").iterdir() if p.is_dir())
    rows, large_rows = [], []
    large_models = set(args.large_models or models[:1])
    for model in models:
        folder = resolve_folder(model)
        for runtime in args.runtimes:
            if not (folder / RUNTIMES[runtime][1]).is_file():
                print(f"skip {model}/{runtime}: no {RUNTIMES[runtime][1]}", file=sys.stderr)
                continue
            row = run_child(model, runtime, image, repeats=args.repeats, warmup=args.warmup)
            if row:
                rows.append(row)
                print(json.dumps(row), flush=True)
        if args.large and model in large_models and (folder / RUNTIMES[args.large_runtime][1]).is_file():
            row = run_child(model, args.large_runtime, image, repeats=1, warmup=0, large=args.large)
            if row:
                large_rows.append(row)
                print(json.dumps(row), flush=True)
    meta = {"cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(), "image": str(image), "repeats": args.repeats,
            "warmup": args.warmup}
    table = markdown(rows, large_rows, meta)
    print(table)
    if args.json:
        atomic_write_text(args.json, json.dumps({"meta": meta, "tile": rows, "large": large_rows}, indent=2) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
