"""Runtimes: callables that run a network on a float32 batch (N, H, W, C) and return its
probabilities (N, H, W, 1): Keras (keras: imports Keras only inside its functions) and
onnxruntime (onnx), plus the segzoo ONNX file format (onnx_format: metadata, graph checksum,
the embedded config). segzoo.zoo.loading hands a runner to a segzoo.predict.Predictor."""
