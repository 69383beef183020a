"""The `segzoo` command: train, evaluate, predict."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from segzoo.errors import SegzooError

COMMANDS = ("train", "evaluate", "predict")


def _predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segzoo predict",
                                description="Predict nuclei masks; writes <stem>_mask.png and <stem>_overlay.png.")
    p.add_argument("inputs", nargs="*", help="image files (default: the sample image shipped with segzoo)")
    p.add_argument("--model", required=True, help="model folder (config.json + model.weights.h5)")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--tta", action="store_true", help="D4 test-time augmentation")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def predict_main(argv: list[str]) -> int:
    args = _predict_parser().parse_args(argv)
    from segzoo.predictor import Predictor, sample_image_path
    from segzoo.writers import write_mask_png, write_overlay_png

    inputs = [Path(p) for p in args.inputs] or [sample_image_path()]
    out = Path(args.out)
    try:
        predictor = Predictor.from_folder(args.model)
    except SegzooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failures = 0
    for path in inputs:
        targets = {"mask": out / f"{path.stem}_mask.png", "overlay": out / f"{path.stem}_overlay.png"}
        try:
            if any(t.resolve() == path.resolve() for t in targets.values()):
                raise SegzooError(f"{path}: output would overwrite the input")
            existing = [str(t) for t in targets.values() if t.exists()]
            if existing and not args.overwrite:
                raise SegzooError(f"{path}: outputs exist ({', '.join(existing)}); pass --overwrite")
            result = predictor.predict(path, tta=args.tta)
            write_mask_png(result.mask, targets["mask"])
            write_overlay_png(result.image, result.labels, targets["overlay"])
            print(f"{path}: {result.num_nuclei} nuclei -> {targets['mask']}, {targets['overlay']}")
        except SegzooError as err:
            failures += 1
            print(f"error: {err}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        from segzoo import __version__

        print(f"segzoo {__version__}\nusage: segzoo {{{','.join(COMMANDS)}}} ...  (segzoo COMMAND --help)")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if command == "train":
        from segzoo.training import main as train_main

        return train_main(rest)
    if command == "evaluate":
        from segzoo.evaluation import main as evaluate_main

        return evaluate_main(rest)
    return predict_main(rest)


if __name__ == "__main__":
    sys.exit(main())
