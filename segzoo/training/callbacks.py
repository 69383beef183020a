"""The callback that watches a run epoch by epoch: validation Dice (with the averaged weights and
precise BatchNorm statistics when asked), the model folder rewritten when it improved, the CSV
log, the resume checkpoint and state, the wall-clock budget and a progress bar."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

from segzoo.config import ModelConfig
from segzoo.io.files import atomic_write_text
from segzoo.training.averaging import averaged_weights
from segzoo.training.options import TrainOptions
from segzoo.training.precise_bn import recompute_batchnorm_statistics
from segzoo.training.run_folder import LOG_FILE, STATE_FILE, checkpoint_path
from segzoo.training.selection import dice_at, predict_probs


class Monitor(keras.callbacks.Callback):
    """Validation Dice, best-checkpoint, CSV log, resume state, wall-clock budget, progress."""

    def __init__(self, options: TrainOptions, config: ModelConfig, out: Path, state: dict, val_images, val_masks,
                 save_model, statistics_batches):
        super().__init__()
        self.statistics_batches = statistics_batches
        self.options, self.config, self.out, self.state = options, config, out, state
        self.val_images, self.val_masks, self.save_model = val_images, val_masks, save_model
        self.started = time.monotonic() - state["elapsed_s"]
        self.session_start = time.monotonic()
        self.epoch_seconds: list[float] = []
        self.bar = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def out_of_time(self, next_epoch_s: float) -> bool:
        if self.options.max_minutes is None:
            return False
        return (time.monotonic() - self.session_start) + next_epoch_s > self.options.max_minutes * 60

    def on_epoch_begin(self, epoch, logs=None):
        from tqdm import tqdm

        self.epoch_start = time.monotonic()
        self.bar = tqdm(total=self.options.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.options.epochs}",
                        unit="step", mininterval=5.0 if not sys.stderr.isatty() else 0.2, leave=False)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)
            rate = self.bar.n * self.options.batch_size / max(time.monotonic() - self.epoch_start, 1e-9)
            self.bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.4f}",
                                 patches_per_s=f"{rate:.1f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
        train_s = time.monotonic() - self.epoch_start
        patches_per_s = self.options.steps_per_epoch * self.options.batch_size / train_s
        t0 = time.monotonic()
        with averaged_weights(self.model):
            if self.options.precise_bn:  # moving statistics are not used by training steps; safe to replace
                recompute_batchnorm_statistics(self.model, self.statistics_batches())
            val_dice, improved = self._validate_and_save(epoch)
        val_s = time.monotonic() - t0
        self._checkpoint(epoch, logs, val_dice, improved, train_s + val_s, patches_per_s)

    def _validate_and_save(self, epoch: int) -> tuple[float, bool]:
        """(validation Dice at 0.5, improved); the model folder is rewritten when it improved
        (or always without a validation split)."""
        if self.val_images:
            probs = predict_probs(self.model, self.config, self.val_images, False)
            val_dice = dice_at(probs, self.val_masks, 0.5)
        else:
            val_dice = float("nan")
        improved = not self.val_images or self.options.keep == "last" or val_dice > self.state["best_dice"]
        if improved:
            self.state["best_dice"] = float(val_dice) if self.val_images else -1.0
            if self.options.keep == "last":
                self.config.provenance["selection"] = "last epoch (--keep last)"
            self.config.provenance["best_epoch"] = epoch + 1
            if self.val_images:
                self.config.provenance["val_dice_at_0.5"] = round(float(val_dice), 5)
            else:
                self.config.provenance["selection"] = "last epoch (no validation split)"
            self.save_model(self.model, self.out, self.config, overwrite=True)
        return val_dice, improved

    def _checkpoint(self, epoch: int, logs, val_dice: float, improved: bool, epoch_s: float,
                    patches_per_s: float) -> None:
        """CSV row, resume checkpoint (live weights and optimizer state), state file, time budget."""
        lr = self.model.optimizer.learning_rate
        lr = float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr))
        row = {"epoch": epoch + 1, "loss": round(float((logs or {}).get("loss", math.nan)), 6),
               "val_dice": round(float(val_dice), 6), "lr": f"{lr:.3e}",
               "patches_per_s": round(patches_per_s, 2), "epoch_s": round(epoch_s, 1),
               "elapsed_min": round(self.elapsed() / 60, 2), "best": int(improved)}
        self._append_csv(row)
        self.state.update(epoch=epoch + 1, elapsed_s=self.elapsed())
        checkpoint = checkpoint_path(self.out)
        checkpoint.parent.mkdir(exist_ok=True)
        tmp = checkpoint.parent / ".last.tmp.keras"
        self.model.save(tmp)
        os.replace(tmp, checkpoint)
        atomic_write_text(self.out / STATE_FILE, json.dumps(self.state, indent=2))
        print(f"epoch {epoch + 1}/{self.options.epochs}  loss {row['loss']:.4f}  val_dice {val_dice:.4f}"
              f"{' *' if improved else '  '}  {patches_per_s:.1f} patches/s  lr {row['lr']}  "
              f"elapsed {row['elapsed_min']:.1f} min", flush=True)
        self.epoch_seconds.append(epoch_s)
        if self.out_of_time(float(np.median(self.epoch_seconds))):
            print(f"stopping: --max-minutes {self.options.max_minutes} would be exceeded by another epoch",
                  flush=True)
            self.model.stop_training = True

    def _append_csv(self, row: dict) -> None:
        path = self.out / LOG_FILE
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
