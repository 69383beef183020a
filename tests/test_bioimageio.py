"""bioimage.io packages (issue 30): every zoo model's package passes `bioimageio test` offline and computes
what segzoo computes; segzoo.load runs it back (the same labels), and runs a foreign package (a tiny ONNX
graph, channel first, scale_linear) through the same path, whole slides included; everything else is a
one-line error naming the rdf field; `segzoo publish --bioimageio` uploads the package beside the model.

The tests that check a package with bioimageio.core / bioimageio.spec skip when segzoo[bioimageio] is not
installed; the loading tests need neither. No test reaches the network: every HTTP request fails (proxies
on a closed port) and in-process requests are recorded and refused (`no_network`)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from slide_fixtures import synthetic_he, write_aperio_tiff

import segzoo
from segzoo.cli import main
from segzoo.config import ModelConfig
from segzoo.errors import ChecksumError, ModelError, UsageError
from segzoo.export.bioimageio import MAX_OPSET, export_bioimageio, sizes
from segzoo.io.images import read_image, sample_image_path

ROOT = Path(__file__).resolve().parents[1]
MODELS = segzoo.list_models()
CLOSED = "http://127.0.0.1:9"  # nothing listens on the discard port: any request fails at once


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """No Hub, a private bioimageio cache, every HTTP proxy on a closed port."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path_factory.getbasetemp() / "bioimageio-cache"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, CLOSED)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """The URLs bioimageio's in-process code tries to reach (each attempt fails); the test asserts none."""
    httpx = pytest.importorskip("httpx")
    attempts = []

    def refuse(self, request, *args, **kwargs):
        attempts.append(str(request.url))
        raise httpx.ConnectError("network disabled in tests", request=request)

    monkeypatch.setattr(httpx.Client, "send", refuse)
    return attempts


def _bioimageio_core():
    return pytest.importorskip("bioimageio.core", reason="segzoo[bioimageio] is not installed (pip install "
                                                         "'segzoo[bioimageio]'); CI installs it via the dev extra")


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Each zoo model's package (written unchecked: the tests below check them)."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        folder = tmp_path_factory.mktemp("packages")
        return {name: Path(export_bioimageio(name, folder / f"{name}.zip", check="none")["path"]) for name in MODELS}
    finally:
        os.environ.pop("HF_HUB_OFFLINE") if old is None else os.environ.__setitem__("HF_HUB_OFFLINE", old)


def _rdf(package: Path) -> dict:
    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def _rewrite(package: Path, target: Path, **replace: bytes) -> Path:
    """A copy of `package` with files replaced and their sha256 in rdf.yaml updated."""
    with zipfile.ZipFile(package) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    text = files["rdf.yaml"].decode()
    for name, data in replace.items():
        text = text.replace(hashlib.sha256(files[name]).hexdigest(), hashlib.sha256(data).hexdigest())
    files.update(replace, **{"rdf.yaml": text.encode()})
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return target


def _old(package: Path, name: str) -> bytes:
    with zipfile.ZipFile(package) as archive:
        return archive.read(name)


# --- the zoo's packages -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_bioimageio_test_passes_offline_for_every_zoo_model(packages, name, no_network):
    core = _bioimageio_core()
    summary = core.test_model(str(packages[name]))
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    assert [d.name for d in summary.details if "Reproduce test outputs" in d.name and d.status == "passed"]
    assert not no_network, f"validation reached for the network: {no_network}"


def test_bioimageio_command_line_passes_offline(packages):
    """The `bioimageio test PKG.zip` command itself, in a process whose every HTTP request fails."""
    _bioimageio_core()
    done = subprocess.run([sys.executable, "-m", "bioimageio.core", "test", str(packages["unet-monuseg"])],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ), check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "passed" in done.stdout + done.stderr


