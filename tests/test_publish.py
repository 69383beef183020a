"""Publishing. There is no open-source Hugging Face upload server, so uploads are
tested with --dry-run and with the HfApi calls recorded by a fake object."""

import json
import shutil
from pathlib import Path

import pytest

from segzoo.cli import main
from segzoo.errors import SegzooError
from segzoo.zoo.publishing import publish, update_registry

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted(p for p in (ROOT / "model_cards").iterdir() if p.is_dir()) if (ROOT / "model_cards").is_dir() else []


def test_there_are_zoo_folders_to_publish():
    assert CARDS, "no zoo folders under model_cards/"  # the tests below use CARDS[0]


class FakeHfApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))

        class Info:
            oid = "0123456789abcdef0123456789abcdef01234567"
            commit_url = f"https://huggingface.co/{kwargs['repo_id']}/commit/{oid}"

        return Info()


def test_dry_run_lists_files(capsys):
    assert main(["publish", str(CARDS[0]), "--repo-id", "segzoo/x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload" in out and "model.weights.h5" in out and "sha256" in out


def test_upload_is_one_commit_and_registry_update(tmp_path):
    api = FakeHfApi()
    result = publish(CARDS[0], "segzoo/test", private=True, revision="v1", api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][2]["private"] is True and api.calls[2][2]["revision"] == "v1"
    assert result["revision"].startswith("0123") and result["commit_url"].endswith(result["revision"])
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"models": {}}))
    update_registry(CARDS[0].name, {**result, "folder": str(CARDS[0])}, registry)
    entry = json.loads(registry.read_text())["models"][CARDS[0].name]
    assert entry["revision"] == result["revision"] and "model.weights.h5" in entry["files"]


def test_invalid_folder_is_refused(tmp_path):
    broken = tmp_path / CARDS[0].name
    shutil.copytree(CARDS[0], broken)
    text = (broken / "README.md").read_text().replace("license: cc-by-nc-sa-4.0", "license: mit")
    (broken / "README.md").write_text(text)
    with pytest.raises(SegzooError, match="license"):
        publish(broken, "segzoo/x", dry_run=True)
    (broken / "README.md").unlink()
    with pytest.raises(SegzooError, match="model card missing"):
        publish(broken, "segzoo/x", dry_run=True)


def test_release_names_the_released_folder_for_a_validation_run_that_does_not_ship(tmp_path, monkeypatch):
    """A refit's --settings-from run folder is replaced by the zoo folder (which ships its
    selections and log) in the source and the recorded commands; a zoo folder or zoo name is kept."""
    from segzoo.export.release import settings_to_released_folder

    monkeypatch.chdir(ROOT)
    prov = {"command": "segzoo train -a unet --out runs/r --settings-from runs/val --seed 0",
            "resumed_with": ["segzoo train -a unet --out runs/r --settings-from=runs/val --resume"],
            "settings_from": {"source": "runs/val", "command": "segzoo train --out runs/val"}}
    settings_to_released_folder(prov, ROOT / "model_cards" / "unet-monuseg")
    assert prov["settings_from"] == {"source": "model_cards/unet-monuseg", "command": "segzoo train --out runs/val"}
    assert prov["command"] == "segzoo train -a unet --out runs/r --settings-from model_cards/unet-monuseg --seed 0"
    assert prov["resumed_with"] == [
        "segzoo train -a unet --out runs/r --settings-from=model_cards/unet-monuseg --resume"]
    for kept in ("model_cards/segnet-monuseg", "unet-monuseg"):
        prov = {"command": f"segzoo train --settings-from {kept}", "settings_from": {"source": kept}}
        settings_to_released_folder(prov, ROOT / "model_cards" / "unet-monuseg")
        assert prov == {"command": f"segzoo train --settings-from {kept}", "settings_from": {"source": kept}}


def test_release_embeds_an_edited_config_without_touching_the_graph(tmp_path):
    """--config-only: the ONNX metadata carries the new config.json, the graph and its stored
    checksum stay, and a file whose graph was altered is refused."""
    import onnx

    from segzoo.config import ModelConfig
    from segzoo.errors import OnnxModelError
    from segzoo.runtime.onnx_format import embed_config, graph_sha256, read_segzoo_onnx

    source = CARDS[0] / "model.int8.onnx"
    path = tmp_path / "model.int8.onnx"
    shutil.copy(source, path)
    config = ModelConfig.load(CARDS[0])
    config.resolution.mpp, config.provenance = 0.5, {"note": "edited"}
    embed_config(path, config)
    assert read_segzoo_onnx(path)[1] == config
    old, new = (onnx.load_model_from_string(p.read_bytes()) for p in (source, path))
    assert graph_sha256(old) == graph_sha256(new)
    for proto in (old, new):
        del proto.metadata_props[:]
    assert old.SerializeToString() == new.SerializeToString()

    altered = onnx.load_model_from_string(source.read_bytes())
    altered.graph.name = "changed"
    path.write_bytes(altered.SerializeToString())
    with pytest.raises(OnnxModelError, match="modified after export"):
        embed_config(path, config)


def test_release_config_only_embeds_the_config_rewrites_the_card_and_pins_the_files(tmp_path):
    """segzoo.export.release in 'config' mode on a copy of a zoo folder: both ONNX files carry the
    edited config.json, the card is rendered again, and the registry pins the new sha256 values
    (the revision is dropped: changed files must be published again). Other modes need --data,
    and 'onnx'/'config' refuse a run folder that is not the released one."""
    from segzoo.config import ModelConfig
    from segzoo.export.release import release
    from segzoo.runtime.onnx_format import read_segzoo_onnx
    from segzoo.zoo.cards import render
    from segzoo.zoo.hub import sha256_of

    dest = tmp_path / "model_cards" / CARDS[0].name
    shutil.copytree(CARDS[0], dest)
    registry = tmp_path / "registry.json"
    registry.write_text((ROOT / "segzoo" / "zoo_registry.json").read_text())
    config = ModelConfig.load(dest)
    config.resolution.mpp = 0.5
    config.save(dest / "config.json")
    record = {"command": "python scripts/release.py", "environment": None}
    with pytest.raises(SegzooError, match="works on a released folder"):
        release(CARDS[0], dest, name=dest.name, record=record, mode="config", registry_file=registry)
    with pytest.raises(SegzooError, match="data is required"):
        release(dest, dest, name=dest.name, record=record, mode="onnx", registry_file=registry)
    release(dest, dest, name=dest.name, record=record, mode="config", registry_file=registry)
    for filename in ("model.onnx", "model.int8.onnx"):
        assert read_segzoo_onnx(dest / filename)[1].resolution.mpp == 0.5
    assert (dest / "README.md").read_text() == render(dest)
    entry = json.loads(registry.read_text())["models"][dest.name]
    assert entry["files"] == {f: sha256_of(dest / f) for f in entry["files"]} and entry["revision"] is None
    assert entry["files"]["model.onnx"] != sha256_of(CARDS[0] / "model.onnx")
