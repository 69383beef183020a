"""Turning a trained Keras model into what ships: the ONNX file (onnx: tf2onnx with parity
checked against Keras, and the tracing swaps that keep the graph small), exact graph clean-ups
(rewrite), int8 static quantization calibrated on image files (quantize), and a released zoo
folder (release: evaluation, ONNX files, the int8 check, card, pins). Needs Keras, TensorFlow
and tf2onnx (segzoo[keras]); the inference path never imports it."""
