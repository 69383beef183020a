#!/usr/bin/env python
"""Validate a model_cards/<name> folder and publish it to the Hub (same as `segzoo publish`)."""

import sys

from segzoo.zoo.publishing import main

if __name__ == "__main__":
    sys.exit(main())
