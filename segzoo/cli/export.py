"""`segzoo export`: a Keras model folder (or zoo name) to a parity-checked ONNX file, and
optionally its int8 copy calibrated on image files; or (`--format bioimageio`) a zoo name or model
folder with model.onnx to a bioimage.io package checked by bioimageio.core (segzoo.export.bioimageio).
Every output is checked before any work."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.arguments import OneLineParser, error, non_empty, positive_int

DESCRIPTION = ("Export a model to ONNX (checks parity with Keras before writing), optionally with an int8 copy, "
               "or to a bioimage.io package (--format bioimageio).")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="segzoo export", description=DESCRIPTION)
    p.add_argument("model", help="zoo name or model folder")
    p.add_argument("--out", required=True, type=non_empty, help="output .onnx path (.zip for --format bioimageio)")
    p.add_argument("--format", choices=["onnx", "bioimageio"], default="onnx",
                   help="onnx (default): the ONNX file; bioimageio: a bioimage.io model package (zip) of the "
                        "model's model.onnx for deepImageJ, QuPath and bioimageio.core")
    p.add_argument("--check", choices=["test", "validate", "none"], default="test",
                   help="--format bioimageio: check the package before writing it with bioimageio.core's test "
                        "(default), bioimageio.spec's validation, or not at all (needs segzoo[bioimageio])")
    p.add_argument("--opset", type=positive_int, default=None, help="ONNX opset of --format onnx (default 17)")
    p.add_argument("--saved-model", action="store_true",
                   help="--format bioimageio: also a TensorFlow SavedModel of the Keras weights (needs "
                        "model.weights.h5; bioimageio.core's test passes for it)")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="also write int8 (QDQ, static) next to --out (<out>.int8.onnx), "
                        "calibrated on --calibration images")
    p.add_argument("--calibration", default=None, help="folder of training images for int8 calibration")
    p.add_argument("--overwrite", action="store_true")
    return p


def needs_keras(args: argparse.Namespace) -> bool:
    """--format onnx converts the Keras weights (and checks parity against Keras), as does
    --saved-model; a bioimage.io package of model.onnx alone works on the base install."""
    return args.format == "onnx" or args.saved_model


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Check every output first, then export (and quantize); 0 when written."""
    from segzoo.export.onnx import export_onnx
    from segzoo.io.files import output_file_problem
    from segzoo.io.images import find_images
    from segzoo.zoo.sources import model_folder

    if args.format == "bioimageio":
        return _bioimageio(args)
    if args.saved_model:
        error("--saved-model applies to --format bioimageio")
        return 2
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
    info = export_onnx(model_folder(args.model), out, opset=args.opset or 17, overwrite=args.overwrite)
    print(f"wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, opset {info['opset']}, "
          f"max |onnx - keras| {info['max_abs_diff']:.1e})")
    if args.quantize:
        from segzoo.export.quantize import quantize_int8

        q = quantize_int8(out, target, args.calibration, overwrite=args.overwrite)
        print(f"wrote {q['path']} ({q['bytes'] / 1e6:.1f} MB)")
    return 0


def _bioimageio(args: argparse.Namespace) -> int:
    """`--format bioimageio`: the package of the model's model.onnx, checked, then written."""
    from segzoo.export.bioimageio import export_bioimageio

    for flag, value in (("--quantize", args.quantize), ("--calibration", args.calibration), ("--opset", args.opset)):
        if value is not None:
            error(f"{flag} applies to --format onnx; a bioimage.io package holds the model's model.onnx as it is")
            return 2
    info = export_bioimageio(args.model, args.out, overwrite=args.overwrite, check=args.check,
                             saved_model=args.saved_model)
    checked = {"test": "bioimageio.core test passed", "validate": "bioimageio.spec validation passed",
               "none": "not checked"}[info["checked"]]
    print(f"wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, {info['name']}, weights {', '.join(info['weights'])}, "
          f"ONNX opset {info['opset']}, "
          f"max |package - segzoo| {info['max_abs_diff']:.1e}, {checked})")
    return 0
