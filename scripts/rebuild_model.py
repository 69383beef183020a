#!/usr/bin/env python
"""Rebuild a trained model with architecture arguments that keep its weights, into a run folder
that scripts/release.py takes (nothing is trained; the weights are copied by layer name):

    python scripts/rebuild_model.py model_cards/deeplabv3-monuseg --arch-kwargs '{"context": "window"}' \\
        --out runs/deeplabv3-window

DeepLabV3's `context="window"` (a translation-equivariant ASPP context, the same weights as the
image pooling it replaces) is what this is for: slides then agree with whole-image passes.
The run folder gets the source's training logs (the weights' training).
"""

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from segzoo.cli.arguments import error_message
from segzoo.errors import SegzooError
from segzoo.models.folders import rebuild_model, save_model
from segzoo.provenance import portable_command

LOGS = ("training_log.csv", "training_log_validation.csv", "training_log_init.csv")

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model folder (config.json + model.weights.h5)")
    p.add_argument("--arch-kwargs", required=True, type=json.loads, help="JSON object of the arguments to change")
    p.add_argument("--out", required=True, type=Path, help="the run folder to write (must not hold a model)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        model, config = rebuild_model(args.model, args.arch_kwargs,
                                      command=portable_command("python scripts/rebuild_model.py", sys.argv[1:]))
        save_model(model, args.out, config)
    except SegzooError as err:
        print(f"error: {error_message(err, p)}", file=sys.stderr)
        sys.exit(err.exit_code)
    for name in LOGS:
        if (args.model / name).is_file():
            shutil.copy2(args.model / name, args.out / name)
    print(f"rebuilt {args.model} as {args.out}: {config.architecture} {config.architecture_kwargs}")
