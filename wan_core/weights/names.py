"""Key names of the Wan2.2 DiT in the three layouts, and the exact maps between them.

Layouts:
- ``diffusers``: `WanTransformer3DModel` (the "hf" format of MindSpeed-MM's converter)
- ``official``: Wan-Video/Wan2.2 `WanModel`, also DiffSynth and MindSpeed-MM's FSDP2 path
- ``mm``: MindSpeed-MM's legacy `WanDiT` (what `mm-convert WanConverter hf_to_mm` writes; our `WanDiT`)

Every map is a pure rename, one key to one key; nothing is transposed, fused or split. The maps are
written as one table of exact names (not chained substring replaces), so each direction is the
inverse of the other by construction.
"""
from __future__ import annotations

import re

LAYOUTS = ("diffusers", "official", "mm")

# (diffusers, official, mm) for parameters outside the blocks, without the .weight/.bias suffix.
_TOP = [
    ("patch_embedding", "patch_embedding", "patch_embedding"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0", "text_embedding.linear_1"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2", "text_embedding.linear_2"),
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2", "time_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1", "time_projection.1"),
    ("proj_out", "head.head", "head.head"),
]
_TOP_PARAMS = [("scale_shift_table", "head.modulation", "head.modulation")]

# Per block i, without the "blocks.{i}." prefix and the .weight/.bias suffix.
_BLOCK = [
    ("attn1.to_q", "self_attn.q", "self_attn.proj_q"),
    ("attn1.to_k", "self_attn.k", "self_attn.proj_k"),
    ("attn1.to_v", "self_attn.v", "self_attn.proj_v"),
    ("attn1.to_out.0", "self_attn.o", "self_attn.proj_out"),
    ("attn1.norm_q", "self_attn.norm_q", "self_attn.q_norm"),
    ("attn1.norm_k", "self_attn.norm_k", "self_attn.k_norm"),
    ("attn2.to_q", "cross_attn.q", "cross_attn.proj_q"),
    ("attn2.to_k", "cross_attn.k", "cross_attn.proj_k"),
    ("attn2.to_v", "cross_attn.v", "cross_attn.proj_v"),
    ("attn2.to_out.0", "cross_attn.o", "cross_attn.proj_out"),
    ("attn2.norm_q", "cross_attn.norm_q", "cross_attn.q_norm"),
    ("attn2.norm_k", "cross_attn.norm_k", "cross_attn.k_norm"),
    # the affine cross-attention LayerNorm: diffusers calls it norm2, official and mm norm3
    ("norm2", "norm3", "norm3"),
    ("ffn.net.0.proj", "ffn.0", "ffn.0"),
    ("ffn.net.2", "ffn.2", "ffn.2"),
]
_BLOCK_PARAMS = [("scale_shift_table", "modulation", "modulation")]

_SUFFIXES = (".weight", ".bias")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _tables() -> dict[tuple[str, str], tuple[dict[str, str], dict[str, str]]]:
    """{(src, dst): (top-level map, in-block map)} over full names including suffixes."""
    tables = {}
    for si, src in enumerate(LAYOUTS):
        for di, dst in enumerate(LAYOUTS):
            top = {row[si] + sfx: row[di] + sfx for row in _TOP for sfx in _SUFFIXES}
            top.update({row[si]: row[di] for row in _TOP_PARAMS})
            block = {row[si] + sfx: row[di] + sfx for row in _BLOCK for sfx in _SUFFIXES}
            block.update({row[si]: row[di] for row in _BLOCK_PARAMS})
            tables[(src, dst)] = (top, block)
    return tables


_TABLES = _tables()


class UnknownKeyError(KeyError):
    pass


def convert_key(key: str, src: str, dst: str) -> str:
    """Rename one parameter from layout `src` to layout `dst`; raises UnknownKeyError if `key` is not
    a Wan2.2 DiT parameter name in `src`. A leading `model.` (DiffSynth) is accepted on official keys."""
    if src not in LAYOUTS or dst not in LAYOUTS:
        raise ValueError(f"layouts are {LAYOUTS}, got {src!r} -> {dst!r}")
    top, block = _TABLES[(src, dst)]
    if src == "official" and key.startswith("model."):
        key = key[len("model."):]
    if key in top:
        return top[key]
    m = _BLOCK_KEY.match(key)
    if m and m.group(2) in block:
        return f"blocks.{m.group(1)}.{block[m.group(2)]}"
    raise UnknownKeyError(f"{key!r} is not a Wan2.2 DiT parameter name in the {src} layout")


def detect_layout(keys) -> str:
    """Which layout a set of parameter names uses, judged by names only one layout has."""
    keys = set(keys)
    if any(k.startswith("condition_embedder.") for k in keys):
        return "diffusers"
    if any(k.startswith("text_embedding.linear_") for k in keys):
        return "mm"
    stripped = {k[len("model."):] if k.startswith("model.") else k for k in keys}
    if any(k.startswith("text_embedding.0") or ".self_attn.q." in k for k in stripped):
        return "official"
    raise UnknownKeyError("these parameter names match none of the diffusers, official or mm Wan2.2 layouts")
