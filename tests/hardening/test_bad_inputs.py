"""The bad-input table: every row is one bad input to a public function or CLI verb, the exception it must raise,
and a pattern its message must contain (naming the argument and what was expected).

Rows live in ``tests/hardening/rows_<category>.py`` as ``ROWS = [(id, call, exception, pattern), ...]`` where
``call(env)`` makes the bad call (``env``: tests/hardening/conftest.py). A new package adds its own
``rows_<package>.py``; nothing here changes. After every row, no model the table loaded may hold a hook.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _load_rows() -> list[tuple]:
    rows = []
    for file in sorted(HERE.glob("rows_*.py")):
        spec = importlib.util.spec_from_file_location(f"hardening_{file.stem}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        category = file.stem.removeprefix("rows_")
        for row in module.ROWS:
            assert len(row) == 4, f"{file.name}: a row is (id, call, exception, pattern); got {row!r}"
            rows.append((f"{category}/{row[0]}", *row[1:]))
    ids = [r[0] for r in rows]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate row ids: {duplicates}"
    return rows


ROWS = _load_rows()


def _no_hooks(model) -> bool:
    modules = list(model.modules())
    return (not model._registry and not model._attached and model._registry.stop_site is None
            and all(not m._forward_hooks and not m._forward_pre_hooks for m in modules))


def test_table_size():
    assert len(ROWS) >= 150, len(ROWS)


@pytest.mark.parametrize("row_id, call, exception, pattern", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(env, row_id, call, exception, pattern):
    with pytest.raises(exception) as info:
        call(env)
    message = str(info.value.args[0]) if isinstance(info.value, KeyError) and info.value.args else str(info.value)
    assert re.search(pattern, message), f"{row_id}: message does not match {pattern!r}:\n{message}"
    for model in env.loaded_models():
        assert _no_hooks(model), f"{row_id} left a hook behind on {model!r}"
