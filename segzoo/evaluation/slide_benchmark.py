"""The whole-slide benchmark: a synthetic 40x slide built from real tiles, predicted end to end
(open the slide -> GeoJSON, CSV, thumbnail written) in fresh processes, beside the same model's
single-tile throughput measured in the same run.

The slide: a side x side mosaic of 1000x1000 tiles (each turned by a seeded rotation/flip)
filling an ellipse of `tissue_fraction` of the area, white glass elsewhere, written as an
Aperio-style pyramidal TIFF (JPEG q90, 256 px tiles, levels 1, 1/4, 1/16) with MPP 0.25 in its
description; its 20x copy is the same mosaic block-averaged 2x (MPP 0.5), which the pipeline
reads through the resampling path. Tissue Mpx/s counts the working-resolution area of the
chunks planned on tissue, divided by the wall time from opening the slide to the outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CELL = 1000  # side of one mosaic cell (a MoNuSeg tile)
PRECISION_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


def mosaic(tiles: list[np.ndarray], side: int, tissue_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """side x side x 3 uint8: cells of CELL px whose centre lies in a centred ellipse of area
    `tissue_fraction` x side^2 hold a tile (seeded order and D4 turn), the rest is white (255)."""
    rng = np.random.default_rng(seed)
    image = np.full((side, side, 3), 255, np.uint8)
    cells = side // CELL
    # Semi-axes a, b with a / b = 1.25 and pi a b = fraction * side^2 (in cells).
    b = np.sqrt(tissue_fraction * cells * cells / (np.pi * 1.25))
    a = 1.25 * b
    centre = cells / 2
    for row in range(cells):
        for col in range(cells):
            dy, dx = (row + 0.5 - centre) / b, (col + 0.5 - centre) / a
            if dx * dx + dy * dy > 1.0:
                continue
            tile = tiles[int(rng.integers(len(tiles)))][:CELL, :CELL]
            turn = int(rng.integers(8))
            tile = np.rot90(tile, turn % 4)
            tile = tile[:, ::-1] if turn >= 4 else tile
            image[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL] = tile
    return image


def build_slides(tile_paths: list[Path], folder: Path, *, side: int = 20000, mpp: float = 0.25,
                 tissue_fraction: float = 0.5, seed: int = 0) -> dict[str, Path]:
    """Write (or reuse, when built with the same settings) `folder`/synthetic-40x.svs and its 20x
    copy synthetic-20x.svs; returns {'40x': path, '20x': path}."""
    from segzoo.io.images import read_image
    from segzoo.slides.readers.pyramid_writer import downsample, write_aperio_tiff

    folder.mkdir(parents=True, exist_ok=True)
    settings = {"tiles": [p.name for p in tile_paths], "side": side, "mpp": mpp,
                "tissue_fraction": tissue_fraction, "seed": seed}
    paths = {"40x": folder / "synthetic-40x.svs", "20x": folder / "synthetic-20x.svs"}
    stamp = folder / "slides.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings and all(p.is_file() for p in paths.values()):
        return paths
    image = mosaic([read_image(p) for p in tile_paths], side, tissue_fraction, seed)
    write_aperio_tiff(paths["40x"], image, mpp=mpp, levels=3, step=4)
    write_aperio_tiff(paths["20x"], downsample(image, 2), mpp=2 * mpp, levels=3, step=4)
    stamp.write_text(json.dumps(settings))
    return paths


def measure_slide(folder: Path, precision: str, slide: Path, out: Path, *, workers: int = 0,
                  threads_per_worker: int = 1) -> dict:
    """One slide run in this process: wall time from opening the slide to the outputs (model loading
    and cluster start excluded), the outputs' share, tissue Mpx, nuclei and peak RSS (MB; with
    workers, the largest worker's)."""
    import segzoo
    from segzoo.slides.options import SlideOptions
    from segzoo.slides.run.orchestrator import dask_executor, predict_slides
    from segzoo.slides.run.worker import peak_rss

    model = folder / PRECISION_FILES[precision]
    row: dict = {"precision": precision, "slide": slide.name, "workers": workers}
    options = SlideOptions(progress=False, summary=False)
    if workers:
        from segzoo.slides.run.cluster import local_cluster, worker_peak_rss

        predictor = segzoo.load(folder, precision=precision)  # the workers load it from its ModelSource
        with local_cluster(workers, threads_per_worker) as client:
            start = time.perf_counter()
            [summary] = predict_slides(predictor, [slide], out, options=options, executor=dask_executor(client))
            row["seconds"] = time.perf_counter() - start
            row["peak_rss_mb"] = max(worker_peak_rss(client).values()) / 2**20
        row["threads_per_worker"] = threads_per_worker
    else:
        predictor = segzoo.load(model)
        start = time.perf_counter()
        [summary] = predict_slides(predictor, [slide], out, options=options)
        row["seconds"] = time.perf_counter() - start
        row["outputs_seconds"] = summary.outputs_seconds
        row["peak_rss_mb"] = peak_rss() / 2**20
    if summary.error:
        raise RuntimeError(f"{slide}: {summary.error}")
    row.update(tissue_mpx=summary.tissue_mpx, nuclei=summary.nuclei, chunks=summary.chunks,
               level=summary.level, scale=summary.scale, failed_chunks=len(summary.failed),
               stage_seconds=summary.stage_seconds)
    row["mpx_per_s"] = summary.tissue_mpx / row["seconds"]
    model_mpp = predictor.config.resolution.mpp
    if model_mpp is not None:  # tissue area in mm^2: comparable across models of different scales
        row["model_mpp"] = model_mpp
        row["tissue_mm2"] = summary.tissue_mpx * model_mpp ** 2
        row["mm2_per_s"] = row["tissue_mm2"] / row["seconds"]
    return row


