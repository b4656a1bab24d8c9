"""``import interp`` is light, every subpackage is reachable from it, and the wheel holds every subpackage."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lazy_subpackages():
    code = (
        "import sys, interp\n"
        "heavy = [m for m in ('torch', 'interp.mamba', 'interp.saes', 'interp.probes', 'interp.zoo', 'transformers')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "for name in ('mamba', 'saes', 'probes', 'zoo', 'kernels', 'models'):\n"
        "    assert getattr(interp, name).__name__ == 'interp.' + name\n"
        "assert interp.load_model and interp.HookedModel and interp.CapabilityError\n"
        "try:\n    interp.nope\nexcept AttributeError as e:\n    assert 'nope' in str(e)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def _source_packages() -> set[str]:
    """Every package of the checkout: interp's subpackages, and interp.probes|saes|kernels (front module
    interp/<name>.py, modules in the top-level folder, which has no __init__.py) with their subpackages."""
    out = {".".join(("interp", *init.parent.relative_to(ROOT / "interp").parts))
           for init in (ROOT / "interp").rglob("__init__.py")}
    for name in ("probes", "saes", "kernels"):
        out.add(f"interp.{name}")
        out |= {".".join((f"interp.{name}", *i.parent.relative_to(ROOT / name).parts))
                for i in (ROOT / name).rglob("*/__init__.py")}
    return out


def test_wheel_holds_every_subpackage(tmp_path):
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info/ beside the sources
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info",
                                                             "__pycache__", "runs", "notebooks", "tests", "bench"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True)
    wheel = next(tmp_path.glob("interp-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {n[: -len("/__init__.py")].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    for name in ("probes", "saes", "kernels"):  # a front module and its folder of modules
        if f"interp/{name}.py" in names and any(n.startswith(f"interp/{name}/") for n in names):
            packaged.add(f"interp.{name}")
    assert _source_packages() <= packaged, _source_packages() - packaged
    assert any(n.endswith("scan_native.c") for n in names)
    assert any(n.endswith("mamba1-facts/model.safetensors") for n in names)
