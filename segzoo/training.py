"""Training engine behind `scripts/train.py` and `segzoo train`.

Reads a MoNuSeg-layout folder, carves a validation split out of it (never the
test set), trains with seeded augmented patches, keeps the checkpoint with the
best validation Dice, chooses the decision threshold on the validation split,
and writes a model folder (config.json + model.weights.h5) plus training_log.csv.
The inference path never imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from segzoo.config import CONFIG_FILENAME, WEIGHTS_FILENAME, ModelConfig
from segzoo.data.augment import AugmentConfig, PatchSampler
from segzoo.data.monuseg import Sample, discover_samples, load_sample
from segzoo.errors import SegzooError
from segzoo.io.files import atomic_write_text
from segzoo.losses import LOSSES, get_loss
from segzoo.metrics import PixelCounts, pixel_counts
from segzoo.provenance import environment, portable_command, portable_path
from segzoo.zoo.sources import model_folder

log = logging.getLogger("segzoo.train")

STATE_FILE = "train_state.json"
LOG_FILE = "training_log.csv"
CHECKPOINT_DIR = "checkpoint"
# Decision thresholds swept on the validation split. From 0.20: the deeplabv3 run with weight
# averaging (runs of stop 13) chose 0.30, the old lower edge, with Dice still rising below it.
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.20, 0.71, 0.05))


def split_train_val(samples: list[Sample], val_fraction: float, seed: int,
                    val_stems: list[str] | None = None) -> tuple[list[Sample], list[Sample]]:
    """Deterministic split by stem: `val_stems` if given, else a seeded random fraction."""
    if val_stems:
        known = {s.stem for s in samples}
        unknown = sorted(set(val_stems) - known)
        if unknown:
            raise SegzooError(f"--val-stems not found in the data folder: {unknown}")
        val = [s for s in samples if s.stem in val_stems]
    else:
        n_val = int(round(len(samples) * val_fraction))
        if val_fraction > 0:
            n_val = max(n_val, 1)
        if n_val >= len(samples):
            raise SegzooError(
                f"validation split of {n_val} leaves no training images out of {len(samples)}")
        order = np.random.default_rng(seed).permutation(len(samples))
        val_idx = set(order[:n_val].tolist())
        val = [s for i, s in enumerate(samples) if i in val_idx]
    train = [s for s in samples if s not in val]
    return train, val


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segzoo train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--architecture", "-a", default=None,
                   help="registered architecture name (required unless --init-from gives it)")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="fine-tune: start from this model folder or zoo name (its architecture, "
                        "arguments, preprocessing and weights)")
    p.add_argument("--arch-kwargs", default="{}", help="JSON object of architecture arguments")
    p.add_argument("--data", required=True, help="training folder (MoNuSeg layout), e.g. ../shared/monuseg/train")
    p.add_argument("--out", required=True, help="run folder; becomes a model folder")
    p.add_argument("--name", default=None, help="model name stored in config.json")
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--ema-momentum", type=float, default=None, metavar="M",
                   help="keep an exponential moving average of the weights (Polyak averaging, e.g. 0.999); "
                        "validation and the saved model use the average, the resume checkpoint keeps both")
    p.add_argument("--dtype-policy", choices=["float32", "mixed_bfloat16"], default="float32",
                   help="mixed_bfloat16: compute in bfloat16 with float32 weights (faster on CPUs with "
                        "bfloat16 instructions); validation uses the training model, the saved model "
                        "folder is float32 as always")
    p.add_argument("--precise-bn", type=int, default=0, metavar="BATCHES",
                   help="before each validation and save, set the BatchNorm statistics to their mean over "
                        "this many batches of training patches (precise BN; 0: keep the moving averages)")
    p.add_argument("--loss", default="bce_dice", help=", ".join(LOSSES))
    p.add_argument("--settings-from", default=None, metavar="MODEL",
                   help="refit: take the decision threshold and post-processing from this validated model "
                        "folder or zoo name instead of choosing them here (use with --val-fraction 0 to "
                        "train on every tile with settings chosen on a validation split)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--val-stems", nargs="*", default=None, help="explicit validation tiles (stems)")
    p.add_argument("--val-tta", action="store_true", help="D4 test-time augmentation for validation")
    p.add_argument("--no-augment", action="store_true", help="disable all augmentation")
    p.add_argument("--hed-sigma", type=float, default=AugmentConfig.hed_sigma)
    p.add_argument("--intensity-augment", action="store_true",
                   help="add nnU-Net-style gamma, blur and noise augmentation (see segzoo.data.augment)")
    p.add_argument("--scale-jitter", type=float, nargs=2, default=[AugmentConfig.scale_min, AugmentConfig.scale_max],
                   metavar=("MIN", "MAX"))
    p.add_argument("--min-object-size", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget; stops cleanly")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --out")
    group.add_argument("--overwrite", action="store_true", help="delete --out and start again")
    return p


def prepare_run_folder(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a non-empty folder unless --resume or --overwrite."""
    if out.exists() and not out.is_dir():
        raise SegzooError(f"{out}: exists and is not a folder")
    non_empty = out.is_dir() and any(out.iterdir())
    if resume:
        if not (out / STATE_FILE).is_file():
            raise SegzooError(f"{out}: nothing to resume (no {STATE_FILE}); drop --resume to start a run")
        return
    if non_empty and not overwrite:
        raise SegzooError(f"{out}: run folder is not empty; pass --resume to continue it or "
                          "--overwrite to replace it")
    if non_empty and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _load_all(samples: list[Sample]):
    loaded = [load_sample(s) for s in samples]
    return [s.image for s in loaded], [s.mask for s in loaded]


