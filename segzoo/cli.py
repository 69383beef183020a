"""The `segzoo` command: predict, train, evaluate, export, publish.

Every failure is one line `error: ...` on stderr that names the file and the problem, with
no traceback: exit 2 for bad arguments (checked before any model is loaded), 1 when some
images or files failed, 130 on Ctrl-C. SEGZOO_DEBUG=1 or `segzoo --debug COMMAND ...` shows
the traceback of an unexpected OSError instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
from pathlib import Path

from segzoo.errors import SegzooError

COMMANDS = ("predict", "train", "evaluate", "export", "publish")
log = logging.getLogger("segzoo.predict")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, `error: <prog>: <problem> (see <prog> --help)`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_empty(text: str) -> str:
    """argparse type: a non-empty path."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def describe_os_error(err: OSError) -> str:
    """'<path>: <strerror>' for an OSError (both paths of a rename), else its type and text."""
    if err.strerror and err.filename is not None:
        if err.filename2 is not None:
            return f"{err.filename} -> {err.filename2}: {err.strerror}"
        return f"{err.filename}: {err.strerror}"
    return f"{type(err).__name__}: {err.strerror or err}"


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _predict_parser() -> argparse.ArgumentParser:
    from segzoo.io.outputs import FORMATS

    p = OneLineParser(
        prog="segzoo predict",
        description="Predict nuclei; writes <stem>_mask.png, <stem>_labels.tif, <stem>.geojson, "
                    "<stem>_overlay.png and <stem>_nuclei.csv into --out, each image's files all "
                    "or none. Never writes over an input; in a folder, files named like another "
                    "image's outputs (a_mask.png beside a.png) are not taken as inputs.")
    p.add_argument("inputs", nargs="*", help="image files or folders (default: the sample image shipped with segzoo)")
    p.add_argument("--model", default="unet-monuseg",
                   help="zoo name (segzoo.list_models()), hf://org/repo[@rev] or model folder")
    p.add_argument("--out", required=True, type=non_empty, help="output folder (created if needed)")
    p.add_argument("--runtime", default="auto", choices=["auto", "keras", "onnx"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="int8: the model's int8 ONNX file on onnxruntime (fastest on CPU)")
    p.add_argument("--tile", type=positive_int, default=None, help="tile size, >= 1 (default: from config.json)")
    p.add_argument("--overlap", type=non_negative_int, default=None,
                   help="tile overlap in pixels, 0 <= overlap < tile (default: from config.json)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="tiles per forward pass, >= 1 (default: from config.json)")
    p.add_argument("--tta", action="store_true", help="D4 test-time augmentation (8 passes)")
    p.add_argument("--formats", default="mask,overlay,labels,geojson,csv",
                   help=f"comma-separated subset of {','.join(FORMATS)}")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (never an input)")
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
        _error(message)
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
    if not found:
        inputs.fail(f"{folder}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")


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


def predict_main(argv: list[str]) -> int:
    args = _predict_parser().parse_args(argv)
    from segzoo.io.files import output_folder_problem, write_file_set
    from segzoo.io.images import sample_image_path
    from segzoo.io.outputs import FORMATS, output_targets
    from segzoo.predict.tiling import tiling_settings
    from segzoo.zoo.loading import load

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = sorted(set(formats) - set(FORMATS))
    if bad or not formats:
        _error(f"unknown format(s) {bad}; valid formats: {', '.join(FORMATS)}")
        return 2
    if args.tile is not None and args.overlap is not None and args.overlap >= args.tile:
        _error(f"--overlap {args.overlap} must be smaller than --tile {args.tile}")
        return 2
    out = Path(args.out)
    problem = output_folder_problem(args.out)
    if problem:
        _error(f"--out {problem}")
        return 2
    inputs = collect_inputs(args.inputs or [str(sample_image_path())])
    stems = [p.stem for p in inputs.images]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        _error(f"several inputs share the name(s) {duplicates}; their outputs would collide")
        return 2
    failures = inputs.failures
    todo = []
    for path in inputs.images:
        targets = output_targets(out, path.stem, formats)
        clash = [t for t in targets.values() if inputs.protects(t)]
        if clash:
            _error(f"{path}: its output {clash[0]} would replace an input of this run; choose another --out")
            failures += 1
            continue
        existing = [str(t) for t in targets.values() if os.path.lexists(t)]
        if existing and not args.overwrite:
            _error(f"{path}: outputs exist ({', '.join(existing)}); pass --overwrite to replace them")
            failures += 1
            continue
        todo.append((path, targets))
    try:
        predictor = load(args.model, runtime=args.runtime, precision=args.precision)
        tiling_settings(predictor.config, tile_size=args.tile, overlap=args.overlap, batch_size=args.batch_size)
    except SegzooError as err:
        _error(str(err))
        return 2
    from tqdm import tqdm

    def say(message: str, file=sys.stdout) -> None:  # above the progress bar, when there is one
        tqdm.write(message, file=file)

    options = {"tta": args.tta, "tile_size": args.tile, "overlap": args.overlap, "batch_size": args.batch_size}
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
    print(f"{written + failures} input(s): {written} written, {failures} failed", file=sys.stderr)
    return 1 if failures else 0


def export_main(argv: list[str]) -> int:
    p = OneLineParser(prog="segzoo export",
                      description="Export a model to ONNX (checks parity with Keras before writing).")
    p.add_argument("model", help="zoo name or model folder")
    p.add_argument("--out", required=True, type=non_empty, help="output .onnx path")
    p.add_argument("--opset", type=positive_int, default=17)
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="also write int8 (QDQ, static) next to --out (<out>.int8.onnx), "
                        "calibrated on --calibration images")
    p.add_argument("--calibration", default=None, help="folder of training images for int8 calibration")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    from segzoo.io.files import output_file_problem

    out = Path(args.out)
    target = out.with_suffix(".int8.onnx")
    problems = [output_file_problem(out, overwrite=args.overwrite)]
    if args.quantize:
        if not args.calibration:
            _error("--quantize int8 needs --calibration FOLDER (training images); nothing written")
            return 2
        problems.append(output_file_problem(target, overwrite=args.overwrite))
    problems = [p for p in problems if p]
    if problems:
        _error(problems[0])
        return 2
    try:
        if args.quantize:  # a calibration folder without images fails here, before anything is written
            from segzoo.io.images import find_images

            find_images(args.calibration)
        from segzoo.export.onnx import export_onnx
        from segzoo.zoo.sources import model_folder

        folder = model_folder(args.model)
        info = export_onnx(folder, out, opset=args.opset, overwrite=args.overwrite)
        print(f"wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, opset {info['opset']}, "
              f"max |onnx - keras| {info['max_abs_diff']:.1e})")
        if args.quantize:
            from segzoo.export.quantize import quantize_int8

            q = quantize_int8(out, target, args.calibration, overwrite=args.overwrite)
            print(f"wrote {q['path']} ({q['bytes'] / 1e6:.1f} MB)")
    except SegzooError as err:
        _error(str(err))
        return 2
    return 0


def _train_parser() -> argparse.ArgumentParser:
    from segzoo.training.losses import LOSSES
    from segzoo.training.options import DTYPE_POLICIES, SCHEDULES
    from segzoo.training.options import TrainOptions as D

    p = OneLineParser(prog="segzoo train", description=TRAIN_DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--architecture", "-a", default=None,
                   help="registered architecture name (required unless --init-from gives it)")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="fine-tune: start from this model folder or zoo name (its architecture, "
                        "arguments, preprocessing and weights)")
    p.add_argument("--arch-kwargs", default="{}", help="JSON object of architecture arguments")
    p.add_argument("--data", required=True, help="training folder (MoNuSeg layout), e.g. ../shared/monuseg/train")
    p.add_argument("--out", required=True, help="run folder; becomes a model folder")
    p.add_argument("--name", default=None, help="model name stored in config.json")
    p.add_argument("--patch-size", type=int, default=D.patch_size)
    p.add_argument("--batch-size", type=int, default=D.batch_size)
    p.add_argument("--epochs", type=int, default=D.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=D.steps_per_epoch)
    p.add_argument("--lr", type=float, default=D.lr, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=D.weight_decay)
    p.add_argument("--schedule", choices=SCHEDULES, default=D.schedule)
    p.add_argument("--warmup-steps", type=int, default=D.warmup_steps)
    p.add_argument("--ema-momentum", type=float, default=None, metavar="M",
                   help="keep an exponential moving average of the weights (Polyak averaging, e.g. 0.999); "
                        "validation and the saved model use the average, the resume checkpoint keeps both")
    p.add_argument("--dtype-policy", choices=DTYPE_POLICIES, default=D.dtype_policy,
                   help="mixed_bfloat16: compute in bfloat16 with float32 weights (faster on CPUs with "
                        "bfloat16 instructions); validation uses the training model, the saved model "
                        "folder is float32 as always")
    p.add_argument("--precise-bn", type=int, default=D.precise_bn, metavar="BATCHES",
                   help="before each validation and save, set the BatchNorm statistics to their mean over "
                        "this many batches of training patches (precise BN; 0: keep the moving averages)")
    p.add_argument("--loss", default=D.loss, help=", ".join(LOSSES))
    p.add_argument("--settings-from", default=None, metavar="MODEL",
                   help="refit: take the decision threshold and post-processing from this validated model "
                        "folder or zoo name instead of choosing them here (use with --val-fraction 0 to "
                        "train on every tile with settings chosen on a validation split)")
    p.add_argument("--val-fraction", type=float, default=D.val_fraction)
    p.add_argument("--val-stems", nargs="*", default=None, help="explicit validation tiles (stems)")
    p.add_argument("--val-tta", action="store_true", help="D4 test-time augmentation for validation")
    p.add_argument("--no-augment", action="store_true", help="disable all augmentation")
    p.add_argument("--hed-sigma", type=float, default=D.hed_sigma)
    p.add_argument("--intensity-augment", action="store_true",
                   help="add nnU-Net-style gamma, blur and noise augmentation (see segzoo.data.augment)")
    p.add_argument("--scale-jitter", type=float, nargs=2, default=list(D.scale_jitter),
                   metavar=("MIN", "MAX"))
    p.add_argument("--min-object-size", type=int, default=D.min_object_size)
    p.add_argument("--seed", type=int, default=D.seed)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget; stops cleanly")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --out")
    group.add_argument("--overwrite", action="store_true", help="delete --out and start again")
    return p


