"""One training run, start to finish (`segzoo train`; scripts/train.py is the same command): the
run folder and its resume state, the data and its validation split, the run's config and
provenance, the model, the fit with its callback, then the threshold and post-processing
chosen on the validation split."""

from __future__ import annotations

import logging
from pathlib import Path

from segzoo.config import CONFIG_FILENAME, WEIGHTS_FILENAME, ModelConfig
from segzoo.datasets.monuseg import discover_samples
from segzoo.errors import RunError, UsageError
from segzoo.provenance import environment, portable_command, portable_path
from segzoo.training.inherited import HEAD_KWARGS, initial_model, settings_model, settings_provenance, source_name
from segzoo.training.options import TrainOptions
from segzoo.training.run_folder import checkpoint_path, new_state, prepare_run_folder, read_state
from segzoo.training.selection import choose_threshold, tune_postprocessing
from segzoo.training.split import load_images_and_masks, split_train_val

log = logging.getLogger("segzoo.train")

STATISTICS_START_STEP = 10**9
"""First step of the patch stream precise BatchNorm reads: one training never reaches."""


def train(options: TrainOptions, argv: list[str]) -> Path:
    """Run `options` and return the model folder (options.out). `argv`: the arguments of the
    command as given, recorded (paths made relative) as `segzoo train <argv>` in the provenance.
    SegzooError for bad options or data, before anything is trained."""
    import keras

    from segzoo.models.folders import save_model
    from segzoo.training.augment import PatchSampler
    from segzoo.training.callbacks import Monitor
    from segzoo.training.model import compiled_model, devices
    from segzoo.training.pipeline import make_dataset, patch_batches, stream_workers

    options.check()
    out = Path(options.out)
    prepare_run_folder(out, resume=options.resume, overwrite=options.overwrite)
    state, started = _resume_state(out, options)
    keras.utils.set_random_seed(options.seed)
    init_model, init_config = initial_model(options.init_from, options.architecture, options.arch_kwargs,
                                            resume=options.resume)
    settings = settings_model(options.settings_from)
    train_samples, val_samples = split_train_val(discover_samples(options.data), options.val_fraction,
                                                 options.seed, options.val_stems)
    log.info("data: %d training, %d validation tiles from %s", len(train_samples), len(val_samples), options.data)
    if options.scale != 1.0:
        log.info("tiles at %.4g um/px brought to the model's %.4g um/px (scale %.4g)", options.data_mpp,
                 options.mpp, options.scale)
    train_images, train_masks, train_labels = load_images_and_masks(train_samples, labels=True, scale=options.scale)
    val_images, val_masks = load_images_and_masks(val_samples, scale=options.scale)
    config = run_config(options, init_config, settings)
    config.provenance = _provenance(options, argv, keras.backend.backend(), [s.stem for s in train_samples],
                                    [s.stem for s in val_samples], init_config, settings, started)
    if settings is None and not val_samples:
        log.warning("no validation split and no --settings-from: threshold stays %.2f and post-processing "
                    "at its defaults", config.postprocessing.threshold)

    if options.resume:
        model = keras.saving.load_model(checkpoint_path(out))
        log.info("resumed from epoch %d (best validation Dice %.4f)", state["epoch"], state["best_dice"])
    else:
        model = compiled_model(config, options, init_model)
    del init_model
    log.info("model %s: %d parameters; devices: %s", config.architecture, model.count_params(), devices())

    if config.instance_maps:
        log.info("instance maps %s: instance labels on %d of %d training tiles (the others train the "
                 "probability only)", config.instance_maps, sum(lab is not None for lab in train_labels),
                 len(train_labels))
    sampler = PatchSampler(train_images, train_masks, options.patch_size, options.augmentation(),
                           labels=train_labels, instance_maps=config.instance_maps)
    dataset = make_dataset(sampler, options.batch_size, config.preprocessing, seed=options.seed,
                           start_step=state["epoch"] * options.steps_per_epoch)

    def statistics_batches():  # the same held-apart patch stream every epoch
        return (images for images, _ in patch_batches(sampler, options.batch_size, config.preprocessing,
                                                      seed=options.seed, start_step=STATISTICS_START_STEP,
                                                      count=options.precise_bn, workers=stream_workers()))

    monitor = Monitor(options, config, out, state, val_images, val_masks, save_model, statistics_batches)
    if state["epoch"] < options.epochs and not monitor.out_of_time(0.0):
        model.fit(dataset, epochs=options.epochs, initial_epoch=state["epoch"],
                  steps_per_epoch=options.steps_per_epoch, callbacks=[monitor], verbose=0, shuffle=False)
    monitor.close()

    if not (out / WEIGHTS_FILENAME).is_file():
        raise RunError(f"{out}: training stopped before the first validation; no model written")
    if settings is None:
        if not options.freeze_trunk:  # (a frozen trunk keeps its model's probability and threshold)
            choose_threshold(out, val_images, val_masks, options.val_tta)
        tune_postprocessing(out, options.data, scale=options.scale)
    return out


