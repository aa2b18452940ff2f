"""Real-size presets built on the meta device: exact parameter counts and one-to-one key mapping."""
import pytest
import torch
from diffusers import WanTransformer3DModel

from wan_core.model import WanConfig, WanDiT
from wan_core.model.dit import parameter_shapes
from wan_core.weights.names import convert_key

EXPECTED = {"ti2v-5b": 4_999_787_712, "t2v-a14b": 14_288_491_584, "i2v-a14b": 14_288_901_184}


def formula(cfg: WanConfig) -> int:
    """The parameter breakdown of the Wan2.2 configs, written independently of both implementations."""
    c, f, ci, co = cfg.dim, cfg.ffn_dim, cfg.in_channels, cfg.out_channels
    block = 8 * (c * c + c) + 4 * c + 2 * c + 2 * c * f + f + c + 6 * c
    embeddings = (ci * c * 4 + c) + (4096 * c + c + c * c + c) + (256 * c + c + c * c + c) + (6 * c * c + 6 * c)
    head = c * co * 4 + co * 4 + 2 * c
    return cfg.num_layers * block + embeddings + head


@pytest.mark.parametrize("preset", list(EXPECTED))
def test_parameter_count_and_key_correspondence(preset):
    cfg = WanConfig.from_preset(preset)
    with torch.device("meta"):
        ours = WanDiT(cfg)
        ref = WanTransformer3DModel(**{k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")})
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == EXPECTED[preset] == formula(cfg)
    assert sum(p.numel() for p in ref.parameters()) == n_ours

    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert parameter_shapes(cfg) == our_shapes  # the shape table conversion validates against
    mapped = {convert_key(k, "diffusers", "mm"): shape for k, shape in ref_shapes.items()}
    assert len(mapped) == len(ref_shapes)  # injective
    assert mapped == our_shapes  # onto, with equal shapes
    assert {convert_key(k, "mm", "diffusers") for k in our_shapes} == set(ref_shapes)


def test_from_diffusers_round_trip_and_unknown_preset():
    for name in ["ti2v-5b", "tiny-i2v"]:
        cfg = WanConfig.from_preset(name)
        assert WanConfig.from_diffusers(cfg.to_diffusers()) == cfg
    with pytest.raises(ValueError, match="unknown Wan preset"):
        WanConfig.from_preset("t2v-1b")
    with pytest.raises(ValueError, match="not divisible"):
        WanConfig(dim=30, ffn_dim=8, num_layers=1, num_heads=4, in_channels=16, out_channels=16)