TRAIN_DESCRIPTION = "Train a segzoo model on a MoNuSeg-layout folder (see segzoo.training)."


def train_main(argv: list[str]) -> int:
    import json

    from segzoo.training.options import TrainOptions
    from segzoo.training.run import train

    args = _train_parser().parse_args(argv)
    try:
        arch_kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError as err:
        _error(f"--arch-kwargs is not valid JSON: {err}")
        return 2
    try:
        out = train(TrainOptions(**{**vars(args), "arch_kwargs": arch_kwargs}), argv)
    except SegzooError as err:
        _error(str(err))
        return 2
    print(f"model folder: {out}")
    return 0


EVALUATE_DESCRIPTION = ("Evaluate a model folder on a data folder with ground truth: Loss, Accuracy, Precision, "
                        "Recall, F1/Dice, IoU, AJI and PQ into metrics.json and metrics.md (see segzoo.evaluation).")


def _evaluate_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="segzoo evaluate", description=EVALUATE_DESCRIPTION,
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="model folder (config.json + model.weights.h5)")
    p.add_argument("--data", required=True, help="data folder, e.g. ../shared/monuseg/test")
    p.add_argument("--out", default=None, type=non_empty,
                   help="folder for metrics.json/metrics.md (default: the model folder)")
    p.add_argument("--tta", action="store_true",
                   help="D4 test-time augmentation (8 passes); writes metrics_tta.json/.md instead")
    p.add_argument("--figure", type=non_negative_int, default=0, metavar="N",
                   help="write figure.png with the first N images")
    p.add_argument("--name", default=None, help="model name in the table (default: config name)")
    return p


