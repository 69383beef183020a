"""Datasets with ground truth, for evaluation and training: MoNuSeg tiles and their Aperio XML
annotations or PNG masks (monuseg). Keras-free; training's patch sampling and input pipeline
live in segzoo.training."""
