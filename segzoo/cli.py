"""The `segzoo` command: train, evaluate, predict."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from segzoo.errors import SegzooError

COMMANDS = ("predict", "train", "evaluate", "export", "publish")


def _predict_parser() -> argparse.ArgumentParser:
    from segzoo.writers import FORMATS

    p = argparse.ArgumentParser(
        prog="segzoo predict",
        description="Predict nuclei; writes <stem>_mask.png, <stem>_labels.tif, <stem>.geojson, "
                    "<stem>_overlay.png and <stem>_nuclei.csv into --out.")
    p.add_argument("inputs", nargs="*", help="image files or folders (default: the sample image shipped with segzoo)")
    p.add_argument("--model", default="unet-monuseg",
                   help="zoo name (segzoo.list_models()), hf://org/repo[@rev] or model folder")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--runtime", default="auto", choices=["auto", "keras", "onnx"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="int8: the model's int8 ONNX file on onnxruntime (fastest on CPU)")
    p.add_argument("--tile", type=int, default=None, help="tile size (default: from config.json)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default: from config.json)")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass")
    p.add_argument("--tta", action="store_true", help="D4 test-time augmentation (8 passes)")
    p.add_argument("--formats", default="mask,overlay,labels,geojson,csv",
                   help=f"comma-separated subset of {','.join(FORMATS)}")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def predict_main(argv: list[str]) -> int:
    args = _predict_parser().parse_args(argv)
    from segzoo.loading import load
    from segzoo.predictor import list_images, sample_image_path
    from segzoo.writers import FORMATS, SUFFIXES, write_csv, write_geojson, write_labels_tiff, \
        write_mask_png, write_overlay_png

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = sorted(set(formats) - set(FORMATS))
    if bad or not formats:
        print(f"error: unknown format(s) {bad}; valid formats: {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    inputs: list[Path] = []
    failures = 0
    for raw in args.inputs or [str(sample_image_path())]:
        path = Path(raw)
        if path.is_dir():
            found = list_images(path)
            if not found:
                print(f"error: {path}: folder holds no images (.tif, .png, .jpg)", file=sys.stderr)
                failures += 1
            inputs.extend(found)
        else:
            inputs.append(path)
    stems = [p.stem for p in inputs]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        print(f"error: several inputs share the name(s) {duplicates}; their outputs would collide",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        predictor = load(args.model, runtime=args.runtime, precision=args.precision)
    except SegzooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    writers = {
        "mask": lambda r, t: write_mask_png(r.mask, t),
        "labels": lambda r, t: write_labels_tiff(r.labels, t),
        "overlay": lambda r, t: write_overlay_png(r.image, r.labels, t),
        "csv": lambda r, t: write_csv(r.measurements(), t),
        "geojson": lambda r, t: write_geojson(r.to_geojson(), t),
    }
    todo = []
    for path in inputs:
        targets = {f: out / f"{path.stem}{SUFFIXES[f]}" for f in formats}
        if any(t.resolve() == path.resolve() for t in targets.values()):
            print(f"error: {path}: an output would overwrite the input; choose another --out", file=sys.stderr)
            failures += 1
            continue
        existing = [str(t) for t in targets.values() if t.exists()]
        if existing and not args.overwrite:
            print(f"error: {path}: outputs exist ({', '.join(existing)}); pass --overwrite to replace them",
                  file=sys.stderr)
            failures += 1
            continue
        todo.append((path, targets))
    options = dict(tta=args.tta, tile_size=args.tile, overlap=args.overlap, batch_size=args.batch_size)
    results = predictor.predict_batch([p for p, _ in todo], progress=len(todo) > 1, **options)
    for (path, targets), (_, result) in zip(todo, results):
        if isinstance(result, Exception):
            failures += 1
            print(f"error: {result}", file=sys.stderr)
            continue
        for fmt, target in targets.items():
            writers[fmt](result, target)
        print(f"{path}: {result.num_nuclei} nuclei -> {', '.join(str(t) for t in targets.values())}")
    print(f"{len(inputs)} input(s): {len(inputs) - failures} written, {failures} failed", file=sys.stderr)
    return 1 if failures else 0


def export_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="segzoo export",
                                description="Export a model to ONNX (checks parity with Keras before writing).")
    p.add_argument("model", help="zoo name or model folder")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="also write int8 (QDQ, static) next to --out, calibrated on --calibration images")
    p.add_argument("--calibration", default=None, help="folder of training images for int8 calibration")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    from segzoo.export import export_onnx

    try:
        folder = Path(args.model)
        if not folder.is_dir():
            from segzoo.zoo import resolve_zoo

            folder = resolve_zoo(args.model, runtime="keras")
        info = export_onnx(folder, args.out, opset=args.opset, overwrite=args.overwrite)
        print(f"wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, opset {info['opset']}, "
              f"max |onnx - keras| {info['max_abs_diff']:.1e})")
        if args.quantize:
            from segzoo.quantize import quantize_int8

            if not args.calibration:
                raise SegzooError("--quantize int8 needs --calibration FOLDER (training images)")
            target = Path(args.out).with_suffix(".int8.onnx")
            q = quantize_int8(args.out, target, args.calibration, overwrite=args.overwrite)
            print(f"wrote {q['path']} ({q['bytes'] / 1e6:.1f} MB)")
    except SegzooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        from segzoo import __version__

        print(f"segzoo {__version__}\nusage: segzoo {{{','.join(COMMANDS)}}} ...  (segzoo COMMAND --help)")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if command in ("train", "evaluate", "export", "publish"):
        from segzoo.loading import require_keras

        try:
            require_keras(f"segzoo {command}")
        except SegzooError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if command == "train":
        from segzoo.training import main as train_main

        return train_main(rest)
    if command == "evaluate":
        from segzoo.evaluation import main as evaluate_main

        return evaluate_main(rest)
    if command == "export":
        return export_main(rest)
    if command == "publish":
        from segzoo.publishing import main as publish_main

        return publish_main(rest)
    return predict_main(rest)


if __name__ == "__main__":
    sys.exit(main())
