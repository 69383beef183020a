#!/usr/bin/env python
"""Train a segzoo model on a MoNuSeg-layout folder (the same command as `segzoo train`)."""

import sys

from segzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