def _resume_state(out: Path, options: TrainOptions) -> tuple[dict, dict]:
    """(resume state, provenance of the run being resumed once its model folder exists); a new
    state and {} for a run that starts. Refuses to resume in another dtype policy: the
    checkpoint's layers keep theirs, and the provenance would lie."""
    if not options.resume:
        return new_state(options.dtype_policy), {}
    state = read_state(out)
    started = ModelConfig.load(out).provenance if (out / CONFIG_FILENAME).is_file() else {}
    # state files from before the policy was recorded: the provenance's (absent = float32)
    trained_with = state.get("dtype_policy") or started.get("dtype_policy", "float32")
    if trained_with != options.dtype_policy:
        raise UsageError(f"{out}: the run trains with dtype_policy {trained_with}; "
                         f"resume it with that, not {options.dtype_policy}", argument="dtype_policy")
    return state, started


def run_config(options: TrainOptions, init_config: ModelConfig | None, settings: ModelConfig | None) -> ModelConfig:
    """The config the run trains and saves (provenance aside): the architecture (--init-from's
    when given, with its preprocessing and post-processing: its weights expect them), the
    threshold and post-processing a validated run chose (--settings-from), name and minimum
    object size."""
    from segzoo.models.folders import default_config

    if init_config is not None:
        head = {k: v for k, v in options.arch_kwargs.items() if k in HEAD_KWARGS}
        config = default_config(init_config.architecture, **{**init_config.architecture_kwargs, **head})
        config.preprocessing = init_config.preprocessing
        config.postprocessing = init_config.postprocessing
    else:
        config = default_config(options.architecture, **options.arch_kwargs)
    if settings is not None:
        config.postprocessing = settings.postprocessing
    config.name = options.name
    config.postprocessing.min_object_size = options.min_object_size
    config.resolution.mpp = options.mpp if options.mpp is not None else options.data_mpp
    return config


def _provenance(options: TrainOptions, argv: list[str], backend: str, train_stems: list[str],
                val_stems: list[str], init_config: ModelConfig | None, settings: ModelConfig | None,
                started: dict) -> dict:
    """What the run came from, with paths relative to the folder the command ran in (so the
    provenance names no machine): data, split, command, software, loss, seed, the options
    that change training, the models it took from, and for a resumed run the command that
    started it (the one that reproduces it) with the resumes listed."""
    from segzoo import __version__

    provenance = {
        "data": portable_path(options.data), "train_stems": train_stems, "val_stems": val_stems,
        "command": portable_command("segzoo train", argv), "segzoo_version": __version__,
        "environment": environment(backend), "loss": options.loss, "seed": options.seed,
    }
    if options.mpp is not None:  # the tiles were resampled to the model's scale
        provenance["data_mpp"] = options.data_mpp
    if options.freeze_trunk:
        # The probability is the --init-from model's, so is its threshold and how it was chosen.
        provenance["frozen_trunk"] = True
        init_provenance = init_config.provenance if init_config is not None else {}
        chosen = init_provenance.get("threshold_selection") or \
            (init_provenance.get("settings_from") or {}).get("threshold_selection")
        if chosen:
            provenance["threshold_selection"] = {**chosen, "kept_from": source_name(options.init_from)}
    if options.map_loss_weight != 1.0:
        provenance["map_loss_weight"] = options.map_loss_weight
    if options.ema_momentum is not None:
        provenance["ema_momentum"] = options.ema_momentum
    if options.dtype_policy != "float32":
        provenance["dtype_policy"] = options.dtype_policy
    if options.precise_bn:
        provenance["precise_bn_batches"] = options.precise_bn
    if settings is not None:
        provenance["settings_from"] = settings_provenance(options.settings_from, settings)
    if init_config is not None:
        provenance["init_from"] = {"source": source_name(options.init_from), "name": init_config.name,
                                   "command": init_config.provenance.get("command")}
    if started:
        this_command = provenance["command"]
        provenance["command"] = started.get("command", this_command)
        provenance["resumed_with"] = [*started.get("resumed_with", []), this_command]
    return provenance
