"""The model a run trains: built in its dtype policy, given the starting weights, compiled with
AdamW and the learning-rate schedule; and what it trains on, for the log."""

from __future__ import annotations

import contextlib
import os

from segzoo.config import ModelConfig
from segzoo.training.options import TrainOptions


@contextlib.contextmanager
def dtype_policy(name: str):
    """Layers built inside the block get this Keras dtype policy; the global one comes back after,
    so the float32 models that save_model and load_model build are unaffected."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def learning_rate(options: TrainOptions):
    """The peak rate `options.lr` after `warmup_steps` of linear warm-up, decayed by a cosine to
    1% of it over the run (schedule 'cosine'), or constant."""
    import keras

    if options.schedule != "cosine":
        return options.lr
    total_steps = options.epochs * options.steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        0.0 if options.warmup_steps else options.lr, decay_steps=max(total_steps - options.warmup_steps, 1),
        warmup_target=options.lr if options.warmup_steps else None, warmup_steps=options.warmup_steps,
        alpha=0.01)


def compiled_model(config: ModelConfig, options: TrainOptions, init_model=None):
    """A new Keras model for `config` in `options.dtype_policy` (the checkpoint keeps each
    layer's policy for --resume), holding `init_model`'s weights when given, compiled with
    AdamW (weight averaging with --ema-momentum) and the run's loss."""
    import keras

    from segzoo.models.folders import build_from_config, copy_weights_by_name
    from segzoo.training.losses import training_loss

    with dtype_policy(options.dtype_policy):
        model = build_from_config(config)
    if init_model is not None:
        copy_weights_by_name(init_model, model, argument="init_from")  # a new head keeps its initialisation
    if options.freeze_trunk:
        freeze_trunk(model)
    ema = {} if options.ema_momentum is None else {"use_ema": True, "ema_momentum": options.ema_momentum}
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate(options), weight_decay=options.weight_decay,
                                       **ema)
    model.compile(optimizer=optimizer,
                  loss=training_loss(options.loss, config.instance_maps, options.map_loss_weight))
    return model


def freeze_trunk(model) -> None:
    """Make only the instance-map head trainable (layers named "instance_*"): every other layer,
    BatchNorm included (a frozen Keras 3 BatchNorm runs in inference mode), keeps its weights,
    so the nucleus probability is the starting model's exactly."""
    from segzoo.errors import UsageError

    for layer in model.layers:
        layer.trainable = layer.name.startswith("instance_")
    if not model.trainable_weights:
        raise UsageError("freeze_trunk: the model has no instance-map head; give arch_kwargs "
                         "{\"instance_maps\": [...]} or an init_from model with instance maps", argument="arch_kwargs")


def devices() -> str:
    """What the run trains on, for the log: the accelerators the Keras backend sees, or the CPU."""
    import keras

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
