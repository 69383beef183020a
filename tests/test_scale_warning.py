"""A slide or image predicted far from the model's scale is warned about (issue 29 item 5): a slide
whose best level is upsampled 1.5x or more (working_grid, so predict_slide and `segzoo predict`),
naming the loss and the zoo models trained at the slide's scale; Predictor.predict given the
image's mpp (it does not resample)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from segzoo.config import ModelConfig, Resolution
from segzoo.errors import UsageError
from segzoo.predict.predictor import Predictor
from segzoo.slides.plan.grid import working_grid
from segzoo.slides.readers.array import ArraySlide
from segzoo.zoo.registry import list_models, models_at

ZOO = ["deeplabv3-monuseg", "segnet-monuseg", "unet-monuseg"]


def _config(mpp: float | None = 0.25) -> ModelConfig:
    return ModelConfig(architecture="unet", resolution=Resolution(mpp=mpp))


def _image() -> np.ndarray:
    return np.full((64, 64, 3), 200, dtype=np.uint8)


def test_models_at_reads_the_bundled_configs():
    assert models_at(0.25) == ZOO == list_models()
    assert models_at(0.27) == ZOO  # within 10%
    assert models_at(0.5) == [] and models_at(0.3) == []


def test_an_upsampled_slide_is_warned_about_naming_the_loss_and_the_zoo(caplog):
    with caplog.at_level(logging.INFO, logger="segzoo.slides.plan.grid"):
        grid, notes = working_grid(ArraySlide(_image(), mpp=0.5), _config(0.25))
    assert grid.scale == 2.0
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = record.getMessage()
    assert notes == [text]
    assert "0.5000 um/px" in text and "upsampled by 2.0x" in text and "0.25 um/px" in text
    assert "loses accuracy" in text and "fattened" in text and "merges touching" in text
    assert "no zoo model is trained at about 0.50 um/px" in text


def test_the_warning_names_the_zoo_models_at_the_slides_scale(caplog):
    with caplog.at_level(logging.WARNING, logger="segzoo.slides.plan.grid"):
        working_grid(ArraySlide(_image(), mpp=0.25), _config(0.125))  # a 40x slide, an 80x model
    assert "upsampled by 2.0x" in caplog.text
    assert f"zoo models trained at about 0.25 um/px: {', '.join(ZOO)}" in caplog.text


@pytest.mark.parametrize("mpp", [0.25, 0.252, 0.3])
def test_no_warning_at_or_near_the_models_scale(caplog, mpp):
    with caplog.at_level(logging.WARNING):
        grid, notes = working_grid(ArraySlide(_image(), mpp=mpp), _config(0.25))
    assert grid.scale < 1.5 and not caplog.records
    assert not any("loses accuracy" in note for note in notes)


def _predictor(mpp: float | None = 0.25) -> Predictor:
    def run_batch(batch: np.ndarray) -> np.ndarray:
        return np.zeros((*batch.shape[:3], 1), dtype=np.float32)

    return Predictor(run_batch, _config(mpp), runtime="test")


@pytest.mark.parametrize("mpp, side", [(0.5, "2.0x coarser"), (0.125, "2.0x finer")])
def test_predict_warns_for_an_image_far_from_the_models_scale(caplog, mpp, side):
    with caplog.at_level(logging.WARNING, logger="segzoo.predict.predictor"):
        prediction = _predictor().predict(_image(), mpp=mpp)
    assert prediction.mask.shape == (64, 64)
    [record] = caplog.records
    text = record.getMessage()
    assert f"({mpp:g} um/px)" in text and side in text and "(0.25 um/px)" in text
    assert "predicted as it is" in text and "segzoo.predict_slides resamples" in text


@pytest.mark.parametrize("predictor_mpp, mpp", [(0.25, 0.25), (0.25, 0.3), (0.25, None), (None, 0.5)])
def test_predict_is_silent_near_the_models_scale_or_when_a_scale_is_unknown(caplog, predictor_mpp, mpp):
    with caplog.at_level(logging.WARNING):
        _predictor(predictor_mpp).predict(_image(), mpp=mpp)
    assert not caplog.records


@pytest.mark.parametrize("mpp", [0, -0.5, float("nan"), "0.5", True])
def test_predict_refuses_a_bad_mpp(mpp):
    with pytest.raises(UsageError, match="mpp must be a positive number") as caught:
        _predictor().predict(_image(), mpp=mpp)
    assert caught.value.argument == "mpp"
