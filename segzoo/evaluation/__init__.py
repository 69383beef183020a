"""Measuring models: segmentation metrics (metrics), a model folder on a dataset with ground
truth (evaluate: metrics.json, metrics.md, figure.png) and the runtimes' speed and memory
(benchmark: benchmark.json, benchmark.md)."""
