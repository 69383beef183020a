"""An onnxruntime runner for an ONNX graph whose tensors are not segzoo's: another axis order (channel
first, no batch axis, no channel axis), sizes it accepts (min + n * step, or one fixed size), a fixed
batch of 1, a sigmoid left to the consumer. What a bioimage.io package's ONNX weights need
(segzoo.zoo.bioimageio reads the package); imports neither TensorFlow nor Keras.

The runner takes what segzoo's tiling feeds every runner, a normalised float32 (N, H, W, C) batch, and
returns (N, H, W, K) float32: it pads the batch at the bottom/right by reflection up to the next size the
graph accepts, transposes it to the graph's axis order, runs it (one image at a time where the graph
has no batch axis or a batch of 1), puts the output back in (N, H, W, K) order and crops it to (H, W).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ROLES = "byxc"  # segzoo's order: batch, y, x, channel


@dataclass(frozen=True)
class AxisSizes:
    """Sizes one spatial axis accepts: `fixed`, or `least` + n * `step` (n >= 0)."""

    least: int = 1
    step: int = 1
    fixed: int | None = None

    def fit(self, length: int) -> int:
        """The smallest accepted size >= `length` (`length` itself when accepted; a fixed size
        smaller than `length` is returned as it is, and the graph refuses it)."""
        if self.fixed is not None:
            return max(self.fixed, length)
        if length <= self.least:
            return self.least
        return self.least + -(-(length - self.least) // self.step) * self.step


@dataclass(frozen=True)
class Layout:
    """The graph's input and output axis orders, as strings of ROLES letters (e.g. 'bcyx', 'byx'),
    the sizes of y and x, whether it runs one image at a time, and a sigmoid to apply to its output."""

    inputs: str
    outputs: str
    sizes: dict[str, AxisSizes] = field(default_factory=lambda: {"y": AxisSizes(), "x": AxisSizes()})
    one_at_a_time: bool = False
    sigmoid: bool = False


def _to_graph(batch: np.ndarray, order: str) -> np.ndarray:
    """(N, H, W, C) -> the graph's `order` (axes it lacks must be of size 1: batch, channel)."""
    missing = [ROLES.index(r) for r in ROLES if r not in order]
    kept = np.squeeze(batch, axis=tuple(missing)) if missing else batch
    present = [r for r in ROLES if r in order]
    return np.ascontiguousarray(np.transpose(kept, [present.index(r) for r in order]), dtype=np.float32)


def _from_graph(array: np.ndarray, order: str) -> np.ndarray:
    """The graph's output in `order` -> (N, H, W, K), axes it lacks added with size 1."""
    present = [r for r in ROLES if r in order]
    array = np.transpose(array, [order.index(r) for r in present])
    for role in ROLES:
        if role not in order:
            array = np.expand_dims(array, ROLES.index(role))
    return array


class AxesRunner:
    """A BatchRunner over an onnxruntime CPU session of `model_bytes` (one input) whose tensors are laid
    out as `layout` says; `threads`: intra-op threads (None: onnxruntime's default). The session is the
    runner's `session` attribute."""

    def __init__(self, model_bytes: bytes, layout: Layout, *, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.layout = layout

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: _to_graph(batch, self.layout.inputs)})[0]
        if out.ndim != len(self.layout.outputs):
            return out  # the Predictor's shape check names both shapes
        return _from_graph(out, self.layout.outputs)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n, h, w = batch.shape[:3]
        th, tw = self.layout.sizes["y"].fit(h), self.layout.sizes["x"].fit(w)
        if (th, tw) != (h, w):
            batch = np.pad(batch, ((0, 0), (0, th - h), (0, tw - w), (0, 0)), mode="reflect")
        if self.layout.one_at_a_time and n > 1:
            out = np.concatenate([self._run(batch[i:i + 1]) for i in range(n)])
        else:
            out = self._run(batch)
        if out.ndim == 4:
            out = out[:, :h, :w]
        if self.layout.sigmoid:
            from scipy.special import expit

            out = expit(out)
        return np.asarray(out, dtype=np.float32)
