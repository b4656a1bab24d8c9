"""Text <-> token handling shared by every hooked model: tokenising with attention masks, validating ids."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["TokensMixin", "last_positions"]


def last_positions(attention_mask: Tensor) -> Tensor:
    """Index of each row's last real token ``LongTensor[batch]`` for a ``[batch, pos]`` mask (1 = real token),
    whichever side the padding is on."""
    if not isinstance(attention_mask, Tensor) or attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be a [batch, pos] tensor; got {_describe(attention_mask)}")
    real = attention_mask.bool()
    if not bool(real.any(1).all()):
        empty = (~real.any(1)).nonzero().flatten().tolist()
        raise ValueError(f"attention_mask: rows {empty} have no real token")
    T = real.shape[1]
    return (T - 1 - real.flip(1).int().argmax(1)).long()


def _describe(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


class TokensMixin:
    """Tokenisation methods of :class:`~interp.models.base.HookedModel` (needs ``tokenizer``, ``d_vocab``,
    ``device``)."""

    tokenizer: object
    d_vocab: int

    def to_tokens(self, text: str | Sequence[str], prepend_bos: bool = True, padding_side: str = "right", *,
                  return_attention_mask: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Tokenise text into ``LongTensor[batch, pos]``; ``prepend_bos`` adds the BOS token if the tokenizer has one.

        Several strings are padded (with the pad or EOS token) to the longest, on ``padding_side``. Padded positions
        are not data: pass the mask (``return_attention_mask=True`` returns ``(tokens, attention_mask)``, 1 = real
        token) to the model as ``attention_mask=``, or pass the strings themselves to the model, which pads and
        masks on its own. Padding without asking for the mask warns.
        """
        tokens, mask = self._tokenize(text, prepend_bos, padding_side)
        if return_attention_mask:
            return tokens, mask
        if not bool(mask.all()):
            warnings.warn(
                f"to_tokens padded {int((~mask.bool().all(1)).sum())} of {mask.shape[0]} rows; padded positions are "
                "read as data unless you pass attention_mask= (to_tokens(..., return_attention_mask=True))",
                UserWarning, stacklevel=2,
            )
        return tokens

    def _tokenize(self, text, prepend_bos: bool, padding_side: str) -> tuple[Tensor, Tensor]:
        tok = self._need_tokenizer()
        texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"text must be a string or a non-empty list of strings; got {_describe(text)}")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        bos = getattr(tok, "bos_token_id", None)
        if prepend_bos and bos is not None:
            ids = [[bos, *seq] for seq in ids]
        empty = [i for i, seq in enumerate(ids) if not seq]
        if empty:
            raise ValueError(f"text {empty[0]} ({texts[empty[0]]!r}) tokenises to nothing; pass non-empty strings "
                             "or prepend_bos=True")
        width = max(len(s) for s in ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        rows, masks = [], []
        for s in ids:
            fill = width - len(s)
            rows.append(s + [pad] * fill if padding_side == "right" else [pad] * fill + s)
            masks.append([1] * len(s) + [0] * fill if padding_side == "right" else [0] * fill + [1] * len(s))
        device = self.device  # type: ignore[attr-defined]
        return (torch.tensor(rows, dtype=torch.long, device=device),
                torch.tensor(masks, dtype=torch.long, device=device))

    def to_str_tokens(self, tokens: str | Tensor | Sequence[int],
                      prepend_bos: bool = True) -> list[str] | list[list[str]]:
        """Token strings of a text or of token ids (a list per row for a 2-D batch or a list of texts)."""
        tok = self._need_tokenizer()
        if isinstance(tokens, (list, tuple)) and tokens and all(isinstance(t, str) for t in tokens):
            return [self.to_str_tokens(t, prepend_bos) for t in tokens]  # type: ignore[misc]
        if isinstance(tokens, str):
            tokens = self._tokenize(tokens, prepend_bos, "right")[0][0]
        if isinstance(tokens, Tensor):
            if tokens.ndim == 2:
                return [self.to_str_tokens(row) for row in tokens]  # type: ignore[misc]
            tokens = tokens.tolist()
        return [tok.decode([int(t)]) for t in tokens]

    def to_string(self, tokens: Tensor | Sequence[int]) -> str:
        """Decode token ids back to text."""
        ids = tokens.tolist() if isinstance(tokens, Tensor) else list(tokens)
        return self._need_tokenizer().decode(ids)

    def to_single_token(self, string: str) -> int:
        """The id of ``string`` if it is exactly one token (e.g. ``" Paris"``); a ValueError otherwise."""
        if not isinstance(string, str):
            raise TypeError(f"string must be a str; got {type(string).__name__}")
        ids = self._need_tokenizer()(string, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [self._need_tokenizer().decode([i]) for i in ids]
            raise ValueError(f"{string!r} is not a single token: it tokenises to {len(ids)} tokens {pieces}")
        return int(ids[0])

    @staticmethod
    def last_positions(attention_mask: Tensor) -> Tensor:
        """Index of each row's last real token (see :func:`last_positions`)."""
        return last_positions(attention_mask)

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; pass token ids (LongTensor[batch, pos]) instead of text")
        return self.tokenizer

    def check_tokens(self, tokens: Tensor | str | Sequence[str], arg: str = "tokens") -> Tensor:
        """Validate (or tokenise) model input: an integer tensor [batch, pos] with ids in the vocabulary."""
        return self._prepare(tokens, None, arg)[0]

    def _prepare(self, tokens, attention_mask: Tensor | None, arg: str = "tokens") -> tuple[Tensor, Tensor | None]:
        """``(tokens, mask or None)``: text is tokenised (padded right, masked); a mask is validated against the
        tokens and dropped when it masks nothing."""
        if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
            if attention_mask is not None:
                raise ValueError("attention_mask: pass it with token ids, not with text (text is padded and masked "
                                 "automatically)")
            tokens, attention_mask = self._tokenize(tokens, True, "right")
        elif not isinstance(tokens, Tensor):
            raise TypeError(f"{arg} must be a LongTensor[batch, pos] or text; got {type(tokens).__name__}")
        else:
            if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
                raise TypeError(f"{arg} must hold integer token ids (torch.long); got dtype {tokens.dtype}")
            if tokens.ndim == 1:
                tokens = tokens.unsqueeze(0)
            if tokens.ndim != 2:
                raise ValueError(f"{arg} must have shape [batch, pos]; got {tuple(tokens.shape)}")
            if tokens.shape[0] == 0 or tokens.shape[1] == 0:
                raise ValueError(f"{arg} is empty (shape {tuple(tokens.shape)}); expected at least one token in one "
                                 "row")
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.d_vocab:
                raise ValueError(f"{arg} holds ids in [{lo}, {hi}] but the vocabulary has ids 0..{self.d_vocab - 1}")
            tokens = tokens.to(device=self.device, dtype=torch.long)  # type: ignore[attr-defined]
        return tokens, self._check_mask(attention_mask, tokens.shape)

    def _check_mask(self, mask: Tensor | None, shape: torch.Size) -> Tensor | None:
        if mask is None:
            return None
        if not isinstance(mask, Tensor):
            raise TypeError(f"attention_mask must be a tensor [batch, pos] of 0/1; got {type(mask).__name__}")
        if mask.ndim == 1:
            mask = mask.unsqueeze(0)
        if tuple(mask.shape) != tuple(shape):
            raise ValueError(f"attention_mask has shape {tuple(mask.shape)}; expected {tuple(shape)} (the tokens')")
        if mask.dtype.is_floating_point or mask.dtype.is_complex:
            raise TypeError(f"attention_mask must be integer or bool (1 = real token); got dtype {mask.dtype}")
        if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("attention_mask must hold only 0 and 1")
        mask = mask.to(device=self.device, dtype=torch.long)  # type: ignore[attr-defined]
        if not bool(mask.any(1).all()):
            raise ValueError(f"attention_mask: rows {(~mask.bool().any(1)).nonzero().flatten().tolist()} have no "
                             "real token")
        return None if bool(mask.all()) else mask
