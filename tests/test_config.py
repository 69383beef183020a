import json

import pytest

from segzoo.config import ModelConfig
from segzoo.errors import ConfigError


def _config() -> ModelConfig:
    c = ModelConfig(architecture="unet", architecture_kwargs={"depth": 2, "base_filters": 4}, name="x")
    c.postprocessing.threshold = 0.45
    c.provenance = {"data": "train", "command": "segzoo train ...", "segzoo_version": "0.1.0"}
    return c


def test_round_trip_is_lossless(tmp_path):
    config = _config()
    config.save(tmp_path / "config.json")
    again = ModelConfig.load(tmp_path)
    assert again == config
    assert again.to_json() == config.to_json()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("architecture"), "missing required field 'architecture'"),
    (lambda d: d.update(colour="red"), "unknown field"),
    (lambda d: d["postprocessing"].update(threshold=1.5), "threshold must be in"),
    (lambda d: d["postprocessing"].update(threshold="high"), "threshold must be float"),
    (lambda d: d["preprocessing"].update(std=[0.0, 1, 1]), "std must be positive"),
    (lambda d: d["preprocessing"].update(pad_mode="zeros"), "pad_mode"),
    (lambda d: d["inference"].update(overlap=2000), "overlap"),
    (lambda d: d["inference"].update(tile=5), "unknown field"),
    (lambda d: d.update(schema_version=99), "schema_version 99"),
])
def test_invalid_configs_raise_naming_file_and_field(tmp_path, mutate, message):
    data = _config().to_dict()
    mutate(data)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message) as info:
        ModelConfig.load(path)
    assert str(path) in str(info.value)


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.load(tmp_path)
    with pytest.raises(ConfigError, match="cannot read config"):
        ModelConfig.load(tmp_path / "missing.json")


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    _config().save(tmp_path / "config.json")
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_config_module_does_not_import_keras():
    import subprocess
    import sys

    code = ("import sys, segzoo, segzoo.config, segzoo.predict.tiling, segzoo.predict.postprocessing, segzoo.predict.predictor;"
            "print('keras' in sys.modules or 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
