"""README.md's generated tables (zoo, results, benchmark) match the committed files."""

from pathlib import Path

from segzoo.zoo.readme import render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_are_generated_from_committed_files():
    current = (ROOT / "README.md").read_text()
    assert render(current, ROOT) == current, "README.md is out of date: run python scripts/update_readme.py"


def test_results_rows_state_the_scale_error_rates_and_time_per_40x_tile_of_tissue(tmp_path):
    import json

    from segzoo.zoo.readme import results_table

    metrics = {"micro": {k: 0.5 for k in ("accuracy", "precision", "recall", "dice", "iou")},
               "mean": {"loss": 0.2, "aji": 0.6, "pq": 0.55}, "params": 2_000_000,
               "instance_errors": {"split_rate": 0.01, "merge_rate": 0.02, "unmatched_rate": 0.2}}
    for name, mpp in (("m40", 0.25), ("m20", 0.5)):
        folder = tmp_path / "model_cards" / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "config.json").write_text(json.dumps({"resolution": {"mpp": mpp}}))
    tile = [{"model": m, "runtime": r, "median_ms": ms} for m in ("m40", "m20")
            for r, ms in (("keras", 2000.0), ("onnx-fp32", 1000.0), ("onnx-int8", 800.0))]
    (tmp_path / "benchmark.json").write_text(json.dumps({"tile": tile}))
    rows = {line.split(" | ")[0][2:]: line for line in results_table(tmp_path).splitlines()[2:]}
    assert "| 0.25 |" in rows["m40"] and rows["m40"].endswith("| 2000 / 1000 / 800 |")
    # the 20x model's 1000x1000 tile holds 4x the tissue: a quarter of its time per 40x tile
    assert "| 0.5 |" in rows["m20"] and rows["m20"].endswith("| 500 / 250 / 200 |")
    assert "| 0.010 / 0.020 / 0.200 |" in rows["m20"]