def _predict_probs(model, config: ModelConfig, images: list[np.ndarray], tta: bool) -> list[np.ndarray]:
    from segzoo.predict.tiling import predict_probabilities
    from segzoo.runtime.keras import keras_runner

    run = keras_runner(model)
    return [predict_probabilities(run, im, config, tta=tta)[..., 0] for im in images]


def dice_at(probs: list[np.ndarray], masks: list[np.ndarray], threshold: float) -> float:
    total = PixelCounts()
    for prob, mask in zip(probs, masks):
        total = total + pixel_counts(prob >= threshold, mask)
    return total.metrics()["dice"]


def run(args: argparse.Namespace) -> Path:
    import keras

    from segzoo import __version__
    from segzoo.data.pipeline import make_dataset, patch_batches, stream_workers
    from segzoo.models.folders import default_config, save_model

    out = Path(args.out)
    prepare_run_folder(out, resume=args.resume, overwrite=args.overwrite)
    state = {"epoch": 0, "best_dice": -1.0, "elapsed_s": 0.0, "dtype_policy": args.dtype_policy}
    started: dict = {}  # provenance of the run being resumed, once its model folder exists
    if args.resume:
        state = json.loads((out / STATE_FILE).read_text())
        if (out / CONFIG_FILENAME).is_file():
            started = ModelConfig.load(out).provenance
        # state files from before the policy was recorded: the provenance's (absent = float32)
        trained_with = state.get("dtype_policy") or started.get("dtype_policy", "float32")
        if trained_with != args.dtype_policy:  # the checkpoint's layers keep their policy; provenance would lie
            raise SegzooError(f"{out}: the run trains with --dtype-policy {trained_with}; "
                              f"resume it with that, not {args.dtype_policy}")
    keras.utils.set_random_seed(args.seed)
    try:
        arch_kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError as err:
        raise SegzooError(f"--arch-kwargs is not valid JSON: {err}") from None
    if not isinstance(arch_kwargs, dict):
        raise SegzooError("--arch-kwargs must be a JSON object")
    if int(arch_kwargs.get("num_classes", 1)) != 1:
        raise SegzooError("MoNuSeg training is binary (nuclei vs background); use num_classes=1")
    loss_fn = get_loss(args.loss)
    init_model, init_config = _initial_model(args, arch_kwargs)
    if init_config is not None:
        args.architecture, arch_kwargs = init_config.architecture, dict(init_config.architecture_kwargs)
    elif not args.architecture:
        raise SegzooError("give --architecture (-a) or --init-from")

    samples = discover_samples(args.data)
    train_samples, val_samples = split_train_val(samples, args.val_fraction, args.seed, args.val_stems)
    log.info("data: %d training, %d validation tiles from %s", len(train_samples), len(val_samples), args.data)
    train_images, train_masks = _load_all(train_samples)
    val_images, val_masks = _load_all(val_samples)

    config = default_config(args.architecture, **arch_kwargs)
    if init_config is not None:  # the weights expect the input normalisation they were trained with
        config.preprocessing = init_config.preprocessing
        config.postprocessing = init_config.postprocessing
    settings = _settings_model(args.settings_from)
    if settings is not None:  # threshold and post-processing chosen by a validated run
        config.postprocessing = settings.postprocessing
    config.name = args.name
    config.postprocessing.min_object_size = args.min_object_size
    # Paths relative to the folder the command ran in, so the provenance names no machine.
    config.provenance = {
        "data": portable_path(args.data),
        "train_stems": [s.stem for s in train_samples],
        "val_stems": [s.stem for s in val_samples],
        "command": portable_command("segzoo train", args.argv),
        "segzoo_version": __version__,
        "environment": environment(keras.backend.backend()),
        "loss": args.loss,
        "seed": args.seed,
    }
    if args.ema_momentum is not None:
        config.provenance["ema_momentum"] = args.ema_momentum
    if args.dtype_policy != "float32":
        config.provenance["dtype_policy"] = args.dtype_policy
    if args.precise_bn:
        config.provenance["precise_bn_batches"] = args.precise_bn
    if settings is not None:
        config.provenance["settings_from"] = {
            "source": _source_name(args.settings_from), "name": settings.name,
            "command": settings.provenance.get("command"), "val_stems": settings.provenance.get("val_stems"),
            "best_epoch": settings.provenance.get("best_epoch"),
            **{k: settings.provenance[k] for k in ("threshold_selection", "postprocessing_selection")
               if k in settings.provenance}}
    elif not val_samples:
        log.warning("no validation split and no --settings-from: threshold stays %.2f and post-processing "
                    "at its defaults", config.postprocessing.threshold)
    if init_config is not None:
        config.provenance["init_from"] = {"source": _source_name(args.init_from), "name": init_config.name,
                                          "command": init_config.provenance.get("command")}
    if started:
        # The command that reproduces the run is the one that started it; resumes are listed.
        this_command = config.provenance["command"]
        config.provenance["command"] = started.get("command", this_command)
        config.provenance["resumed_with"] = [*started.get("resumed_with", []), this_command]

    ckpt = out / CHECKPOINT_DIR / "last.keras"
    if args.resume:
        model = keras.saving.load_model(ckpt)
        log.info("resumed from epoch %d (best validation Dice %.4f)", state["epoch"], state["best_dice"])
    else:
        from segzoo.models.folders import build_from_config

        with dtype_policy(args.dtype_policy):  # the checkpoint keeps each layer's policy for --resume
            model = build_from_config(config)
        if init_model is not None:
            model.set_weights(init_model.get_weights())
            del init_model
        total_steps = args.epochs * args.steps_per_epoch
        if args.schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(
                0.0 if args.warmup_steps else args.lr, decay_steps=max(total_steps - args.warmup_steps, 1),
                warmup_target=args.lr if args.warmup_steps else None, warmup_steps=args.warmup_steps,
                alpha=0.01)
        else:
            lr = args.lr
        ema = {} if args.ema_momentum is None else {"use_ema": True, "ema_momentum": args.ema_momentum}
        model.compile(optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=args.weight_decay, **ema),
                      loss=loss_fn)
    log.info("model %s: %d parameters; devices: %s", args.architecture, model.count_params(), _devices())

    augment = AugmentConfig.disabled() if args.no_augment else (
        AugmentConfig.with_intensity if args.intensity_augment else AugmentConfig)(
        hed_sigma=args.hed_sigma, scale_min=args.scale_jitter[0], scale_max=args.scale_jitter[1])
    sampler = PatchSampler(train_images, train_masks, args.patch_size, augment)
    dataset = make_dataset(sampler, args.batch_size, config.preprocessing, seed=args.seed,
                           start_step=state["epoch"] * args.steps_per_epoch)

    def statistics_batches():  # the same held-apart patch stream every epoch (steps training never reaches)
        return (images for images, _ in patch_batches(sampler, args.batch_size, config.preprocessing, seed=args.seed,
                                                      start_step=10**9, count=args.precise_bn,
                                                      workers=stream_workers()))

    monitor = _Monitor(args, config, out, state, val_images, val_masks, save_model, statistics_batches)
    if state["epoch"] < args.epochs and not monitor.out_of_time(0.0):
        model.fit(dataset, epochs=args.epochs, initial_epoch=state["epoch"],
                  steps_per_epoch=args.steps_per_epoch, callbacks=[monitor], verbose=0,
                  shuffle=False)
    monitor.close()

    if not (out / WEIGHTS_FILENAME).is_file():
        raise SegzooError(f"{out}: training stopped before the first validation; no model written")
    if settings is None:
        _choose_threshold(out, val_images, val_masks, args.val_tta)
        tune_postprocessing(out, args.data)
    return out


