"""The ``interp`` command line."""

import subprocess
import sys

import pytest

from interp.cli import main


def test_info_tiny(tiny_dir, capsys):
    assert main(["info", str(tiny_dir("llama"))]) == 0
    out = capsys.readouterr().out
    assert "layers    2" in out and "kv-heads  2" in out and "heads     4" in out
    assert "blocks.0.attn.hook_pattern" in out


def test_info_bad_spec(capsys):
    assert main(["info", "no-such-model"]) == 2
    assert "unknown model spec 'no-such-model'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["info", "--help"]])
def test_help(argv):
    out = subprocess.run([sys.executable, "-m", "interp.cli", *argv], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: interp" in out.stdout


@pytest.mark.integration
def test_info_smollm2():
    out = subprocess.run([sys.executable, "-m", "interp.cli", "info", "smollm2"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for line in ("layers    30", "heads     9", "kv-heads  3", "d_model   576"):
        assert line in out.stdout