def evaluate_main(argv: list[str]) -> int:
    import time

    from segzoo.evaluation.evaluate import evaluate_folder
    from segzoo.io.files import output_folder_problem

    args = _evaluate_parser().parse_args(argv)
    # Where the tables go is checked before the evaluation, not after it.
    if args.out is not None:
        problem = output_folder_problem(args.out)
        problem = problem and f"--out {problem}"
    else:  # the model folder itself; load_model reports a missing one
        problem = output_folder_problem(args.model) if Path(args.model).is_dir() else None
    if problem:
        _error(problem)
        return 2
    started = time.monotonic()
    try:
        _, table, written = evaluate_folder(args.model, args.data, out=args.out, tta=args.tta, figure=args.figure,
                                            name=args.name)
    except SegzooError as err:
        _error(str(err))
        return 2
    print(table)
    print(f"wrote {written[0]} and {written[1]} in {time.monotonic() - started:.0f} s")
    return 0


def _usage() -> str:
    from segzoo import __version__

    return f"segzoo {__version__}\nusage: segzoo {{{','.join(COMMANDS)}}} ...  (segzoo COMMAND --help)"


def _run(command: str, rest: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if command in ("train", "evaluate", "export", "publish"):
        from segzoo.runtime.keras import require_keras

        try:
            require_keras(f"segzoo {command}")
        except SegzooError as err:
            _error(str(err))
            return 2
    if command == "train":
        return train_main(rest)
    if command == "evaluate":
        return evaluate_main(rest)
    if command == "export":
        return export_main(rest)
    if command == "publish":
        from segzoo.zoo.publishing import main as publish_main

        return publish_main(rest)
    return predict_main(rest)


def main(argv: list[str] | None = None) -> int:
    """Run `segzoo COMMAND ...`; returns the exit code (0 ok, 1 some failures, 2 bad arguments, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SEGZOO_DEBUG", "") not in ("", "0")
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] not in COMMANDS:
        hint = f"; to predict it: segzoo predict {argv[0]} --out FOLDER" if os.path.exists(argv[0]) else ""
        _error(f"unknown command {argv[0]!r}; valid commands: {', '.join(COMMANDS)}{hint}")
        return 2
    try:
        return _run(argv[0], argv[1:])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        raise
    except OSError as err:
        if debug:
            raise
        _error(describe_os_error(err))
        return 1


if __name__ == "__main__":
    sys.exit(main())
