#!/usr/bin/env python
"""Train a segzoo model on a MoNuSeg-layout folder (same as `segzoo train`)."""

import sys

from segzoo.training import main

if __name__ == "__main__":
    sys.exit(main())
