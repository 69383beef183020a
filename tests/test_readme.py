"""README.md's generated tables (zoo, results, benchmark) match the committed files."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_are_generated_from_committed_files():
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + check.stdout
