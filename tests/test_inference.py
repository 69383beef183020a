"""Tiling and blending (numpy runtimes, so no model is needed)."""

import numpy as np
import pytest

from segzoo.config import ModelConfig
from segzoo.predict.tiling import predict_probabilities


def _config(tile=32, overlap=8, stride=8) -> ModelConfig:
    c = ModelConfig(architecture="unet")
    c.preprocessing.pad_to_stride = stride
    c.inference.tile_size, c.inference.overlap, c.inference.batch_size = tile, overlap, 3
    return c


def constant_model(batch):
    assert batch.shape[1] % 8 == 0 and batch.shape[2] % 8 == 0
    return np.full(batch.shape[:3] + (1,), 0.3, np.float32)


def local_model(batch):
    """Output depends only on the pixel itself, so tiling must not change it."""
    return 1.0 / (1.0 + np.exp(-batch[..., :1]))


@pytest.mark.parametrize("shape", [(1, 1), (7, 100), (101, 99), (64, 64), (33, 130)])
def test_constant_model_gives_constant_map(shape):
    image = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    prob = predict_probabilities(constant_model, image, _config())
    assert prob.shape == shape + (1,)
    np.testing.assert_allclose(prob, 0.3, atol=1e-6)


@pytest.mark.parametrize("shape", [(7, 100), (101, 99), (150, 70)])
def test_tiled_equals_whole_image(shape):
    image = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    tiled = predict_probabilities(local_model, image, _config(tile=32, overlap=8))
    whole = predict_probabilities(local_model, image, _config(tile=256, overlap=8))
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_tta_of_equivariant_model_is_identity():
    image = np.random.default_rng(2).integers(0, 256, (40, 24, 3), dtype=np.uint8)
    plain = predict_probabilities(local_model, image, _config(tile=64))
    tta = predict_probabilities(local_model, image, _config(tile=64), tta=True)
    np.testing.assert_allclose(plain, tta, atol=1e-6)


@pytest.mark.parametrize("length, tile, overlap", [(1000, 512, 64), (1000, 1024, 128), (5000, 1024, 128),
                                                   (33, 32, 8), (100, 32, 0)])
def test_tile_starts_cover_with_overlap(length, tile, overlap):
    from segzoo.predict.tiling import tile_starts

    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile >= length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
    fewer = len(starts) - 1
    if fewer >= 2:  # one tile fewer could not keep the overlap
        assert (length - tile) / (fewer - 1) > tile - overlap
