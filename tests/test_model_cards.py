"""Every folder under model_cards/ is a publishable zoo model whose numbers match its files."""

import json
from pathlib import Path

import pytest

from segzoo.config import ModelConfig
from segzoo.zoo import cards

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted(p for p in (ROOT / "model_cards").iterdir() if p.is_dir()) if (ROOT / "model_cards").is_dir() else []
REGISTRY = json.loads((ROOT / "segzoo" / "zoo_registry.json").read_text())["models"]


def _pinned_onnx(folder: Path) -> list[str]:
    """The ONNX files the registry pins for a zoo folder; a pinned file must exist (fails, never skips)."""
    names = [f for f in ("model.onnx", "model.int8.onnx") if f in REGISTRY.get(folder.name, {}).get("files", {})]
    for name in names:
        assert (folder / name).is_file(), f"{folder.name}: pinned {name} is missing"
    return names


def test_zoo_folders_exist():
    assert [p.name for p in CARDS] == sorted(REGISTRY), "model_cards/ and segzoo/zoo_registry.json disagree"


@pytest.mark.parametrize("folder", CARDS, ids=[p.name for p in CARDS])
class TestZooFolder:
    def test_config_validates_and_weights_load(self, folder):
        from segzoo.models.folders import load_model

        config = ModelConfig.load(folder)
        assert config.name == folder.name
        # MoNuSeg's TCGA 40x tiles: the XMLs state 0.2456-0.2527 um/px (nominal 0.25)
        assert config.resolution.mpp is not None and 0.2456 <= config.resolution.mpp <= 0.2527
        model, _ = load_model(folder)
        assert model.count_params() > 0
        assert (folder / "model.weights.h5").stat().st_size <= 10 * 1024 * 1024

    def test_card_parses_and_matches_metrics(self, folder):
        from huggingface_hub import ModelCard

        from segzoo.zoo.cards import card_metrics
        from segzoo.zoo.publishing import validate_folder

        validate_folder(folder)  # raises on any mismatch
        card = ModelCard.load(folder / "README.md")
        meta = card.data.to_dict()
        assert meta["license"] == "cc-by-nc-sa-4.0" and meta["library_name"] == "keras"
        assert meta["pipeline_tag"] == "image-segmentation"
        metrics = json.loads((folder / "metrics.json").read_text())
        found = card_metrics(card.data)
        assert found["dice"] == round(metrics["micro"]["dice"], 4)
        assert found["aji"] == round(metrics["mean"]["aji"], 4)
        assert (folder / "training_log.csv").is_file() and (folder / "figure.png").is_file()

    def test_card_is_generated_from_the_folder(self, folder):
        """README.md is exactly what segzoo.zoo.cards (scripts/make_model_card.py) writes from the folder's files."""
        assert (folder / "README.md").read_text() == cards.render(folder), \
            f"re-run python scripts/make_model_card.py {folder.relative_to(ROOT)}"

    def test_registry_pins_the_files(self, folder):
        from segzoo.zoo.hub import sha256_of

        entry = REGISTRY.get(folder.name)
        assert entry is not None, f"{folder.name} is not in segzoo/zoo_registry.json"
        for filename, sha in entry["files"].items():
            assert sha256_of(folder / filename) == sha, f"{filename} changed; re-run scripts/publish.py"

    def test_registry_pins_the_onnx_files(self, folder):
        """The zoo README promises model.onnx (and model.int8.onnx) in every zoo folder: a missing
        pin or file fails here instead of skipping the ONNX tests below."""
        for filename in ("model.onnx", "model.int8.onnx"):
            assert filename in REGISTRY[folder.name]["files"], f"{folder.name}: {filename} is not pinned"
            assert (folder / filename).is_file(), f"{folder.name}: pinned {filename} is missing"

    def test_onnx_is_a_verified_segzoo_export(self, folder):
        """Each ONNX file's graph matches its checksum and carries the folder's config.json:
        the same on everything the runtime uses, and (written by release.py) the same provenance."""
        from segzoo.runtime.onnx_format import read_segzoo_onnx

        folder_config = ModelConfig.load(folder).to_dict()
        for filename in _pinned_onnx(folder):
            _, config = read_segzoo_onnx(folder / filename)
            embedded = config.to_dict()
            assert {k: v for k, v in embedded.items() if k != "provenance"} == \
                {k: v for k, v in folder_config.items() if k != "provenance"}, filename
            assert embedded == folder_config, (f"{filename}: embedded provenance differs; run python "
                                               f"scripts/release.py {folder.relative_to(ROOT)} --name "
                                               f"{folder.name} --config-only")

    def test_onnx_matches_keras(self, folder):
        """Parity for the shipped ONNX files: fp32 within 1e-4 of Keras on a random and a real tile."""
        import numpy as np

        from segzoo.export.onnx import parity_inputs
        from segzoo.io.images import read_image, sample_image_path
        from segzoo.models.folders import load_model
        from segzoo.runtime.onnx import onnx_runner

        assert "model.onnx" in _pinned_onnx(folder)
        model, config = load_model(folder)
        run = onnx_runner((folder / "model.onnx").read_bytes())
        for batch in parity_inputs(config, read_image(sample_image_path()), size=128):
            np.testing.assert_allclose(run(batch), np.asarray(model(batch, training=False)), atol=1e-4)


