"""segzoo.evaluation.benchmark's summary and tables (the measurements themselves are not unit-tested:
speed targets live in the benchmark, not in timed tests), and one measurement in a child process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segzoo.evaluation import benchmark

ROOT = Path(__file__).resolve().parents[1]


def _measurement(runtime: str, times: list[float], forward: list[float], rss: float) -> dict:
    return {"model": "m", "runtime": runtime, "size": "100x100", "padded": [112, 112], "pixels": 10_000,
            "times_ms": times, "forward_times_ms": forward, "peak_rss_mb": rss}


def test_rounds_are_pooled_into_one_row_with_the_largest_peak_rss():
    row = benchmark.summarize([_measurement("keras", [10, 30], [5, 7], 100.0),
                               _measurement("keras", [20, 40, 50], [6, 8, 9], 300.0)])
    assert row["median_ms"] == 30 and row["p95_ms"] == 50
    assert row["forward_ms"] == 7 and row["peak_rss_mb"] == 300.0
    assert row["mp_per_s"] == pytest.approx(10_000 / 1e3 / 30)


def test_roofline_uses_the_faster_matmul_library_and_names_the_machine():
    rows = [benchmark.summarize([_measurement("keras", [30], [20], 1.0)]),
            benchmark.summarize([_measurement("onnx-fp32", [15], [10], 1.0)])]
    meta = {"cpu_count": 2, "machine": "Test CPU, AVX-512", "python": "3.11", "repeats": 1, "warmup": 1,
            "rounds": 1, "gflop": {"m": 2.0},
            "sgemm_gflops_by_library": {"numpy": 200.0, "onnxruntime": 400.0}}
    table = benchmark.markdown(rows, [], meta)
    assert "Test CPU, AVX-512" in table and "numpy 200, onnxruntime 400" in table
    assert "| m | onnx-fp32 | 100x100 | 15 | 15 | 0.67 | 1 | 2.00x | 10 | 2.00x | 200 |" in table
    # 2 GFLOP at 400 GFLOP/s is 5 ms; the runtime took 10 ms: half the matmul speed.
    assert "| m | 112x112 | 2.0 | 5 | 50% |" in table


def test_post_processing_table_sets_the_model_s_own_beside_the_watershed():
    measurement = {**_measurement("onnx-int8", [30], [20], 1.0), "post_times_ms": [4, 6, 5],
                   "transform_times_ms": [15, 16, 14], "instance_map": "distance"}
    row = benchmark.summarize([measurement])
    assert row["post_ms"] == 5 and row["transform_ms"] == 15
    meta = {"cpu_count": 2, "machine": "Test CPU", "python": "3.11", "repeats": 1, "warmup": 1, "rounds": 1}
    assert "| m | onnx-int8 | 20 | 5 | distance | 15 | 0.33 |" in benchmark.markdown([row], [], meta)


def test_matmul_speed_is_measured_for_both_libraries():
    speeds = benchmark.sgemm_gflops(size=128, repeats=1)
    assert set(speeds) == {"numpy", "onnxruntime"} and all(v > 0 for v in speeds.values())


def test_cpu_name_is_never_empty():
    assert benchmark.cpu_name().strip()


def test_run_meta_names_no_machine_and_records_the_software(tmp_path, monkeypatch):
    """benchmark.json ships: the tile and command paths are relative to the working folder, and
    the package versions and git commit are recorded and shown in the table's header."""
    import segzoo

    monkeypatch.chdir(tmp_path)
    image = tmp_path.parent / "shared" / "monuseg" / "test" / "images" / "a.tif"
    argv = ["--image", str(image), "--json", str(tmp_path / "b.json")]
    meta = benchmark.run_meta(image, argv, repeats=5, rounds=3, warmup=1)
    assert meta["image"] == "../shared/monuseg/test/images/a.tif"
    assert meta["command"] == "python scripts/benchmark.py --image ../shared/monuseg/test/images/a.tif --json b.json"
    assert meta["environment"]["packages"]["segzoo"] == segzoo.__version__
    assert meta["environment"]["packages"]["onnxruntime"]
    if (ROOT / ".git").exists():
        assert len(meta["environment"]["git_commit"]) == 40
    meta.update(gflop={}, sgemm_gflops_by_library={})
    header = benchmark.markdown([], [], meta).splitlines()[0]
    assert f"segzoo {segzoo.__version__}" in header and "git commit" in header


def test_shipped_benchmark_md_is_rendered_from_benchmark_json():
    from segzoo.evaluation.slide_benchmark import slide_markdown

    data = json.loads((ROOT / "benchmark.json").read_text())
    expected = benchmark.markdown(data["tile"], data["large"], data["meta"])
    if data.get("slide"):
        expected += "\n" + slide_markdown(data["slide"], data["meta"])
    assert expected == (ROOT / "benchmark.md").read_text(), "re-render benchmark.md from benchmark.json"


def test_one_measurement_runs_in_its_own_process(tmp_path):
    """run_child measures a (model, runtime) in a fresh process: the int8 zoo model on a crop of
    the sample image, with one timed prediction per repeat and the network alone."""
    from PIL import Image

    from segzoo.io.images import read_image, sample_image_path
    from segzoo.zoo.registry import bundled_folder

    image = tmp_path / "tile.png"
    Image.fromarray(read_image(sample_image_path())[:96, :128]).save(image)
    row = benchmark.run_child("unet-monuseg", bundled_folder("unet-monuseg"), "onnx-int8", image, repeats=2, warmup=0)
    assert row is not None
    assert row["model"] == "unet-monuseg" and row["runtime"] == "onnx-int8" and row["size"] == "128x96"
    assert len(row["times_ms"]) == len(row["forward_times_ms"]) == 2 and row["peak_rss_mb"] > 0
    assert row["padded"] == [96, 128]
    # the instance post-processing alone, the model's own and the distance-transform watershed
    assert len(row["post_times_ms"]) == len(row["transform_times_ms"]) == 2 and row["instance_map"] is None
