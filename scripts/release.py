#!/usr/bin/env python
"""Turn a training run into a zoo folder model_cards/<name>/ (the exact Hub repo content):
config + weights + training log, test evaluation (metrics.json, metrics.md, figure.png;
metrics_tta.json/.md with D4 test-time augmentation),
ONNX export (parity-checked), int8 ONNX when its test Dice is within 0.005 of fp32,
the model card, and the zoo registry pins (sha256 of each file).

    python scripts/release.py runs/unet --name unet-monuseg --data ../shared/monuseg

After a change to the exporter, `--onnx-only` re-exports model.onnx and model.int8.onnx of an
existing zoo folder (the folder itself is the run; weights, metrics and training log are kept)
and updates the pins:

    python scripts/release.py model_cards/unet-monuseg --name unet-monuseg --data ../shared/monuseg --onnx-only

After an edit of a released config.json (a provenance fix, a new config field), `--config-only`
embeds it in model.onnx and model.int8.onnx (their metadata; the graph and its checksum are
unchanged), regenerates the card and updates the pins; it needs no data:

    python scripts/release.py model_cards/unet-monuseg --name unet-monuseg --config-only

Run it from the repository root: the provenance stores paths relative to the working folder.
A refit's validation run does not ship, but its selections (config.json) and log
(training_log_validation.csv) do, so its `--settings-from` becomes the released folder
(`segzoo train --settings-from model_cards/<name>` takes a refit's validation settings).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from segzoo.cli.arguments import error_message
from segzoo.errors import SegzooError
from segzoo.export.release import release, release_record

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="run folder written by segzoo train")
    p.add_argument("--name", required=True)
    p.add_argument("--data", type=Path, default=None,
                   help="MoNuSeg root with train/ and test/ (not needed with --config-only)")
    p.add_argument("--repo-id", default=None, help="Hub repo (default: segzoo/<name>)")
    p.add_argument("--hardware", default=None, help="what the training ran on, for the card")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--onnx-only", action="store_true",
                       help="only re-export the ONNX files of the zoo folder `run` (weights and metrics kept)")
    modes.add_argument("--config-only", action="store_true",
                       help="only embed the zoo folder's edited config.json in its ONNX files, card and pins")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mode = "config" if args.config_only else "onnx" if args.onnx_only else "full"
    try:
        dest = release(args.run, ROOT / "model_cards" / args.name, name=args.name, record=release_record(argv),
                       mode=mode, data=args.data, hardware=args.hardware, repo_id=args.repo_id)
    except SegzooError as err:
        print(f"error: {error_message(err, p)}", file=sys.stderr)
        return err.exit_code
    print(f"released {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