def test_card_names_the_training_options_a_run_used():
    """Each of --ema-momentum, --dtype-policy and --precise-bn adds its sentence only when used."""
    assert cards._options_text({"loss": "bce_dice"}) == ""
    text = cards._options_text({"ema_momentum": 0.998, "dtype_policy": "mixed_bfloat16", "precise_bn_batches": 32})
    assert text.count("; ") >= 3
    assert text.index("momentum\n0.998, about the last 500 steps") < text.index("`mixed_bfloat16`") < text.index("over 32 batches")
    assert cards._options_text({"precise_bn_batches": 32}).startswith("; BatchNorm statistics")


def test_card_quotes_the_validation_runs_peak_and_last_dice():
    """A refit's card gives the validation run's last-epoch Dice beside its (upward-biased) peak."""
    rows = [{"val_dice": v} for v in ("0.7", "0.81", "0.805")]
    text = cards._validation_curve_text(rows)
    assert "peaked at 0.8100 (epoch 2)" in text and "0.8050 at its last epoch (3)" in text
    assert cards._validation_curve_text([]) == "" and cards._validation_curve_text([{"val_dice": "nan"}]) == ""
    refit = {"settings_from": {"val_stems": ["a"], "command": "segzoo train"}, "train_stems": ["b", "c"]}
    assert "peaked at 0.8100" in cards._split_text(refit, rows)


# What ships (the Hub repos, the package's bundled copies, the benchmark and README): none of it
# may name the machine that produced it. Provenance paths are relative (segzoo.provenance).
ABSOLUTE_PATH_MARKERS = ("/work/", "/root/", "/home/", "/tmp/", "/Users/", "C:\\", "C:/")


def _shipped_text_files() -> list[Path]:
    roots = [ROOT / "model_cards", ROOT / "segzoo" / "bundled", ROOT / "segzoo" / "samples"]
    files = [ROOT / "README.md", ROOT / "benchmark.json", ROOT / "benchmark.md", ROOT / "segzoo" / "zoo_registry.json"]
    for root in roots:
        files += sorted(p for p in root.rglob("*") if p.is_file())
    out = []
    for path in files:
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary (ONNX, HDF5, PNG): the ONNX metadata is checked against config.json above
        out.append(path)
    return out


def test_no_shipped_file_names_this_machine():
    files = _shipped_text_files()
    assert {p.name for p in files} >= {"README.md", "config.json", "metrics.json", "benchmark.json"}
    found = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for marker in ABSOLUTE_PATH_MARKERS:
                if marker in line:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {marker} in {line.strip()[:120]}")
    assert not found, "absolute paths in shipped files:\n" + "\n".join(found)


def test_bundled_copies_are_the_pinned_zoo_files():
    """segzoo/bundled/<name>/ (what the package ships for offline use) holds exactly the files of
    model_cards/<name>/, and every file the registry pins matches its sha256."""
    from segzoo.zoo.hub import sha256_of
    from segzoo.zoo.registry import bundled_folder

    assert sorted(REGISTRY) == [p.name for p in CARDS]
    for name, entry in REGISTRY.items():
        bundled = bundled_folder(name)
        assert bundled is not None and bundled.is_dir(), f"{name}: no bundled copy"
        card = ROOT / "model_cards" / name
        assert sorted(p.name for p in bundled.iterdir()) == sorted(p.name for p in card.iterdir())
        for path in card.iterdir():
            assert sha256_of(bundled / path.name) == sha256_of(path), f"bundled {name}/{path.name} differs"
        for filename, sha in entry["files"].items():
            assert sha256_of(bundled / filename) == sha, f"bundled {name}/{filename} does not match its pin"


def test_card_names_the_software_that_trained_and_released_the_model():
    """Runs record segzoo.provenance.environment(); the card quotes it (older runs: nothing added)."""
    env = {"python": "3.11.7", "keras_backend": "jax", "git_commit": "0123456789abcdef" * 2 + "01234567",
           "git_dirty": True, "packages": {"segzoo": "0.1.0", "keras": "3.15.1", "jax": "0.6.0", "torch": None}}
    text = cards._environment_text({"environment": env, "release": {
        "command": "python scripts/release.py runs/u --name u --data ../shared/monuseg",
        "environment": {**env, "git_dirty": False, "keras_backend": "tensorflow"}}})
    trained, released = text.strip().splitlines()
    assert trained == ("Trained with: segzoo 0.1.0, keras 3.15.1, jax 0.6.0; Keras backend jax; Python 3.11.7; "
                       "git commit `0123456789ab` with uncommitted changes.")
    assert released.startswith("Released (evaluation, ONNX export) with `python scripts/release.py runs/u")
    assert released.endswith("Keras backend tensorflow; Python 3.11.7; git commit `0123456789ab`.")
    assert cards._environment_text({"command": "segzoo train"}) == ""


def test_the_card_names_every_instance_map_and_decoding():
    from segzoo.config import INSTANCE_DECODINGS, INSTANCE_MAPS
    from segzoo.zoo.cards import MAP_NAMES

    assert set(INSTANCE_MAPS) | set(INSTANCE_DECODINGS) <= set(MAP_NAMES)
