"""A released zoo folder (model_cards/<name>/, exactly the Hub repo's content) from a training
run: config + weights + training logs, test evaluation (metrics.json, metrics.md, figure.png;
metrics_tta.json/.md with D4 test-time augmentation), the ONNX export (parity-checked), the
int8 file when its test Dice stays within INT8_MAX_DICE_DROP of fp32, the model card and the
zoo registry pins. scripts/release.py is its command line (run it from the repository root:
the provenance stores paths relative to the working folder).

Modes: 'full' (a run folder -> the zoo folder), 'onnx' (re-export the ONNX files of a zoo
folder after a change to the exporter; weights, metrics and logs kept) and 'config' (embed a
zoo folder's edited config.json in its ONNX files' metadata, graph untouched; needs no data).
A refit's validation run does not ship, but its selections (config.json) and log
(training_log_validation.csv) do, so its `--settings-from` becomes the released folder.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
import shutil
from pathlib import Path

from segzoo.config import CONFIG_FILENAME, ONNX_FILENAMES, WEIGHTS_FILENAME, Inference, ModelConfig
from segzoo.errors import UnknownNameError, UsageError
from segzoo.io.files import atomic_write_text
from segzoo.provenance import environment, portable_command, portable_path
from segzoo.runtime.onnx_format import embed_config
from segzoo.zoo.cards import write_card
from segzoo.zoo.publishing import pin_release

INT8_MAX_DICE_DROP = 0.005
MODES = ("full", "onnx", "config")


def release_record(argv: list[str]) -> dict:
    """provenance["release"]: the release command (`python scripts/release.py <argv>`, paths made
    relative) and the software that ran it."""
    return {"command": portable_command("python scripts/release.py", argv), "environment": environment()}


def release(run: str | Path, dest: str | Path, *, name: str, record: dict, mode: str = "full",
            data: str | Path | None = None, hardware: str | None = None, repo_id: str | None = None,
            registry_file: str | Path | None = None) -> Path:
    """Release run folder `run` as zoo folder `dest` (zoo model `name`; `record`: release_record)
    in `mode` (MODES; 'onnx' and 'config' work on the released folder itself, run == dest).
    `data`: the MoNuSeg root with train/ (calibration) and test/ (evaluation), needed except
    in 'config' mode. The pins go to `registry_file` (default: segzoo/zoo_registry.json).
    Returns `dest`."""
    run, dest = Path(run), Path(dest)
    if mode not in MODES:
        raise UnknownNameError(f"unknown release mode {mode!r}; valid modes: {', '.join(MODES)}", argument="mode")
    if mode != "full" and run.resolve() != dest.resolve():
        raise UsageError(f"mode {mode!r} works on a released folder: pass {dest} as the run, not {run}",
                         argument="run")
    if data is None and mode != "config":
        raise UsageError("data is required (except in mode 'config')", argument="data")
    if mode == "config":
        config = ModelConfig.load(dest)
        for filename in ONNX_FILENAMES.values():
            if (dest / filename).is_file():
                embed_config(dest / filename, config)
    elif mode == "onnx":
        config = ModelConfig.load(dest)
        config.provenance["release"] = record  # what exported the new ONNX files
        config.save(dest / CONFIG_FILENAME)
    else:
        config = _copy_run(run, dest, name=name, record=record, hardware=hardware)
        _evaluate(dest, Path(data) / "test")
    if mode != "config":
        export_onnx_files(dest, Path(data))
    write_card(dest)
    pin_release(dest, name, architecture=config.architecture, repo_id=repo_id, registry_file=registry_file)
    return dest


def _copy_run(run: Path, dest: Path, *, name: str, record: dict, hardware: str | None) -> ModelConfig:
    """dest's config.json (named, current tiling defaults, provenance completed), weights and
    training logs, from the run folder."""
    dest.mkdir(parents=True, exist_ok=True)
    config = ModelConfig.load(run)
    config.name = name
    config.inference = Inference()  # the current tiling defaults: a MoNuSeg tile in one pass
    if hardware:
        config.provenance["hardware"] = hardware
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
    config.provenance["release"] = record
    config.save(dest / CONFIG_FILENAME)
    shutil.copy2(run / WEIGHTS_FILENAME, dest / WEIGHTS_FILENAME)
    shutil.copy2(run / "training_log.csv", dest / "training_log.csv")
    return config


def _evaluate(dest: Path, test: Path) -> None:
    """metrics.json/.md and figure.png (3 images), then metrics_tta.json/.md, on the test set."""
    from segzoo.evaluation.evaluate import evaluate_folder

    for tta, figure in ((False, 3), (True, 0)):
        _, table, _ = evaluate_folder(dest, test, tta=tta, figure=figure)
        print(table)


def export_onnx_files(dest: Path, data: Path) -> dict:
    """model.onnx (parity-checked), and model.int8.onnx when its test Dice and mean AJI are each
    within INT8_MAX_DICE_DROP of the Keras model's (metrics.json); the comparison goes to
    int8_check.json, which is returned."""
    from segzoo.datasets.monuseg import discover_samples
    from segzoo.evaluation.evaluate import evaluate
    from segzoo.export.onnx import export_onnx
    from segzoo.export.quantize import quantize_int8
    from segzoo.io.images import read_image
    from segzoo.runtime.onnx import onnx_runner
    from segzoo.runtime.onnx_format import read_segzoo_onnx

    first_tile = read_image(discover_samples(data / "test")[0].image)
    export_onnx(dest, dest / ONNX_FILENAMES["fp32"], overwrite=True, real_image=first_tile)
    fp32_metrics = json.loads((dest / "metrics.json").read_text())
    fp32, fp32_aji = fp32_metrics["micro"]["dice"], fp32_metrics["mean"].get("aji")
    candidate = dest / ".int8.tmp.onnx"
    quantize_int8(dest / ONNX_FILENAMES["fp32"], candidate, data / "train", overwrite=True)
    int8_bytes, int8_config = read_segzoo_onnx(candidate)
    int8_metrics, _ = evaluate(onnx_runner(int8_bytes), int8_config, data / "test")
    drop = fp32 - int8_metrics["micro"]["dice"]
    int8_aji = int8_metrics["mean"].get("aji")
    aji_drop = None if fp32_aji is None or int8_aji is None else fp32_aji - int8_aji
    print(f"int8 test Dice {int8_metrics['micro']['dice']:.4f} vs fp32 {fp32:.4f} (drop {drop:+.4f})"
          + ("" if aji_drop is None else f", AJI {int8_aji:.4f} vs {fp32_aji:.4f} (drop {aji_drop:+.4f})"))
    check = {"fp32_dice": fp32, "int8_dice": int8_metrics["micro"]["dice"], "drop": drop,
             "fp32_aji": fp32_aji, "int8_aji": int8_aji, "aji_drop": aji_drop, "max_drop": INT8_MAX_DICE_DROP,
             "kept": drop <= INT8_MAX_DICE_DROP and (aji_drop is None or aji_drop <= INT8_MAX_DICE_DROP)}
    atomic_write_text(dest / "int8_check.json", json.dumps(check, indent=2) + "\n")
    if check["kept"]:
        candidate.replace(dest / ONNX_FILENAMES["int8"])
    else:
        candidate.unlink()
        (dest / ONNX_FILENAMES["int8"]).unlink(missing_ok=True)
    return check


def settings_to_released_folder(provenance: dict, dest: Path) -> None:
    """A refit's validation run (provenance["settings_from"]["source"], a run folder) does not
    ship; its selections and log do, in `dest`. Name `dest` instead (relative to the working
    folder), in the source and in the --settings-from of the recorded commands, so the
    command reproduces from the repository. A source already beside `dest` (under model_cards/) is kept."""
    stage = provenance.get("settings_from")
    source = stage.get("source") if isinstance(stage, dict) else None
    if not source or dest.resolve().parent in Path(source).resolve().parents:
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
