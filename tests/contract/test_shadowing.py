"""No folder of the repository shadows an installed distribution, whatever folder Python starts in.

The card keeps ``kernels/``, ``saes/`` and ``probes/`` at the top of the repository; Hugging Face's ``kernels``
distribution (which transformers imports while it builds any model) has the same top-level name. Those folders hold
no ``__init__.py`` (interp/_layout.py), so from the repository root they are at most namespace portions, which the
import system ranks below any installed regular package or module.
"""

import importlib.metadata
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CARD_FOLDERS = ("kernels", "saes", "probes")


def _run(code: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def test_only_interp_is_a_regular_package_at_the_root():
    packages = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert packages == ["interp"], packages
    modules = sorted(p.name for p in ROOT.glob("*.py"))
    assert modules == ["setup.py"], modules
    for name in CARD_FOLDERS:
        assert (ROOT / name).is_dir() and not (ROOT / name / "__init__.py").exists()


def test_no_installed_top_level_name_resolves_into_the_repository():
    """Every top-level import name of every installed distribution (except interp itself) is looked up from a Python
    started in the repository root; none may resolve to a file or folder of the repository (the venv, which may sit
    inside the checkout, aside)."""
    code = (
        "import importlib.metadata, importlib.util, json, sys\n"
        "bad = {}\n"
        "for name, dists in importlib.metadata.packages_distributions().items():\n"
        "    if not name.isidentifier() or set(dists) == {'interp'}:\n"
        "        continue\n"
        "    try:\n"
        "        spec = importlib.util.find_spec(name)\n"
        "    except (ImportError, ValueError):\n"
        "        continue\n"
        "    places = [spec.origin or ''] + list(spec.submodule_search_locations or []) if spec else []\n"
        "    inside = [p for p in places if p and p.startswith(sys.argv[1]) and not p.startswith(sys.prefix)]\n"
        "    if inside:\n"
        "        bad[name] = (dists, inside)\n"
        "print(json.dumps(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT) + "/"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {}
    names = importlib.metadata.packages_distributions()
    assert len(names) > 50  # the enumeration saw the environment (torch, transformers, ... are installed)


def test_huggingface_kernels_imports_from_the_root():
    if "kernels" not in importlib.metadata.packages_distributions():
        pytest.skip("Hugging Face's kernels distribution is not installed")
    proc = _run("import interp, kernels, interp.kernels as ours\n"
                "print(kernels.__file__); print(ours.__path__[0])\n"
                "from kernels import Mode\n", ROOT)
    assert proc.returncode == 0, proc.stderr
    theirs, ours = proc.stdout.split()
    assert not Path(theirs).is_relative_to(ROOT / "kernels") and "site-packages" in theirs
    assert Path(ours) == ROOT / "kernels"


@pytest.mark.parametrize("cwd", ["root", "tests", "elsewhere"])
def test_a_tiny_model_loads_wherever_python_starts(cwd, tiny_dir, tmp_path):
    folder = tiny_dir("llama")
    where = {"root": ROOT, "tests": ROOT / "tests", "elsewhere": tmp_path}[cwd]
    proc = _run("import sys, interp, torch\n"
                f"m = interp.load_model({str(folder)!r})\n"
                "out = m(torch.tensor([[1, 2, 3]]))\n"
                "import interp.saes, interp.probes, interp.kernels\n"
                "print(tuple(out.shape), interp.kernels.sparse_encode.__module__)\n", where)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "interp.kernels.sparse_autograd"


@pytest.mark.integration
def test_smollm2_loads_from_the_root():
    proc = _run("import interp, kernels\nm = interp.load_model('smollm2')\n"
                "print(kernels.__file__)\nprint(m.to_string(m('The capital of France is')[0, -1].argmax()))\n", ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *_, theirs, answer = proc.stdout.splitlines()
    assert not Path(theirs).is_relative_to(ROOT / "kernels") and answer == " Paris"


def test_the_wheel_layout_imports(tmp_path):
    """A wheel puts the folders' modules in interp/<name>/ beside the front module interp/<name>.py."""
    src = tmp_path / "src"
    import shutil

    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info",
                                                             "__pycache__", "runs", "notebooks", "tests", "bench"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True)
    site = tmp_path / "site"
    zipfile.ZipFile(next(tmp_path.glob("interp-*.whl"))).extractall(site)
    for name in CARD_FOLDERS:
        assert (site / "interp" / f"{name}.py").is_file() and not (site / "interp" / name / "__init__.py").exists()
    proc = _run("import interp, interp.kernels, interp.saes, interp.probes, kernels\n"
                "from interp.kernels import native\n"
                "print(interp.__file__, interp.kernels.__path__[0], native.__file__, interp.saes.load.__module__)\n",
                tmp_path, PYTHONPATH=str(site))
    assert proc.returncode == 0, proc.stderr[-3000:]
    init, kernels_path, native, load_module = proc.stdout.split()
    assert init.startswith(str(site)) and Path(kernels_path) == site / "interp" / "kernels"
    assert native.startswith(str(site)) and load_module == "interp.saes.io"


def _collected(cwd: Path, *args: str) -> list[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert len(ids) > 1000, proc.stdout[-2000:]
    return ids


def test_the_same_tests_wherever_pytest_starts(tmp_path):
    """From the repository root, from tests/, and from another folder with --rootdir: the same test ids."""
    root = _collected(ROOT)
    assert _collected(ROOT / "tests") == root
    assert _collected(tmp_path, "--rootdir", str(ROOT), str(ROOT / "tests")) == root
