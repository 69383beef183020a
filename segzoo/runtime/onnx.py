"""The onnxruntime runtime: a BatchRunner over a CPU InferenceSession of a segzoo ONNX file's
bytes (see segzoo.runtime.onnx_format). Imports neither TensorFlow nor Keras."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from segzoo.runtime.onnx_format import INPUT_NAME, OUTPUT_NAME


def onnx_runner(model_bytes: bytes, *, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A BatchRunner over an onnxruntime CPU session (all graph optimisations; `threads` intra-op
    threads, default: onnxruntime's). The session is the runner's `session` attribute."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    run.session = session  # type: ignore[attr-defined]
    return run