def _source_name(source: str) -> str:
    """--settings-from/--init-from as provenance: a folder relative to the working folder
    (portable_path), a zoo name as given."""
    return portable_path(source) if Path(source).is_dir() else source


def _settings_model(source: str | None) -> ModelConfig | None:
    """The config of the validated model named by --settings-from (a folder or zoo name).

    A refit (itself trained with --settings-from, like the zoo models) passes on the
    validation run it took its settings from, so `--settings-from model_cards/<name>`
    reproduces a released refit from the shipped folder alone."""
    if not source:
        return None
    config = ModelConfig.load(model_folder(source) / CONFIG_FILENAME)
    chosen_by = config.provenance.get("settings_from")
    if "threshold_selection" not in config.provenance and isinstance(chosen_by, dict) \
            and "threshold_selection" in chosen_by:
        config.name = chosen_by.get("name") or config.name
        config.provenance = {k: v for k, v in chosen_by.items() if k != "source"}
    if "threshold_selection" not in config.provenance:
        raise SegzooError(f"--settings-from {source}: its threshold was not chosen on a validation split "
                          "(no threshold_selection in its provenance)")
    return config


def _initial_model(args: argparse.Namespace, arch_kwargs: dict):
    """(keras model, config) named by --init-from (a model folder or zoo name), or (None, None);
    with --resume only the config (the weights come from the run's checkpoint).

    Refuses an --architecture or --arch-kwargs that disagree with the starting model."""
    if not args.init_from:
        return None, None
    from segzoo.models.folders import load_model

    folder = model_folder(args.init_from)
    if args.resume:  # the weights come from the run's checkpoint; only the config is needed
        model, config = None, ModelConfig.load(folder / CONFIG_FILENAME)
    else:
        model, config = load_model(folder)
    if args.architecture and args.architecture != config.architecture:
        raise SegzooError(f"--init-from {args.init_from} is a {config.architecture!r} model, "
                          f"not {args.architecture!r}; drop -a or pick a matching model")
    from segzoo.models.architectures import resolve_kwargs

    resolved = resolve_kwargs(config.architecture, config.architecture_kwargs)
    clash = {k: v for k, v in arch_kwargs.items() if resolved.get(k) != v}
    if clash:
        raise SegzooError(f"--arch-kwargs {clash} disagree with --init-from {args.init_from} "
                          f"({config.architecture_kwargs}); fine-tuning keeps the architecture")
    log.info("initialised from %s (%s)", folder, config.architecture)
    return model, config


