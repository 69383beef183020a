"""Model cards: a zoo folder's README.md (the Hugging Face card), rendered from its config.json,
metrics.json (and metrics_tta.json) and training_log.csv, so every number in the card comes
from those files (scripts/make_model_card.py writes it, write_card here); card_metrics reads
the metrics back from a card's model-index.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from segzoo.io.files import atomic_write_text

ARCH_NOTES = {
    "unet": ("U-Net (Ronneberger et al., MICCAI 2015)", "unet"),
    "segnet": ("SegNet (Badrinarayanan et al., TPAMI 2017) with max-position unpooling", "segnet"),
    "deeplabv3": ("DeepLabV3 (Chen et al., 2017) with a small residual backbone trained from scratch", "deeplabv3"),
}


def _yaml_metrics(metrics: dict) -> str:
    micro, mean = metrics["micro"], metrics["mean"]
    rows = [("dice", micro["dice"], "Dice / F1 (micro over all test pixels)"),
            ("iou", micro["iou"], "IoU (micro)"),
            ("accuracy", micro["accuracy"], "Pixel accuracy (micro)"),
            ("precision", micro["precision"], "Precision (micro)"),
            ("recall", micro["recall"], "Recall (micro)")]
    if "aji" in mean:
        rows += [("aji", mean["aji"], "AJI (mean over images)"), ("pq", mean["pq"], "PQ (mean over images)")]
    return "\n".join(f"      - type: {t}\n        value: {round(v, 4)}\n        name: {n}" for t, v, n in rows)


def _init_text(prov: dict) -> str:
    """For a fine-tuned model: the stage it started from (its command, time and log)."""
    init = prov.get("init_from")
    if not init:
        return ""
    minutes = init.get("training_minutes")
    took = f" ({init.get('epochs')} epochs, {minutes:.0f} minutes; log `training_log_init.csv`)" if minutes else ""
    return (f"Two stages. First{took}:\n\n```\n{init.get('command') or '(command not recorded)'}\n```\n\n"
            f"then fine-tuned from that model (`--init-from`; `training_log.csv` is this stage):\n\n")


def _rebuilt_text(prov: dict) -> str:
    """For a model rebuilt after training (segzoo.models.folders.rebuild_model): what changed and how."""
    rebuilt = prov.get("rebuilt")
    if not rebuilt:
        return ""
    changed = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in (rebuilt.get("changed") or {}).items())
    commit = rebuilt.get("source_commit")
    source = f" (`{rebuilt.get('from')}` as of git commit `{commit[:12]}`)" if commit else ""
    return (f"\n\nThen rebuilt with {changed} (its other architecture arguments as trained), the trained weights{source} "
            f"copied by layer name, with no further training:\n\n```\n{rebuilt.get('command') or '(not recorded)'}\n```")


def _averaging_sentence(momentum: float) -> str:
    return (f"the saved weights are an exponential moving average of the training weights (momentum\n"
            f"{momentum}, about the last {1 / (1 - momentum):.0f} steps), which smooths the epoch-to-epoch noise of the last epochs")


# Training options recorded in provenance, each with the sentence the card adds when a run used it.
OPTION_SENTENCES = {
    "ema_momentum": _averaging_sentence,  # --ema-momentum
    "dtype_policy": lambda policy: (f"trained with the Keras dtype policy `{policy}` (float32 weights; "
                                    "the released model computes in float32)"),  # --dtype-policy
    "precise_bn_batches": lambda batches: (f"BatchNorm statistics recomputed as the mean over {batches} batches "
                                           "of training patches before each validation and save"),  # --precise-bn
}


def _options_text(prov: dict) -> str:
    """"; <sentence>" for each training option the run used, in OPTION_SENTENCES order."""
    return "".join(f"; {sentence(prov[key])}" for key, sentence in OPTION_SENTENCES.items() if prov.get(key))


def _validation_curve_text(rows: list[dict]) -> str:
    """The validation run's best and last validation Dice, from its log rows ("" without rows)."""
    dice = [float(r["val_dice"]) for r in rows if r.get("val_dice") not in (None, "", "nan")]
    if not dice:
        return ""
    best = max(range(len(dice)), key=dice.__getitem__)
    return (f" Its validation Dice at threshold 0.5 peaked at {dice[best]:.4f} (epoch {best + 1}) and was\n"
            f"{dice[-1]:.4f} at its last epoch ({len(dice)}); a refit keeps the last epoch, so the last value is the\n"
            f"one that describes this recipe (the peak of a noisy curve is biased upwards).")


