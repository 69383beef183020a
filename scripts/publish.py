#!/usr/bin/env python
"""Validate a zoo folder and publish it to the Hugging Face Hub (the same command as `segzoo publish`)."""

import sys

from segzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["publish", *sys.argv[1:]]))
