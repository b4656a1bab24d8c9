"""Build the API reference (mkdocs + mkdocstrings) from the docstrings.

``python docs/build.py [--out site/]``. The package installs ``probes/``, ``saes/`` and ``kernels/`` as
``interp.probes|saes|kernels`` (front module ``interp/<name>.py``, modules in the folder: interp/_layout.py);
mkdocstrings reads sources by path, so the build first stages a tree of symlinks in which each is a plain package
under ``interp/``, then runs ``mkdocs build --strict`` (every warning is an error).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"probes": "probes", "saes": "saes", "kernels": "kernels"}


def stage(into: Path) -> Path:
    """A source tree where ``interp.probes|saes|kernels`` resolve by path; returns its root."""
    pkg = into / "interp"
    pkg.mkdir(parents=True)
    for entry in (ROOT / "interp").iterdir():
        if entry.name != "__pycache__" and entry.name.removesuffix(".py") not in MAPPED:
            (pkg / entry.name).symlink_to(entry)
    for name, folder in MAPPED.items():  # front module interp/<name>.py as the __init__ of the folder's modules
        (pkg / name).mkdir()
        (pkg / name / "__init__.py").symlink_to(ROOT / "interp" / f"{name}.py")
        for entry in (ROOT / folder).iterdir():
            if entry.name != "__pycache__":
                (pkg / name / entry.name).symlink_to(entry)
    return into


def build(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = stage(Path(tmp) / "src")
        config = (ROOT / "mkdocs.yml").read_text()
        config = config.replace("        python:\n", f"        python:\n          paths: [{src}]\n", 1)
        config += f"\ndocs_dir: {ROOT / 'docs'}\n"
        cfg_path = Path(tmp) / "mkdocs.yml"
        cfg_path.write_text(config.replace("docs_dir: docs\n", "", 1))
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(cfg_path),
                        "-d", str(out.resolve())], check=True, cwd=tmp)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "site"), help="output folder (default: site/)")
    build(Path(parser.parse_args().out))