WATERSHED_MIN_DISTANCES = (3, 4, 5, 6, 8)


def tune_postprocessing(folder: str | Path, data: str | Path) -> dict | None:
    """Choose watershed_min_distance by mean AJI on the validation tiles that have XML
    instance labels (the config's provenance names them); stores it in config.json."""
    from segzoo.metrics import aggregated_jaccard_index
    from segzoo.models.folders import load_model
    from segzoo.predict.postprocessing import probabilities_to_instances

    folder = Path(folder)
    model, config = load_model(folder)
    val_stems = set(config.provenance.get("val_stems", []))
    samples = [s for s in discover_samples(data) if s.stem in val_stems and s.annotation is not None]
    if not samples:
        log.info("no validation tiles with XML instances: keeping watershed_min_distance %d",
                 config.postprocessing.watershed_min_distance)
        return None
    loaded = [load_sample(s) for s in samples]
    probs = _predict_probs(model, config, [s.image for s in loaded], False)
    scores = {}
    for distance in WATERSHED_MIN_DISTANCES:
        config.postprocessing.watershed_min_distance = distance
        scores[distance] = float(np.mean([
            aggregated_jaccard_index(s.labels, probabilities_to_instances(p, config.postprocessing)[1])
            for s, p in zip(loaded, probs)]))
    best = max(scores, key=lambda d: (scores[d], -d))
    config.postprocessing.watershed_min_distance = best
    config.provenance["postprocessing_selection"] = {
        "split": "validation", "images": sorted(s.stem for s in samples),
        "aji_by_watershed_min_distance": {str(k): round(v, 5) for k, v in scores.items()}}
    config.save(folder / "config.json")
    log.info("watershed_min_distance %d chosen on %d validation tile(s) (AJI %.4f)", best, len(samples), scores[best])
    return scores