def _child(job: str) -> None:
    """The measuring process of run_slide_child: print "RESULT <json>"."""
    spec = json.loads(job)
    with tempfile.TemporaryDirectory(prefix="segzoo-slide-bench-") as out:
        row = measure_slide(Path(spec["folder"]), spec["precision"], Path(spec["slide"]), Path(out),
                            workers=spec["workers"], threads_per_worker=spec["threads_per_worker"])
    print("RESULT " + json.dumps(row), flush=True)


def run_slide_child(folder: Path, precision: str, slide: Path, *, workers: int = 0,
                    threads_per_worker: int = 1) -> dict | None:
    """measure_slide in a fresh process (its peak RSS is this run's alone); None (and the
    process's stderr as a warning) when it fails."""
    job = json.dumps({"folder": str(folder), "precision": precision, "slide": str(slide), "workers": workers,
                      "threads_per_worker": threads_per_worker})
    code = "import sys; from segzoo.evaluation.slide_benchmark import _child; _child(sys.argv[1])"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, job], capture_output=True, text=True, env=env, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"warning: slide run {folder.name}/{precision}/{slide.name} failed:\n{proc.stderr[-2000:]}",
          file=sys.stderr)
    return None


def run_slide_benchmark(folders: dict[str, Path], tile_paths: list[Path], tile_rows: list[dict], slide_dir: Path, *,
                        side: int = 20000, tissue_fraction: float = 0.5, precisions: tuple[str, ...] = ("fp32", "int8"),
                        copy_20x: tuple[str, ...] = ("int8",), dask_model: str | None = None,
                        dask_workers: tuple[tuple[int, int], ...] = ((1, 2), (2, 1))) -> list[dict]:
    """Slide rows for each model ({name: folder}) and precision it has a file for, on the 40x
    slide, and for the precisions in `copy_20x` on its 20x copy too; then Dask rows (workers, threads per worker) for
    `dask_model` in int8. Each row carries the same model's single-tile throughput from
    `tile_rows` (the tile benchmark of the same run: end to end, without outputs)."""
    slides = build_slides(tile_paths, slide_dir, side=side, tissue_fraction=tissue_fraction)
    tile_speed = {(r["model"], r["runtime"]): r["mp_per_s"] for r in tile_rows}
    rows = []

    def add(model: str, precision: str, slide: Path, workers: int = 0, threads: int = 1) -> None:
        row = run_slide_child(folders[model], precision, slide, workers=workers, threads_per_worker=threads)
        if row:
            row.update(model=model, tile_mpx_per_s=tile_speed.get((model, f"onnx-{precision}")))
            rows.append(row)
            print(json.dumps(row), flush=True)

    for model, folder in folders.items():
        for precision in precisions:
            if not (folder / PRECISION_FILES[precision]).is_file():
                continue
            add(model, precision, slides["40x"])
            if precision in copy_20x:
                add(model, precision, slides["20x"])
    if dask_model:
        for workers, threads in dask_workers:
            add(dask_model, "int8", slides["40x"], workers, threads)
    return rows


