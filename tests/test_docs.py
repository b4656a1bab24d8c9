"""The API reference builds from the docstrings with warnings as errors (mkdocs --strict)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_reference_builds_strict(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "build.py"), "--out", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    page = (tmp_path / "site" / "api" / "models" / "index.html").read_text()
    assert "run_with_cache" in page and "attention_patterns" in page
    assert not (tmp_path / "site" / "build.py").exists()
