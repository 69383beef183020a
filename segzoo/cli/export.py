"""`segzoo export`: a Keras model folder (or zoo name) to a parity-checked ONNX file, and
optionally its int8 copy calibrated on image files; every output is checked before any work."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.arguments import OneLineParser, error, non_empty, positive_int

DESCRIPTION = "Export a model to ONNX (checks parity with Keras before writing), optionally with an int8 copy."


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="segzoo export", description=DESCRIPTION)
    p.add_argument("model", help="zoo name or model folder")
    p.add_argument("--out", required=True, type=non_empty, help="output .onnx path")
    p.add_argument("--opset", type=positive_int, default=17)
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="also write int8 (QDQ, static) next to --out (<out>.int8.onnx), "
                        "calibrated on --calibration images")
    p.add_argument("--calibration", default=None, help="folder of training images for int8 calibration")
    p.add_argument("--overwrite", action="store_true")
    return p


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Check every output first, then export (and quantize); 0 when written."""
    from segzoo.export.onnx import export_onnx
    from segzoo.io.files import output_file_problem
    from segzoo.io.images import find_images
    from segzoo.zoo.sources import model_folder

    out = Path(args.out)
    target = out.with_suffix(".int8.onnx")
    problems = [output_file_problem(out, overwrite=args.overwrite)]
    if args.quantize:
        if not args.calibration:
            error("--quantize int8 needs --calibration FOLDER (training images); nothing written")
            return 2
        problems.append(output_file_problem(target, overwrite=args.overwrite))
    problems = [p for p in problems if p]
    if problems:
        error(problems[0])
        return 2
    if args.quantize:  # a calibration folder without images fails here, before anything is written
        find_images(args.calibration)
    info = export_onnx(model_folder(args.model), out, opset=args.opset, overwrite=args.overwrite)
    print(f"wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, opset {info['opset']}, "
          f"max |onnx - keras| {info['max_abs_diff']:.1e})")
    if args.quantize:
        from segzoo.export.quantize import quantize_int8

        q = quantize_int8(out, target, args.calibration, overwrite=args.overwrite)
        print(f"wrote {q['path']} ({q['bytes'] / 1e6:.1f} MB)")
    return 0