def slide_markdown(rows: list[dict], meta: dict) -> str:
    """The slide table: one row per run, the single-tile throughput of the same model and precision
    beside it (rows carry 'model' and 'tile_mpx_per_s')."""
    lines = [(f"Whole slides: {meta['slide_side']}x{meta['slide_side']} synthetic 40x slide "
             f"(MoNuSeg tiles, {meta['tissue_fraction']:.0%} tissue, Aperio TIFF, MPP 0.25) and its 20x copy "
             "(MPP 0.5, read through resampling); end to end from opening the slide to the GeoJSON, CSV and "
             "thumbnail written; one fresh process per row (workers: a local Dask cluster of that many "
             "processes, peak RSS of the largest worker)."), "",
             ("Tissue Mpx are pixels at the model's scale (0.25 um/px for 40x models, 0.5 for 20x ones); tissue mm^2/s "
              "compares models of different scales. Busy s per tissue Mpx: the seconds each chunk stage spent "
              "(read and resample / network / post-processing: instances, measurements, the chunk file), summed over "
              "chunks and divided by the tissue Mpx; the stages overlap, so they add up to more than s / tissue Mpx."),
             "",
             ("| model | precision | slide | workers | tissue Mpx | s | tissue Mpx/s | tissue mm^2/s | single tile Mpx/s "
             "| slide / tile | busy s per tissue Mpx: read / network / post | nuclei | outputs s (% of total) "
             "| peak RSS MB |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    at_40x = {(r["model"], r["precision"]): r["nuclei"] for r in rows if "40x" in r["slide"] and not r["workers"]}
    for r in rows:
        nuclei = str(r["nuclei"])
        reference = at_40x.get((r["model"], r["precision"]))
        if "20x" in r["slide"] and reference:
            nuclei += f" ({100 * r['nuclei'] / reference:.0f}% of 40x)"
        workers = f"{r['workers']} x {r.get('threads_per_worker', 1)} thr" if r["workers"] else "-"
        tile = r.get("tile_mpx_per_s")
        ratio = f"{r['mpx_per_s'] / tile:.2f}x" if tile else "-"
        outputs = (f"{r['outputs_seconds']:.1f} ({100 * r['outputs_seconds'] / r['seconds']:.0f}%)"
                   if "outputs_seconds" in r else "-")
        mm2 = f"{r['mm2_per_s']:.3f}" if "mm2_per_s" in r else "-"
        stages = r.get("stage_seconds") or {}
        busy = (" / ".join(f"{stages.get(k, 0.0) / r['tissue_mpx']:.2f}" for k in ("read", "network", "post"))
                if stages and r["tissue_mpx"] else "-")
        lines.append(f"| {r['model']} | {r['precision']} | {r['slide']} | {workers} | {r['tissue_mpx']:.0f} "
                     f"| {r['seconds']:.1f} | {r['mpx_per_s']:.2f} | {mm2} | {f'{tile:.2f}' if tile else '-'} | {ratio} "
                     f"| {busy} | {nuclei} | {outputs} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"
