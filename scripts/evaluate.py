#!/usr/bin/env python
"""Evaluate a model folder on a MoNuSeg-layout folder (same as `segzoo evaluate`)."""

import sys

from segzoo.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
