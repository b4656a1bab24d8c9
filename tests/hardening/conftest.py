"""The ``env`` fixture of the bad-input table: tiny models (built once per session), broken copies of checkpoint
folders, a small SAE, and ``env.cli(...)`` to run a CLI verb in-process.

Rows call ``env.<thing>`` so that nothing is built until a row needs it.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import interp

_MODELS: dict[str, interp.HookedModel] = {}
_SAES: dict[tuple, object] = {}
TEXT = "\n\n".join(f"Paragraph {i}: the {'abcdefgh'[i % 8] * (i % 5 + 1)} went {i * 3} miles." for i in range(60))


class Env:
    """What the rows of the bad-input table may use (see tests/hardening/rows_*.py)."""

    def __init__(self, tiny_dir, tmp_path: Path, monkeypatch) -> None:
        self._tiny_dir, self.tmp, self._monkeypatch = tiny_dir, tmp_path, monkeypatch
        self.tokens = torch.tensor([[1, 5, 6, 7, 8, 9], [1, 9, 8, 7, 6, 5]])

    # ------------------------------------------------------------------ models
    def dir(self, arch: str) -> Path:
        """The folder of the tiny ``arch`` model (llama, gpt2, mamba, mamba2)."""
        return self._tiny_dir(arch)

    def model(self, arch: str) -> interp.HookedModel:
        if arch not in _MODELS:
            _MODELS[arch] = interp.load_model(self.dir(arch))
        return _MODELS[arch]

    llama = property(lambda self: self.model("llama"))
    gpt2 = property(lambda self: self.model("gpt2"))
    mamba = property(lambda self: self.model("mamba"))
    mamba2 = property(lambda self: self.model("mamba2"))

    @staticmethod
    def loaded_models() -> list[interp.HookedModel]:
        return list(_MODELS.values())

    # ------------------------------------------------------------------ broken checkpoint folders
    def folder(self, arch: str = "llama", *, drop: str | None = None, add: str | None = None,
               reshape: str | None = None, nan: str | None = None, weights: bytes | None = None,
               config: dict | list | None = None, config_text: str | None = None, **files: str) -> Path:
        """A copy of the tiny ``arch`` folder with one thing broken: a weight dropped / added / reshaped / set to
        nan, the weights file replaced by raw bytes, config.json replaced, or other files (``name=text``)."""
        out = self.tmp / f"broken_{arch}"
        shutil.copytree(self.dir(arch), out)
        weights_file = out / "model.safetensors"
        if drop or add or reshape or nan:
            sd = load_file(weights_file)
            if drop:
                sd.pop(drop)
            if add:
                sd[add] = torch.zeros(3)
            if reshape:
                sd[reshape] = torch.zeros(*[s + 1 for s in sd[reshape].shape])
            if nan:
                sd[nan] = sd[nan].clone()
                sd[nan].view(-1)[0] = float("nan")
            save_file(sd, weights_file, metadata={"format": "pt"})
        if weights is not None:
            weights_file.write_bytes(weights)
        if config is not None:
            (out / "config.json").write_text(json.dumps(config))
        if config_text is not None:
            (out / "config.json").write_text(config_text)
        for name, text in files.items():
            (out / name.replace("__", ".")).write_text(text)
        return out

    def weights_bytes(self, arch: str = "llama") -> bytes:
        return (self.dir(arch) / "model.safetensors").read_bytes()

    def config(self, arch: str = "llama", **changes) -> dict:
        cfg = json.loads((self.dir(arch) / "config.json").read_text())
        cfg.update(changes)
        return cfg

    # ------------------------------------------------------------------ SAEs, files
    def sae(self, d_in: int = 64, dtype: torch.dtype = torch.float32):
        key = (d_in, dtype)
        if key not in _SAES:
            _SAES[key] = interp.saes.build_sae("topk", d_in, 128, k=4, dtype=dtype)
        return _SAES[key]

    def sae_dir(self, d_in: int = 64, **broken: str | bytes) -> Path:
        """A saved SAE folder; ``broken``: file name -> replacement content (``cfg__json=...``)."""
        out = self.tmp / f"sae_{d_in}"
        if not out.exists():
            self.sae(d_in).save(out)
        for name, content in broken.items():
            path = out / name.replace("__", ".")
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return out

    def text_file(self, text: str = TEXT, name: str = "corpus.txt") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return path

    def setenv(self, name: str, value: str) -> Env:
        self._monkeypatch.setenv(name, value)
        return self

    # ------------------------------------------------------------------ CLI
    def cli(self, *argv: str) -> None:
        """Run ``interp ARGV`` in-process; a non-zero exit raises SystemExit carrying the last stderr line (the CLI
        must end every error in one line: a traceback fails the row)."""
        from interp.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main([str(a) for a in argv])
            except SystemExit as exit_:  # argparse's own errors (usage + one line)
                rc = exit_.code
        text = err.getvalue()
        assert "Traceback" not in text, text
        if rc:
            lines = [line for line in text.splitlines() if line.strip()]
            raise SystemExit(f"rc={rc}: {lines[-1] if lines else ''}")


@pytest.fixture
def env(tiny_dir, tmp_path, monkeypatch) -> Env:
    monkeypatch.delenv("INTERP_MEMORY_BUDGET", raising=False)
    monkeypatch.delenv("INTERP_SAE_KERNEL", raising=False)
    return Env(tiny_dir, tmp_path, monkeypatch)
