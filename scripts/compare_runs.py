#!/usr/bin/env python
"""Paired comparison of validated runs on their validation tiles: each run's chosen post-processing
(config.json provenance.postprocessing_selection, per-image AJI), their differences and standard errors.

    python scripts/compare_runs.py runs/unet20x-a runs/unet20x-b [--setting runs/unet20x-b=hv@0.7 ...]
"""

from __future__ import annotations

import argparse
import itertools
import sys

from segzoo.config import ModelConfig
from segzoo.training.selection import paired_difference


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="validated run folders (the same validation tiles)")
    p.add_argument("--setting", nargs="*", default=[], metavar="RUN=KEY",
                   help="compare this setting of a run too (e.g. runs/b=watershed_min_distance=6)")
    args = p.parse_args(argv)
    rows = []
    for run in args.runs:
        selection = ModelConfig.load(run).provenance["postprocessing_selection"]
        rows.append((run, selection["chosen"], selection))
    for item in args.setting:
        run, key = item.split("=", 1)
        rows.append((run, key, ModelConfig.load(run).provenance["postprocessing_selection"]))
    images = {tuple(s["images"]) for _, _, s in rows}
    if len(images) != 1:
        print("error: the runs were validated on different tiles", file=sys.stderr)
        return 2
    print(f"validation tiles: {', '.join(next(iter(images)))}")
    for run, key, s in rows:
        print(f"{run} {key}: mean AJI {s['aji'][key]:.4f}, PQ {s['pq'][key]:.4f}")
    for (ra, ka, sa), (rb, kb, sb) in itertools.combinations(rows, 2):
        d = paired_difference(sb["aji_per_image"][kb], sa["aji_per_image"][ka])
        print(f"{rb} {kb} - {ra} {ka}: AJI {d['mean']:+.4f} (paired SE {d['se']:.4f}, n {d['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
