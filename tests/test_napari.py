"""The napari plugin (segzoo.napari) in a real napari window: under a virtual X server
(`xvfb-run -a python -m pytest ...`; Qt's offscreen platform has no OpenGL for napari's canvas).

Skipped with the reason when the napari extra (napari, a Qt binding, pytest-qt) is not installed or
there is no display; the check that segzoo itself never imports napari or Qt runs always.

One viewer is shared by the widget tests (the module-scoped `shared_viewer`, emptied around each test
by `viewer`); the manifest test uses napari's own make_napari_viewer fixture and runs first, because
that fixture refuses to start while another viewer is alive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from types import SimpleNamespace
from unittest.mock import patch

import numpy as np
import pytest

from segzoo.io.images import read_image, sample_image_path

# Mesa's llvmpipe (the software OpenGL under Xvfb) and TensorFlow each bring an LLVM; with TensorFlow
# loaded earlier in the same test process (the training tests), napari's first glClear segfaults in
# llvmpipe. softpipe, Mesa's other software rasteriser, has no LLVM. Read when the first GL context is made.
os.environ.setdefault("GALLIUM_DRIVER", "softpipe")

MODEL = "unet-monuseg"
PRECISION = "int8"  # the fastest zoo path on CPU
RUN_TIMEOUT_MS = 120_000


def _why_no_viewer() -> str | None:
    """Why napari cannot open a window here (None: it can)."""
    for module, what in (("napari", "the napari extra is not installed: pip install 'segzoo[napari]'"),
                         ("pytestqt", "pytest-qt is not installed (segzoo's test extra)")):
        try:
            __import__(module)
        except ImportError:
            return what
    try:
        import qtpy.QtWidgets  # noqa: F401  (the binding's libraries: libEGL, libGL, libxkbcommon, ...)
    except Exception as err:  # noqa: BLE001  (qtpy raises its own errors when no binding loads)
        return f"Qt cannot load ({type(err).__name__}: {err}); .ci/run's apt-get line installs its libraries"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display for Qt and napari's OpenGL canvas: run the tests under `xvfb-run -a`"
    return None


NO_VIEWER = _why_no_viewer()
# The tests that open napari: skipped, with the reason, before any fixture starts Qt (without a display
# Qt aborts the process).
needs_viewer = pytest.mark.skipif(NO_VIEWER is not None, reason=NO_VIEWER or "")

# pytest-qt and napari's pytest plugin are off for the suite (pyproject.toml addopts): pytest-qt imports
# Qt when pytest starts, which fails on a machine without Qt's system libraries, and napari's plugin swaps
# the log record factory for every test. This module loads pytest-qt (qtbot, qapp) and imports napari's
# make_napari_viewer when it can open a window.
pytest_plugins = ["pytestqt.plugin"] if NO_VIEWER is None else []
if NO_VIEWER is None:
    import napari
    from napari.utils._testsupport import make_napari_viewer, mock_app_model  # noqa: F401  (napari's fixtures)


@pytest.fixture(autouse=True)
def _napari_plugin_parts(request, monkeypatch):
    """What make_napari_viewer reads from napari's pytest plugin, which is off for the suite: its two
    command-line options (at their defaults) and the test's call report (set by the plugin's hook)."""
    if "make_napari_viewer" in request.fixturenames:
        for option in ("--show-napari-viewer", "--save-leaked-object-graph"):
            monkeypatch.setattr(request.config.option, option, False, raising=False)
        request.node.rep_call = SimpleNamespace(failed=False)
    yield


def test_segzoo_without_the_extra_never_imports_napari_or_qt(tmp_path):
    """Loading, predicting and the CLI's writers import no napari, Qt binding or magicgui."""
    code = textwrap.dedent(f"""
        import sys
        import segzoo
        from segzoo.cli import main
        from segzoo.io.images import sample_image_path
        result = segzoo.load({MODEL!r}, precision={PRECISION!r}).predict(sample_image_path())
        assert result.num_nuclei > 50
        assert main(["predict", "--model", {MODEL!r}, "--precision", {PRECISION!r}, "--out", {str(tmp_path)!r},
                     "--formats", "labels,geojson,csv"]) == 0
        gui = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy", "npe2")
        print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in gui or m.startswith("segzoo.napari")))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return read_image(sample_image_path())


@pytest.fixture(scope="module")
def expected(sample):
    """What segzoo predicts on the sample tile with the model the widget tests run."""
    import segzoo

    return segzoo.load(MODEL, precision=PRECISION).predict(sample)


@pytest.fixture(scope="module")
def shared_viewer(request):
    """One napari viewer, shown (in the virtual X server), for the widget tests of this module."""
    request.getfixturevalue("qapp")
    viewer = napari.Viewer(show=True, show_welcome_screen=False)
    yield viewer
    with patch.object(viewer.window._qt_window, "_save_current_window_settings"):
        viewer.close()


@pytest.fixture
def viewer(shared_viewer, qtbot):
    """The shared viewer, empty before and after the test."""
    shared_viewer.layers.clear()
    yield shared_viewer
    shared_viewer.layers.clear()


@pytest.fixture
def widget(viewer, qtbot):
    """The dock widget in the shared viewer, set to the fast zoo model; undocked after the test."""
    from segzoo.napari.widget import NucleiWidget

    dock_widget = NucleiWidget(viewer)
    dock = viewer.window.add_dock_widget(dock_widget, name="segzoo: nuclei")
    dock_widget.model.value = MODEL
    dock_widget.precision.value = PRECISION
    yield dock_widget
    if dock_widget.worker is not None:
        dock_widget.cancel()
        qtbot.waitUntil(lambda: dock_widget.worker is None, timeout=RUN_TIMEOUT_MS)
    viewer.window.remove_dock_widget(dock)


@pytest.fixture
def messages(monkeypatch):
    """The notifications the widget shows: [(kind, message)]."""
    import segzoo.napari.widget as module

    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(module, "show_error", lambda message: shown.append(("error", message)))
    monkeypatch.setattr(module, "show_info", lambda message: shown.append(("info", message)))
    return shown


def _run(widget, qtbot) -> None:
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT_MS)


# -- the plugin as napari finds it ------------------------------------------------------------------


@needs_viewer
def test_the_manifest_gives_the_sample_widget_writer_and_reader(make_napari_viewer, tmp_path, expected):
    """Through napari's plugin machinery: the sample tile, the dock widget, and a Labels layer saved by
    the writer (label TIFF + GeoJSON + CSV) and read back by the reader as the same nuclei's polygons."""
    import tifffile

    from segzoo.io.measurements import nucleus_table
    from segzoo.napari.widget import NucleiWidget

    viewer = make_napari_viewer()
    layers = viewer.open_sample("segzoo", "he_tile")
    assert layers[0].rgb and np.array_equal(layers[0].data, expected.image)
    _, widget = viewer.window.add_plugin_dock_widget("segzoo", "segzoo: nuclei")
    assert isinstance(widget, NucleiWidget) and widget.image.value is layers[0]

    viewer.add_labels(expected.labels, name="nuclei")
    written = viewer.layers.save(str(tmp_path / "tile.tif"), selected=True, plugin="segzoo")
    assert sorted(os.path.basename(p) for p in written) == ["tile.geojson", "tile_labels.tif", "tile_nuclei.csv"]
    assert np.array_equal(tifffile.imread(tmp_path / "tile_labels.tif"), expected.labels)
    assert json.loads((tmp_path / "tile.geojson").read_text()) == nucleus_table(expected.labels).to_geojson()

    shapes = viewer.open(str(tmp_path / "tile.geojson"), plugin="segzoo")[0]
    table = nucleus_table(expected.labels)
    assert isinstance(shapes, napari.layers.Shapes) and len(shapes.data) == len(table) == expected.num_nuclei > 50
    assert list(shapes.features["label"]) == list(table.columns["label"])
    for i, polygon in enumerate(shapes.data):
        outline = table.ring(i)[:-1, ::-1]  # (x, y) closed -> (row, col) open
        assert polygon.shape == outline.shape and np.abs(polygon - outline).max() <= 0.005 + 1e-9

    csv_layer = viewer.open(str(tmp_path / "tile_nuclei.csv"), plugin="segzoo")[0]
    assert len(csv_layer.data) == len(table) and "area" in csv_layer.features


# -- the dock widget in the shared viewer ----------------------------------------------------------


@needs_viewer
def test_the_widget_adds_what_segzoo_predicts(viewer, widget, qtbot, sample, expected, messages, tmp_path):
    image = viewer.add_image(sample, name="he", rgb=True, scale=(0.5, 0.5), translate=(10.0, 20.0))
    widget.probability.value = widget.outlines.value = True
    _run(widget, qtbot)
    assert [m for m in messages if m[0] == "error"] == []
    labels, prob, outlines = viewer.layers["he nuclei"], viewer.layers["he probability"], viewer.layers["he outlines"]
    assert np.array_equal(labels.data, expected.labels)
    assert np.allclose(prob.data, expected.prob)
    for layer in (labels, prob, outlines):  # on the image: same transform
        assert np.allclose(layer.data_to_world((3, 7)), image.data_to_world((3, 7)))
    meta = labels.metadata["segzoo"]
    assert meta["model"] == MODEL and meta["precision"] == PRECISION and meta["runtime"] == "onnx"
    assert meta["config"]["name"] == MODEL and meta["offset_xy"] == [0, 0]
    assert meta["nuclei"] == expected.measurements()
    assert {"area", "centroid_x", "centroid_y", "mean_r", "mean_prob"} <= set(meta["nuclei"][0])
    assert len(outlines.data) == expected.num_nuclei
    assert list(labels.features["index"]) == [row["label"] for row in expected.measurements()]
    assert widget.last_progress == (1, 1)  # the sample fits one tile
    assert widget.image.value is image and widget.image.choices == (image,)  # not its own probability layer
    assert "nuclei" in widget.status.value

    # saved, the layer the widget made gives the CLI's files (mean intensities included)
    from segzoo.io.measurements import csv_bytes
    from segzoo.napari.writer import write_labels

    data, state, _ = labels.as_layer_data_tuple()
    write_labels(str(tmp_path / "he_labels.tif"), data, state)
    assert (tmp_path / "he_nuclei.csv").read_bytes() == csv_bytes(expected.measurements())
    assert json.loads((tmp_path / "he.geojson").read_text()) == expected.to_geojson()


@needs_viewer
def test_the_labels_show_on_the_canvas(viewer, widget, qtbot, sample):
    """A screenshot after the run differs from the one before where (and only where) the labels are drawn.
    The canvas renders at a fixed size, so window layout changes (status bar, docks) do not move it."""

    def shot():
        return viewer.screenshot(canvas_only=True, size=(480, 480))[..., :3].astype(int)

    image = viewer.add_image(sample, name="he", rgb=True)
    viewer.reset_view()
    before = shot()
    _run(widget, qtbot)
    labels = viewer.layers["he nuclei"]
    after = shot()
    image.visible = False
    only_labels = shot()
    labels.visible = False
    empty = shot()
    drawn = np.abs(only_labels - empty).max(axis=-1) > 0
    changed = np.abs(after - before).max(axis=-1) > 8
    assert drawn.mean() > 0.05, "no labels on the canvas"
    assert (changed & drawn).sum() > 0.8 * drawn.sum(), "the labels did not change the canvas where they are"
    assert (changed & ~drawn).sum() < 0.02 * changed.sum(), "the canvas changed where there are no labels"


@needs_viewer
def test_cancel_stops_at_the_next_tile_and_adds_nothing(viewer, widget, qtbot, sample, messages, monkeypatch):
    from segzoo.napari.tiles import TileRunner

    viewer.add_image(sample, name="he", rgb=True)
    first_batch, cancel_pressed = threading.Event(), threading.Event()
    calls = []
    original = TileRunner.__call__

    def held(self, batch):  # the first batch waits until Cancel was pressed in the main thread
        calls.append(batch.shape[0])
        out = original(self, batch)
        if len(calls) == 1:
            first_batch.set()
            cancel_pressed.wait(30)
        return out

    monkeypatch.setattr(TileRunner, "__call__", held)
    widget.tile_size.value = 128
    widget.run()
    qtbot.waitUntil(first_batch.is_set, timeout=RUN_TIMEOUT_MS)
    assert widget.cancel_button.enabled and not widget.run_button.enabled
    widget.cancel_button.clicked.emit()
    cancel_pressed.set()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == ["he"]
    assert len(calls) == 2  # the second batch found Cancel pressed and ran nothing
    assert ("info", "segzoo: cancelled; no layer added") in messages
    assert widget.run_button.enabled and not widget.cancel_button.enabled


@needs_viewer
def test_field_of_view_predicts_the_part_in_view(viewer, widget, qtbot, sample, messages, tmp_path):
    import segzoo
    from segzoo.io.measurements import nucleus_table
    from segzoo.napari import view
    from segzoo.napari.tiles import tile_count
    from segzoo.napari.writer import write_labels

    image = viewer.add_image(sample, name="he", rgb=True, scale=(2.0, 2.0), translate=(-5.0, 7.0))
    camera = view.camera(viewer)
    camera.center = image.data_to_world((150, 300))
    camera.zoom = 3.0  # screen pixels per world unit: 6 per image pixel
    qtbot.wait(50)
    widget.field_of_view.value = True
    widget.tile_size.value = 64
    _run(widget, qtbot)
    assert [m for m in messages if m[0] == "error"] == []
    labels = viewer.layers["he nuclei"]
    r0, c0 = labels.metadata["segzoo"]["offset_xy"][::-1]
    rows, cols = labels.data.shape
    # the canvas, in the layer's data pixels, is the box (computed independently of the widget)
    height, width = view.canvas_size(viewer)
    half = np.array([height, width]) / (2 * camera.zoom) / 2.0  # world units / scale 2
    centre = np.array([150, 300])
    assert (r0, c0) == tuple(int(np.floor(v + 0.5)) for v in centre - half)
    assert (r0 + rows, c0 + cols) == tuple(int(np.ceil(v + 0.5)) for v in centre + half)
    assert 0 < rows < sample.shape[0] and 0 < cols < sample.shape[1]
    corners = np.asarray(image.corner_pixels)  # napari's own view of it (whole pixels, floor/ceil): within 1
    assert np.abs(corners - [[r0, c0], [r0 + rows, c0 + cols]]).max() <= 1
    assert np.allclose(labels.data_to_world((0, 0)), image.data_to_world((r0, c0)))
    crop = segzoo.load(MODEL, precision=PRECISION).predict(sample[r0:r0 + rows, c0:c0 + cols], tile_size=64)
    assert np.array_equal(labels.data, crop.labels)
    table = nucleus_table(crop.labels, crop.image, crop.prob, offset=(c0, r0))  # in the image's pixels
    assert labels.metadata["segzoo"]["nuclei"] == table.rows()
    data, state, _ = labels.as_layer_data_tuple()
    write_labels(str(tmp_path / "view.tif"), data, state)
    assert json.loads((tmp_path / "view.geojson").read_text()) == table.to_geojson()
    done, total = widget.last_progress
    assert done == total == tile_count(segzoo.load(MODEL, precision=PRECISION).config, (rows, cols), 64) > 1


@needs_viewer
def test_errors_are_one_line_notifications(viewer, widget, qtbot, sample, messages):
    import segzoo

    widget.run()  # no image layer
    assert messages[-1][0] == "error" and messages[-1][1].startswith("no image layer")

    viewer.add_image(np.zeros((3, 64, 64), np.uint8), name="stack")
    widget.run()
    assert messages[-1][0] == "error" and "more than 2 dimensions" in messages[-1][1]

    viewer.add_image(sample, name="he", rgb=True)
    widget.model_path.value = "no/such/model"
    with pytest.raises(segzoo.SegzooError) as raised:
        segzoo.load("no/such/model")
    _run(widget, qtbot)
    assert messages[-1] == ("error", " ".join(str(raised.value).splitlines()))
    assert [layer.name for layer in viewer.layers] == ["stack", "he"]

    widget.model_path.value = ""
    viewer.add_image(sample.mean(axis=2).astype(np.uint8), name="grey")
    assert widget.image.value.name == "grey"
    _run(widget, qtbot)
    assert ("info", "segzoo: layer 'grey' is grey: replicated to RGB (the models are trained on H&E RGB)") in messages
    assert viewer.layers["grey nuclei"].data.max() > 0
    assert all("\n" not in text for _, text in messages)


# -- the reader on its own -------------------------------------------------------------------------


def test_the_reader_takes_qupath_geojson_and_a_lone_csv(tmp_path):
    from segzoo.napari.reader import get_reader

    qupath = [  # a bare list, QuPath's older measurement list, a MultiPolygon and a point to skip
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 2], [0, 0]]]},
         "properties": {"objectType": "detection", "classification": {"name": "Tumor"},
                        "measurements": [{"name": "Area", "value": 4.0}]}},
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [
            [[[10, 10], [12, 10], [12, 13], [10, 10]]], [[[20, 20], [22, 20], [22, 21], [20, 20]]]]},
         "properties": {"measurements": {"Area": 7.5}}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]}, "properties": {}},
    ]
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(qupath))
    data, kwargs, kind = get_reader(str(path))(str(path))[0]
    assert kind == "shapes" and len(data) == 3
    assert np.array_equal(data[0], [[0, 0], [0, 4], [2, 4]])  # (row, col), closing vertex dropped
    assert kwargs["features"]["label"] == [1, 2, 2] and kwargs["features"]["Area"] == [4.0, 7.5, 7.5]
    assert kwargs["features"]["classification"][0] == "Tumor"

    csv_path = tmp_path / "tile_nuclei.csv"
    csv_path.write_text("label,area,centroid_x,centroid_y,bbox_x0,bbox_y0,bbox_x1,bbox_y1\r\n"
                        "1,6,1.5,0.5,0,0,3,2\r\n")
    data, kwargs, _ = get_reader(str(csv_path))(str(csv_path))[0]
    assert kwargs["shape_type"] == "rectangle" and np.array_equal(data[0], [[-0.5, -0.5], [1.5, 2.5]])
    assert get_reader(str(tmp_path / "image.png")) is None


def test_a_model_at_another_scale_than_the_layer_is_noted():
    from segzoo.napari.view import layer_mpp, scale_note

    def layer(scale, units):
        return SimpleNamespace(name="he", scale=np.array(scale, float), units=units)

    at_40x = layer((0.25, 0.25), ("micrometer", "micrometer"))
    assert layer_mpp(at_40x) == 0.25 and layer_mpp(layer((250, 250), ("nanometer", "nanometer"))) == 0.25
    assert layer_mpp(layer((1, 1), ("pixel", "pixel"))) is None and layer_mpp(SimpleNamespace(name="x")) is None
    assert scale_note(at_40x, 0.25) is None and scale_note(layer((1, 1), ("pixel", "pixel")), 0.25) is None
    assert "has 0.25 um/px, the model 0.5 um/px" in scale_note(at_40x, 0.5)
    assert "pixel size is unknown" in scale_note(layer((1, 1), ("pixel", "pixel")), 0.5)
    assert scale_note(layer((0.5, 0.5), ("micrometer", "micrometer")), 0.5) is None and scale_note(at_40x, None) is None
