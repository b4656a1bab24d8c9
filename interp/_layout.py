"""Where the card's top-level folders live, so that none of them is ever an importable top-level package.

The design card keeps ``kernels/``, ``saes/`` and ``probes/`` at the top of the repository and installs them as
``interp.kernels|saes|probes``. Those folders hold no ``__init__.py``: seen from a Python started in the repository
root (``python -m pytest``, a REPL, a Jupyter kernel), each is at most a PEP 420 namespace portion, and the import
system always prefers a regular package or module of the same name anywhere on ``sys.path`` (Hugging Face's
``kernels``, which transformers imports, or any future ``saes`` / ``probes`` distribution). Each package's front
module lives inside ``interp`` instead (``interp/kernels.py``, ...) and points its ``__path__`` at the folder:

- in a wheel, setuptools copies the folder's modules to ``interp/kernels/`` beside ``interp/kernels.py``;
- in a checkout (editable install, or ``interp`` on ``sys.path``), the folder is ``kernels/`` beside ``interp/``.

tests/contract/test_shadowing.py checks both layouts and every installed distribution's top-level names.
"""

from __future__ import annotations

from pathlib import Path

# folder -> a module that only our folder has (so a checkout's sibling folder is told from another package's)
FOLDERS = {"kernels": "sparse_autograd.py", "saes": "splice.py", "probes": "steering.py"}


def package_path(front_module: str, folder: str) -> list[str]:
    """The ``__path__`` of ``interp.<folder>``, given the front module's ``__file__``."""
    here = Path(front_module).resolve().parent  # the interp package
    marker = FOLDERS[folder]
    installed, checkout = here / folder, here.parent / folder
    if (installed / marker).is_file():
        return [str(installed)]
    ours = (checkout / marker).is_file() and not (checkout / "__init__.py").exists()
    if ours and (here.parent / "setup.py").is_file():
        return [str(checkout)]
    raise ImportError(f"interp.{folder}: its modules are neither in {installed} (a wheel install) nor in {checkout} "
                      f"(a checkout); reinstall interp (pip install -e . from the repository root)")