def test_the_same_test_fails_on_an_altered_test_output(packages, tmp_path):
    core = _bioimageio_core()
    expected = np.load(io.BytesIO(_old(packages["unet-monuseg"], "test_output.npy")))
    altered = expected.copy()
    altered[0, 100:200, 100:200, 0] = 1.0 - altered[0, 100:200, 100:200, 0]
    buffer = io.BytesIO()
    np.save(buffer, altered)
    bad = _rewrite(packages["unet-monuseg"], tmp_path / "altered.zip", **{"test_output.npy": buffer.getvalue()})
    summary = core.test_model(str(bad))
    assert summary.status != "passed"  # 'valid-format': the format is fine, a test failed (the CLI exits 1)
    assert any("disagree with expected values" in e.msg for d in summary.details if d.status == "failed"
               for e in d.errors)
    from segzoo.export.bioimageio_check import check_package

    with pytest.raises(ModelError, match="bioimage.io test failed") as err:
        check_package(bad, "test")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", MODELS)
def test_the_packaged_onnx_computes_what_segzoo_load_computes(packages, name):
    """The package's ONNX on its own preprocessing (scale_linear, as bioimageio.core applies it) vs
    segzoo.load(NAME) on the sample tile: max probability difference <= 1e-4; segzoo.load(PKG) gives the
    same labels."""
    from segzoo.export.bioimageio import apply_scale_linear
    from segzoo.runtime.onnx import onnx_runner

    rdf = _rdf(packages[name])
    kwargs = rdf["inputs"][0]["preprocessing"][1]["kwargs"]
    tile = np.load(io.BytesIO(_old(packages[name], "test_input.npy")))[0].astype(np.uint8)
    packaged = onnx_runner(_old(packages[name], "model.onnx"))(apply_scale_linear(tile[None], kwargs["gain"],
                                                                                   kwargs["offset"]))[0]
    zoo = segzoo.load(name)
    ours = zoo.predict(tile)
    assert float(np.max(np.abs(packaged[..., 0] - ours.prob))) <= 1e-4
    np.testing.assert_allclose(packaged, np.load(io.BytesIO(_old(packages[name], "test_output.npy")))[0], atol=1e-6)
    back = segzoo.load(packages[name])
    sample = read_image(sample_image_path())
    assert back.config.to_dict() == zoo.config.to_dict() and back.runtime == "onnx"
    np.testing.assert_array_equal(back.predict(sample).labels, zoo.predict(sample).labels)


@pytest.mark.parametrize("name", MODELS)
def test_the_package_describes_the_model(packages, name):
    from PIL import Image

    rdf = _rdf(packages[name])
    config = ModelConfig.load(ROOT / "segzoo" / "bundled" / name)
    least, step, halo = sizes(config)
    assert rdf["weights"]["onnx"]["opset_version"] <= MAX_OPSET
    assert rdf["license"] == "CC-BY-NC-SA-4.0" and rdf["config"]["segzoo"] == config.to_dict()
    assert {c["doi"] for c in rdf["cite"]} >= {"10.1109/TMI.2017.2677499"} and len(rdf["cite"]) == 2
    image = rdf["inputs"][0]
    assert [a["type"] for a in image["axes"]] == ["batch", "space", "space", "channel"]
    assert image["axes"][1]["size"] == {"min": least, "step": step} == {"min": 256, "step": step}
    assert rdf["outputs"][0]["axes"][1]["halo"] == halo == config.inference.overlap // 2
    ops = image["preprocessing"]
    assert [op["id"] for op in ops] == ["ensure_dtype", "scale_linear"]
    prep = config.preprocessing  # mean/std on the 0-1 scale (scale 1/255): gain 1/(255 std), offset -mean/std
    assert prep.scale == pytest.approx(1 / 255) and max(prep.mean) <= 1
    np.testing.assert_allclose(ops[1]["kwargs"]["gain"], [1 / 255 / s for s in prep.std])
    np.testing.assert_allclose(ops[1]["kwargs"]["offset"], [-m / s for m, s in zip(prep.mean, prep.std)])
    cover = Image.open(io.BytesIO(_old(packages[name], "cover.jpg")))
    assert cover.width == 2 * cover.height and len(_old(packages[name], "cover.jpg")) < 500_000
    text = _old(packages[name], "rdf.yaml").decode()
    assert "github_user" not in text and "http" not in text and "maintainers" not in text
    assert "## Validation" in _old(packages[name], "README.md").decode()


