"""A failed load names its real cause: only a damaged SmolLM2 conversion advises deleting the cache; an ImportError,
a shadowed module or a transformers that cannot build the model says what failed and where it came from."""

import json
import os
import subprocess
import sys
import types

import pytest

import interp
from interp.errors import CheckpointError
from interp.models import smollm2
from interp.testing import make_tiny


@pytest.fixture
def fake_conversion(tmp_path, monkeypatch):
    """load_smollm2 over a cache whose "conversion" is a tiny Llama (no GGUF dequantisation)."""
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(smollm2, "_convert", lambda src, out: make_tiny("llama", out))
    model, _ = smollm2.load_smollm2()  # builds the cache folder
    return tmp_path / "cache" / "smollm2-135m-instruct-f32"


def test_a_good_conversion_loads(fake_conversion):
    model, tokenizer = smollm2.load_smollm2()
    assert model.config.num_hidden_layers == 2 and tokenizer is not None


def test_a_truncated_weight_file_says_delete(fake_conversion):
    weights = fake_conversion / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"is unreadable .*truncated.*delete that folder"):
        smollm2.load_smollm2()


def test_wrong_shapes_say_delete(fake_conversion):
    config = json.loads((fake_conversion / "config.json").read_text())
    config["intermediate_size"] += 8
    (fake_conversion / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"wrong shape.*delete that folder"):
        smollm2.load_smollm2()


def test_a_broken_config_says_delete(fake_conversion):
    (fake_conversion / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"invalid JSON.*delete that folder"):
        smollm2.load_smollm2()


def test_a_broken_tokenizer_says_delete(fake_conversion):
    (fake_conversion / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"tokenizer.json.*delete that folder"):
        smollm2.load_smollm2()


def _raise(err):
    def fail(*args, **kwargs):
        raise err
    return fail


def test_an_import_error_names_the_module_and_its_origin(fake_conversion, monkeypatch, tmp_path):
    import transformers

    shadow = tmp_path / "kernels" / "__init__.py"
    monkeypatch.setitem(sys.modules, "kernels", types.SimpleNamespace(__file__=str(shadow)))
    err = ImportError(f"cannot import name 'CUDAProperties' from 'kernels' ({shadow})", name="kernels",
                      path=str(shadow))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", _raise(err))
    with pytest.raises(ImportError) as info:
        smollm2.load_smollm2()
    text = str(info.value)
    assert "CUDAProperties" in text and f"imported from {shadow}" in text and "transformers 5." in text
    assert "delete" not in text and not isinstance(info.value, CheckpointError)
    if "kernels" in __import__("importlib.metadata").metadata.packages_distributions():
        assert "shadows it" in text


def test_a_missing_dependency_says_install(fake_conversion, monkeypatch):
    import transformers

    err = ModuleNotFoundError("No module named 'no_such_dependency_xyz'", name="no_such_dependency_xyz")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", _raise(err))
    with pytest.raises(ImportError, match=r"could not be found; install the package that provides") as info:
        smollm2.load_smollm2()
    assert "delete" not in str(info.value)


def test_a_transformers_without_the_class_is_not_the_cache(fake_conversion, monkeypatch):
    import transformers

    err = ValueError("Unrecognized configuration class LlamaConfig for this kind of AutoModel")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", _raise(err))
    with pytest.raises(ValueError, match=r"transformers 5\.\S+ \(.*\) could not build the model.*Unrecognized") as info:
        smollm2.load_smollm2()
    assert "delete" not in str(info.value) and not isinstance(info.value, CheckpointError)


def test_a_real_shadowing_folder_is_named(tmp_path, tiny_dir):
    """A folder named like an installed distribution that transformers imports, in the folder Python starts in."""
    if "kernels" not in __import__("importlib.metadata").metadata.packages_distributions():
        pytest.skip("Hugging Face's kernels distribution is not installed")
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    proc = subprocess.run([sys.executable, "-c", f"import interp; interp.load_model({str(tiny_dir('llama'))!r})"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    if proc.returncode == 0:
        pytest.skip("this transformers does not import kernels while it builds a model")
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: building the model of"), last
    assert str(tmp_path / "kernels") in last and "shadows it" in last and "delete" not in last


def test_interp_exports_checkpoint_error():
    assert issubclass(interp.errors.CheckpointError, ValueError)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_the_finiteness_check_sees_every_bad_value(value):
    import torch

    from interp.models.loading import _finite

    t = torch.randn(3, 1000)
    assert _finite(t) and _finite(torch.zeros(0)) and _finite(torch.arange(5))
    t[2, 777] = value
    assert not _finite(t)
