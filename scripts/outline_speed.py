#!/usr/bin/env python
"""Speed of segzoo.io.outlines' vectorised tracer against skimage.measure.find_contours run
once per label (the longest contour of each nucleus, unsimplified), on the sample tile's
predicted nuclei and on a synthetic image of many disks. Prints a Markdown table.

    python scripts/outline_speed.py --repeats 7
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours

import segzoo
from segzoo.io.images import sample_image_path
from segzoo.io.outlines import nucleus_outlines


def cpu_name() -> str:
    """The CPU's "model name" from /proc/cpuinfo (else platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def per_label_full(labels: np.ndarray) -> int:
    """find_contours on the whole padded image for each label: the naive loop. Returns the vertex count."""
    padded = np.pad(labels, 1)
    total = 0
    for label in np.unique(labels)[1:]:
        contour = max(find_contours(padded == label, 0.5), key=len)
        total += len(contour[:, ::-1] - 1)  # (x, y) in crop pixels, as nucleus_outlines
    return total


def per_label_cropped(labels: np.ndarray) -> int:
    """find_contours on each label's bounding box (scipy.ndimage.find_objects), padded by one pixel."""
    total = 0
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        mask = np.pad(labels[box] == label, 1)
        contour = max(find_contours(mask, 0.5), key=len)
        total += len(contour[:, ::-1] + (box[1].start - 1, box[0].start - 1))
    return total


def vectorised(labels: np.ndarray) -> int:
    """segzoo.io.outlines.nucleus_outlines, unsimplified (closed rings, as find_contours')."""
    return len(nucleus_outlines(labels, tolerance=0)[2])


def disks(size: int, seed: int = 0) -> np.ndarray:
    """A size x size label image of disks of radius 3-9 on a jittered 20-pixel grid (some touching)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    label = 0
    for cy in range(10, size - 9, 20):
        for cx in range(10, size - 9, 20):
            label += 1
            y, x = cy + rng.integers(-3, 4), cx + rng.integers(-3, 4)
            r = rng.uniform(3, 9.5)
            window = (slice(max(y - 10, 0), y + 11), slice(max(x - 10, 0), x + 11))
            inside = (yy[window] - y) ** 2 + (xx[window] - x) ** 2 <= r * r
            labels[window][inside] = label
    return labels


def median_ms(function: Callable[[np.ndarray], int], labels: np.ndarray, repeats: int) -> tuple[float, int]:
    """Median wall time in ms of `repeats` calls (after one warm-up), and the call's result."""
    result = function(labels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(labels)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times)), result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--disk-size", type=int, default=1024, help="side of the synthetic disks image")
    args = p.parse_args(argv)
    model = segzoo.load("unet-monuseg", precision="int8")
    images = {"sample tile (unet-monuseg int8)": np.asarray(model.predict(sample_image_path()).labels),
              f"disks {args.disk_size}x{args.disk_size}": disks(args.disk_size)}
    print(f"CPU: {cpu_name()}; median of {args.repeats} repeats; outlines unsimplified\n")
    print("| labels | shape | nuclei | vectorised ms | find_contours per bbox ms | ratio | "
          "find_contours per full image ms | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, labels in images.items():
        ours, count = median_ms(vectorised, labels, args.repeats)
        cropped, count_cropped = median_ms(per_label_cropped, labels, args.repeats)
        full, count_full = median_ms(per_label_full, labels, max(1, args.repeats // 3))
        if not count == count_cropped == count_full:
            raise AssertionError(f"vertex counts differ: {count}, {count_cropped}, {count_full}")
        nuclei = len(np.unique(labels)) - 1
        print(f"| {name} | {labels.shape[0]}x{labels.shape[1]} | {nuclei} | {ours:.1f} | {cropped:.1f} | "
              f"{cropped / ours:.1f}x | {full:.0f} | {full / ours:.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
