"""The segzoo command line: inputs are never written, each image's outputs are all or none,
every failure is one line naming the file, arguments are checked before the model loads."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segzoo.cli import main
from segzoo.errors import UsageError

OUTPUTS = ("_mask.png", "_overlay.png", "_labels.tif", ".geojson", "_nuclei.csv")


@pytest.fixture(scope="module")
def int8_predictor():
    """The zoo's int8 UNet from the copy bundled with segzoo (no network, no Keras)."""
    import segzoo

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return segzoo.load("unet-monuseg", precision="int8")
    finally:
        if old is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = old


@pytest.fixture
def model(int8_predictor, monkeypatch):
    """`--model` value for predict; load() returns the cached int8 predictor and counts its calls."""
    import segzoo.zoo.loading

    calls = []

    def load(source, **kwargs):
        calls.append(source)
        return int8_predictor

    monkeypatch.setattr(segzoo.zoo.loading, "load", load)
    return calls


def _image(path: Path, seed: int = 0, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), (235, 190, 215), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for cy, cx in rng.uniform(8, size - 8, (4, 2)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 30] = (80, 50, 140)
    Image.fromarray(image).save(path)
    return path


def _errors(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _predict(*args) -> int:
    return main(["predict", *map(str, args), "--model", "unet-monuseg"])


# -- 1. inputs are never written, outputs are never inputs ------------------------------------------

def test_predicting_a_folder_into_itself_never_replaces_a_user_file_named_like_an_output(tmp_path, model, capsys):
    _image(tmp_path / "a.png", 0)
    _image(tmp_path / "a_mask.png", 1)  # the user's own image, named like a.png's mask
    _image(tmp_path / "b.png", 2)
    user_file = (tmp_path / "a_mask.png").read_bytes()
    assert _predict(tmp_path, "--out", tmp_path, "--overwrite") == 1
    errors = _errors(capsys.readouterr().err)
    assert len(errors) == 1 and "a.png" in errors[0] and "a_mask.png" in errors[0] and "input" in errors[0]
    assert (tmp_path / "a_mask.png").read_bytes() == user_file
    assert all((tmp_path / f"b{s}").is_file() for s in OUTPUTS)
    assert not any((tmp_path / f"a{s}").exists() for s in OUTPUTS if s != "_mask.png")
    # Named explicitly, the same files are inputs too: a_mask.png is predicted, never replaced.
    out = tmp_path / "explicit"
    out.mkdir()
    for name in ("a.png", "a_mask.png"):
        (out / name).write_bytes((tmp_path / name).read_bytes())
    assert _predict(out / "a.png", out / "a_mask.png", "--out", out, "--overwrite") == 1
    assert (out / "a_mask.png").read_bytes() == user_file and (out / "a_mask_mask.png").is_file()


def test_a_second_run_into_the_same_folder_does_not_take_the_first_runs_outputs_as_images(tmp_path, model, capsys):
    _image(tmp_path / "a.png", 0)
    _image(tmp_path / "b.png", 1)
    assert _predict(tmp_path, "--out", tmp_path) == 0
    first = sorted(p.name for p in tmp_path.iterdir())
    assert first == sorted([f"{s}{o}" for s in "ab" for o in OUTPUTS] + ["a.png", "b.png"])
    capsys.readouterr()
    assert _predict(tmp_path, "--out", tmp_path) == 1  # outputs exist: refused, one line per image
    assert len(_errors(capsys.readouterr().err)) == 2
    assert _predict(tmp_path, "--out", tmp_path, "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == first  # no a_mask_mask.png, a_overlay_mask.png, ...
    assert "2 input(s): 2 written" in capsys.readouterr().err


# -- 2. one image's outputs are all or nothing -------------------------------------------------------

def _fail_on_call(monkeypatch, owner, name: str, n: int, exc: BaseException, only_in: Path | None = None):
    """Make owner.name raise `exc` on its n-th call (counting calls that touch `only_in`)."""
    real = getattr(owner, name)
    count = [0]

    def flaky(*args, **kwargs):
        touched = only_in is None or any(str(only_in) in str(a) for a in list(args) + list(kwargs.values()))
        if touched:
            count[0] += 1
            if count[0] == n:
                raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, flaky)


def _no_partial_sets(out: Path, stems) -> None:
    names = {p.name for p in out.iterdir()}
    assert not [n for n in names if n.startswith(".")], names  # no temporaries or backups left
    for stem in stems:
        present = [f"{stem}{s}" in names for s in OUTPUTS]
        assert all(present) or not any(present), (stem, names)


@pytest.mark.parametrize("phase", ["temporary", "rename"])
def test_a_full_disk_fails_that_image_in_one_line_and_leaves_no_partial_set(tmp_path, model, capsys,
                                                                          monkeypatch, phase):
    a, b = _image(tmp_path / "a.png", 0), _image(tmp_path / "b.png", 1)
    out = tmp_path / "out"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if phase == "temporary":  # the third file of a's set cannot be written
        _fail_on_call(monkeypatch, tempfile, "mkstemp", 3, full)
    else:  # the third rename of a's set fails
        _fail_on_call(monkeypatch, os, "replace", 3, full, only_in=out)
    assert _predict(a, b, "--out", out) == 1
    errors = _errors(capsys.readouterr().err)
    assert errors == [f"error: {a}: cannot write outputs (No space left on device)"]
    _no_partial_sets(out, "ab")
    assert not any((out / f"a{s}").exists() for s in OUTPUTS)
    assert all((out / f"b{s}").is_file() for s in OUTPUTS)


def test_a_failed_overwrite_puts_the_previous_set_back(tmp_path, model, capsys, monkeypatch):
    a = _image(tmp_path / "a.png", 0)
    out = tmp_path / "out"
    assert _predict(a, "--out", out) == 0
    before = _files(out)
    _image(a, 5)  # another image: a new set would differ
    _fail_on_call(monkeypatch, os, "replace", 4, OSError(errno.EIO, os.strerror(errno.EIO)), only_in=out)
    assert _predict(a, "--out", out, "--overwrite") == 1
    assert _errors(capsys.readouterr().err) == [f"error: {a}: cannot write outputs (Input/output error)"]
    assert _files(out) == before


@pytest.mark.parametrize("owner, name", [(tempfile, "mkstemp"), (os, "replace")])
def test_ctrl_c_while_writing_exits_130_in_one_line_without_a_partial_set(tmp_path, model, capsys,
                                                                         monkeypatch, owner, name):
    a, b = _image(tmp_path / "a.png", 0), _image(tmp_path / "b.png", 1)
    out = tmp_path / "out"
    _fail_on_call(monkeypatch, owner, name, 7, KeyboardInterrupt(), only_in=out if owner is os else None)
    assert _predict(a, b, "--out", out) == 130  # a written, b interrupted at its second file
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"
    _no_partial_sets(out, "ab")
    assert all((out / f"a{s}").is_file() for s in OUTPUTS)
    assert not any((out / f"b{s}").exists() for s in OUTPUTS)


def test_ctrl_c_anywhere_is_one_line(monkeypatch, capsys):
    import segzoo.cli.predict

    def interrupted(args, argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(segzoo.cli.predict, "run", interrupted)
    assert main(["predict", "x.png", "--out", "o"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_write_file_set_restores_replaced_files_and_removes_new_ones(tmp_path, monkeypatch):
    from segzoo.io.files import write_file_set

    old = tmp_path / "old.txt"
    old.write_bytes(b"old")
    targets = {"old": old, "new": tmp_path / "sub" / "new.txt", "third": tmp_path / "third.txt"}
    render = {"old": lambda: b"OLD", "new": lambda: b"NEW", "third": lambda: b"THIRD"}
    _fail_on_call(monkeypatch, os, "replace", 3, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError):
        write_file_set(targets, render)
    assert old.read_bytes() == b"old" and not targets["new"].exists() and not targets["third"].exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["old.txt", "sub"]
    monkeypatch.undo()
    write_file_set(targets, render)
    assert [t.read_bytes() for t in targets.values()] == [b"OLD", b"NEW", b"THIRD"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["new.txt", "old.txt", "sub", "third.txt"]


# -- 3. every failure is one line, checked before the model loads ------------------------------------

def test_out_an_existing_file_or_below_one_is_refused_before_loading(tmp_path, model, capsys):
    a = _image(tmp_path / "a.png")
    taken = tmp_path / "taken"
    taken.write_text("x")
    for out in (taken, taken / "sub"):
        assert _predict(a, "--out", out) == 2
        errors = _errors(capsys.readouterr().err)
        assert len(errors) == 1 and str(taken) in errors[0]
    assert model == []  # the model was never loaded
    assert taken.read_text() == "x"


def test_a_symlink_loop_among_the_inputs_is_reported_and_the_others_go_on(tmp_path, model, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _image(folder / "good.png")
    os.symlink(folder / "loop.png", folder / "loop.png")
    os.symlink(tmp_path / "explicit.png", tmp_path / "explicit.png")
    out = tmp_path / "out"
    assert _predict(folder, tmp_path / "explicit.png", "--out", out) == 1
    errors = _errors(capsys.readouterr().err)
    assert len(errors) == 2 and all("symbolic links" in e for e in errors)
    assert any("loop.png" in e for e in errors) and any("explicit.png" in e for e in errors)
    assert all((out / f"good{s}").is_file() for s in OUTPUTS)


def test_unknown_command_names_itself_and_lists_the_valid_ones(capsys, tmp_path):
    assert main(["frobnicate"]) == 2
    assert capsys.readouterr().err == ("error: unknown command 'frobnicate'; valid commands: "
                                       "predict, train, evaluate, export, publish\n")
    image = _image(tmp_path / "a.png")
    assert main([str(image)]) == 2
    assert f"segzoo predict {image}" in capsys.readouterr().err
    assert main([]) == 0 and main(["--help"]) == 0


def test_an_unexpected_os_error_is_one_line_with_the_path(monkeypatch, capsys):
    import segzoo.cli.predict

    def denied(args, argv):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/slide.tif")

    monkeypatch.setattr(segzoo.cli.predict, "run", denied)
    assert main(["predict", "x", "--out", "o"]) == 1
    assert capsys.readouterr().err == "error: /data/slide.tif: Permission denied\n"
    monkeypatch.setenv("SEGZOO_DEBUG", "1")
    with pytest.raises(PermissionError):
        main(["predict", "x", "--out", "o"])


# -- 4. arguments are validated up front ---------------------------------------------------------------

@pytest.mark.parametrize("args, names", [
    (["--tile", "0"], "--tile"), (["--tile", "-8"], "--tile"), (["--overlap", "-1"], "--overlap"),
    (["--tile", "32", "--overlap", "32"], "--overlap"), (["--batch-size", "0"], "--batch-size"),
    (["--tile", "abc"], "--tile"), (["--out", ""], "--out"),
])
def test_bad_tiling_arguments_fail_in_one_line_before_loading(tmp_path, model, capsys, args, names):
    a = _image(tmp_path / "a.png")
    code = main(["predict", str(a), "--model", "unet-monuseg", "--out", str(tmp_path / "o"), *args])
    assert code == 2
    errors = _errors(capsys.readouterr().err)
    assert len(errors) == 1 and names in errors[0]
    assert model == [] and not (tmp_path / "o").exists()


def test_overlap_against_the_configs_tile_is_checked_before_any_image(tmp_path, model, capsys):
    a = _image(tmp_path / "a.png")
    assert _predict(a, "--out", tmp_path / "o", "--overlap", "5000") == 2
    errors = _errors(capsys.readouterr().err)
    assert len(errors) == 1 and "overlap" in errors[0] and "[0, tile_size=1024)" in errors[0]
    assert not (tmp_path / "o").exists()


def _config(tile=32, overlap=8, batch=3):
    from segzoo.config import ModelConfig

    c = ModelConfig(architecture="unet")
    c.preprocessing.pad_to_stride = 8
    c.inference.tile_size, c.inference.overlap, c.inference.batch_size = tile, overlap, batch
    return c


def _local_model(batch):
    return 1.0 / (1.0 + np.exp(-batch[..., :1]))


@pytest.mark.parametrize("kwargs, match", [
    ({"tile_size": 0}, "tile_size must be an integer >= 1"), ({"tile_size": -32}, "tile_size"),
    ({"tile_size": 32.5}, "tile_size"), ({"overlap": -1}, r"overlap must be an integer in \[0, tile_size=32\)"),
    ({"overlap": 32}, r"\[0, tile_size=32\)"), ({"tile_size": 16, "overlap": 16}, r"\[0, tile_size=16\)"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"), ({"batch_size": -1}, "batch_size"),
])
def test_predict_probabilities_refuses_bad_tiling(kwargs, match):
    from segzoo.predict.tiling import predict_probabilities

    image = np.random.default_rng(0).integers(0, 256, (70, 50, 3), dtype=np.uint8)
    with pytest.raises(UsageError, match=match):
        predict_probabilities(_local_model, image, _config(), **kwargs)


def test_none_means_the_config_default_and_valid_values_give_the_same_map():
    from segzoo.predict.tiling import predict_probabilities, tiling_settings

    assert tiling_settings(_config()) == (32, 8, 3)
    assert tiling_settings(_config(), tile_size=64, overlap=0, batch_size=1) == (64, 0, 1)
    image = np.random.default_rng(1).integers(0, 256, (70, 50, 3), dtype=np.uint8)
    default = predict_probabilities(_local_model, image, _config())
    for kwargs in ({"batch_size": 1}, {"batch_size": 100}, {"tile_size": 32, "overlap": 8},
                   {"tile_size": 16, "overlap": 15}, {"overlap": 0}):
        np.testing.assert_allclose(predict_probabilities(_local_model, image, _config(), **kwargs), default, atol=1e-5)


# -- 5. predict guards and the export / evaluate commands ----------------------------------------------

def test_predict_guards_duplicate_stems_unknown_format_existing_outputs(tmp_path, model, capsys):
    (tmp_path / "x").mkdir()
    a, same_stem = _image(tmp_path / "a.png"), _image(tmp_path / "x" / "a.png", 1)
    out = tmp_path / "out"
    assert _predict(a, same_stem, "--out", out) == 2
    assert "share the name(s) ['a']" in _errors(capsys.readouterr().err)[0]
    assert _predict(a, "--out", out, "--formats", "mask,svg") == 2
    assert _errors(capsys.readouterr().err) == [
        "error: unknown format(s) ['svg']; valid formats: mask, labels, geojson, overlay, csv"]
    assert model == [] and not out.exists()
    assert _predict(a, "--out", out, "--formats", "mask,csv") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_nuclei.csv"]
    before = _files(out)
    _image(a, 7)
    assert _predict(a, "--out", out, "--formats", "mask,csv") == 1
    errors = _errors(capsys.readouterr().err)
    assert len(errors) == 1 and "outputs exist" in errors[0] and "--overwrite" in errors[0]
    assert _files(out) == before


def test_outputs_carry_the_segzoo_software_tag(tmp_path, model):
    from segzoo.io.outputs import is_segzoo_output

    a = _image(tmp_path / "a.png")
    assert _predict(a, "--out", tmp_path / "o") == 0
    assert is_segzoo_output(tmp_path / "o" / "a_mask.png") and is_segzoo_output(tmp_path / "o" / "a_labels.tif")
    assert is_segzoo_output(tmp_path / "o" / "a_overlay.png") and not is_segzoo_output(a)


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory) -> Path:
    import keras
    from conftest import tiny_kwargs

    import segzoo
    from segzoo.models.folders import default_config, save_model

    keras.utils.set_random_seed(0)
    kwargs = tiny_kwargs("unet")
    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_model(segzoo.create_model("unet", **kwargs), folder, default_config("unet", **kwargs))
    return folder


def test_export_cli_writes_a_loadable_onnx_and_checks_everything_first(tiny_model_folder, tmp_path, capsys):
    import segzoo

    out = tmp_path / "m.onnx"
    # --quantize without --calibration: refused before anything is written.
    assert main(["export", str(tiny_model_folder), "--out", str(out), "--quantize", "int8"]) == 2
    assert _errors(capsys.readouterr().err) == [
        "error: --quantize int8 needs --calibration FOLDER (training images); nothing written"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(tiny_model_folder), "--out", str(out), "--quantize", "int8",
                 "--calibration", str(empty)]) == 1  # a DataError: the calibration input
    assert len(_errors(capsys.readouterr().err)) == 1
    assert list(tmp_path.iterdir()) == [empty]
    assert main(["export", str(tiny_model_folder), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    predictor = segzoo.load(out)
    assert predictor.runtime == "onnx" and predictor.predict(np.zeros((40, 40, 3), np.uint8)).prob.shape == (40, 40)
    assert main(["export", str(tiny_model_folder), "--out", str(out)]) == 2
    assert _errors(capsys.readouterr().err) == [f"error: {out}: exists; pass --overwrite to replace it"]
    assert main(["export", str(tiny_model_folder), "--out", str(tmp_path)]) == 2
    assert "is a folder" in _errors(capsys.readouterr().err)[0]


def test_evaluate_out_a_file_is_refused_before_evaluating(tiny_model_folder, tmp_path, capsys, monkeypatch):
    import segzoo.models.folders

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(segzoo.models.folders, "load_model", never)
    taken = tmp_path / "metrics"
    taken.write_text("x")
    for out in (taken, taken / "sub"):
        assert main(["evaluate", str(tiny_model_folder), "--data", str(tmp_path), "--out", str(out)]) == 2
        errors = _errors(capsys.readouterr().err)
        assert len(errors) == 1 and str(taken) in errors[0]
    assert main(["evaluate", str(tiny_model_folder), "--data", str(tmp_path), "--figure", "-1"]) == 2
    assert len(_errors(capsys.readouterr().err)) == 1


def test_a_usage_error_of_any_command_is_one_line_and_exit_2(monkeypatch, capsys):
    """segzoo.cli.run_command maps every command's SegzooError the same way (one runner, not a
    copy of the boilerplate per command); tests/test_errors.py checks every class's code."""
    import segzoo.cli.evaluate
    import segzoo.cli.publish

    def broken(args, argv):
        raise UsageError(f"{argv[0]}: broken")

    for module, argv in ((segzoo.cli.evaluate, ["evaluate", "m", "--data", "d"]),
                         (segzoo.cli.publish, ["publish", "f", "--repo-id", "o/r"])):
        monkeypatch.setattr(module, "run", broken)
        assert main(argv) == 2
        assert capsys.readouterr().err == f"error: {argv[1]}: broken\n"


def test_python_m_segzoo_cli_is_the_segzoo_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "segzoo.cli", "frobnicate"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("error: unknown command 'frobnicate'; valid commands: predict, train")
