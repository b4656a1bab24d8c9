"""Atomic writes leave either the old content or the new, never a half-written file or folder."""

import json

import pytest
import torch
from safetensors.torch import load_file

from interp.atomic import atomic_dir, atomic_save_safetensors, atomic_write_json


def test_atomic_dir_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_keeps_old_content_on_error(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_files(tmp_path):
    atomic_write_json({"x": 1}, tmp_path / "f.json")
    assert json.loads((tmp_path / "f.json").read_text()) == {"x": 1}
    atomic_save_safetensors({"w": torch.arange(3)}, tmp_path / "w.safetensors", metadata={"k": "v"})
    assert torch.equal(load_file(tmp_path / "w.safetensors")["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json", "w.safetensors"]
