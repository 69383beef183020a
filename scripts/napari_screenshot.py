#!/usr/bin/env python
"""Write README's napari screenshot (segzoo.napari.screenshot): the sample H&E tile in napari with the
nuclei the "segzoo: nuclei" widget found. Needs the napari extra and a display:

    xvfb-run -a python scripts/napari_screenshot.py [--out docs/napari.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "napari.png", help="PNG to write")
    p.add_argument("--model", default="unet-monuseg", help="zoo name, folder, hf:// URI or .onnx file")
    p.add_argument("--precision", default="int8", choices=("fp32", "int8"))
    p.add_argument("--size", default="1440x820", help="window width x height in pixels")
    args = p.parse_args(argv)
    from segzoo.napari.screenshot import napari_screenshot

    width, height = (int(v) for v in args.size.lower().split("x"))
    path, nuclei = napari_screenshot(args.out, model=args.model, precision=args.precision, size=(width, height))
    print(f"{path}: the sample tile with {nuclei} nuclei")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
