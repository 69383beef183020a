#!/usr/bin/env python
"""Evaluate a model folder on a data folder (the same command as `segzoo evaluate`)."""

import sys

from segzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
