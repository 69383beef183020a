"""The README's napari screenshot: a napari window with the bundled H&E sample tile, the "segzoo: nuclei"
dock widget, and the nuclei the widget found on it (scripts/napari_screenshot.py writes docs/napari.png).
Needs a display (on a server: `xvfb-run -a`)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _wait(widget, timeout: float) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while widget.worker is not None:
        if time.monotonic() > end:
            widget.cancel()
            raise TimeoutError(f"the prediction took over {timeout:.0f} s")
        QApplication.processEvents()
        time.sleep(0.01)


def napari_screenshot(path: str | Path, *, model: str = "unet-monuseg", precision: str = "int8",
                      size: tuple[int, int] = (1440, 820), timeout: float = 300.0) -> tuple[Path, int]:
    """Open napari (through the plugin: sample data, dock widget), predict the sample tile with `model`,
    and save the window (width, height = `size`) as a PNG at `path`; (path, nuclei found)."""
    import napari
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="segzoo", show=True)
    try:
        viewer.window.resize(*size)
        viewer.open_sample("segzoo", "he_tile")
        _, widget = viewer.window.add_plugin_dock_widget("segzoo", "segzoo: nuclei")
        widget.model.value = model
        widget.precision.value = precision
        widget.run()
        _wait(widget, timeout)
        labels = [layer for layer in viewer.layers if layer.name.endswith(" nuclei")]
        if not labels:
            raise RuntimeError(f"the widget added no nuclei: {widget.status.value}")
        viewer.reset_view()
        for _ in range(20):
            QApplication.processEvents()
        pixels = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[..., :3]).save(path, optimize=True)
        return path, len(labels[0].metadata["segzoo"]["nuclei"])
    finally:
        viewer.close()