def test_export_from_the_command_line_validates_and_refuses_what_does_not_apply(tmp_path, capsys):
    _bioimageio_core()
    out = tmp_path / "unet.zip"
    assert main(["export", "unet-monuseg", "--format", "bioimageio", "--out", str(out), "--check", "validate"]) == 0
    assert "bioimageio.spec validation passed" in capsys.readouterr().out and zipfile.is_zipfile(out)
    assert main(["export", "unet-monuseg", "--format", "bioimageio", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "unet-monuseg", "--format", "bioimageio", "--out", str(out), "--overwrite",
                 "--quantize", "int8"]) == 2
    assert "--quantize applies to --format onnx" in capsys.readouterr().err


def test_a_package_is_exported_without_keras_and_onnx_export_asks_for_it(tmp_path, monkeypatch, capsys):
    import segzoo.runtime.keras
    from segzoo.errors import MissingDependencyError

    def missing(what):
        raise MissingDependencyError(f"{what} needs Keras: pip install 'segzoo[keras]'")

    monkeypatch.setattr(segzoo.runtime.keras, "require_keras", missing)  # as on the base install
    out = tmp_path / "unet.zip"
    assert main(["export", "unet-monuseg", "--format", "bioimageio", "--out", str(out), "--check", "none"]) == 0
    assert zipfile.is_zipfile(out)
    assert main(["export", "unet-monuseg", "--out", str(tmp_path / "m.onnx")]) == 1
    assert "segzoo export needs Keras" in capsys.readouterr().err
    assert main(["export", "unet-monuseg", "--format", "bioimageio", "--out", str(out), "--overwrite",
                 "--saved-model"]) == 1


@pytest.mark.slow  # about 40 s: TensorFlow imported, the SavedModel written and tested
def test_a_tensorflow_savedmodel_is_a_second_weights_format_that_passes_the_test(tmp_path, no_network, monkeypatch):
    _bioimageio_core()
    monkeypatch.chdir(tmp_path)
    pytest.importorskip("tensorflow")
    info = export_bioimageio("unet-monuseg", tmp_path / "tf.zip", saved_model=True)  # check='test': both formats
    assert info["weights"] == ["onnx", "tensorflow_saved_model_bundle"] and info["checked"] == "test"
    assert not no_network and not (tmp_path / "bioimageio_unzipped_tf_weights").exists()


def test_export_refuses_an_opset_deepimagej_cannot_run(tmp_path):
    import onnx

    from segzoo.runtime.onnx_format import sign

    folder = tmp_path / "model"
    folder.mkdir()
    source = ROOT / "segzoo" / "bundled" / "unet-monuseg"
    (folder / "config.json").write_bytes((source / "config.json").read_bytes())
    model = onnx.load(source / "model.onnx")
    next(o for o in model.opset_import if o.domain == "").version = MAX_OPSET + 1
    sign(model, (source / "config.json").read_text())
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match=f"opset {MAX_OPSET + 1}.*opset <= {MAX_OPSET}"):
        export_bioimageio(folder, tmp_path / "x.zip", check="none")
    assert not (tmp_path / "x.zip").exists()


