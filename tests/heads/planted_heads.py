"""Tiny TransformerLens models whose weights are set by hand so that known heads do known things.

No layer norm, one-hot subspaces of the residual stream, attention made sharp by large query weights:

    TOK  token one-hot (embedding)        POS  position one-hot (positional embedding)
    S1   previous token (written by L0H0) S2   token two back (written by L0H1)
    OUT  copied token (read by W_U)       R    a day's position on a circle (embedding; MLP0 copies it)
    ROUT rotated circle (read by W_U for the seven day tokens)

Planted heads (the others get small random weights):

- L0H0 previous-token: attends i - 1, writes TOK(x_{i-1}) into S1;
- L0H1 attends i - 2, writes TOK(x_{i-2}) into S2;
- L0H2 duplicate-token: attends positions holding the same token;
- L1H1 order-2 n-gram: query [TOK(x_i), S1(x_{i-1})] vs key [S1(x_{j-1}), S2(x_{j-2})];
- L1H2 induction: query TOK(x_i) vs key S1(x_{j-1}), OV copies TOK(x_j) into OUT (so it also retrieves needles);
- L1H3 successor: OV rotates a day's circle point by one seventh of a turn into ROUT.
"""

from __future__ import annotations

import math

import torch

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
N_FILLER = 37
V = len(SPECIALS) + len(DAYS) + N_FILLER  # 48
N_CTX = 128
D_HEAD = 128
SHARP = 30.0  # attention logit of a match (after TransformerLens's 1 / sqrt(d_head))

PREV, PREV2, DUP = (0, 0), (0, 1), (0, 2)
NGRAM, INDUCTION, SUCCESSOR = (1, 1), (1, 2), (1, 3)

_TOK, _POS = 0, V
_S1 = _POS + N_CTX
_S2 = _S1 + V
_OUT = _S2 + V
_R = _OUT + V
_ROUT = _R + 2
D_MODEL = _ROUT + 2


def tokenizer():
    """A word-level tokenizer: specials, ``" Monday"`` .. ``" Sunday"`` and filler words ``" w0"`` .. (ids in that
    order), so the days task is the only single-token successor task."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [*SPECIALS, *(f" {d}" for d in DAYS), *(f" w{i}" for i in range(N_FILLER))]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[^ ]+"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")


def day_ids() -> list[int]:
    return [len(SPECIALS) + i for i in range(len(DAYS))]


def build(*, ngram: bool = False, seed: int = 0):
    """The planted model (see the module docstring) as a TransformerLens ``HookedTransformer`` with the tokenizer
    attached. ``ngram=False`` leaves L1H1 random (so induction is the only layer-1 head that matches tokens)."""
    import warnings

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=D_MODEL, n_ctx=N_CTX, d_head=D_HEAD, n_heads=4, d_vocab=V,
                                  act_fn="relu", normalization_type=None, d_mlp=4,
                                  positional_embedding_type="standard", seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    beta = SHARP * math.sqrt(D_HEAD)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
        for layer in range(2):
            for head in range(4):
                if (layer, head) in (PREV, PREV2, DUP, INDUCTION, SUCCESSOR) or (ngram and (layer, head) == NGRAM):
                    _clear(model, layer, head)
            model.blocks[layer].attn.b_O.zero_()
            model.blocks[layer].mlp.b_out.zero_()
            model.blocks[layer].mlp.b_in.zero_()
        model.embed.W_E.zero_()
        model.pos_embed.W_pos.zero_()
        model.unembed.W_U.zero_()
        model.unembed.b_U.zero_()
        toks = torch.arange(V)
        model.embed.W_E[toks, _TOK + toks] = 1.0
        for k, t in enumerate(day_ids()):
            angle = 2 * math.pi * k / len(DAYS)
            model.embed.W_E[t, _R:_R + 2] = torch.tensor([math.cos(angle), math.sin(angle)])
            model.unembed.W_U[_ROUT:_ROUT + 2, t] = torch.tensor([math.cos(angle), math.sin(angle)])
        model.pos_embed.W_pos[torch.arange(N_CTX), _POS + torch.arange(N_CTX)] = 1.0
        model.unembed.W_U[_OUT + toks, toks] = 1.0
        _positional(model, PREV, 1, beta, _S1)
        _positional(model, PREV2, 2, beta, _S2)
        a = model.blocks[0].attn
        a.W_Q[DUP[1], _TOK + toks, toks] = beta
        a.W_K[DUP[1], _TOK + toks, toks] = 1.0
        b = model.blocks[1].attn
        h = INDUCTION[1]
        b.W_Q[h, _TOK + toks, toks] = beta
        b.W_K[h, _S1 + toks, toks] = 1.0
        b.W_V[h, _TOK + toks, toks] = 1.0
        b.W_O[h, toks, _OUT + toks] = 10.0
        if ngram:
            h = NGRAM[1]
            b.W_Q[h, _TOK + toks, toks] = beta
            b.W_Q[h, _S1 + toks, V + toks] = beta
            b.W_K[h, _S1 + toks, toks] = 1.0
            b.W_K[h, _S2 + toks, V + toks] = 1.0
        h = SUCCESSOR[1]
        b.b_Q[h, 0] = beta  # attends position 0 (BOS), whose circle point is 0: silent in forward passes
        b.W_K[h, _POS + 0, 0] = 1.0
        b.W_V[h, _R, 0] = 1.0
        b.W_V[h, _R + 1, 1] = 1.0
        turn = 2 * math.pi / len(DAYS)
        rot = torch.tensor([[math.cos(turn), math.sin(turn)], [-math.sin(turn), math.cos(turn)]])
        b.W_O[h, 0:2, _ROUT:_ROUT + 2] = rot
        mlp = model.blocks[0].mlp  # identity on the circle plane: relu(x) - relu(-x)
        mlp.W_in.zero_()
        mlp.W_out.zero_()
        for i in range(2):
            mlp.W_in[_R + i, 2 * i] = 1.0
            mlp.W_in[_R + i, 2 * i + 1] = -1.0
            mlp.W_out[2 * i, _R + i] = 1.0
            mlp.W_out[2 * i + 1, _R + i] = -1.0
        model.blocks[1].mlp.W_out.zero_()
    # TransformerLens creates no ``ln_final`` without normalisation (its forward skips it); the adapter's
    # ``apply_ln_final`` calls ``tl_model.ln_final``, so give it the identity the forward pass uses.
    model.ln_final = torch.nn.Identity()
    model.tokenizer = tokenizer()
    return model.eval()


def _clear(model, layer: int, head: int) -> None:
    a = model.blocks[layer].attn
    for w in (a.W_Q, a.W_K, a.W_V, a.W_O, a.b_Q, a.b_K, a.b_V):
        w[head].zero_()


def _positional(model, which: tuple[int, int], offset: int, beta: float, out: int) -> None:
    """Head ``which`` attends ``offset`` back and writes the token it reads into subspace ``out``."""
    a = model.blocks[which[0]].attn
    h = which[1]
    pos = torch.arange(offset, N_CTX)
    a.W_Q[h, _POS + pos, pos - offset] = beta
    a.W_K[h, _POS + torch.arange(N_CTX), torch.arange(N_CTX)] = 1.0
    toks = torch.arange(V)
    a.W_V[h, _TOK + toks, toks] = 1.0
    a.W_O[h, toks, out + toks] = 1.0
