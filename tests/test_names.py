"""The name maps against independent re-statements of the reference converters (diffusers' and MindSpeed-MM's converters)."""
import pytest
import torch
from diffusers import WanTransformer3DModel

from wan_core.model import WanConfig
from wan_core.weights.names import UnknownKeyError, convert_key, detect_layout

# diffusers' scripts/convert_wan_to_diffusers.py TRANSFORMER_KEYS_RENAME_DICT: official -> diffusers,
# sequential substring replacement in dict order.
OFFICIAL_TO_DIFFUSERS_SEQUENTIAL = [
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.modulation", "scale_shift_table"),
    ("head.head", "proj_out"),
    ("modulation", "scale_shift_table"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("norm2", "norm__placeholder"), ("norm3", "norm2"), ("norm__placeholder", "norm3"),
    ("self_attn.q", "attn1.to_q"), ("self_attn.k", "attn1.to_k"), ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"), ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"), ("cross_attn.k", "attn2.to_k"), ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"), ("cross_attn.norm_k", "attn2.norm_k"),
]

# MindSpeed-MM WanConverter hf_to_mm: exact renames, then substring replacement in this order.
MM_EXACT = {
    "condition_embedder.text_embedder.linear_1.weight": "text_embedding.linear_1.weight",
    "condition_embedder.text_embedder.linear_1.bias": "text_embedding.linear_1.bias",
    "condition_embedder.text_embedder.linear_2.weight": "text_embedding.linear_2.weight",
    "condition_embedder.text_embedder.linear_2.bias": "text_embedding.linear_2.bias",
    "condition_embedder.time_embedder.linear_1.weight": "time_embedding.0.weight",
    "condition_embedder.time_embedder.linear_1.bias": "time_embedding.0.bias",
    "condition_embedder.time_embedder.linear_2.weight": "time_embedding.2.weight",
    "condition_embedder.time_embedder.linear_2.bias": "time_embedding.2.bias",
    "condition_embedder.time_proj.weight": "time_projection.1.weight",
    "condition_embedder.time_proj.bias": "time_projection.1.bias",
    "scale_shift_table": "head.modulation",
    "proj_out.weight": "head.head.weight", "proj_out.bias": "head.head.bias",
}
MM_SUBSTRINGS = [
    ("attn1.norm_q", "self_attn.q_norm"), ("attn1.norm_k", "self_attn.k_norm"),
    ("attn2.norm_q", "cross_attn.q_norm"), ("attn2.norm_k", "cross_attn.k_norm"),
    ("attn1.to_q.", "self_attn.proj_q."), ("attn1.to_k.", "self_attn.proj_k."), ("attn1.to_v.", "self_attn.proj_v."),
    ("attn1.to_out.0.", "self_attn.proj_out."),
    ("attn2.to_q.", "cross_attn.proj_q."), ("attn2.to_k.", "cross_attn.proj_k."), ("attn2.to_v.", "cross_attn.proj_v."),
    ("attn2.to_out.0.", "cross_attn.proj_out."),
    (".ffn.net.0.proj.", ".ffn.0."), (".ffn.net.2.", ".ffn.2."),
    ("scale_shift_table", "modulation"), (".norm2.", ".norm3."),
]


def sequential_replace(key, table):
    for old, new in table:
        key = key.replace(old, new)
    return key


def mm_hf_to_mm(key):
    key = MM_EXACT.get(key, key)
    return sequential_replace(key, MM_SUBSTRINGS)


@pytest.fixture(scope="module")
def diffusers_keys():
    cfg = WanConfig.from_preset("tiny-i2v")
    with torch.device("meta"):
        model = WanTransformer3DModel(**{k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")})
    return list(model.state_dict())


def test_diffusers_to_mm_matches_mindspeed_converter(diffusers_keys):
    for key in diffusers_keys:
        assert convert_key(key, "diffusers", "mm") == mm_hf_to_mm(key)


def test_official_to_diffusers_matches_diffusers_converter(diffusers_keys):
    for key in diffusers_keys:
        official = convert_key(key, "diffusers", "official")
        assert sequential_replace(official, OFFICIAL_TO_DIFFUSERS_SEQUENTIAL) == key
        assert convert_key(official, "official", "diffusers") == key
        assert convert_key("model." + official, "official", "diffusers") == key  # DiffSynth prefix


def test_every_direction_round_trips(diffusers_keys):
    for key in diffusers_keys:
        mm = convert_key(key, "diffusers", "mm")
        official = convert_key(mm, "mm", "official")
        assert convert_key(official, "official", "mm") == mm
        assert convert_key(mm, "mm", "diffusers") == key


def test_norm_swap_and_layout_detection(diffusers_keys):
    assert convert_key("blocks.3.norm2.weight", "diffusers", "official") == "blocks.3.norm3.weight"
    assert convert_key("blocks.3.norm3.bias", "official", "diffusers") == "blocks.3.norm2.bias"
    assert detect_layout(diffusers_keys) == "diffusers"
    assert detect_layout([convert_key(k, "diffusers", "mm") for k in diffusers_keys]) == "mm"
    assert detect_layout([convert_key(k, "diffusers", "official") for k in diffusers_keys]) == "official"
    with pytest.raises(UnknownKeyError, match="not a Wan2.2 DiT parameter"):
        convert_key("blocks.0.attn1.to_qkv.weight", "diffusers", "mm")
    with pytest.raises(UnknownKeyError):
        detect_layout(["foo.bar"])
