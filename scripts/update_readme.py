#!/usr/bin/env python
"""Regenerate README.md's zoo, results and benchmark sections from committed files
(segzoo.zoo.readme): segzoo/zoo_registry.json, model_cards/*/metrics.json (evaluation) and
benchmark.json / benchmark.md (scripts/benchmark.py).

    python scripts/update_readme.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segzoo.io.files import atomic_write_text
from segzoo.zoo.readme import render

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date; write nothing")
    args = p.parse_args(argv)
    readme = ROOT / "README.md"
    current = readme.read_text()
    text = render(current, ROOT)
    if args.check:
        if text != current:
            print("README.md is out of date: run python scripts/update_readme.py", file=sys.stderr)
            return 1
        print("README.md is up to date")
        return 0
    atomic_write_text(readme, text)
    print("updated README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
