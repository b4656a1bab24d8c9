"""Package discovery (everything else is in pyproject.toml).

The design card keeps ``probes/``, ``saes/`` and ``kernels/`` at the top of the repository; they install as
``interp.probes``, ``interp.saes`` and ``interp.kernels``. Those folders have no ``__init__.py`` (so a Python started
in the repository root can never import them as top-level packages in place of an installed distribution such as
Hugging Face's ``kernels``): each package's front module is ``interp/<name>.py``, whose ``__path__`` points at the
folder, and the folder's modules install as ``interp/<name>/*.py`` (see interp/_layout.py). Every package under these
roots is found here, so a new subpackage cannot be left out of a wheel (tests/contract/test_imports.py builds one and
checks).
"""

from setuptools import find_packages, setup

ROOTS = {"interp": "interp", "interp.probes": "probes", "interp.saes": "saes", "interp.kernels": "kernels"}

packages = []
for package, folder in ROOTS.items():
    packages += [package] + [f"{package}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS)
