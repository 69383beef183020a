"""Every folder under model_cards/ is a publishable zoo model whose numbers match its files."""

import json
from pathlib import Path

import pytest

from segzoo.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted(p for p in (ROOT / "model_cards").iterdir() if p.is_dir()) if (ROOT / "model_cards").is_dir() else []
REGISTRY = json.loads((ROOT / "segzoo" / "zoo_registry.json").read_text())["models"]


def _card_script():
    """scripts/make_model_card.py as a module (scripts/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_model_card", ROOT / "scripts" / "make_model_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("folder", CARDS, ids=[p.name for p in CARDS])
class TestZooFolder:
    def test_config_validates_and_weights_load(self, folder):
        from segzoo.model_io import load_model

        config = ModelConfig.load(folder)
        assert config.name == folder.name
        model, _ = load_model(folder)
        assert model.count_params() > 0
        assert (folder / "model.weights.h5").stat().st_size <= 10 * 1024 * 1024

    def test_card_parses_and_matches_metrics(self, folder):
        from huggingface_hub import ModelCard

        from segzoo.publishing import card_metrics, validate_folder

        validate_folder(folder, load_weights=False)  # raises on any mismatch
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
        """README.md is exactly what scripts/make_model_card.py writes from the folder's files."""
        assert (folder / "README.md").read_text() == _card_script().render(folder), \
            f"re-run python scripts/make_model_card.py {folder.relative_to(ROOT)}"

    def test_registry_pins_the_files(self, folder):
        from segzoo.zoo import sha256_of

        entry = REGISTRY.get(folder.name)
        assert entry is not None, f"{folder.name} is not in segzoo/zoo_registry.json"
        for filename, sha in entry["files"].items():
            assert sha256_of(folder / filename) == sha, f"{filename} changed; re-run scripts/publish.py"

    def test_onnx_is_a_verified_segzoo_export(self, folder):
        from segzoo.onnx_runtime import read_segzoo_onnx

        if not (folder / "model.onnx").is_file():
            pytest.skip(f"{folder.name} has no model.onnx yet")
        _, config = read_segzoo_onnx(folder / "model.onnx")
        assert config == ModelConfig.load(folder)

    def test_onnx_matches_keras(self, folder):
        """Parity for the shipped ONNX files: fp32 within 1e-4 of Keras on a random and a real tile."""
        import numpy as np

        from segzoo.export import parity_inputs
        from segzoo.imageio import read_image
        from segzoo.model_io import load_model
        from segzoo.onnx_runtime import onnx_runner
        from segzoo.predictor import sample_image_path

        if not (folder / "model.onnx").is_file():
            pytest.skip(f"{folder.name} has no model.onnx yet")
        model, config = load_model(folder)
        run = onnx_runner((folder / "model.onnx").read_bytes())
        for batch in parity_inputs(config, read_image(sample_image_path()), size=128):
            np.testing.assert_allclose(run(batch), np.asarray(model(batch, training=False)), atol=1e-4)


def test_card_names_the_training_options_a_run_used():
    """Each of --ema-momentum, --dtype-policy and --precise-bn adds its sentence only when used."""
    module = _card_script()
    assert module._options_text({"loss": "bce_dice"}) == ""
    text = module._options_text({"ema_momentum": 0.998, "dtype_policy": "mixed_bfloat16", "precise_bn_batches": 32})
    assert text.count("; ") >= 3
    assert text.index("momentum\n0.998, about the last 500 steps") < text.index("`mixed_bfloat16`") < text.index("over 32 batches")
    assert module._options_text({"precise_bn_batches": 32}).startswith("; BatchNorm statistics")


def test_card_quotes_the_validation_runs_peak_and_last_dice():
    """A refit's card gives the validation run's last-epoch Dice beside its (upward-biased) peak."""
    module = _card_script()
    rows = [{"val_dice": v} for v in ("0.7", "0.81", "0.805")]
    text = module._validation_curve_text(rows)
    assert "peaked at 0.8100 (epoch 2)" in text and "0.8050 at its last epoch (3)" in text
    assert module._validation_curve_text([]) == "" and module._validation_curve_text([{"val_dice": "nan"}]) == ""
    refit = {"settings_from": {"val_stems": ["a"], "command": "segzoo train"}, "train_stems": ["b", "c"]}
    assert "peaked at 0.8100" in module._split_text(refit, rows)
