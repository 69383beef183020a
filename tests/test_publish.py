"""Publishing. There is no open-source Hugging Face upload server, so uploads are
tested with --dry-run and with the HfApi calls recorded by a fake object."""

import json
import shutil
from pathlib import Path

import pytest

from segzoo.errors import SegzooError
from segzoo.publishing import main, publish, update_registry

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted(p for p in (ROOT / "model_cards").iterdir() if p.is_dir()) if (ROOT / "model_cards").is_dir() else []
pytestmark = pytest.mark.skipif(not CARDS, reason="no zoo folders under model_cards/")


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
    assert main([str(CARDS[0]), "--repo-id", "segzoo/x", "--dry-run"]) == 0
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
