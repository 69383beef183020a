"""The "segzoo: nuclei" dock widget: pick a model (a zoo name, or a typed folder / hf:// URI / .onnx
file), precision, runtime, TTA, tile size and an image layer, optionally only the part in view; Run
predicts in a napari thread_worker (the viewer stays responsive) with a napari progress bar per tile,
and Cancel stops at the next tile and adds nothing.

Errors (no image layer, a model that does not load, an image segzoo cannot take) show as a napari
notification with the one-line message the CLI prints, never a traceback dialog.
"""

# No `from __future__ import annotations`: napari finds the viewer parameter by its real annotation.

import logging
import os
import threading
from dataclasses import dataclass

from magicgui.widgets import CheckBox, ComboBox, Container, Label, LineEdit, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from napari.viewer import Viewer
from qtpy.QtCore import QObject, Signal, Slot

import segzoo
from segzoo.errors import SegzooError
from segzoo.io.measurements import NucleusTable, nucleus_table
from segzoo.napari.layers import METADATA_KEY, RunInfo, result_layers
from segzoo.napari.tiles import TTA_PASSES, predict_cancellable, tile_count
from segzoo.napari.view import layer_image, placement, scale_note, visible_box
from segzoo.predict.predictor import Prediction
from segzoo.zoo.loading import PRECISIONS, RUNTIMES

log = logging.getLogger(__name__)

DEFAULT_MODEL = "unet-monuseg"


def one_line(err: BaseException) -> str:
    """The one-line message the CLI prints for an error (segzoo.cli.arguments.error_message)."""
    return " ".join(str(err).splitlines())


@dataclass(frozen=True)
class Settings:
    """One run's choices, read from the widget in the main thread."""

    model: str
    runtime: str
    precision: str
    tta: bool
    tile_size: int | None
    probability: bool
    outlines: bool


@dataclass
class Outcome:
    """What a run returns to the main thread: the prediction and its table, or an error, or cancelled."""

    prediction: Prediction | None = None
    table: NucleusTable | None = None
    config: dict | None = None
    runtime: str = ""
    error: str | None = None
    cancelled: bool = False


class _Relay(QObject):
    """Carries (tile passes done, total) from the worker thread to the main thread: it lives in the main
    thread, so the signal is queued there and the progress bar is only touched by the main thread."""

    advanced = Signal(int, int)

    def __init__(self, callback):
        super().__init__()
        self._callback = callback
        self.advanced.connect(self._deliver)

    @Slot(int, int)
    def _deliver(self, done: int, total: int) -> None:
        self._callback(done, total)


def _load(settings: Settings, cache: dict):
    key = (settings.model, settings.runtime, settings.precision)
    if key not in cache:
        cache.clear()  # keep the last model only
        cache[key] = segzoo.load(settings.model, runtime=settings.runtime, precision=settings.precision)
    return cache[key]


@thread_worker(start_thread=False, ignore_errors=True)
def _predict_job(settings: Settings, image, offset: tuple[int, int], cancelled: threading.Event, relay: _Relay,
                 cache: dict) -> Outcome:
    """In the worker thread: load the model, predict tile by tile (progress, cancel), measure the nuclei."""
    try:
        predictor = _load(settings, cache)
        passes = tile_count(predictor.config, image.shape, settings.tile_size) * (TTA_PASSES if settings.tta else 1)
        relay.advanced.emit(0, passes)
        prediction = predict_cancellable(predictor, image, cancelled=cancelled, tta=settings.tta,
                                         tile_size=settings.tile_size,
                                         on_tiles=lambda done: relay.advanced.emit(min(done, passes), passes))
        if prediction is None:
            return Outcome(cancelled=True)
        table = nucleus_table(prediction.labels, prediction.image, prediction.prob, offset=(offset[1], offset[0]))
        return Outcome(prediction, table, predictor.config.to_dict(), predictor.runtime,
                       cancelled=cancelled.is_set())
    except SegzooError as err:
        return Outcome(error=one_line(err))
    except OSError as err:
        return Outcome(error=f"{settings.model}: cannot read ({err.strerror or err})")


