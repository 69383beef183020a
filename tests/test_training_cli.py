"""Training, evaluation and prediction end to end on synthetic MoNuSeg-layout data."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segzoo.cli import main as cli_main
from segzoo.datasets.monuseg import discover_samples
from segzoo.models.folders import load_model
from segzoo.training.run_folder import CHECKPOINT_DIR
from segzoo.training.split import split_train_val

ROOT = Path(__file__).resolve().parents[1]


def train_main(argv: list[str]) -> int:
    """`segzoo train ARGV`'s exit code."""
    return cli_main(["train", *argv])


def _train_args(data, out, *extra):
    return ["-a", "unet", "--arch-kwargs", '{"depth": 2, "base_filters": 4, "dropout": 0.0}',
            "--data", str(data), "--out", str(out), "--patch-size", "32", "--batch-size", "2",
            "--epochs", "2", "--steps-per-epoch", "2", "--val-fraction", "0.25", "--warmup-steps", "1",
            *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import write_monuseg_folder

    root = tmp_path_factory.mktemp("train")
    data = write_monuseg_folder(root / "data", n=4, size=64)
    out = root / "run"
    assert train_main(_train_args(data, out)) == 0
    return data, out


def test_training_writes_a_loadable_model_folder(trained):
    data, out = trained
    model, config = load_model(out)
    assert config.architecture == "unet"
    assert 0 < config.postprocessing.threshold < 1
    assert config.provenance["val_stems"] and "segzoo train" in config.provenance["command"]
    assert not set(config.provenance["val_stems"]) & set(config.provenance["train_stems"])
    rows = list(csv.DictReader(open(out / "training_log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[0]["patches_per_s"]) > 0


def test_refuses_non_empty_run_folder_then_resumes(trained, capsys):
    data, out = trained
    assert train_main(_train_args(data, out)) == 2
    assert "not empty" in capsys.readouterr().err
    assert train_main(_train_args(data, out, "--epochs", "3", "--resume")) == 0
    rows = list(csv.DictReader(open(out / "training_log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    provenance = load_model(out)[1].provenance  # the command that started the run; resumes listed
    assert "--resume" not in provenance["command"] and "--epochs 2" in provenance["command"]
    assert len(provenance["resumed_with"]) == 1 and "--resume" in provenance["resumed_with"][0]


def test_fine_tune_starts_from_the_given_model(trained, tmp_path, capsys):
    """--init-from keeps the architecture and preprocessing and starts from the weights
    (with a learning rate of ~0 the trainable weights stay where they started)."""
    data, start = trained
    start_model, start_config = load_model(start)
    out = tmp_path / "tuned"
    assert train_main(_train_args(data, out, "--init-from", str(start), "--epochs", "1", "--lr", "1e-12",
                                  "--warmup-steps", "0", "--weight-decay", "0")) == 0
    model, config = load_model(out)
    assert config.architecture_kwargs == start_config.architecture_kwargs
    assert config.preprocessing == start_config.preprocessing
    # stored relative to the working folder (the pytest folder is outside it: with ..)
    source = config.provenance["init_from"]["source"]
    assert not os.path.isabs(source) and Path(source).resolve() == start.resolve()
    for tuned, original in zip(model.trainable_weights, start_model.trainable_weights):
        np.testing.assert_allclose(np.asarray(tuned), np.asarray(original), atol=1e-6)

    assert train_main(_train_args(data, tmp_path / "x", "--init-from", str(start), "-a", "segnet")) == 2
    assert "is a 'unet' model, not 'segnet'" in capsys.readouterr().err
    assert train_main(_train_args(data, tmp_path / "y", "--init-from", str(start),
                                  "--arch-kwargs", '{"base_filters": 8}')) == 2
    assert "disagree with init_from" in capsys.readouterr().err
    assert train_main(_train_args(data, tmp_path / "z", "--init-from", "no-such-model")) == 2
    assert "unknown zoo model 'no-such-model'" in capsys.readouterr().err


def test_fine_tune_adds_instance_maps_and_chooses_their_decoding_on_validation(trained, tmp_path, capsys):
    """--init-from a model without maps plus --arch-kwargs instance_maps: the trunk's weights copy
    over (lr ~0 keeps them), the head is new, and tune_postprocessing compares both maps at every
    marker threshold with the distance-transform watershed, by AJI on the validation tiles."""
    data, start = trained
    start_model, _ = load_model(start)
    out = tmp_path / "maps"
    assert train_main(_train_args(data, out, "--init-from", str(start), "--lr", "1e-12",
                                  "--warmup-steps", "0", "--weight-decay", "0", "--epochs", "2", "--keep", "last",
                                  "--arch-kwargs", '{"instance_maps": ["distance", "boundary"]}')) == 0
    model, config = load_model(out)
    assert config.provenance["best_epoch"] == 2 and config.provenance["selection"] == "last epoch (--keep last)"
    assert config.instance_maps == ["distance", "boundary"] and config.output_channels == 3
    tuned = {w.path: np.asarray(w) for w in model.weights}
    for weight in start_model.trainable_weights:  # (BatchNorm's moving statistics move in training)
        np.testing.assert_allclose(tuned[weight.path], np.asarray(weight), atol=1e-6)
    selection = config.provenance["postprocessing_selection"]
    assert {"distance@0.5", "boundary@0.3", "watershed_min_distance=4"} <= set(selection["aji"])
    assert set(selection["pq"]) == set(selection["aji"])
    assert selection["aji"][selection["chosen"]] == max(selection["aji"].values())
    assert train_main(_train_args(data, tmp_path / "bad", "--init-from", str(out),
                                  "--arch-kwargs", '{"instance_maps": ["boundary"]}')) == 2
    assert "differ from the ['distance', 'boundary']" in capsys.readouterr().err


def test_freeze_trunk_trains_only_the_instance_head(trained, tmp_path, capsys):
    """--freeze-trunk: at a real learning rate every weight of the --init-from model, BatchNorm
    statistics included, stays as it was (so the nucleus probability is that model's); the new
    head (here two layers of 8 filters) learns."""
    data, start = trained
    start_model, _ = load_model(start)
    out = tmp_path / "frozen"
    assert train_main(_train_args(data, out, "--init-from", str(start), "--lr", "1e-2", "--freeze-trunk", "--precise-bn", "1",
                                  "--keep", "last", "--arch-kwargs",
                                  '{"instance_maps": ["distance"], "instance_width": 8, "instance_layers": 2}')) == 0
    model, config = load_model(out)
    assert config.provenance["frozen_trunk"] is True
    start_config = load_model(start)[1]  # the probability is the start's, so is its threshold
    assert config.postprocessing.threshold == start_config.postprocessing.threshold
    assert config.provenance["threshold_selection"]["kept_from"] == config.provenance["init_from"]["source"]
    assert config.architecture_kwargs["instance_layers"] == 2
    tuned = {w.path: np.asarray(w) for w in model.weights}
    for weight in start_model.weights:
        np.testing.assert_array_equal(tuned[weight.path], np.asarray(weight))
    # The same run at lr ~0 (same seed, so the same fresh head): the head moved only here.
    still = tmp_path / "still"
    assert train_main(_train_args(data, still, "--init-from", str(start), "--lr", "1e-12", "--freeze-trunk",
                                  "--keep", "last", "--weight-decay", "0", "--arch-kwargs",
                                  '{"instance_maps": ["distance"], "instance_width": 8, "instance_layers": 2}')) == 0
    untrained = {w.path: np.asarray(w) for w in load_model(still)[0].weights}
    head = [path for path in tuned if path.startswith("instance_b_conv")]
    assert head and any(not np.allclose(tuned[path], untrained[path]) for path in head)
    assert train_main(_train_args(data, tmp_path / "bad", "--freeze-trunk")) == 2
    assert "give init_from (on the command line: --init-from)" in capsys.readouterr().err


def test_refit_on_every_tile_takes_settings_from_the_validated_model(trained, tmp_path, capsys):
    """--val-fraction 0 --settings-from: every tile trains, the last epoch is kept, and the
    threshold and post-processing come from the validated run, not from defaults."""
    import shutil

    data, run = trained
    validated = tmp_path / "validated"
    shutil.copytree(run, validated)
    _, chosen = load_model(validated)
    chosen.postprocessing.threshold, chosen.postprocessing.watershed_min_distance = 0.45, 4
    chosen.save(validated / "config.json")
    out = tmp_path / "refit"
    assert train_main(_train_args(data, out, "--val-fraction", "0", "--settings-from", str(validated))) == 0
    _, config = load_model(out)
    assert config.postprocessing.threshold == 0.45 and config.postprocessing.watershed_min_distance == 4
    prov = config.provenance
    assert prov["val_stems"] == [] and len(prov["train_stems"]) == 4
    assert prov["best_epoch"] == 2 and prov["selection"].startswith("last epoch")
    assert prov["settings_from"]["val_stems"] == chosen.provenance["val_stems"]
    assert "threshold_selection" in prov["settings_from"] and "val_dice_at_0.5" not in prov
    json.loads((out / "config.json").read_text(),  # strict JSON: no NaN from the missing validation
               parse_constant=lambda c: pytest.fail(f"config.json holds {c}"))

    # A refit passes on its validation run's settings: --settings-from a released refit reproduces
    # it from the shipped folder alone (the zoo cards' commands name model_cards/<name>).
    again = tmp_path / "again"
    assert train_main(_train_args(data, again, "--val-fraction", "0", "--settings-from", str(out),
                                  "--epochs", "1")) == 0
    _, config_again = load_model(again)
    assert config_again.postprocessing == config.postprocessing
    assert Path(config_again.provenance["settings_from"].pop("source")).resolve() == out.resolve()
    assert config_again.provenance["settings_from"] == {k: v for k, v in prov["settings_from"].items()
                                                        if k != "source"}

    unvalidated = tmp_path / "unvalidated"
    assert train_main(_train_args(data, unvalidated, "--val-fraction", "0")) == 0
    assert train_main(_train_args(data, tmp_path / "r2", "--settings-from", str(unvalidated))) == 2
    assert "not chosen on a validation split" in capsys.readouterr().err


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_provenance_names_no_machine_and_records_the_software(trained):
    """The run's data and out were given as absolute paths: provenance stores them relative to
    the working folder (so a shipped config.json names no machine), the command as typed
    with those paths, and the package versions and git commit that trained it."""
    import shlex
    from importlib import metadata

    import segzoo

    data, out = trained
    prov = load_model(out)[1].provenance
    for text in _strings(prov):
        words = shlex.split(text) if text.startswith("segzoo ") else [text]
        assert not any(os.path.isabs(w) for w in words), text
    assert Path(prov["data"]).resolve() == data.resolve()
    words = shlex.split(prov["command"])
    assert Path(words[words.index("--out") + 1]).resolve() == out.resolve()
    env = prov["environment"]
    assert env["keras_backend"] == "tensorflow"
    assert env["packages"] == {"segzoo": segzoo.__version__, **{
        name: metadata.version(name) for name in ("keras", "numpy", "onnxruntime", "tensorflow")}}
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True)
        assert env["git_commit"] == head.stdout.strip() and isinstance(env["git_dirty"], bool)


def test_portable_paths_and_commands(tmp_path):
    from segzoo.provenance import portable_command, portable_path

    base = tmp_path / "repo"
    assert portable_path(base / "runs" / "unet", base) == "runs/unet"
    assert portable_path(tmp_path / "shared" / "monuseg", base) == "../shared/monuseg"
    assert portable_path("../shared/./monuseg/train", base) == "../shared/monuseg/train"  # as given
    command = portable_command("segzoo train", ["--data", str(tmp_path / "shared" / "train"),
                                                f"--out={base / 'runs' / 'u'}", "--arch-kwargs", '{"a": 1}'], base)
    assert command == "segzoo train --data ../shared/train --out=runs/u --arch-kwargs '{\"a\": 1}'"


def test_save_and_load_keras_model(tmp_path):
    """segzoo.save_model / segzoo.load_keras_model: a round trip keeps weights, outputs and config;
    an existing model is not replaced without overwrite=True (a UsageError); broken or missing
    weights raise a ModelError naming the file."""
    import keras

    import segzoo
    from segzoo.errors import ConfigError, ModelError, UsageError
    from segzoo.models.folders import default_config
    from segzoo.zoo.hub import sha256_of

    kwargs = {"depth": 2, "base_filters": 4, "dropout": 0.0}
    config = default_config("unet", **kwargs)
    config.name, config.postprocessing.threshold = "tiny", 0.4
    keras.utils.set_random_seed(1)
    model = segzoo.create_model("unet", **kwargs)
    folder = segzoo.save_model(model, tmp_path / "m", config)
    loaded, loaded_config = segzoo.load_keras_model(folder)
    assert loaded_config == config
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.weights.h5"]  # no staging left

    weights = folder / "model.weights.h5"
    before = sha256_of(weights)
    keras.utils.set_random_seed(2)
    other = segzoo.create_model("unet", **kwargs)
    with pytest.raises(UsageError, match="already holds a model; pass overwrite=True"):
        segzoo.save_model(other, folder, config)
    assert sha256_of(weights) == before
    segzoo.save_model(other, folder, config, overwrite=True)
    np.testing.assert_array_equal(np.asarray(segzoo.load_keras_model(folder)[0](x)), np.asarray(other(x)))

    good = weights.read_bytes()
    for broken in (b"not an HDF5 file", good[: len(good) // 2]):
        weights.write_bytes(broken)
        with pytest.raises(ModelError, match=f"{re.escape(str(weights))}: cannot load weights into 'unet'"):
            segzoo.load_keras_model(folder)
    wider = segzoo.create_model("unet", **{**kwargs, "base_filters": 8})  # weights of another shape
    segzoo.save_model(wider, tmp_path / "wide", default_config("unet", **{**kwargs, "base_filters": 8}))
    weights.write_bytes((tmp_path / "wide" / "model.weights.h5").read_bytes())
    with pytest.raises(ModelError, match=re.escape(str(weights))):
        segzoo.load_keras_model(folder)
    weights.unlink()
    with pytest.raises(ModelError, match=f"{re.escape(str(weights))}: weights file is missing"):
        segzoo.load_keras_model(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ConfigError, match=re.escape(str(folder / "config.json"))):
        segzoo.load_keras_model(folder)
    with pytest.raises(ModelError, match="not a model folder"):
        segzoo.load_keras_model(tmp_path / "absent")


def test_overwrite_and_time_budget(trained, tmp_path):
    data, _ = trained
    out = tmp_path / "budget"
    out.mkdir()
    (out / "old.txt").write_text("x")
    # A budget this small stops after the first epoch (the next one would not fit).
    assert train_main(_train_args(data, out, "--overwrite", "--epochs", "50", "--max-minutes", "0.001")) == 0
    assert not (out / "old.txt").exists()
    rows = list(csv.DictReader(open(out / "training_log.csv")))
    assert len(rows) == 1


def test_split_is_deterministic_and_disjoint(monuseg_folder):
    samples = discover_samples(monuseg_folder)
    a = split_train_val(samples, 0.25, seed=3)
    b = split_train_val(samples, 0.25, seed=3)
    assert a == b and len(a[1]) == 1 and not set(a[0]) & set(a[1])


def test_evaluate_writes_tables_and_figure(trained, capsys):
    data, out = trained
    assert cli_main(["evaluate", str(out), "--data", str(data), "--out", str(out / "eval"), "--figure", "2"]) == 0, \
        capsys.readouterr().err
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    for key in ("accuracy", "precision", "recall", "dice", "iou"):
        assert 0 <= metrics["micro"][key] <= 1
    for key in ("loss", "aji", "pq", "dice"):
        assert key in metrics["mean"]
    assert metrics["n_images"] == 4 and len(metrics["per_image"]) == 4
    assert "| Model | Loss | Accuracy | Precision | Recall | F1/Dice | IoU | AJI | PQ |" in \
        (out / "eval" / "metrics.md").read_text()
    assert Image.open(out / "eval" / "figure.png").size[1] == 2 * 64


def test_cli_predict_with_bad_file_continues(trained, tmp_path, capsys):
    _, out = trained
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(good)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    dest = tmp_path / "pred"
    code = cli_main(["predict", str(bad), str(good), "--model", str(out), "--out", str(dest)])
    assert code == 1
    assert "bad.tif" in capsys.readouterr().err
    assert Image.open(dest / "good_mask.png").size == (50, 40)
    assert (dest / "good_overlay.png").exists()
    # Existing outputs are not silently overwritten.
    assert cli_main(["predict", str(good), "--model", str(out), "--out", str(dest)]) == 1
    assert cli_main(["predict", str(good), "--model", str(out), "--out", str(dest), "--overwrite"]) == 0


def test_cli_unknown_command_and_help(capsys):
    assert cli_main(["frobnicate"]) == 2
    assert cli_main([]) == 0


def test_weight_averaging_saves_the_average_and_resumes_with_live_weights(trained, tmp_path):
    import keras

    data, _ = trained
    out = tmp_path / "ema"
    assert train_main(_train_args(data, out, "--val-fraction", "0", "--ema-momentum", "0.5")) == 0
    saved, config = load_model(out)
    assert config.provenance["ema_momentum"] == 0.5
    checkpoint = keras.saving.load_model(out / CHECKPOINT_DIR / "last.keras")
    optimizer = checkpoint.optimizer
    assert optimizer.use_ema
    averages = {var.path: np.asarray(avg) for var, avg in
                zip(optimizer._trainable_variables, optimizer._model_variables_moving_average)}
    live = {w.path: np.asarray(w) for w in checkpoint.trainable_weights}
    folder = {w.path: np.asarray(w) for w in saved.trainable_weights}
    assert folder.keys() == averages.keys()
    for path, value in folder.items():  # the model folder holds the average, the checkpoint the live weights
        np.testing.assert_allclose(value, averages[path], rtol=0, atol=1e-7)
    assert any(not np.allclose(live[p], averages[p]) for p in live)


def test_bfloat16_training_saves_a_float32_model_and_resumes_in_bfloat16(trained, tmp_path, capsys):
    import keras

    data, _ = trained
    out = tmp_path / "bf16"
    assert train_main(_train_args(data, out, "--dtype-policy", "mixed_bfloat16", "--epochs", "1")) == 0
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    saved, config = load_model(out)
    assert config.provenance["dtype_policy"] == "mixed_bfloat16"
    assert {w.dtype for w in saved.weights} == {"float32"}
    assert {layer.compute_dtype for layer in saved.layers} == {"float32"}
    checkpoint = keras.saving.load_model(out / CHECKPOINT_DIR / "last.keras")
    assert checkpoint.get_layer("enc0_a_conv").compute_dtype == "bfloat16"
    assert checkpoint.get_layer("probabilities").compute_dtype == "float32"
    assert train_main(_train_args(data, out, "--resume")) == 2
    assert "resume it with that, not float32" in capsys.readouterr().err
    config_file = out / "config.json"  # the state file records the policy: no model folder needed
    config_file.rename(out / "config.json.aside")
    assert train_main(_train_args(data, out, "--resume")) == 2
    assert "resume it with that, not float32" in capsys.readouterr().err
    (out / "config.json.aside").rename(config_file)
    assert train_main(_train_args(data, out, "--dtype-policy", "mixed_bfloat16", "--resume")) == 0
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(np.isfinite(float(r["loss"])) for r in rows)


def test_precise_batchnorm_sets_the_mean_of_batch_statistics(trained, tmp_path):
    import keras

    from segzoo.training.precise_bn import recompute_batchnorm_statistics

    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.9)(inputs))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=k, scale=1 + k, size=(4, 5, 6, 2)).astype("float32") for k in range(3)]
    assert recompute_batchnorm_statistics(model, iter(batches)) == 3
    norm = model.layers[-1]
    np.testing.assert_allclose(np.asarray(norm.moving_mean), np.mean([b.mean(axis=(0, 1, 2)) for b in batches], 0),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(norm.moving_variance),
                               np.mean([b.var(axis=(0, 1, 2)) for b in batches], 0), rtol=1e-4)
    assert norm.momentum == 0.9

    data, _ = trained  # the same run with and without: same training, different BatchNorm statistics
    assert train_main(_train_args(data, tmp_path / "precise", "--precise-bn", "2", "--epochs", "1")) == 0
    assert train_main(_train_args(data, tmp_path / "moving", "--epochs", "1")) == 0
    (precise, config), (moving, _) = load_model(tmp_path / "precise"), load_model(tmp_path / "moving")
    assert config.provenance["precise_bn_batches"] == 2
    for a, b in zip(precise.trainable_weights, moving.trainable_weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    stats = [(np.asarray(a), np.asarray(b)) for a, b in zip(precise.non_trainable_weights, moving.non_trainable_weights)]
    assert stats and all(not np.allclose(a, b) for a, b in stats)


def test_keras_check_names_the_missing_backend(tmp_path):  # a MissingDependencyError (a RunError): exit 1
    """Without the backend `segzoo train --help` still answers (its parser imports no Keras) and a
    training run is one line naming what is missing."""
    script = ("import sys; sys.modules['tensorflow'] = None\n"
              "from segzoo.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    helped = subprocess.run([sys.executable, "-c", script, "train", "--help"], capture_output=True, text=True, env=env,
                            check=False)
    assert helped.returncode == 0 and "--loss" in helped.stdout
    done = subprocess.run([sys.executable, "-c", script, "train", "-a", "unet", "--data", str(tmp_path),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 1
    assert "segzoo train needs Keras and its backend" in done.stderr
    assert "tensorflow" in done.stderr and "KERAS_BACKEND=jax" in done.stderr
    assert not (tmp_path / "run").exists()


def test_command_parsers_import_no_keras():
    """Every command's parser builds without Keras, so the CLI checks Keras after parsing, for the
    commands and options that need it (segzoo.cli.run_command)."""
    from segzoo.cli import COMMANDS

    script = ("import importlib, sys\n"
              f"for command in {COMMANDS!r}:\n"
              "    importlib.import_module(f'segzoo.cli.{command}').parser()\n"
              "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_loss_names_match_the_losses():
    from segzoo.training.losses import LOSSES
    from segzoo.training.options import LOSS_NAMES

    assert tuple(LOSSES) == LOSS_NAMES


@pytest.mark.parametrize("extra, message", [
    (["--loss", "nope"], "unknown loss 'nope'; valid losses: "),
    (["--arch-kwargs", '{"num_classes": 2}'], "use num_classes=1"),
    (["--arch-kwargs", "[1]"], "arch_kwargs must be a JSON object (a dict) (on the command line: --arch-kwargs)"),
    (["--arch-kwargs", "{"], "--arch-kwargs is not valid JSON"),
    (["--map-loss-weight", "0"], "map_loss_weight must be > 0, got 0.0 (on the command line: --map-loss-weight)"),
])
def test_bad_options_are_one_line_before_the_run_folder_is_touched(tmp_path, capsys, extra, message):
    """Options are checked before the run folder: with --overwrite the old folder was deleted
    before a bad --arch-kwargs was noticed, and an unknown --loss was a ValueError traceback."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert train_main(["-a", "unet", "--data", str(tmp_path / "nowhere"), "--out", str(out), "--overwrite",
                       *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert (out / "keep.txt").read_text() == "x"


def test_training_at_another_scale_resamples_every_tile(tmp_path):
    """--mpp 0.5 from 0.25 um/px tiles: the model is trained, validated and tuned on tiles at half
    the size (XML polygons rasterised on the new grid, PNG-only masks area-resampled), and its
    config says it was trained at 0.5 um/px with the data's scale in the provenance."""
    from conftest import write_monuseg_folder

    data = write_monuseg_folder(tmp_path / "data", n=4, size=96, xml_for=3)
    assert train_main(_train_args(data, tmp_path / "run", "--mpp", "0.5", "--data-mpp", "0.25",
                                  "--arch-kwargs", '{"depth": 2, "base_filters": 4, "dropout": 0.0, '
                                  '"instance_maps": ["horizontal", "vertical"]}')) == 0
    from segzoo.config import ModelConfig

    config = ModelConfig.load(tmp_path / "run")
    assert config.resolution.mpp == 0.5 and config.provenance["data_mpp"] == 0.25
    tried = config.provenance.get("postprocessing_selection", {}).get("aji", {})
    assert not tried or any(key.startswith("hv@") for key in tried)  # HoVer-Net's decoding is a candidate
    assert train_main(_train_args(data, tmp_path / "bad", "--mpp", "0")) == 2


def test_a_tile_brought_to_another_scale_keeps_its_nuclei():
    from conftest import synthetic_tile

    from segzoo.datasets.monuseg import rasterize_regions, scale_mask, scale_polygons, scaled_shape

    image, polygons = synthetic_tile(np.random.default_rng(4), 97)
    labels, _ = rasterize_regions(polygons, (97, 97))
    assert scaled_shape((97, 97), 0.5) == (49, 49)
    half, _ = rasterize_regions(scale_polygons(polygons, 0.5), (49, 49))
    assert len(np.unique(half)) == len(np.unique(labels))  # every nucleus survives
    assert abs((half > 0).sum() * 4 - (labels > 0).sum()) <= 0.1 * (labels > 0).sum()  # areas scale by 1/4
    from_png = scale_mask(labels > 0, 0.5)
    dice = 2 * (from_png & (half > 0)).sum() / (from_png.sum() + (half > 0).sum())
    assert from_png.shape == (49, 49) and dice > 0.9
    np.testing.assert_array_equal(scale_mask(labels > 0, 1.0), labels > 0)


def test_paired_difference_reports_the_standard_error_of_the_mean_difference():
    from segzoo.training.selection import paired_difference

    d = paired_difference([0.6, 0.7, 0.8, 0.5], [0.55, 0.68, 0.79, 0.44])
    assert d["n"] == 4 and d["mean"] == pytest.approx(0.035)
    assert d["se"] == pytest.approx(np.std([0.05, 0.02, 0.01, 0.06], ddof=1) / 2)
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([0.1], [0.1, 0.2])
