"""The whole-slide accuracy benchmark (segzoo.evaluation.slide_accuracy) on a small synthetic test
folder: the mosaic, its 20x copy, scoring GeoJSON outlines per tile against the XML truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segzoo.evaluation.slide_accuracy import build_truth_slides, geojson_labels, score_tiles, slide_accuracy


@pytest.fixture(scope="module")
def truth_slides(tmp_path_factory):
    from conftest import write_monuseg_folder

    root = tmp_path_factory.mktemp("accuracy")
    data = write_monuseg_folder(root / "test", n=3, size=160)
    return data, build_truth_slides(data, root / "slides", columns=2)


def test_perfect_outlines_score_one_and_a_shift_scores_less(truth_slides, tmp_path):
    from segzoo.datasets.monuseg import discover_samples, read_xml_regions

    data, info = truth_slides
    features = []
    for (stem, x, y), sample in zip(info["tiles"], discover_samples(data)):
        for poly in read_xml_regions(sample.annotation):
            ring = (poly + (x, y)).tolist()
            features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]}})
    path = tmp_path / "truth.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    labels = geojson_labels(path, tuple(info["shape"]))
    perfect = score_tiles(labels, data, info["tiles"])
    assert perfect["aji"] == pytest.approx(1.0) and perfect["dice"] == pytest.approx(1.0)
    shifted = score_tiles(np.roll(labels, 3, axis=1), data, info["tiles"])
    assert shifted["aji"] < 0.8  # the score can fail
    # a 20x run's outlines (level-0 points at half the scale) come back on the 40x grid
    half = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[(px + 0.5) / 2 - 0.5, (py + 0.5) / 2 - 0.5] for px, py in f["geometry"]["coordinates"][0]]]}}
        for f in features]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": half}))
    assert score_tiles(geojson_labels(path, tuple(info["shape"]), 2.0), data, info["tiles"])["aji"] > 0.99


def test_a_model_on_the_40x_slide_and_its_20x_copy(truth_slides, tmp_path):
    import segzoo

    data, info = truth_slides
    predictor = segzoo.load("unet-monuseg", precision="int8")
    at_40x = slide_accuracy(predictor, info["40x"], info, data, tmp_path / "40x", tissue=False)
    at_20x = slide_accuracy(predictor, info["20x"], info, data, tmp_path / "20x", tissue=False)
    assert at_40x["slide"] == "truth-40x.svs" and len(at_40x["per_tile"]) == 3
    assert 0 < at_40x["aji"] <= 1 and at_40x["nuclei"] > 0 and 0 <= at_20x["aji"] <= 1, (at_40x, at_20x)
