"""Argument checks shared by the public functions: each error names the argument and says what was expected.

A bool is never an index or a count here (``True`` is not ``1``), and a float is never an index (``1.7`` is not
position ``1``): numpy and 0-dim torch integers are accepted through ``operator.index``.
"""

from __future__ import annotations

import operator
from typing import Any

__all__ = ["check_device", "check_int", "index_list", "is_index"]


def is_index(x: Any) -> bool:
    """Whether ``x`` is an integer index: int, numpy integer, 0-dim integer tensor; never a bool."""
    if isinstance(x, bool) or type(x).__name__ == "bool_":
        return False
    if hasattr(x, "dtype") and hasattr(x, "ndim"):  # torch / numpy scalars and arrays
        if x.ndim != 0 or str(x.dtype) in ("torch.bool", "bool"):
            return False
    try:
        operator.index(x)
    except TypeError:
        return False
    return True


def _describe(x: Any) -> str:
    return f"{x!r} ({type(x).__name__})" if isinstance(x, (bool, float, str)) else repr(x)


def check_int(value: Any, arg: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int within ``[lo, hi]``; a TypeError for non-integers (bools and floats included), a
    ValueError out of range."""
    if not is_index(value):
        raise TypeError(f"{arg} must be an int; got {_describe(value)}")
    i = operator.index(value)
    if (lo is not None and i < lo) or (hi is not None and i > hi):
        want = (f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in {lo}..{hi}")
        raise ValueError(f"{arg} must be an int {want}; got {i}")
    return i


def index_list(value: Any, arg: str, *, length: int | None = None, what: str = "index") -> list[int]:
    """A list of integer indices from an int, a sequence of ints or an integer tensor/array; negative indices count
    from the end when ``length`` is given (and are bounds-checked against it). Bools and floats are refused."""
    if is_index(value):
        items = [value]
    elif hasattr(value, "dtype") and hasattr(value, "tolist"):  # torch tensor or numpy array
        kind = str(value.dtype)
        if "int" not in kind or "bool" in kind:
            raise TypeError(f"{arg} must hold integer {_plural(what)}; got a tensor of dtype {kind}")
        items = [value.tolist()] if value.ndim == 0 else list(value.reshape(-1).tolist())
    elif isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{arg} must be an int {what} or a sequence of them; got {_describe(value)}")
    else:
        items = list(value)
    out = []
    for item in items:
        if not is_index(item):
            raise TypeError(f"{arg}: {_describe(item)} is not {_article(what)} {what} (expected an int)")
        i = operator.index(item)
        if length is not None:
            if not -length <= i < length:
                raise IndexError(f"{arg}: {what} {i} is out of range; expected -{length}..{length - 1}")
            i %= length
        out.append(i)
    if not out:
        raise ValueError(f"{arg} is empty; expected at least one {what}")
    return out


def _plural(word: str) -> str:
    return {"index": "indices"}.get(word, word + "s")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def check_device(device: Any, arg: str = "device"):
    """``device`` as a ``torch.device`` that exists on this machine (a CUDA device needs CUDA and that index)."""
    import torch

    if device is None or isinstance(device, bool) or not isinstance(device, (str, torch.device)):
        raise TypeError(f"{arg} must be a device name such as 'cpu' or 'cuda:0'; got {_describe(device)}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{arg}={str(device)!r} is not a device name (expected e.g. 'cpu', 'cuda', 'cuda:1'): "
                         f"{err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{arg}={str(device)!r} but CUDA is not available on this machine "
                               "(torch.cuda.is_available() is False); use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{arg}={str(device)!r} but this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise RuntimeError(f"{arg}={str(device)!r} but MPS is not available on this machine; use device='cpu'")
    return dev
