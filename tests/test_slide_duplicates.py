"""The slide outputs never hold a nucleus twice: outlines of neighbouring chunks that overlap by more
than half of the smaller one are written once, the earlier chunk's (segzoo.slides.results.outputs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from slide_fixtures import predict_one_slide

from segzoo.slides.plan.chunks import Chunk
from segzoo.slides.plan.targets import COLUMNS, output_paths
from segzoo.slides.results.chunk_result import ChunkResult
from segzoo.slides.results.outputs import write_outputs

BUNDLED_UNET = Path(__file__).resolve().parents[1] / "segzoo" / "bundled" / "unet-monuseg"


def _square(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """The closed ring around pixels x0 <= x < x1, y0 <= y < y1 (pixel centres at integers)."""
    a, b, c, d = x0 - 0.5, y0 - 0.5, x1 - 0.5, y1 - 0.5
    return np.array([[a, b], [c, b], [c, d], [a, d], [a, b]])


def _result(chunk: Chunk, boxes: list[tuple[int, int, int, int]]) -> ChunkResult:
    columns = {name: [] for name in COLUMNS}
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        values = {"area": (x1 - x0) * (y1 - y0), "area_um2": (x1 - x0) * (y1 - y0) * 0.0625,
                  "centroid_x": (x0 + x1 - 1) / 2, "centroid_y": (y0 + y1 - 1) / 2, "bbox_x0": x0, "bbox_y0": y0,
                  "bbox_x1": x1, "bbox_y1": y1, "mean_r": 100.0 + k, "mean_g": 50.0, "mean_b": 150.0, "mean_prob": 0.9}
        for name in COLUMNS:
            columns[name].append(values[name])
    columns = {name: np.asarray(v, np.int64 if name == "area" or name.startswith("bbox") else np.float64)
               for name, v in columns.items()}
    rings = [_square(*box) for box in boxes]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rings])]).astype(np.int64)
    return ChunkResult(chunk, columns, offsets, np.concatenate(rings) if rings else np.zeros((0, 2)))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_nucleus_found_by_two_neighbouring_chunks_is_written_once(tmp_path):
    """Chunks (0, 0) and (0, 1) of 64 px cores read with 32 px halos, and (1, 0) below: the nucleus
    both (0, 0) and (0, 1) hold is written once (the earlier chunk's, with its measurements), as is
    one (1, 0) finds again across the row border; outlines sharing 30% of their pixels both stay."""
    a, b = Chunk(0, 0, (0, 0, 64, 64), (0, 0, 96, 96)), Chunk(0, 1, (64, 0, 128, 64), (32, 0, 128, 96))
    c = Chunk(1, 0, (0, 64, 64, 128), (0, 32, 96, 128))
    same, other = (58, 20, 70, 30), (50, 40, 60, 50)  # `same` straddles the border x = 64
    partial = (57, 40, 67, 50)  # shares columns 57-59 of `other`: 30 of its 100 pixels
    below = (20, 58, 30, 66)
    below_again = (21, 59, 31, 67)  # 81 of 80 and 80 pixels shared
    results = [_result(a, [same, other, below]), _result(b, [same, partial]), _result(c, [below_again, (40, 100, 50, 110)])]
    targets = output_paths(tmp_path, "s", tissue=False)
    counts = write_outputs(targets, iter(results), np.zeros((128, 128, 3), np.uint8), 1.0)
    assert counts == (5, 2) and counts.nuclei == 5 and counts.duplicates == 2
    rows = _rows(targets["csv"])
    assert [r["label"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [(r["bbox_x0"], r["mean_r"]) for r in rows] == [("58", "100.0"), ("50", "101.0"), ("20", "102.0"),
                                                            ("57", "101.0"), ("40", "101.0")]
    features = json.loads(targets["geojson"].read_text())["features"]
    assert [f["id"] for f in features] == [f"nucleus-{i}" for i in range(1, 6)]
    # no duplicates: the outputs are those of the plain stream
    plain = output_paths(tmp_path / "plain", "s", tissue=False)
    assert write_outputs(plain, iter(results[:1]), np.zeros((128, 128, 3), np.uint8), 1.0) == (3, 0)


def test_remembered_outlines_are_forgotten_once_no_read_box_reaches_them(tmp_path, monkeypatch):
    """Only outlines near a core's right or bottom border are remembered, and only until a chunk row
    starts below them (cores of 64 px, 16 px halos): row 0's nucleus by its bottom border is
    remembered until row 2, whose read boxes start at y 112; those in the middle of a core never are."""
    from segzoo.slides.results import outputs

    chunks = [Chunk(r, 0, (0, 64 * r, 64, 64 * r + 64), (0, max(64 * r - 16, 0), 64, 64 * r + 80)) for r in range(3)]
    results = [_result(chunks[0], [(20, 56, 30, 66), (20, 20, 30, 30)]), _result(chunks[1], [(20, 90, 30, 100)]),
               _result(chunks[2], [(20, 56 + 128, 30, 66 + 128)])]
    remembered = []
    keep = outputs._WrittenNearBorders.keep

    def spy(self, result):
        kept = keep(self, result)
        remembered.append(self.boxes[:, 1].tolist())
        return kept

    monkeypatch.setattr(outputs._WrittenNearBorders, "keep", spy)
    counts = write_outputs(output_paths(tmp_path, "s", tissue=False), iter(results), np.zeros((192, 64, 3), np.uint8), 1.0)
    assert counts == (4, 0)
    assert remembered == [[56], [56], [184]]


def test_a_model_whose_chunks_disagree_gets_no_nucleus_twice(tmp_path):
    """A fake network whose discs sit on a lattice anchored at its input's first pixel (not
    translation-equivariant): neighbouring chunks see the same nucleus a few pixels apart, with
    its centroid on either side of their border. Written, no two outlines overlap by half."""
    from skimage.draw import polygon

    from segzoo.config import ModelConfig
    from segzoo.predict.predictor import Predictor
    from segzoo.slides.readers.array import ArraySlide

    config = ModelConfig.load(BUNDLED_UNET)
    config.resolution.mpp = 0.25
    # Disc centres at 3 + 31 k px from the input's first pixel. Read boxes start at 0, 96 and 224:
    # the first chunk's disc at 127 is the second's at 130, the second's at 254 the third's at 258.
    spacing, phase, radius = 31, 3, 10

    def run_batch(batch: np.ndarray) -> np.ndarray:
        n, h, w = batch.shape[:3]
        yy, xx = np.mgrid[0:h, 0:w]
        dy, dx = ((yy - phase + 15) % spacing) - 15, ((xx - phase + 15) % spacing) - 15
        disc = (dx * dx + dy * dy <= radius * radius).astype(np.float32)
        return np.repeat(disc[None, :, :, None], n, axis=0)

    predictor = Predictor(run_batch, config, runtime="onnx")
    image = np.full((384, 384, 3), 200, np.uint8)
    summary = predict_one_slide(predictor, ArraySlide(image, mpp=0.25), tmp_path, chunk_size=128, halo=32,
                                tissue=False, progress=False, keep_chunks=True, name="s")
    chunk_counts = sum(ChunkResult.load(p).count for p in (tmp_path / "s.segzoo-chunks").glob("chunk_*.npz"))
    assert summary.duplicates_dropped > 5 and summary.nuclei + summary.duplicates_dropped == chunk_counts
    features = json.loads(summary.outputs["geojson"].read_text())["features"]
    assert len(features) == summary.nuclei == len(_rows(summary.outputs["csv"]))
    masks = []
    for f in features:
        ring = np.array(f["geometry"]["coordinates"][0])
        mask = np.zeros(image.shape[:2], bool)
        mask[polygon(ring[:, 1], ring[:, 0], mask.shape)] = True
        masks.append(mask)
    masks = np.array(masks).reshape(len(masks), -1).astype(np.int32)
    shared = masks @ masks.T
    smaller = np.minimum.outer(masks.sum(1), masks.sum(1))
    np.fill_diagonal(shared, 0)
    assert (2 * shared <= smaller).all()