def _software_text(env: dict | None) -> str:
    """One line naming the packages, Python and git commit in a provenance "environment"
    ("(not recorded)" for runs from before it was recorded)."""
    if not env:
        return "(not recorded)"
    packages = env.get("packages") or {}
    names = [f"{name} {version}" for name, version in packages.items() if version]
    commit = env.get("git_commit")
    where = (f"git commit `{commit[:12]}`{' with uncommitted changes' if env.get('git_dirty') else ''}"
             if commit else "not a git checkout")
    return (f"{', '.join(names)}; Keras backend {env.get('keras_backend', '?')}; Python {env.get('python', '?')}; "
            f"{where}")


def _environment_text(prov: dict) -> str:
    """Where a run and its release recorded their software (segzoo.provenance.environment)."""
    lines = []
    if prov.get("environment"):
        lines.append(f"Trained with: {_software_text(prov['environment'])}.")
    release = prov.get("release") or {}
    if release.get("environment"):
        lines.append(f"Released (evaluation, ONNX export) with `{release.get('command', '?')}`: "
                     f"{_software_text(release['environment'])}.")
    return ("\n\n" + "\n".join(lines)) if lines else ""


def _split_text(prov: dict, validation_rows: list[dict] | None = None) -> str:
    """How the validation split was used: checkpoint/threshold selection, or a separate
    validation run whose settings a refit on every training tile reused (with that run's
    validation Dice when its log is given)."""
    refit = prov.get("settings_from")
    if not refit:
        val = prov.get("val_stems", [])
        return (f"A seeded split held out {len(val)} training tiles for validation (checkpoint and threshold\n"
                f"selection): {', '.join(val)}.")
    val = refit.get("val_stems") or []
    return (f"Settings were chosen in a validation run that held out {len(val)} training tiles\n"
            f"({', '.join(val)}): the recipe and schedule (best validation Dice at epoch\n"
            f"{refit.get('best_epoch', '?')}), the decision threshold and the watershed distance. This model was then\n"
            f"trained with the same recipe on all {len(prov.get('train_stems', []))} training tiles (`--val-fraction 0\n"
            f"--settings-from`); with no validation tiles left, the last epoch is the model. The validation\n"
            f"run's command:\n\n```\n{refit.get('command') or '(not recorded)'}\n```\n\n"
            f"and its log is `training_log_validation.csv`.{_validation_curve_text(validation_rows or [])}")


def _instance_errors_text(errors: dict | None) -> str:
    """The instance errors of the default prediction (metrics.json's instance_errors), as a paragraph."""
    if not errors:
        return ""
    return (f"Instance errors (default, pooled over the test images): of the {errors['truth']} annotated nuclei, "
            f"{errors['split']} ({100 * errors['split_rate']:.1f}%) are split (covered >= 20% each by two or more\n"
            f"predicted nuclei lying >= 50% inside them); of the {errors['pred']} predicted nuclei, {errors['merged']} "
            f"({100 * errors['merge_rate']:.1f}%) merge two or more\nannotated ones (covering >= 50% of each) and "
            f"{errors['unmatched']} ({100 * errors['unmatched_rate']:.1f}%) touch no annotated nucleus.\n\n")


MAP_NAMES = {"distance": "normalised distance", "boundary": "boundary", "horizontal": "HoVer-Net horizontal",
             "vertical": "HoVer-Net vertical", "hv": "HoVer-Net horizontal and vertical"}
"""How the card names each instance map and decoding (segzoo.config.INSTANCE_MAPS, INSTANCE_DECODINGS)."""


def _outputs_text(config: dict) -> str:
    """What the network outputs and how the predictor makes nuclei of it (the card's intro)."""
    post = config["postprocessing"]
    maps = config.get("architecture_kwargs", {}).get("instance_maps") or []
    threshold = (f"a binary mask (threshold {post['threshold']},\nchosen on the validation split) and nucleus "
                 "instances")
    if not maps:
        return (f"It outputs a per-pixel\nnucleus probability; segzoo's predictor turns it into {threshold} "
                "(connected components split by a\ndistance-transform watershed).")
    listed = " and ".join(f"{MAP_NAMES[m]} (`{m}`)" for m in maps)
    used = post.get("instance_map")
    how = ("connected components split by a distance-transform watershed, which beat the learned maps on "
           "validation" if used is None else
           f"connected components split by a watershed on the learned {MAP_NAMES[used]} map{'s' if used == 'hv' else ''}, one marker per "
           f"region where its centre score is >= {post['marker_threshold']}")
    return (f"It outputs a per-pixel\nnucleus probability and learned instance maps, {listed}, in one tensor "
            f"(channel 0, then the maps); segzoo's predictor turns them into {threshold} ({how}).")


