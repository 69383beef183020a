#!/usr/bin/env python
"""Turn a training run into a zoo folder model_cards/<name>/ (the exact Hub repo content):
config + weights + training log, test evaluation (metrics.json, metrics.md, figure.png;
metrics_tta.json/.md with D4 test-time augmentation),
ONNX export (parity-checked), int8 ONNX when its test Dice is within 0.005 of fp32,
the model card, and the zoo registry pins (sha256 of each file).

    python scripts/release.py runs/unet --name unet-monuseg --data ../shared/monuseg

After a change to the exporter, `--onnx-only` re-exports model.onnx and model.int8.onnx of an
existing zoo folder (the folder itself is the run; weights, metrics and training log are kept)
and updates the pins:

    python scripts/release.py model_cards/unet-monuseg --name unet-monuseg --data ../shared/monuseg --onnx-only

After an edit of a released config.json (a provenance fix, a new config field), `--config-only`
embeds it in model.onnx and model.int8.onnx (their metadata; the graph and its checksum are
unchanged), regenerates the card and updates the pins; it needs no data:

    python scripts/release.py model_cards/unet-monuseg --name unet-monuseg --config-only

Run it from the repository root: the provenance stores paths relative to the working folder.
A refit's validation run does not ship, but its selections (config.json) and log
(training_log_validation.csv) do, so its `--settings-from` becomes the released folder
(`segzoo train --settings-from model_cards/<name>` takes a refit's validation settings).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INT8_MAX_DICE_DROP = 0.005


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="run folder written by segzoo train")
    p.add_argument("--name", required=True)
    p.add_argument("--data", type=Path, default=None,
                   help="MoNuSeg root with train/ and test/ (not needed with --config-only)")
    p.add_argument("--repo-id", default=None, help="Hub repo (default: segzoo/<name>)")
    p.add_argument("--hardware", default=None, help="what the training ran on, for the card")
    p.add_argument("--onnx-only", action="store_true",
                   help="only re-export the ONNX files of the zoo folder `run` (weights and metrics kept)")
    p.add_argument("--config-only", action="store_true",
                   help="only embed the zoo folder's edited config.json in its ONNX files, card and pins")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.data is None and not args.config_only:
        p.error("--data is required (except with --config-only)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(ROOT))
    from segzoo.config import Inference, ModelConfig
    from segzoo.provenance import environment, portable_command
    from segzoo.runtime.onnx_format import embed_config
    from segzoo.zoo.cards import write_card
    from segzoo.zoo.publishing import pin_release

    dest = ROOT / "model_cards" / args.name
    run = lambda *cmd: subprocess.run([sys.executable, *map(str, cmd)], check=True)  # noqa: E731
    if (args.onnx_only or args.config_only) and args.run.resolve() != dest.resolve():
        sys.exit(f"--onnx-only and --config-only work on a released folder: pass {dest} as the run, "
                 f"not {args.run}")
    release = {"command": portable_command("python scripts/release.py", argv), "environment": environment()}
    if args.config_only:
        config = ModelConfig.load(dest)
        for name in ("model.onnx", "model.int8.onnx"):
            if (dest / name).is_file():
                embed_config(dest / name, config)
    elif args.onnx_only:
        config = ModelConfig.load(dest)
        config.provenance["release"] = release  # what exported the new ONNX files
        config.save(dest / "config.json")
    else:
        dest.mkdir(parents=True, exist_ok=True)
        config = ModelConfig.load(args.run)
        config.name = args.name
        config.inference = Inference()  # the current tiling defaults: a MoNuSeg tile in one pass
        if args.hardware:
            config.provenance["hardware"] = args.hardware
        # Keep the logs of the runs this one built on (read before dest is replaced): the stage a
        # fine-tune started from, and the validation run whose settings a refit reused.
        init_log = _keep_log(config.provenance.get("init_from"), dest / "training_log_init.csv")
        if init_log is not None:
            init_rows = list(csv.DictReader(io.StringIO(init_log)))
            config.provenance["init_from"]["epochs"] = len(init_rows)
            config.provenance["init_from"]["training_minutes"] = (float(init_rows[-1]["elapsed_min"])
                                                                  if init_rows else None)
        _keep_log(config.provenance.get("settings_from"), dest / "training_log_validation.csv",
                  prefer="training_log_validation.csv")  # a refit as the source: its validation run's
        settings_to_released_folder(config.provenance, dest)
        config.provenance["release"] = release
        config.save(dest / "config.json")
        shutil.copy2(args.run / "model.weights.h5", dest / "model.weights.h5")
        shutil.copy2(args.run / "training_log.csv", dest / "training_log.csv")
        run(ROOT / "scripts" / "evaluate.py", dest, "--data", args.data / "test", "--figure", "3")
        run(ROOT / "scripts" / "evaluate.py", dest, "--data", args.data / "test", "--tta")  # metrics_tta.json
    if not args.config_only:
        _export_onnx_files(dest, args.data)
    write_card(dest)
    pin_release(dest, args.name, architecture=config.architecture, repo_id=args.repo_id)
    print(f"released {dest}")
    return 0


def _export_onnx_files(dest: Path, data: Path) -> None:
    """model.onnx (parity-checked), and model.int8.onnx when its test Dice is within
    INT8_MAX_DICE_DROP of the Keras model's (metrics.json); the comparison goes to int8_check.json."""
    from segzoo.evaluation.evaluate import evaluate
    from segzoo.export import export_onnx
    from segzoo.io.files import atomic_write_text
    from segzoo.quantize import quantize_int8
    from segzoo.runtime.onnx import onnx_runner
    from segzoo.runtime.onnx_format import read_segzoo_onnx

    export_onnx(dest, dest / "model.onnx", overwrite=True, real_image=_first_tile(data / "test"))
    fp32 = json.loads((dest / "metrics.json").read_text())["micro"]["dice"]
    quantize_int8(dest / "model.onnx", dest / ".int8.tmp.onnx", data / "train", overwrite=True)
    int8_bytes, int8_config = read_segzoo_onnx(dest / ".int8.tmp.onnx")
    int8_metrics, _ = evaluate(onnx_runner(int8_bytes), int8_config, data / "test")
    drop = fp32 - int8_metrics["micro"]["dice"]
    print(f"int8 test Dice {int8_metrics['micro']['dice']:.4f} vs fp32 {fp32:.4f} (drop {drop:+.4f})")
    atomic_write_text(dest / "int8_check.json", json.dumps(
        {"fp32_dice": fp32, "int8_dice": int8_metrics["micro"]["dice"], "drop": drop,
         "max_drop": INT8_MAX_DICE_DROP, "kept": drop <= INT8_MAX_DICE_DROP}, indent=2) + "\n")
    if drop <= INT8_MAX_DICE_DROP:
        (dest / ".int8.tmp.onnx").replace(dest / "model.int8.onnx")
    else:
        (dest / ".int8.tmp.onnx").unlink()
        (dest / "model.int8.onnx").unlink(missing_ok=True)


