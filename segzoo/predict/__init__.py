"""Image in, nuclei out, for any runtime: the Predictor (predictor), tiling, blending and
test-time augmentation (tiling), network input (preprocessing) and probabilities -> mask ->
instances (postprocessing). A runtime is any callable from a float32 batch to probabilities,
handed to the Predictor; nothing here imports a runtime, the zoo, Keras or onnxruntime."""