def _devices() -> str:
    """What the run trains on, for the log: the accelerators the Keras backend sees, or the CPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"{len(gpus)} GPU(s)" if gpus else f"CPU ({os.cpu_count()} cores)"
    if backend == "jax":
        import jax

        devices = [d for d in jax.devices() if d.platform != "cpu"]
        if devices:
            return f"{len(devices)} {devices[0].device_kind} (JAX)"
    return f"CPU ({os.cpu_count()} cores, {backend} backend)"


def _choose_threshold(out: Path, val_images, val_masks, tta: bool) -> None:
    """Sweep thresholds on the validation split with the best weights; store the best."""
    from segzoo.models.folders import load_model

    if not val_images:
        log.info("no validation split: keeping threshold 0.5")
        return
    model, config = load_model(out)
    probs = _predict_probs(model, config, val_images, tta)
    scores = {t: dice_at(probs, val_masks, t) for t in THRESHOLDS}
    best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))
    config.postprocessing.threshold = float(best)
    config.provenance["threshold_selection"] = {
        "split": "validation", "tta": tta, "dice_by_threshold": {str(k): round(v, 5) for k, v in scores.items()}}
    config.save(out / "config.json")
    log.info("threshold %.2f chosen on validation (Dice %.4f; at 0.50: %.4f)", best, scores[best], scores[0.5])


import keras  # noqa: E402  (training always has Keras; imported late to keep module docs first)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Layers built inside the block get this Keras dtype policy; the global one comes back after,
    so the float32 models that save_model and load_model build are unaffected."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def averaged_weights(model):
    """Inside the block the model holds its optimizer's moving average of the trainable
    weights (when the optimizer keeps one, `use_ema=True`); the live weights come back after.

    Not keras.callbacks.SwapEMAWeights: on TensorFlow it swaps by a+b / a-b arithmetic, which
    is not exact in float32 and would nudge the live weights at every epoch."""
    from keras import ops

    optimizer = model.optimizer
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "_model_variables_moving_average", None):
        yield
        return
    pairs = [(var, avg) for var, avg in zip(optimizer._trainable_variables,
                                            optimizer._model_variables_moving_average) if avg is not None]
    live = [ops.convert_to_numpy(var) for var, _ in pairs]
    for var, avg in pairs:
        var.assign(avg)
    try:
        yield
    finally:
        for (var, _), value in zip(pairs, live):
            var.assign(value)


def recompute_batchnorm_statistics(model, batches) -> int:
    """Precise BatchNorm (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): set each
    BatchNormalization layer's moving mean and variance to the mean of its batch statistics
    over `batches` (normalised image arrays), with the weights fixed.

    The moving averages kept during training (momentum 0.99) follow the last ~100 batches, so
    they keep moving at the end of a cosine schedule when the weights hardly do. Returns how
    many batches were used."""
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    count = 0
    try:
        for count, batch in enumerate(batches, start=1):
            for layer in norms:  # a running mean: batch k gets weight 1/k
                layer.momentum = (count - 1) / count
            model(batch, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return count


class _Monitor(keras.callbacks.Callback):
    """Validation Dice, best-checkpoint, CSV log, resume state, wall-clock budget, progress."""

    def __init__(self, args, config, out: Path, state: dict, val_images, val_masks, save_model,
                 statistics_batches):
        super().__init__()
        self.statistics_batches = statistics_batches
        self.args, self.config, self.out, self.state = args, config, out, state
        self.val_images, self.val_masks, self.save_model = val_images, val_masks, save_model
        self.started = time.monotonic() - state["elapsed_s"]
        self.session_start = time.monotonic()
        self.epoch_seconds: list[float] = []
        self.bar = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def out_of_time(self, next_epoch_s: float) -> bool:
        if self.args.max_minutes is None:
            return False
        return (time.monotonic() - self.session_start) + next_epoch_s > self.args.max_minutes * 60

    def on_epoch_begin(self, epoch, logs=None):
        from tqdm import tqdm

        self.epoch_start = time.monotonic()
        self.bar = tqdm(total=self.args.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.args.epochs}",
                        unit="step", mininterval=5.0 if not sys.stderr.isatty() else 0.2, leave=False)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)
            rate = self.bar.n * self.args.batch_size / max(time.monotonic() - self.epoch_start, 1e-9)
            self.bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.4f}",
                                 patches_per_s=f"{rate:.1f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
        train_s = time.monotonic() - self.epoch_start
        patches_per_s = self.args.steps_per_epoch * self.args.batch_size / train_s
        t0 = time.monotonic()
        with averaged_weights(self.model):
            if self.args.precise_bn:  # moving statistics are not used by training steps; safe to replace
                recompute_batchnorm_statistics(self.model, self.statistics_batches())
            val_dice, improved = self._validate_and_save(epoch)
        val_s = time.monotonic() - t0
        self._checkpoint(epoch, logs, val_dice, improved, train_s + val_s, patches_per_s)

    def _validate_and_save(self, epoch: int) -> tuple[float, bool]:
        """(validation Dice at 0.5, improved); the model folder is rewritten when it improved
        (or always without a validation split)."""
        if self.val_images:
            probs = _predict_probs(self.model, self.config, self.val_images, False)
            val_dice = dice_at(probs, self.val_masks, 0.5)
        else:
            val_dice = float("nan")
        improved = not self.val_images or val_dice > self.state["best_dice"]
        if improved:
            self.state["best_dice"] = float(val_dice) if self.val_images else -1.0
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
        ckpt_dir = self.out / CHECKPOINT_DIR
        ckpt_dir.mkdir(exist_ok=True)
        tmp = ckpt_dir / ".last.tmp.keras"
        self.model.save(tmp)
        os.replace(tmp, ckpt_dir / "last.keras")
        atomic_write_text(self.out / STATE_FILE, json.dumps(self.state, indent=2))
        print(f"epoch {epoch + 1}/{self.args.epochs}  loss {row['loss']:.4f}  val_dice {val_dice:.4f}"
              f"{' *' if improved else '  '}  {patches_per_s:.1f} patches/s  lr {row['lr']}  "
              f"elapsed {row['elapsed_min']:.1f} min", flush=True)
        self.epoch_seconds.append(epoch_s)
        if self.out_of_time(float(np.median(self.epoch_seconds))):
            print(f"stopping: --max-minutes {self.args.max_minutes} would be exceeded by another epoch",
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = run(args)
    except SegzooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"model folder: {out}")
    return 0
