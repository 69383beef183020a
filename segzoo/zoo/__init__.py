"""The zoo: trained models by name and how to get them. registry (names, pinned files, the
bundled copies), hub (Hugging Face downloads, reachability, checksums), sources (a zoo name,
hf:// URI, folder or .onnx file -> the files a runtime needs), loading (segzoo.load: a
Predictor with its runtime), publishing (validate and upload a zoo folder, pin it), cards
(model cards) and readme (README tables). The inference path's top: it imports segzoo.predict,
segzoo.runtime and segzoo.io, never Keras, training or export; nothing below it imports it."""