def _selection_text(prov: dict) -> str:
    """The instance post-processing chosen on validation: every setting compared, by design."""
    chosen = prov.get("postprocessing_selection") or {}
    aji, pq = chosen.get("aji"), chosen.get("pq")
    if not aji or not pq:
        return ""
    designs: dict[str, list[str]] = {}
    for key in aji:
        designs.setdefault("distance-transform watershed" if key.startswith("watershed") else key.split("@")[0],
                           []).append(key)
    rows = []
    for design, keys in designs.items():
        best = max(keys, key=lambda k: aji[k])
        rows.append(f"| {design} | {len(keys)} | {best} | {aji[best]:.4f} | {pq[best]:.4f} |")
    return ("Instance post-processing, chosen by mean AJI on the validation tiles with XML instances "
            f"({', '.join(chosen.get('images', []))}): `{chosen.get('chosen')}`. Each design at its best setting "
            "(all settings in `config.json`, provenance.postprocessing_selection):\n\n"
            "| design | settings tried | best setting | validation AJI | validation PQ |\n|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n\n")


def render(folder: Path) -> str:
    """The model card (README.md text) of zoo folder `folder`, from the files in it."""
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    log_rows = list(csv.DictReader((folder / "training_log.csv").read_text().splitlines()))
    validation_log = folder / "training_log_validation.csv"
    validation_rows = (list(csv.DictReader(validation_log.read_text().splitlines()))
                       if validation_log.is_file() else [])
    name = config.get("name") or folder.name
    arch = config["architecture"]
    arch_text, tag = ARCH_NOTES.get(arch, (arch, arch))
    prov = config.get("provenance", {})
    post = config["postprocessing"]
    mean = metrics["mean"]
    test_data = metrics.get("dataset") or "../shared/monuseg/test"  # as evaluated (relative to the repo)
    minutes = float(log_rows[-1]["elapsed_min"]) if log_rows else float("nan")
    best_epoch = prov.get("best_epoch", "?")
    n_train = len(prov.get("train_stems", [])) or "?"
    selected = (f"The model is epoch {best_epoch} of {len(log_rows)}, the last" if prov.get("settings_from")
                else f"The model is epoch {best_epoch} of {len(log_rows)}, the last (`--keep last`: the\nstarting "
                "model saw the validation tiles, so their Dice would favour the first epochs)"
                if str(prov.get("selection", "")).startswith("last epoch (--keep")
                else f"Best validation\nDice at epoch {best_epoch} of {len(log_rows)}")
    mpp = (config.get("resolution") or {}).get("mpp")
    magnification = "scale unknown" if mpp is None else f"{round(10.0 / mpp)}x"
    data_mpp = prov.get("data_mpp")
    scale_text = ("" if data_mpp is None or mpp is None else
                  f" The tiles ({data_mpp} um/px) were brought to the model's {mpp} um/px before training "
                  "(images by the slide path's antialiased resampling, XML polygons rasterised on the new grid, "
                  "PNG-only masks area-resampled then 0.5); validation, threshold and post-processing worked at "
                  "that scale.")
    patches_per_s = sorted(float(r["patches_per_s"]) for r in log_rows)[len(log_rows) // 2] if log_rows else 0
    fmt = lambda v: f"{v:.4f}"
    limits = ("Touching nuclei are separated by\n  post-processing only (the network predicts a single foreground map), "
              "so clusters can merge." if post.get("instance_map") is None else
              "The instance maps learned from the 13\n  tiles with XML polygons only; dense clusters can still "
              "merge or split.")

    def row(label: str, m: dict) -> str:
        micro_, mean_ = m["micro"], m["mean"]
        return (f"| {label} | {fmt(mean_['loss'])} | {fmt(micro_['accuracy'])} | {fmt(micro_['precision'])} "
                f"| {fmt(micro_['recall'])} | {fmt(micro_['dice'])} | {fmt(micro_['iou'])} "
                f"| {fmt(mean_.get('aji', float('nan')))} | {fmt(mean_.get('pq', float('nan')))} |")

    table = ("| prediction | Loss | Accuracy | Precision | Recall | F1/Dice | IoU | AJI | PQ |\n"
             "|---|---|---|---|---|---|---|---|---|\n" + row("default (one pass)", metrics))
    tta_path = folder / "metrics_tta.json"
    if tta_path.is_file():
        table += "\n" + row("`tta=True` (D4, 8 passes)", json.loads(tta_path.read_text()))
        table += ("\n\nThe model-index above holds the default (one pass). With `tta=True` (`--tta` on the\n"
                  "command line) each tile is predicted in its 8 flips and rotations and the probabilities\n"
                  "averaged: 8x the compute, same threshold. `metrics_tta.json` holds its per-image values\n"
                  f"(`segzoo evaluate model_cards/{name} --data {test_data} --tta`).")
    per_image = "\n".join(f"| {r['image']} | {r['dice']:.4f} | {r.get('aji', float('nan')):.4f} | "
                          f"{r.get('pq', float('nan')):.4f} |" for r in metrics["per_image"])
    return f"""---
license: cc-by-nc-sa-4.0
library_name: keras
pipeline_tag: image-segmentation
tags:
- histology
- pathology
- nuclei-segmentation
- h-and-e
- monuseg
- segzoo
- {tag}
datasets:
- monuseg-2018
metrics:
- dice
- iou
- aji
model-index:
- name: {name}
  results:
  - task:
      type: image-segmentation
      name: Nuclei segmentation (H&E, {magnification})
    dataset:
      type: monuseg-2018
      name: MoNuSeg 2018 official test set (14 images)
      split: test
    metrics:
{_yaml_metrics(metrics)}
---

# {name}

{arch_text}, trained by [segzoo](https://github.com/segzoo/segzoo) on the 30 MoNuSeg 2018
training tiles to segment cell nuclei in H&E-stained tissue at {magnification}{'' if mpp is None else f' ({mpp} um/px)'}. {_outputs_text(config)}

## Use

```python
import segzoo
predictor = segzoo.load("{name}")
result = predictor.predict("tile.tif")   # result.prob, result.mask, result.labels
```

or `segzoo predict tile.tif --model {name} --out predictions/` (mask, label TIFF, QuPath GeoJSON,
overlay, CSV of per-nucleus measurements).

## Intended use and limitations

- Research on H&E-stained histology at {magnification} (about {mpp} um/pixel){', like MoNuSeg' + chr(39) + 's TCGA tiles' if mpp == 0.25 else ''}.
  Other stains or scanners need validation or fine-tuning first; whole slides at another scale are
  resampled to it (segzoo predict reads the pyramid level nearest the model's scale).
- **Not for diagnosis** or any clinical decision.
- Trained on {n_train} tiles (about {n_train} megapixels) from 7 organs; expect lower accuracy on unseen
  organs and on dense, overlapping or out-of-focus nuclei. {limits}

## Training data

MoNuSeg 2018 training set (Kumar et al., IEEE TMI 2017 and 2020): 30 tiles of 1000x1000. Ground
truth: the XML polygons where present (13 tiles), otherwise the released binary masks (17 tiles);
pixel (row r, column c) is nucleus when the point (x=c, y=r) lies inside a polygon (a centre on the
outline by the top-left rule).{scale_text} {_split_text(prov, validation_rows)}
The test set was used only for the final numbers below.

## Training

{_init_text(prov)}```
{prov.get('command', '(command not recorded)')}
```

Loss: {prov.get('loss', '?')}; AdamW with warm-up and cosine decay{_options_text(prov)}; random 256x256 patches with
scale jitter, D4 flips/rotations, HED stain jitter and brightness/contrast jitter. {selected}; {minutes:.0f} minutes of training on
{prov.get('hardware', '2 CPU cores')} (median {patches_per_s:.1f} patches/s). The full log is `training_log.csv`.{_rebuilt_text(prov)}{_environment_text(prov)}

## Evaluation

```
segzoo evaluate model_cards/{name} --data {test_data} --figure 3
```

On the 14 official MoNuSeg 2018 test images, with ground truth rasterised from the XML polygons.
Pixel metrics are micro-averaged over all test pixels; Loss (binary cross-entropy), AJI and PQ are
means over the 14 images; threshold {metrics['threshold']}. `metrics.json` holds the per-image values.

{table}

{_instance_errors_text(metrics.get("instance_errors"))}{_selection_text(prov)}Per-image mean Dice (default): {mean['dice']:.4f}. Parameters: {metrics.get('params', 'n/a')}.

Per image (default):

| image | Dice | AJI | PQ |
|---|---|---|---|
{per_image}

`figure.png`: image, ground-truth outlines (green), predicted nuclei (yellow) for the first test images.

## Licence

The weights are derived from MoNuSeg 2018 and inherit its licence, **CC BY-NC-SA 4.0**:
non-commercial use only, share-alike, with attribution to Kumar et al. (IEEE TMI 2017, "A Dataset
and a Technique for Generalized Nuclear Segmentation for Computational Pathology"; IEEE TMI 2020,
"A Multi-Organ Nucleus Segmentation Challenge").
"""



def write_card(folder: str | Path) -> Path:
    """Write render(folder) to folder/README.md (atomically); returns its path."""
    path = Path(folder) / "README.md"
    atomic_write_text(path, render(Path(folder)))
    return path


def card_metrics(card_data) -> dict[str, float]:
    """{metric type: value} from a card's model-index (huggingface_hub CardData, first result)."""
    index = card_data.to_dict().get("model-index") or []
    out = {}
    for model in index:
        for result in model.get("results", []):
            for metric in result.get("metrics", []):
                out[metric["type"]] = float(metric["value"])
    return out
