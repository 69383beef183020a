"""`segzoo train`: the command line of segzoo.training (its options and defaults are
segzoo.training.options.TrainOptions)."""

from __future__ import annotations

import argparse
import json

from segzoo.cli.arguments import OneLineParser
from segzoo.errors import UsageError

DESCRIPTION = "Train a segzoo model on a MoNuSeg-layout folder (see segzoo.training)."


def parser() -> argparse.ArgumentParser:
    from segzoo.training.options import DTYPE_POLICIES, KEEP, LOSS_NAMES, SCHEDULES
    from segzoo.training.options import TrainOptions as D

    p = OneLineParser(prog="segzoo train", description=DESCRIPTION,
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
    p.add_argument("--patch-size", type=int, default=D.patch_size)
    p.add_argument("--batch-size", type=int, default=D.batch_size)
    p.add_argument("--epochs", type=int, default=D.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=D.steps_per_epoch)
    p.add_argument("--lr", type=float, default=D.lr, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=D.weight_decay)
    p.add_argument("--schedule", choices=SCHEDULES, default=D.schedule)
    p.add_argument("--warmup-steps", type=int, default=D.warmup_steps)
    p.add_argument("--ema-momentum", type=float, default=None, metavar="M",
                   help="keep an exponential moving average of the weights (Polyak averaging, e.g. 0.999); "
                        "validation and the saved model use the average, the resume checkpoint keeps both")
    p.add_argument("--dtype-policy", choices=DTYPE_POLICIES, default=D.dtype_policy,
                   help="mixed_bfloat16: compute in bfloat16 with float32 weights (faster on CPUs with "
                        "bfloat16 instructions); validation uses the training model, the saved model "
                        "folder is float32 as always")
    p.add_argument("--precise-bn", type=int, default=D.precise_bn, metavar="BATCHES",
                   help="before each validation and save, set the BatchNorm statistics to their mean over "
                        "this many batches of training patches (precise BN; 0: keep the moving averages)")
    p.add_argument("--loss", default=D.loss, help=", ".join(LOSS_NAMES))
    p.add_argument("--map-loss-weight", type=float, default=D.map_loss_weight,
                   help="weight of each instance map's loss against the probability's (models with "
                        "instance_maps)")
    p.add_argument("--freeze-trunk", action="store_true",
                   help="train only the instance-map head (layers named instance_*) of the --init-from "
                        "model: every other layer is frozen, BatchNorm included, so the nucleus "
                        "probability stays that model's exactly")
    p.add_argument("--settings-from", default=None, metavar="MODEL",
                   help="refit: take the decision threshold and post-processing from this validated model "
                        "folder or zoo name instead of choosing them here (use with --val-fraction 0 to "
                        "train on every tile with settings chosen on a validation split)")
    p.add_argument("--val-fraction", type=float, default=D.val_fraction)
    p.add_argument("--val-stems", nargs="*", default=None, help="explicit validation tiles (stems)")
    p.add_argument("--val-tta", action="store_true", help="D4 test-time augmentation for validation")
    p.add_argument("--keep", choices=KEEP, default=D.keep,
                   help="best: the epoch with the best validation Dice is the model; last: the last epoch "
                        "(for a fine-tune whose starting model saw the validation tiles, where validation "
                        "Dice favours the first epochs); the threshold and post-processing are chosen on "
                        "validation either way")
    p.add_argument("--no-augment", action="store_true", help="disable all augmentation")
    p.add_argument("--hed-sigma", type=float, default=D.hed_sigma)
    p.add_argument("--intensity-augment", action="store_true",
                   help="add nnU-Net-style gamma, blur and noise augmentation (see segzoo.training.augment)")
    p.add_argument("--scale-jitter", type=float, nargs=2, default=list(D.scale_jitter),
                   metavar=("MIN", "MAX"))
    p.add_argument("--min-object-size", type=int, default=D.min_object_size)
    p.add_argument("--mpp", type=float, default=None,
                   help="the model's scale in microns per pixel (default: the data's); every tile is resampled "
                        "to it (e.g. 0.5 for a 20x model from 40x tiles)")
    p.add_argument("--data-mpp", type=float, default=D.data_mpp,
                   help=f"microns per pixel of the training tiles (default {D.data_mpp}: MoNuSeg's 40x)")
    p.add_argument("--seed", type=int, default=D.seed)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget; stops cleanly")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --out")
    group.add_argument("--overwrite", action="store_true", help="delete --out and start again")
    return p


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Train; 0 with the model folder written (a UsageError for bad options: exit 2; a DataError,
    ModelError or RunError: exit 1)."""
    from segzoo.training.options import TrainOptions
    from segzoo.training.run import train

    try:
        arch_kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError as err:
        raise UsageError(f"--arch-kwargs is not valid JSON: {err}", argument="arch_kwargs") from None
    out = train(TrainOptions(**{**vars(args), "arch_kwargs": arch_kwargs}), argv)
    print(f"model folder: {out}")
    return 0