def test_a_package_loads_without_bioimageio_keras_or_tensorflow(packages, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.modules.update(dict.fromkeys(["tensorflow", "keras", "tf2onnx", "bioimageio", "bioimageio.core",
                                          "bioimageio.spec"]))
        import segzoo
        from segzoo.io.images import sample_image_path
        result = segzoo.load({str(packages["unet-monuseg"])!r}).predict(sample_image_path())
        heavy = sorted(m for m in sys.modules if sys.modules[m] is not None
                       and m.split(".")[0] in ("tensorflow", "keras", "bioimageio"))
        print("NUCLEI", result.num_nuclei, "LOADED", heavy)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300,
                          env={**os.environ, "HF_HUB_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.endswith("LOADED []") and int(line.split()[1]) > 50, line


# --- a foreign package --------------------------------------------------------------------------------

WEIGHTS = np.array([-3.0, -3.5, -2.5], np.float32)  # dark (nucleus-like) pixels -> high probability
BIAS = 4.0
GAIN, OFFSET = [1 / 255] * 3, [0.0, -0.05, 0.0]


def _tiny_onnx() -> bytes:
    """A 1x1 convolution + sigmoid on NCHW input: (B, 3, H, W) -> (B, 1, H, W)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["raw", "w", "b"], ["logits"]), helper.make_node("Sigmoid", ["logits"], ["prob"])],
        "tiny", [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["batch", 3, "y", "x"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1, "y", "x"])],
        initializer=[numpy_helper.from_array(WEIGHTS.reshape(1, 3, 1, 1), "w"),
                     numpy_helper.from_array(np.array([BIAS], np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _reference(rgb: np.ndarray) -> np.ndarray:
    """What the tiny package computes on an HxWx3 uint8 image (scale_linear, conv, sigmoid), HxW."""
    x = rgb.astype(np.float32) * np.asarray(GAIN) + np.asarray(OFFSET)
    return (1 / (1 + np.exp(-(x @ WEIGHTS.astype(np.float64) + BIAS)))).astype(np.float32)


def _foreign_rdf(files: dict[str, bytes]) -> dict:
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    space = [{"type": "space", "id": a, "size": {"min": 32, "step": 8}} for a in "yx"]
    return {
        "type": "model", "format_version": "0.5.4", "name": "tiny nucleus model", "description": "a test model",
        "authors": [{"name": "segzoo tests"}], "cite": [{"text": "segzoo tests", "doi": "10.1109/TMI.2017.2677499"}],
        "license": "MIT", "documentation": "README.md",
        "inputs": [{"id": "raw", "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["r", "g", "b"]},
                                          *space],
                    "test_tensor": {"source": "in.npy", "sha256": sha["in.npy"]},
                    "data": {"type": "float32"},
                    "preprocessing": [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                                      {"id": "scale_linear", "kwargs": {"axis": "channel", "gain": GAIN,
                                                                        "offset": OFFSET}}]}],
        "outputs": [{"id": "prob", "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["nucleus"]},
                                            *({"type": "space", "id": a, "size": {"tensor_id": "raw", "axis_id": a}}
                                              for a in "yx")],
                     "test_tensor": {"source": "out.npy", "sha256": sha["out.npy"]},
                     "data": {"type": "float32", "range": [0.0, 1.0]}}],
        "weights": {"onnx": {"source": "tiny.onnx", "sha256": sha["tiny.onnx"], "opset_version": 13}},
    }


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_foreign(target: Path, change=None, *, as_zip: bool = True) -> Path:
    """The tiny package as a zip (or a folder) at `target`; `change(rdf)` edits its rdf first."""
    tile = read_image(sample_image_path())[:64, :64]
    files = {"tiny.onnx": _tiny_onnx(), "in.npy": _npy(np.moveaxis(tile, -1, 0)[None].astype(np.float32)),
             "out.npy": _npy(_reference(tile)[None, None]), "README.md": b"# tiny\n\n## Validation\n\nnone\n"}
    rdf = _foreign_rdf(files)
    if change is not None:
        change(rdf)
    files["rdf.yaml"] = yaml.safe_dump(rdf, sort_keys=False).encode()
    if as_zip:
        with zipfile.ZipFile(target, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    else:
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
    return target


def test_the_foreign_package_is_a_valid_bioimageio_package(tmp_path, no_network):
    core = _bioimageio_core()
    summary = core.test_model(str(write_foreign(tmp_path / "tiny.zip")))
    assert summary.status == "passed", [e.msg for d in summary.details for e in d.errors]
    assert not no_network


def test_a_foreign_package_runs_through_segzoo(tmp_path):
    """Folded preprocessing, transposes and the graph give exactly the package's function; a zip, a
    folder and its rdf.yaml load alike; an image smaller than the minimum size is padded to it."""
    image = read_image(sample_image_path())
    predictor = segzoo.load(write_foreign(tmp_path / "tiny.zip"))
    assert predictor.config.architecture == "bioimageio" and predictor.config.postprocessing.threshold == 0.5
    assert predictor.config.resolution.mpp is None and predictor.config.preprocessing.pad_to_stride == 8
    result = predictor.predict(image)
    assert float(np.max(np.abs(result.prob - _reference(image)))) < 1e-5
    assert result.num_nuclei > 0
    folder = write_foreign(tmp_path / "tiny", as_zip=False)
    for source in (folder, folder / "rdf.yaml"):
        np.testing.assert_allclose(segzoo.load(source).predict(image).prob, result.prob, atol=1e-6)
    small = image[:20, :25]
    np.testing.assert_allclose(predictor.predict(small).prob, _reference(small), atol=1e-5)


def test_a_foreign_package_predicts_a_slide_from_the_command_line(tmp_path, capsys):
    slide = tmp_path / "slide.tif"
    write_aperio_tiff(slide, synthetic_he(600, 700, seed=5, tissue_fraction=0.7), mpp=None, levels=2)
    package = write_foreign(tmp_path / "tiny.zip")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(package), str(slide), "--out", str(out), "--mpp", "0.25"]) == 0, \
        capsys.readouterr().err
    features = json.loads((out / "slide.geojson").read_text())["features"]
    assert features and (out / "slide_nuclei.csv").is_file() and (out / "slide_thumbnail.png").is_file()


def _set(*path, value):
    def change(rdf):
        node = rdf
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


REJECTED = {
    "weights": (_set("weights", value={"torchscript": {"source": "tiny.onnx"}}), "weights: torchscript"),
    "two inputs": (lambda rdf: rdf["inputs"].append(dict(rdf["inputs"][0], id="other")), "inputs: 2 tensors"),
    "two outputs": (lambda rdf: rdf["outputs"].append(dict(rdf["outputs"][0], id="other")), "outputs: 2 tensors"),
    "z axis": (lambda rdf: rdf["inputs"][0]["axes"].append({"type": "space", "id": "z", "size": 4}),
               "inputs[0].axes[4]: space axis 'z'"),
    "time axis": (lambda rdf: rdf["inputs"][0]["axes"].insert(1, {"type": "time", "size": 2}),
                  "inputs[0].axes[1]: time axis"),
    "grey input": (_set("inputs", 0, "axes", 1, "channel_names", value=["grey"]),
                   "inputs[0].axes[1].channel_names: 1 channels"),
    "per-image statistics": (_set("inputs", 0, "preprocessing", 1, value={"id": "zero_mean_unit_variance"}),
                             "inputs[0].preprocessing[1].id: 'zero_mean_unit_variance'"),
    "scale_range": (_set("inputs", 0, "preprocessing", 1, value={"id": "scale_range", "kwargs": {}}),
                    "inputs[0].preprocessing[1].id: 'scale_range'"),
    "clip": (_set("inputs", 0, "preprocessing", 1, value={"id": "clip", "kwargs": {"min": 0}}),
             "inputs[0].preprocessing[1].id: 'clip'"),
    "smaller output": (_set("outputs", 0, "axes", 2, "size", value={"tensor_id": "raw", "axis_id": "y", "offset": -8}),
                       "outputs[0].axes[2]: size"),
    "two output channels": (_set("outputs", 0, "axes", 1, "channel_names", value=["a", "b"]),
                            "outputs[0].axes[1]: 2 output channels"),
    "output postprocessing": (_set("outputs", 0, "postprocessing", value=[{"id": "scale_range", "kwargs": {}}]),
                              "outputs[0].postprocessing[0].id: 'scale_range'"),
    "format 0.4": (_set("format_version", value="0.4.10"), "format_version: 0.4.10"),
    "not a model": (_set("type", value="dataset"), "type: 'dataset'"),
    "remote weights": (_set("weights", "onnx", "source", value="https://example.com/tiny.onnx"),
                       "weights.onnx.source is a URL"),
    "missing weights": (_set("weights", "onnx", "source", value="gone.onnx"),
                        "weights.onnx.source names gone.onnx, which is not in the package"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_what_segzoo_cannot_run_is_a_one_line_error_naming_the_field(tmp_path, case):
    change, message = REJECTED[case]
    package = write_foreign(tmp_path / "tiny.zip", change)
    with pytest.raises(ModelError) as err:
        segzoo.load(package)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_rejections_on_the_command_line_checksums_and_arguments(tmp_path, capsys):
    package = write_foreign(tmp_path / "bad.zip", _set("weights", "onnx", "sha256", value="0" * 64))
    with pytest.raises(ChecksumError, match="weights.onnx.sha256"):
        segzoo.load(package)
    image = tmp_path / "tile.png"
    image.write_bytes(sample_image_path().read_bytes())
    assert main(["predict", str(image), "--model", str(package), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights.onnx.sha256" in err[0], err
    good = write_foreign(tmp_path / "good.zip")
    for kwargs, argument in (({"precision": "int8"}, "precision"), ({"runtime": "keras"}, "runtime")):
        with pytest.raises(UsageError) as usage:
            segzoo.load(good, **kwargs)
        assert usage.value.argument == argument


def test_a_binarize_threshold_and_a_sigmoid_are_segzoos_to_apply(tmp_path):
    def change(rdf):
        rdf["outputs"][0]["postprocessing"] = [{"id": "binarize", "kwargs": {"threshold": 0.7}}]
        for axis in rdf["inputs"][0]["axes"][2:] + rdf["outputs"][0]["axes"][2:]:
            axis.update(unit="micrometer", scale=0.5)

    predictor = segzoo.load(write_foreign(tmp_path / "tiny.zip", change))
    assert predictor.config.postprocessing.threshold == 0.7 and predictor.config.resolution.mpp == 0.5


# --- publishing ---------------------------------------------------------------------------------------


def test_publish_uploads_the_package_beside_the_model_in_one_commit(packages, tmp_path):
    from test_publish import FakeHfApi

    from segzoo.zoo.publishing import publish

    class ListingApi(FakeHfApi):
        def upload_folder(self, **kwargs):
            self.uploaded = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
            return super().upload_folder(**kwargs)

    folder = ROOT / "model_cards" / "unet-monuseg"
    api = ListingApi()
    result = publish(folder, "segzoo/unet-monuseg", api=api, bioimageio_package=packages["unet-monuseg"])
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert "unet-monuseg.bioimageio.zip" in api.uploaded and "model.onnx" in api.uploaded
    assert result["files"]["unet-monuseg.bioimageio.zip"] == hashlib.sha256(
        packages["unet-monuseg"].read_bytes()).hexdigest()
    with pytest.raises(ModelError, match="config.segzoo is not"):
        publish(folder, "segzoo/unet-monuseg", dry_run=True, bioimageio_package=packages["segnet-monuseg"])


def test_publish_dry_run_builds_and_lists_the_package(capsys):
    _bioimageio_core()
    folder = ROOT / "model_cards" / "unet-monuseg"
    assert main(["publish", str(folder), "--repo-id", "segzoo/x", "--dry-run", "--bioimageio"]) == 0
    out = capsys.readouterr().out
    assert "bioimageio.core test passed" in out and "unet-monuseg.bioimageio.zip" in out
