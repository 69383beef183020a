"""Evaluation of a model at another scale than the data's (segzoo.evaluation.evaluate): tiles are
resampled to the model's scale, predicted there, and scored on the ground truth's pixels."""

from __future__ import annotations

import numpy as np

from segzoo.config import ModelConfig
from segzoo.datasets.monuseg import rasterize_regions
from segzoo.evaluation.evaluate import evaluate, labels_on_grid, model_scale, predict_on_truth_grid
from segzoo.evaluation.metrics import aggregated_jaccard_index


def _dark_nuclei_runner(batch: np.ndarray) -> np.ndarray:
    """A 'model' that calls a pixel nucleus where the normalised image is dark (the synthetic
    tiles' purple discs): local, so it works at any scale."""
    return (batch.mean(axis=-1, keepdims=True) < -0.5).astype(np.float32)


def _config(mpp: float | None) -> ModelConfig:
    config = ModelConfig(architecture="unet")
    config.resolution.mpp = mpp
    config.postprocessing.min_object_size = 0
    return config.validate()


def test_the_model_scale_snaps_like_the_slide_path():
    assert model_scale(_config(0.5), 0.25) == 0.5
    assert model_scale(_config(0.25), 0.2456) == 1.0  # within 2%: read as it is
    assert model_scale(_config(None), 0.25) == 1.0 and model_scale(_config(0.5), None) == 1.0


def test_outlines_filled_on_the_same_grid_give_the_labels_back():
    from conftest import synthetic_tile

    _, polygons = synthetic_tile(np.random.default_rng(1), 96, n_nuclei=8)
    labels, _ = rasterize_regions(polygons, (96, 96))
    back = labels_on_grid(labels, 1.0, labels.shape)
    assert len(np.unique(back)) == len(np.unique(labels))
    assert aggregated_jaccard_index(labels, back) > 0.97  # the GeoJSON's simplified outlines, filled again


def test_nuclei_at_half_the_scale_come_back_where_they_were():
    from conftest import synthetic_tile
    from scipy import ndimage as ndi

    from segzoo.datasets.monuseg import scale_polygons

    rectangle = np.zeros((40, 40), np.int32)
    rectangle[10:20, 5:25] = 1
    back = labels_on_grid(rectangle, 2.0, (80, 80))  # a 20x rectangle on the 40x grid: exactly 2x
    assert (np.argwhere(back).min(0) == (20, 10)).all() and (np.argwhere(back).max(0) == (39, 49)).all()
    _, polygons = synthetic_tile(np.random.default_rng(2), 160, n_nuclei=10)
    truth, _ = rasterize_regions(polygons, (160, 160))
    at_20x, _ = rasterize_regions(scale_polygons(polygons, 0.5), (80, 80))
    back = labels_on_grid(at_20x, 2.0, (160, 160))
    assert len(np.unique(back)) == len(np.unique(truth))
    assert abs((back > 0).sum() - (truth > 0).sum()) < 0.05 * (truth > 0).sum()
    assert np.abs(np.subtract(ndi.center_of_mass(back > 0), ndi.center_of_mass(truth > 0))).max() < 1.0
    assert aggregated_jaccard_index(truth, back) > 0.8  # nuclei of 4-8 px radius at 40x: 2-4 px at 20x


def test_a_prediction_at_the_model_scale_is_scored_on_the_truth_grid():
    from conftest import synthetic_tile

    image, _ = synthetic_tile(np.random.default_rng(2), 160, n_nuclei=10)
    whole = predict_on_truth_grid(_dark_nuclei_runner, _config(0.25), image, 1.0)
    prob, mask, labels = predict_on_truth_grid(_dark_nuclei_runner, _config(0.5), image, 0.5)
    assert prob.shape == mask.shape == labels.shape == (160, 160) and prob.dtype == np.float32
    assert abs(len(np.unique(labels)) - len(np.unique(whole[2]))) <= 1
    np.testing.assert_array_equal(mask, labels > 0)


def test_metrics_record_both_scales(monuseg_folder):
    metrics, _ = evaluate(_dark_nuclei_runner, _config(0.5), monuseg_folder, data_mpp=0.25)
    assert metrics["scales"] == {"model_mpp": 0.5, "data_mpp": 0.25, "model_pixels_per_data_pixel": 0.5}
    assert metrics["micro"]["dice"] > 0.6 and metrics["mean"]["aji"] > 0.3  # a darkness 'model' on tiny nuclei
    same, _ = evaluate(_dark_nuclei_runner, _config(0.25), monuseg_folder, data_mpp=0.25)
    assert same["scales"]["model_pixels_per_data_pixel"] == 1.0
    assert same["micro"]["dice"] > metrics["micro"]["dice"]  # its own scale suits it better
