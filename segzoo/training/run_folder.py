"""A training run's folder: it becomes a model folder (config.json + model.weights.h5) and holds
training_log.csv, the resume state (train_state.json) and the resume checkpoint
(checkpoint/last.keras: live weights and optimizer state)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from segzoo.errors import UsageError

STATE_FILE = "train_state.json"
LOG_FILE = "training_log.csv"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "last.keras"


def prepare_run_folder(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a non-empty folder unless `resume` (it must hold a run) or `overwrite`
    (it is deleted and made again)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder", argument="out")
    non_empty = out.is_dir() and any(out.iterdir())
    if resume:
        if not (out / STATE_FILE).is_file():
            raise UsageError(f"{out}: nothing to resume (no {STATE_FILE}); pass resume=False to start a run",
                             argument="resume")
        return
    if non_empty and not overwrite:
        raise UsageError(f"{out}: run folder is not empty; pass overwrite=True to replace it "
                         "(or resume=True to continue it)", argument="overwrite")
    if non_empty and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def new_state(dtype_policy: str) -> dict:
    """The resume state of a run that starts: no epoch done, no best Dice yet."""
    return {"epoch": 0, "best_dice": -1.0, "elapsed_s": 0.0, "dtype_policy": dtype_policy}


def read_state(out: Path) -> dict:
    """The resume state of the run in `out`."""
    return json.loads((out / STATE_FILE).read_text())


def checkpoint_path(out: Path) -> Path:
    """The resume checkpoint of the run in `out`."""
    return out / CHECKPOINT_DIR / CHECKPOINT_FILE
