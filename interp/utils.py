"""Helpers with TransformerLens's names and semantics, for code written against TransformerLens
(``transformer_lens.utils``).

``get_act_name("resid_post", 3)`` -> ``"blocks.3.hook_resid_post"``: the same strings TransformerLens 3.x builds
(checked against it in ``tests/contract/test_tl_names.py``), so ``cache[get_act_name("pattern", 5)]`` and
``model.hooks([(get_act_name("z", 2), fn)])`` work unchanged. Like TransformerLens's, it only builds the name; the
model says whether it has that site (``model.check_site(name)`` names the closest one).
"""

from __future__ import annotations

import re

__all__ = ["get_act_name"]

# TransformerLens's aliases (HookedTransformer naming): full names of the short forms users type
_ALIASES = {"attn": "pattern", "attn_logits": "attn_scores", "key": "k", "query": "q", "value": "v",
            "mlp_pre": "pre", "mlp_mid": "mid", "mlp_post": "post"}
_LAYER_TYPES = {"a": "attn", "m": "mlp", "b": "", "block": "", "blocks": "", "attention": "attn"}
_ATTN_SITES = frozenset({"k", "v", "q", "z", "rot_k", "rot_q", "result", "pattern", "attn_scores"})
_MLP_SITES = frozenset({"pre", "post", "mid", "pre_linear"})
_SHORTHAND = re.compile(r"([a-z]+)(\d+)([a-z]?.*)")  # TransformerLens's: "k6", "scale4ln1"; not "resid_pre0"


def get_act_name(name: str, layer: int | str | None = None, layer_type: str | None = None) -> str:
    """The full site name TransformerLens's ``utils.get_act_name`` gives.

    ``name``: a site's short name (``"resid_pre"``, ``"pattern"``, ``"z"``, ``"post"``, ``"normalized"``, ...; the
    aliases ``attn`` = pattern, ``attn_logits`` = attn_scores, ``query``/``key``/``value`` = q/k/v,
    ``mlp_pre|mid|post`` = pre/mid/post), a full name (returned as it is), or the shorthand ``"k6"`` = ("k", 6)
    (``"k6a"`` = ("k", 6, "a"), ``"scale4ln1"`` = ("scale", 4, "ln1"); as in TransformerLens, only a name of letters
    before the digits: ``"resid_pre0"`` is ``"hook_resid_pre0"``). ``layer``: the block (None for sites outside
    blocks: ``"embed"`` -> ``"hook_embed"``; ``"normalized"``/``"scale"`` -> the final norm's). ``layer_type``:
    ``"attn"``/``"a"``, ``"mlp"``/``"m"``, ``"ln1"``, ``"ln2"``, ``"ln_final"``, or ``"b"``/``"block"`` for the
    residual sites; inferred
    for attention and MLP sites. One deliberate difference: ``get_act_name("normalized", None, "ln_final")`` is
    ``"ln_final.hook_normalized"`` (TransformerLens 3.9 doubles the prefix there, a name no model has).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty site name string; got {name!r}")
    if layer is None and layer_type is None:
        if "." in name or name.startswith("hook_"):
            return name
        short = _SHORTHAND.match(name)
        if short:
            name, layer, layer_type = short.group(1), int(short.group(2)), short.group(3) or None
    if layer is not None:
        if isinstance(layer, bool) or not isinstance(layer, (int, str)) or not str(layer).isdigit():
            raise ValueError(f"layer must be a block index >= 0 (an int or a string of digits); got {layer!r} (there "
                             "is no model here to count from the end: use cache[name, -1] or model.check_layer)")
        layer = int(layer)
    name = _ALIASES.get(name, name)
    if layer_type is not None:
        layer_type = _LAYER_TYPES.get(layer_type, layer_type)
    elif name in _ATTN_SITES:
        layer_type = "attn"
    elif name in _MLP_SITES:
        layer_type = "mlp"
    if layer is None:
        if name in ("normalized", "scale") and layer_type in (None, "ln_final"):
            return f"ln_final.hook_{name}"
        return f"{layer_type}.hook_{name}" if layer_type else f"hook_{name}"
    return f"blocks.{layer}." + (f"{layer_type}." if layer_type else "") + f"hook_{name}"
