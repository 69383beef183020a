"""Keras models: the architectures (architectures/: a keras-free name registry, the builders,
their blocks and custom layers) and model folders (folders: config.json + model.weights.h5,
saved and loaded with Keras). Only training, export, evaluation, the CLI and the Keras runtime
(segzoo.runtime.keras, inside its functions) import this package's Keras parts."""
