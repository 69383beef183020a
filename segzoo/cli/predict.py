"""`segzoo predict`: nuclei of images into <stem>_mask.png, <stem>_labels.tif, <stem>.geojson,
<stem>_overlay.png and <stem>_nuclei.csv, each image's files written all or none, never over
an input."""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
from pathlib import Path

from segzoo.cli.arguments import (
    OneLineParser,
    error,
    non_empty,
    non_negative_int,
    option_flag,
    positive_float,
    positive_int,
)
from segzoo.errors import SegzooError

log = logging.getLogger("segzoo.predict")


DESCRIPTION = ("Predict nuclei in images and whole slides with a zoo model, a folder, an hf:// URI or an .onnx "
               "file.")


def parser() -> argparse.ArgumentParser:
    from segzoo.io.outputs import FORMATS
    from segzoo.zoo.sources import PRECISIONS, RUNTIMES

    p = OneLineParser(
        prog="segzoo predict",
        description=DESCRIPTION + " Writes <stem>_mask.png, <stem>_labels.tif, <stem>.geojson, "
                    "<stem>_overlay.png and <stem>_nuclei.csv into --out, each image's files all "
                    "or none. Never writes over an input; in a folder, files named like another "
                    "image's outputs (a_mask.png beside a.png) are not taken as inputs.")
    p.add_argument("inputs", nargs="*", help="image files or folders (default: the sample image shipped with segzoo)")
    p.add_argument("--model", default="unet-monuseg",
                   help="zoo name (segzoo.list_models()), hf://org/repo[@rev] or model folder")
    p.add_argument("--out", required=True, type=non_empty, help="output folder (created if needed)")
    p.add_argument("--runtime", default="auto", choices=RUNTIMES)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="int8: the model's int8 ONNX file on onnxruntime (fastest on CPU)")
    p.add_argument("--tile", dest="tile_size", type=positive_int, default=None, help="tile size, >= 1 (default: from config.json)")
    p.add_argument("--overlap", type=non_negative_int, default=None,
                   help="tile overlap in pixels, 0 <= overlap < tile (default: from config.json)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="tiles per forward pass, >= 1 (default: from config.json)")
    p.add_argument("--tta", action="store_true", help="D4 test-time augmentation (8 passes)")
    p.add_argument("--formats", default="mask,overlay,labels,geojson,csv",
                   help=f"comma-separated subset of {','.join(FORMATS)}")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (never an input)")
    slides = p.add_argument_group(
        "whole slides", "Slide files (.svs .ndpi .mrxs .scn ..., pyramidal/tiled/OME-TIFF) are predicted in chunks "
        "at the model's resolution into <stem>.geojson, <stem>_nuclei.csv, <stem>_thumbnail.png and "
        "<stem>_tissue.png, with <out>/segzoo_summary.csv; an interrupted run resumes when run again.")
    slides.add_argument("--mpp", type=positive_float, default=None,
                        help="microns per pixel of the slides' level 0 (overrides their metadata)")
    slides.add_argument("--no-tissue-mask", action="store_true", help="predict every chunk, not only tissue")
    slides.add_argument("--chunk-size", type=positive_int, default=None,
                        help="chunk core in pixels at the model's resolution (default: one network tile per chunk)")
    slides.add_argument("--halo", type=non_negative_int, default=None,
                        help="context around each chunk in pixels (default: 96)")
    slides.add_argument("--restart", action="store_true",
                        help="discard a previous run's unfinished chunks instead of resuming them")
    slides.add_argument("--keep-chunks", action="store_true", help="keep the per-chunk files after the outputs")
    cluster = slides.add_mutually_exclusive_group()
    cluster.add_argument("--dask", metavar="ADDRESS", default=None,
                         help="run the slides' chunks on an existing dask.distributed scheduler (tcp://HOST:PORT)")
    cluster.add_argument("--workers", type=positive_int, default=None,
                         help="run the slides' chunks on a local Dask cluster of N worker processes")
    return p


class _Inputs:
    """The images to predict and every file no output may replace (resolved paths and inode ids)."""

    def __init__(self) -> None:
        self.images: list[Path] = []
        self.failures = 0
        self._real: set[str] = set()
        self._ids: set[tuple[int, int]] = set()

    def protect(self, path: Path) -> None:
        self._real.add(os.path.realpath(path))
        try:
            st = os.stat(path)
            self._ids.add((st.st_dev, st.st_ino))
        except OSError:
            pass

    def protects(self, target: Path) -> bool:
        """True when writing `target` would replace one of the protected files."""
        if os.path.realpath(target) in self._real:
            return True
        try:
            st = os.stat(target)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in self._ids

    def fail(self, message: str) -> None:
        error(message)
        self.failures += 1


def _add_folder(inputs: _Inputs, folder: Path) -> None:
    """A folder's images, minus files named like another listed image's outputs (earlier runs)."""
    from segzoo.io.images import IMAGE_SUFFIXES, list_images
    from segzoo.io.outputs import is_segzoo_output, outputs_among

    try:
        found = list_images(folder)
        entries = sorted(folder.iterdir())
    except OSError as err:
        inputs.fail(f"{folder}: cannot list the folder ({err.strerror})")
        return
    from segzoo.slides.readers.factory import OPENSLIDE_SUFFIXES

    slides = [e for e in entries if e.suffix.lower() in OPENSLIDE_SUFFIXES and not e.name.startswith(".")
              and e.is_file()]
    for slide in slides:
        inputs.images.append(slide)
        inputs.protect(slide)
    listed = set(found)
    for entry in entries:  # symlink loops and dangling links: report them, go on with the rest
        if entry in listed or entry.name.startswith(".") or entry.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            os.stat(entry)
        except OSError as err:
            inputs.fail(f"{entry}: cannot read ({err.strerror})")
    outputs = outputs_among(found)
    for path in found:
        if path in outputs:
            ours = is_segzoo_output(path)
            log.info("%s: skipped, named like an output of %s%s", path, outputs[path].name,
                     "" if ours else " (not written by segzoo: kept, never replaced)")
            if not ours:
                inputs.protect(path)
        else:
            inputs.images.append(path)
            inputs.protect(path)
    if not found and not slides:
        inputs.fail(f"{folder}: folder holds no images or slides "
                    f"({', '.join(IMAGE_SUFFIXES + OPENSLIDE_SUFFIXES)})")


def collect_inputs(raw: list[str]) -> _Inputs:
    """Files as given and folders listed; unreadable ones are reported (one line each) and counted."""
    inputs = _Inputs()
    for text in raw:
        path = Path(text)
        try:
            st = os.stat(path)
        except OSError as err:
            inputs.fail(f"{path}: cannot read ({err.strerror})")
            continue
        if stat.S_ISDIR(st.st_mode):
            _add_folder(inputs, path)
        else:
            inputs.images.append(path)
            inputs.protect(path)
    return inputs


def _renderers(result, formats: list[str]) -> dict:
    from segzoo.io.measurements import csv_bytes
    from segzoo.io.outputs import geojson_bytes, labels_tiff_bytes, mask_png_bytes, overlay_png_bytes

    every = {
        "mask": lambda: mask_png_bytes(result.mask),
        "labels": lambda: labels_tiff_bytes(result.labels),
        "overlay": lambda: overlay_png_bytes(result.image, result.labels),
        "csv": lambda: csv_bytes(result.measurements()),
        "geojson": lambda: geojson_bytes(result.to_geojson()),
    }
    return {f: every[f] for f in formats}


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Predict every input; 0 when all were written, 1 when some failed, 2 for bad arguments."""
    from segzoo.io.files import output_folder_problem, write_file_set
    from segzoo.io.images import sample_image_path
    from segzoo.io.outputs import FORMATS, output_targets
    from segzoo.predict.tiling import tiling_settings
    from segzoo.zoo.loading import load

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = sorted(set(formats) - set(FORMATS))
    if bad or not formats:
        error(f"unknown format(s) {bad}; valid formats: {', '.join(FORMATS)}")
        return 2
    if args.tile_size is not None and args.overlap is not None and args.overlap >= args.tile_size:
        error(f"--overlap {args.overlap} must be smaller than --tile {args.tile_size}")
        return 2
    out = Path(args.out)
    problem = output_folder_problem(args.out)
    if problem:
        error(f"--out {problem}")
        return 2
    inputs = collect_inputs(args.inputs or [str(sample_image_path())])
    stems = [p.stem for p in inputs.images]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        error(f"several inputs share the name(s) {duplicates}; their outputs would collide")
        return 2
    failures = inputs.failures
    from segzoo.slides.readers.factory import is_whole_slide

    whole = {p: is_whole_slide(p) for p in inputs.images}  # opens each TIFF once
    if (args.dask or args.workers) and not any(whole.values()):
        error("--dask/--workers run whole slides; none of the inputs is a slide")
        return 2
    slides = []
    for slide in (p for p in inputs.images if whole[p]):
        clash = [t for t in _slide_targets(out, slide, not args.no_tissue_mask) if inputs.protects(t)]
        if clash:
            error(f"{slide}: its output {clash[0]} would replace an input of this run; choose another --out")
            failures += 1
        else:
            slides.append(slide)
    todo = []
    for path in (p for p in inputs.images if not whole[p]):
        targets = output_targets(out, path.stem, formats)
        clash = [t for t in targets.values() if inputs.protects(t)]
        if clash:
            error(f"{path}: its output {clash[0]} would replace an input of this run; choose another --out")
            failures += 1
            continue
        existing = [str(t) for t in targets.values() if os.path.lexists(t)]
        if existing and not args.overwrite:
            error(f"{path}: outputs exist ({', '.join(existing)}); pass --overwrite to replace them")
            failures += 1
            continue
        todo.append((path, targets))
    predictor = load(args.model, runtime=args.runtime, precision=args.precision)  # a SegzooError: its class's exit code
    tiling_settings(predictor.config, tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size)
    slide_failures = _predict_slides(args, predictor, slides, out) if slides else 0
    from tqdm import tqdm

    def say(message: str, file=sys.stdout) -> None:  # above the progress bar, when there is one
        tqdm.write(message, file=file)

    options = {"tta": args.tta, "tile_size": args.tile_size, "overlap": args.overlap, "batch_size": args.batch_size}
    written = 0
    # The bar shows on a terminal only (disable=None), so piped or logged stderr keeps one line per problem.
    for path, targets in tqdm(todo, desc="predict", unit="image", disable=True if len(todo) < 2 else None):
        try:
            result = predictor.predict(path, **options)
        except SegzooError as err:
            say(f"error: {err}", sys.stderr)
            failures += 1
            continue
        except OSError as err:
            say(f"error: {path}: cannot read ({err.strerror or err})", sys.stderr)
            failures += 1
            continue
        try:
            write_file_set(targets, _renderers(result, formats))
        except OSError as err:
            say(f"error: {path}: cannot write outputs ({err.strerror or err})", sys.stderr)
            failures += 1
            continue
        written += 1
        say(f"{path}: {result.num_nuclei} nuclei -> {', '.join(str(t) for t in targets.values())}")
    if todo or not slides:
        print(f"{written + failures} input(s): {written} written, {failures} failed", file=sys.stderr)
    return 1 if failures or slide_failures else 0


def _slide_targets(out: Path, slide: Path, tissue: bool) -> list[Path]:
    from segzoo.slides.plan.targets import output_paths, output_stem

    return list(output_paths(out, output_stem(slide), tissue=tissue).values())


def _predict_slides(args: argparse.Namespace, predictor, slides: list[Path], out: Path) -> int:
    """Predict the whole slides (here, or on Dask with --dask/--workers); the number that failed.
    One line per slide; <out>/segzoo_summary.csv lists them all."""
    from segzoo.slides.options import DEFAULT_HALO, SlideOptions
    from segzoo.slides.results.summary import SUMMARY_FILENAME
    from segzoo.slides.run.orchestrator import dask_executor, predict_slides

    options = SlideOptions(mpp=args.mpp, chunk_size=args.chunk_size, halo=DEFAULT_HALO if args.halo is None else args.halo,
                           tissue=not args.no_tissue_mask, overwrite=args.overwrite, restart=args.restart,
                           keep_chunks=args.keep_chunks, tta=args.tta, progress=sys.stderr.isatty())
    executor = dask_executor(args.dask, args.workers) if args.dask or args.workers else None
    summaries = predict_slides(predictor, slides, out, options=options, executor=executor)
    failed = 0
    for summary in summaries:
        if summary.status == "ok":
            print(f"{summary.slide}: {summary.nuclei} nuclei in {summary.tissue_mpx:.0f} tissue Mpx "
                  f"({summary.seconds:.0f} s) -> {summary.outputs.get('geojson', out)}")
        elif summary.status == "partial":
            failed += 1
            error(f"{summary.slide}: {len(summary.failed)} chunk(s) could not be read (first: level-0 box "
                  f"{summary.failed[0].box}: {summary.failed[0].error}); the outputs lack them; run again to retry")
        else:
            failed += 1
            flag = option_flag(parser(), summary.argument)
            message = summary.error if summary.slide in summary.error else f"{summary.slide}: {summary.error}"
            error(message + (f" (on the command line: {flag})" if flag else ""))
    print(f"{len(summaries)} slide(s): {len(summaries) - failed} done, {failed} failed; summary in "
          f"{out / SUMMARY_FILENAME}", file=sys.stderr)
    return failed