class NucleiWidget(Container):
    """The dock widget. run() and cancel() are what the buttons do; `worker` is the running
    thread_worker (None when idle)."""

    def __init__(self, napari_viewer: Viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        models = segzoo.list_models()
        self.model = ComboBox(label="model", choices=models,
                              value=DEFAULT_MODEL if DEFAULT_MODEL in models else (models[0] if models else None))
        self.model_path = LineEdit(label="or model path", value="",
                                   tooltip="a model folder, hf://org/repo[@revision] or an .onnx file; "
                                           "when given it is used instead of the zoo model")
        self.precision = ComboBox(label="precision", choices=list(PRECISIONS), value="fp32",
                                  tooltip="int8: the model's int8 ONNX file, the fastest on CPU")
        self.runtime = ComboBox(label="runtime", choices=list(RUNTIMES), value="auto")
        self.tta = CheckBox(text="TTA (8 flips and rotations, 8x the time)", value=False)
        self.tile_size = SpinBox(label="tile size", min=0, max=16384, step=16, value=0,
                                 tooltip="pixels per network tile; 0: the model's config")
        self.image = ComboBox(label="image layer", choices=self._image_layers)
        self.field_of_view = CheckBox(text="field of view only", value=False,
                                      tooltip="predict only the part of the layer in view (large images)")
        self.probability = CheckBox(text="add the probability layer", value=False)
        self.outlines = CheckBox(text="add the outlines layer", value=False)
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend([self.model, self.model_path, self.precision, self.runtime, self.tta, self.tile_size, self.image,
                     self.field_of_view, self.probability, self.outlines, self.run_button, self.cancel_button,
                     self.status])
        self.run_button.changed.connect(lambda *_: self.run())
        self.cancel_button.changed.connect(lambda *_: self.cancel())
        self.worker = None
        self._cancelled: threading.Event | None = None
        self._progress = None
        self._relay = _Relay(self._advance)
        self._cache: dict = {}
        self.last_progress = (0, 0)  # (tile passes done, total) of the last run
        layers = napari_viewer.layers.events
        self._layer_events = (layers.inserted, layers.removed, layers.reordered)
        for event in self._layer_events:
            event.connect(self._layers_changed)
        self.native.destroyed.connect(self._disconnect)
        self._layers_changed()

    def _disconnect(self, *_) -> None:
        for event in self._layer_events:
            event.disconnect(self._layers_changed)

    # -- choices -------------------------------------------------------------------------------

    def _image_layers(self, _widget=None) -> list[tuple[str, Image]]:
        """The viewer's image layers, less the probability layers segzoo added."""
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and METADATA_KEY not in layer.metadata]

    def _layers_changed(self, event=None) -> None:
        self.image.reset_choices()
        added = getattr(event, "value", None)
        if added in self.image.choices and getattr(event, "type", "") == "inserted":
            self.image.value = added
        elif self.image.value is None:
            images = [layer for layer in self.image.choices if layer is not None]
            if images:
                self.image.value = images[0]

    def settings(self) -> Settings:
        path = self.model_path.value.strip()
        if path and not path.startswith("hf://"):
            path = os.path.expanduser(path)
        return Settings(model=path or str(self.model.value), runtime=str(self.runtime.value),
                        precision=str(self.precision.value), tta=bool(self.tta.value),
                        tile_size=int(self.tile_size.value) or None, probability=bool(self.probability.value),
                        outlines=bool(self.outlines.value))

    # -- run and cancel ------------------------------------------------------------------------

    def run(self) -> None:
        """Predict the chosen image layer (or the part in view) in a thread_worker."""
        if self.worker is not None:
            show_info("segzoo: a prediction is running; wait for it or press Cancel")
            return
        layer = self.image.value
        if layer is None:
            self._error("no image layer: open an image (or File > Open Sample > segzoo > H&E sample tile)")
            return
        settings = self.settings()
        try:
            box = visible_box(self.viewer, layer) if self.field_of_view.value else None
            image, notes = layer_image(layer, box)
        except SegzooError as err:
            self._error(one_line(err))
            return
        for note in notes:
            show_info(f"segzoo: {note}")
        offset = (box[0], box[2]) if box else (0, 0)
        self._cancelled = threading.Event()
        self._target = (layer, offset, settings)
        self.last_progress = (0, 0)
        self.worker = _predict_job(settings, image, offset, self._cancelled, self._relay, self._cache)
        self.worker.returned.connect(self._finish)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._idle)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"predicting {layer.name!r} with {settings.model}..."
        self.worker.start()

    def cancel(self) -> None:
        """Stop the running prediction at the next tile; nothing is added."""
        if self._cancelled is not None and self.worker is not None:
            self._cancelled.set()
            self.status.value = "cancelling at the next tile..."

    # -- main-thread callbacks -----------------------------------------------------------------

    def _advance(self, done: int, total: int) -> None:
        if self.worker is None:
            return
        self.last_progress = (done, total)
        if self._progress is None:
            self._progress = progress(total=total, desc="segzoo: tiles")
        self._progress.update(done - self._progress.n)

    def _close_progress(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def _finish(self, outcome: Outcome) -> None:
        self._close_progress()
        if outcome.error is not None:
            self._error(outcome.error)
            return
        if outcome.cancelled or (self._cancelled is not None and self._cancelled.is_set()):
            self.status.value = "cancelled: no layer added"
            show_info("segzoo: cancelled; no layer added")
            return
        layer, offset, settings = self._target
        info = RunInfo(model=settings.model, runtime=outcome.runtime, precision=settings.precision, tta=settings.tta,
                       tile_size=settings.tile_size, config=outcome.config, image_layer=layer.name, offset=offset)
        for data, kwargs, kind in result_layers(outcome.prediction, outcome.table, info,
                                                crop_placement=placement(layer, offset),
                                                image_placement=placement(layer), probability=settings.probability,
                                                outlines=settings.outlines):
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        self.status.value = f"{len(outcome.table)} nuclei in {layer.name!r}"
        note = scale_note(layer, (outcome.config.get("resolution") or {}).get("mpp"))
        if note:
            show_info(f"segzoo: {note}")

    def _failed(self, err: BaseException) -> None:
        self._close_progress()
        log.error("segzoo prediction failed", exc_info=(type(err), err, err.__traceback__))
        self._error(f"{type(err).__name__}: {one_line(err)}")

    def _idle(self) -> None:
        self._close_progress()
        self.worker = None
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def _error(self, message: str) -> None:
        self.status.value = f"error: {message}"
        show_error(message)
