"""`segzoo evaluate`: a Keras model folder on a data folder with ground truth
(segzoo.evaluation.evaluate), into metrics.json / metrics.md (metrics_tta.* with --tta)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from segzoo.cli.arguments import OneLineParser, error, non_empty, non_negative_int, positive_float

DESCRIPTION = ("Evaluate a model folder on a data folder with ground truth: Loss, Accuracy, Precision, "
               "Recall, F1/Dice, IoU, AJI and PQ into metrics.json and metrics.md (see segzoo.evaluation).")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="segzoo evaluate", description=DESCRIPTION,
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
    p.add_argument("--data-mpp", type=positive_float, default=0.25,
                   help="microns per pixel of the data (MoNuSeg: 0.25); a model at another scale predicts each "
                        "tile resampled to its own and is scored on the data's pixels")
    return p


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Check where the tables go, then evaluate; 0 with the tables written."""
    from segzoo.evaluation.evaluate import evaluate_folder
    from segzoo.io.files import output_folder_problem

    # Where the tables go is checked before the evaluation, not after it.
    if args.out is not None:
        problem = output_folder_problem(args.out)
        problem = problem and f"--out {problem}"
    else:  # the model folder itself; load_model reports a missing one
        problem = output_folder_problem(args.model) if Path(args.model).is_dir() else None
    if problem:
        error(problem)
        return 2
    started = time.monotonic()
    _, table, written = evaluate_folder(args.model, args.data, out=args.out, tta=args.tta, figure=args.figure,
                                        name=args.name, data_mpp=args.data_mpp)
    print(table)
    print(f"wrote {written[0]} and {written[1]} in {time.monotonic() - started:.0f} s")
    return 0