def settings_to_released_folder(provenance: dict, dest: Path) -> None:
    """A refit's validation run (provenance["settings_from"]["source"], a run folder) does not
    ship; its selections and log do, in `dest`. Name `dest` instead (relative to the working
    folder), in the source and in the --settings-from of the recorded commands, so the
    command reproduces from the repository. A source already under model_cards/ is kept."""
    import shlex

    from segzoo.provenance import portable_path

    stage = provenance.get("settings_from")
    source = stage.get("source") if isinstance(stage, dict) else None
    if not source or (ROOT / "model_cards") in Path(source).resolve().parents:
        return
    if not Path(source).is_dir() and "/" not in source and "\\" not in source:
        return  # a zoo name: ships with segzoo
    released = portable_path(dest.resolve())

    def rewrite(command: str) -> str:
        words = shlex.split(command)
        for i, word in enumerate(words[:-1]):
            if word == "--settings-from" and words[i + 1] == source:
                words[i + 1] = released
        words = [f"--settings-from={released}" if w == f"--settings-from={source}" else w for w in words]
        return shlex.join(words)

    stage["source"] = released
    if provenance.get("command"):
        provenance["command"] = rewrite(provenance["command"])
    if provenance.get("resumed_with"):
        provenance["resumed_with"] = [rewrite(c) for c in provenance["resumed_with"]]


def _keep_log(stage: dict | None, target: Path, prefer: str | None = None) -> str | None:
    """Copy the training_log.csv of the run named by a provenance entry to `target` (its
    `prefer` log instead where it has one); its text."""
    from segzoo.io.files import atomic_write_text

    folder = Path(stage["source"]) if stage else None
    source = folder / prefer if folder is not None and prefer and (folder / prefer).is_file() \
        else (folder / "training_log.csv" if folder is not None else None)
    if source is None or not source.is_file():
        if stage is None:
            target.unlink(missing_ok=True)  # a stale log of an earlier release of this name
        return None
    text = source.read_text()
    atomic_write_text(target, text)
    return text


def _first_tile(folder: Path):
    from segzoo.datasets.monuseg import discover_samples
    from segzoo.io.images import read_image

    return read_image(discover_samples(folder)[0].image)


if __name__ == "__main__":
    sys.exit(main())
