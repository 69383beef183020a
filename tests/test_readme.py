"""README.md's generated tables (zoo, results, benchmark) match the committed files."""

from pathlib import Path

from segzoo.zoo.readme import render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_are_generated_from_committed_files():
    current = (ROOT / "README.md").read_text()
    assert render(current, ROOT) == current, "README.md is out of date: run python scripts/update_readme.py"
