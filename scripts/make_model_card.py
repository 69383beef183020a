#!/usr/bin/env python
"""Write model_cards/<name>/README.md from its config.json, metrics.json and training_log.csv
(segzoo.zoo.cards), so every number in the card comes from those files.

    python scripts/make_model_card.py model_cards/unet-monuseg
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segzoo.zoo.cards import write_card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    args = p.parse_args(argv)
    print(f"wrote {write_card(args.folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
