#!/usr/bin/env python
"""Re-choose a trained model's post-processing on its validation tiles (never the test set).

    python scripts/tune_postprocessing.py runs/unet --data ../shared/monuseg/train
"""

import argparse
import logging
import sys

from segzoo.training.selection import tune_postprocessing

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model folder written by segzoo train")
    p.add_argument("--data", required=True, help="the training folder the model was trained on")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(tune_postprocessing(args.model, args.data))
    sys.exit(0)
