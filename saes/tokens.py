"""Token sources for activation stores and SAE evaluation: texts packed into fixed-length contexts, token files, and a
built-in demo corpus (the standard library's docstrings) that needs no download."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from interp.checks import check_int
from interp.files import check_safetensors

__all__ = ["builtin_corpus", "load_tokens", "pack_texts"]

_SKIP_STDLIB_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "ensurepip", "turtledemo", "__pycache__"}


def builtin_corpus(name: str = "stdlib-docs", max_chars: int = 4_000_000) -> list[str]:
    """Demo text that needs no download. ``stdlib-docs``: the docstrings (>= 200 characters) of the modules,
    classes and functions of the running Python's standard library, in sorted file order (so the corpus depends
    on the Python version; about 2-3 M characters for 3.11)."""
    import ast
    import sysconfig

    if name != "stdlib-docs":
        raise ValueError(f"unknown builtin corpus {name!r}; available: 'stdlib-docs'")
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not _SKIP_STDLIB_DIRS & set(p.relative_to(root).parts[:-1]))
    texts, total = [], 0
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 200:
                    texts.append(doc)
                    total += len(doc)
        if total >= max_chars:
            break
    return texts


def pack_texts(texts: list[str], tokenizer, context_length: int) -> Tensor:
    """Tokenise documents, join them with EOS, and cut the stream into rows of ``context_length`` tokens, each
    starting with BOS when the tokenizer has one. Returns ``LongTensor[n_seq, context_length]``."""
    if tokenizer is None:
        raise ValueError("text token sources need a model with a tokenizer; pass token ids instead")
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    check_int(context_length, "context_length", lo=2 if bos is not None else 1)
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        if eos is not None:
            stream.append(eos)
    width = context_length - (bos is not None)
    n = len(stream) // width
    if n == 0:
        raise ValueError(f"the texts give {len(stream)} tokens, fewer than one context of {context_length}")
    rows = torch.tensor(stream[: n * width], dtype=torch.long).view(n, width)
    if bos is not None:
        rows = torch.cat([torch.full((n, 1), bos, dtype=torch.long), rows], dim=1)
    return rows


def load_tokens(source, tokenizer, context_length: int) -> Tensor:
    """Token rows ``LongTensor[n_seq, context_length]`` from a token source:

    - a list of strings (packed by ``pack_texts``);
    - a path to a ``.txt`` file (documents separated by blank lines) or ``builtin:stdlib-docs``;
    - a path to a ``.safetensors`` file with a ``tokens`` tensor, or a LongTensor: ``[n_seq, seq_len]`` rows are
      cut into ``seq_len // context_length`` contexts each, a flat ``[n]`` stream into ``n // context_length``.
    """
    check_int(context_length, "context_length", lo=1)
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("dataset is an empty list; expected texts (a list of strings) or token ids")
        if not all(isinstance(t, str) for t in source):
            bad = next(t for t in source if not isinstance(t, str))
            raise TypeError(f"dataset: a list must hold only strings (texts); got a {type(bad).__name__} in it")
        return pack_texts(list(source), tokenizer, context_length)
    if isinstance(source, (str, Path)):
        text = str(source)
        if text.startswith("builtin:"):
            return pack_texts(builtin_corpus(text.removeprefix("builtin:")), tokenizer, context_length)
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"dataset: no file at {path} (expected a .txt or .safetensors file)")
        if path.suffix == ".safetensors":
            keys = check_safetensors(path)
            if "tokens" not in keys:
                raise KeyError(f"dataset: {path} has no 'tokens' tensor; it holds {keys}")
            with safe_open(str(path), framework="pt") as f:
                source = f.get_tensor("tokens")
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"dataset: {path} is not UTF-8 text ({err.reason} at byte {err.start}); expected a "
                                 ".txt file of documents separated by blank lines, or a .safetensors file of "
                                 "tokens") from None
            docs = [d.strip() for d in text.split("\n\n") if d.strip()]
            if not docs:
                raise ValueError(f"dataset: {path} holds no text")
            return pack_texts(docs, tokenizer, context_length)
    if not isinstance(source, Tensor):
        raise TypeError(f"token source must be a list of strings, a path or a LongTensor; got {type(source).__name__}")
    if source.is_floating_point() or source.is_complex() or source.dtype == torch.bool or source.ndim not in (1, 2):
        raise ValueError(f"tokens must be an integer tensor [n] or [n_seq, seq_len]; got {source.dtype} "
                         f"{tuple(source.shape)}")
    rows = source.reshape(1, -1) if source.ndim == 1 else source
    per_row = rows.shape[1] // context_length
    if per_row == 0 or rows.shape[0] == 0:
        raise ValueError(f"tokens of shape {tuple(source.shape)} hold no context of length {context_length}")
    return rows[:, : per_row * context_length].reshape(-1, context_length).long()
