"""What a run takes from other models: --init-from (architecture, arguments, preprocessing and
weights of a model to fine-tune) and --settings-from (the threshold and post-processing a
validated run chose, for a refit). Both name a model folder, a zoo name or an hf:// URI."""

from __future__ import annotations

import logging
from pathlib import Path

from segzoo.config import CONFIG_FILENAME, ModelConfig
from segzoo.errors import UsageError
from segzoo.provenance import portable_path
from segzoo.zoo.sources import model_folder

log = logging.getLogger("segzoo.train")


HEAD_KWARGS = ("instance_maps", "instance_width", "instance_layers")
"""Architecture arguments a fine-tune may add to its --init-from model: a new output head on the
same trunk (the trunk's weights are copied by layer name, the head starts fresh)."""


def source_name(source: str) -> str:
    """--settings-from/--init-from as provenance: a folder relative to the working folder
    (portable_path), a zoo name as given."""
    return portable_path(source) if Path(source).is_dir() else source


def settings_model(source: str | None) -> ModelConfig | None:
    """The config of the validated model named by --settings-from (None without one).

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
        raise UsageError(f"settings_from {source}: its threshold was not chosen on a validation split "
                         "(no threshold_selection in its provenance)", argument="settings_from")
    return config


def settings_provenance(source: str, settings: ModelConfig) -> dict:
    """provenance["settings_from"] of a refit: where its settings came from and how they were chosen."""
    return {"source": source_name(source), "name": settings.name,
            "command": settings.provenance.get("command"), "val_stems": settings.provenance.get("val_stems"),
            "best_epoch": settings.provenance.get("best_epoch"),
            **{k: settings.provenance[k] for k in ("threshold_selection", "postprocessing_selection")
               if k in settings.provenance}}


def initial_model(init_from: str | None, architecture: str | None, arch_kwargs: dict, *, resume: bool):
    """(keras model, config) named by --init-from, or (None, None); with `resume` only the
    config (the weights come from the run's checkpoint).

    Refuses an --architecture or --arch-kwargs that disagree with the starting model."""
    if not init_from:
        return None, None
    from segzoo.models.architectures import resolve_kwargs
    from segzoo.models.folders import load_model

    folder = model_folder(init_from)
    if resume:
        model, config = None, ModelConfig.load(folder / CONFIG_FILENAME)
    else:
        model, config = load_model(folder)
    if architecture and architecture != config.architecture:
        raise UsageError(f"init_from {init_from} is a {config.architecture!r} model, "
                         f"not {architecture!r}; drop architecture or pick a matching model", argument="architecture")
    resolved = resolve_kwargs(config.architecture, config.architecture_kwargs)
    clash = {k: v for k, v in arch_kwargs.items() if resolved.get(k) != v and k not in HEAD_KWARGS}
    if clash:
        raise UsageError(f"arch_kwargs {clash} disagree with init_from {init_from} "
                         f"({config.architecture_kwargs}); fine-tuning keeps the architecture "
                         f"(it may only add a head: {', '.join(HEAD_KWARGS)})", argument="arch_kwargs")
    if "instance_maps" in arch_kwargs and config.instance_maps and arch_kwargs["instance_maps"] != config.instance_maps:
        raise UsageError(f"arch_kwargs instance_maps {arch_kwargs['instance_maps']} differ from the "
                         f"{config.instance_maps} of init_from {init_from}", argument="arch_kwargs")
    log.info("initialised from %s (%s)", folder, config.architecture)
    return model, config
