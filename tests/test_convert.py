"""Weight conversion: bit-exact round trips, loadability, layouts, all-or-nothing errors."""
import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file, save_file

import wan_core
from conftest import read_safetensors
from wan_core.errors import UserError
from wan_core.model import WanConfig, WanDiT
from wan_core.model.variants import VARIANTS
from wan_core.weights.convert import hf_to_mm, mm_to_hf
from wan_core.weights.names import convert_key

SLOTS = {"ti2v-5b": ["transformer"], "t2v-a14b": ["transformer", "transformer_2"],
         "i2v-a14b": ["transformer", "transformer_2"]}


def assert_same_tensors(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("variant", VARIANTS)  # every variant of the registry; SLOTS is what each must give
def test_round_trip_is_bit_identical_and_loadable(tmp_path, tiny_checkpoints, variant):
    assert variant in SLOTS, f"add the expert slots {variant} should convert to SLOTS"
    src = tiny_checkpoints[variant]
    mm, back = tmp_path / "mm", tmp_path / "hf"
    # tiny shards so that several shards and the index are exercised
    assert hf_to_mm(str(src), str(mm), max_shard_size="40KB", progress=False) == SLOTS[variant]
    assert mm_to_hf(str(mm), str(back), hf_dir=str(src), max_shard_size="60KB", progress=False) == SLOTS[variant]
    for slot in SLOTS[variant]:
        mm_release = mm / slot / "release"
        assert (mm / slot / "latest_checkpointed_iteration.txt").read_text().strip() == "release"
        index = json.loads((mm_release / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
        assert set(index["weight_map"].values()) == {f for f in os.listdir(mm_release) if f.endswith(".safetensors")}
        original = read_safetensors(src / slot)
        assert_same_tensors({convert_key(k, "diffusers", "mm"): v for k, v in original.items()}, read_safetensors(mm_release))
        assert_same_tensors(original, read_safetensors(back / slot))
        hf_index = json.loads((back / slot / "diffusion_pytorch_model.safetensors.index.json").read_text())
        assert set(hf_index["weight_map"].values()) == {f for f in os.listdir(back / slot) if f.endswith(".safetensors")}
        assert json.loads((back / slot / "config.json").read_text()) == json.loads((src / slot / "config.json").read_text())
        # diffusers loads the result; our loader loads the mm folder and agrees with it
        ref = WanTransformer3DModel.from_pretrained(back / slot)
        ours = wan_core.load_dit(mm / slot)
        cfg = ours.config
        x, t, ctx = torch.randn(1, cfg.in_channels, 2, 4, 4), torch.tensor([250.0]), torch.randn(1, 512, cfg.text_dim)
        with torch.no_grad():
            torch.testing.assert_close(ours(x, t, ctx), ref(x, t, ctx, return_dict=False)[0], rtol=1e-5, atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dtype_preserved_and_config_rebuilt_without_hf_dir(tmp_path, tiny_checkpoints):
    src = tmp_path / "bf16"
    shutil.copytree(tiny_checkpoints["ti2v-5b"] / "transformer", src)
    state = {k: v.to(torch.bfloat16) for k, v in load_file(src / "diffusion_pytorch_model.safetensors").items()}
    save_file(state, src / "diffusion_pytorch_model.safetensors")
    hf_to_mm(str(src), str(tmp_path / "mm"), progress=False)
    mm_to_hf(str(tmp_path / "mm"), str(tmp_path / "hf"), progress=False)
    back = read_safetensors(tmp_path / "hf")
    assert_same_tensors(state, back)
    assert all(v.dtype == torch.bfloat16 for v in back.values())
    rebuilt = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert WanConfig.from_diffusers(rebuilt) == WanConfig.from_preset("tiny-ti2v")
    WanTransformer3DModel.from_pretrained(tmp_path / "hf")


def test_official_layout_in_and_out(tmp_path, tiny_checkpoints):
    src = tiny_checkpoints["t2v-a14b"]
    hf_to_mm(str(src), str(tmp_path / "mm"), progress=False)
    official = tmp_path / "Wan2.2-T2V-A14B"
    # written the way Wan-AI ships A14B: high_noise_model/ and low_noise_model/
    assert mm_to_hf(str(tmp_path / "mm"), str(official), layout="official", progress=False) == [
        "high_noise_model", "low_noise_model"]
    assert sorted(p.name for p in official.iterdir() if p.is_dir()) == ["high_noise_model", "low_noise_model"]
    high = read_safetensors(official / "high_noise_model")
    assert "blocks.0.self_attn.q.weight" in high and "blocks.0.norm3.weight" in high and "head.modulation" in high
    assert json.loads((official / "high_noise_model" / "config.json").read_text())["_class_name"] == "WanModel"
    hf_to_mm(str(official), str(tmp_path / "mm2"), progress=False)
    for slot in ("transformer", "transformer_2"):
        assert_same_tensors(read_safetensors(tmp_path / "mm" / slot / "release"), read_safetensors(tmp_path / "mm2" / slot / "release"))
    # DiffSynth's "model." prefix, and no config.json at all (architecture from shapes)
    prefixed = tmp_path / "prefixed"
    prefixed.mkdir()
    save_file({"model." + k: v for k, v in high.items()}, prefixed / "diffusion_pytorch_model.safetensors")
    hf_to_mm(str(prefixed), str(tmp_path / "mm3"), progress=False)
    assert_same_tensors(read_safetensors(tmp_path / "mm" / "transformer" / "release"), read_safetensors(tmp_path / "mm3" / "release"))


def make_mindspeed_checkpoint(folder, state, iteration=5, extra=None):
    """What MindSpeed-MM writes: iter_XXXXXXX/mp_rank_00/model_optim_rng.pt, no config.json."""
    (folder / f"iter_{iteration:07d}" / "mp_rank_00").mkdir(parents=True)
    blob = {"model": state, "args": argparse.Namespace(lr=1e-5, seed=1234), "checkpoint_version": 3.0,
            "iteration": iteration, **(extra or {})}
    torch.save(blob, folder / f"iter_{iteration:07d}" / "mp_rank_00" / "model_optim_rng.pt")
    (folder / "latest_checkpointed_iteration.txt").write_text(str(iteration))


def test_mindspeed_mm_pt_read_with_allowlist_and_mm_pt_written(tmp_path, tiny_checkpoints):
    src = tiny_checkpoints["i2v-a14b"] / "transformer"
    original = read_safetensors(src)
    mm_state = {convert_key(k, "diffusers", "mm"): v for k, v in original.items()}
    ms = tmp_path / "mindspeed"
    make_mindspeed_checkpoint(ms, mm_state)
    mm_to_hf(str(ms), str(tmp_path / "hf"), progress=False)
    assert_same_tensors(original, read_safetensors(tmp_path / "hf"))
    assert WanConfig.from_diffusers(json.loads((tmp_path / "hf" / "config.json").read_text())).in_channels == 36
    # --format mm-pt writes MindSpeed-MM's layout, readable by torch.load(weights_only=True)
    hf_to_mm(str(src), str(tmp_path / "mmpt"), fmt="mm-pt", progress=False)
    pt = tmp_path / "mmpt" / "release" / "mp_rank_00" / "model_optim_rng.pt"
    assert_same_tensors(mm_state, torch.load(pt, weights_only=True)["model"])
    assert (tmp_path / "mmpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "release"


class Sneaky:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/wan22-pwned",))


def test_full_unpickle_is_refused(tmp_path, tiny_checkpoints):
    state = {convert_key(k, "diffusers", "mm"): v for k, v in read_safetensors(tiny_checkpoints["t2v-a14b"] / "transformer").items()}
    make_mindspeed_checkpoint(tmp_path / "evil", state, extra={"payload": Sneaky()})
    with pytest.raises(UserError, match="refused: loading it would call posix.system"):
        mm_to_hf(str(tmp_path / "evil"), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists() and not os.path.exists("/tmp/wan22-pwned")


def foreign_module(monkeypatch):
    """A stand-in for MindSpeed-MM's package, importable only while the checkpoint is written (as on the machine
    that trained), then gone (as here)."""
    import types

    package, module = types.ModuleType("mindspeed_mm_fake"), types.ModuleType("mindspeed_mm_fake.arguments")
    monkeypatch.setitem(sys.modules, "mindspeed_mm_fake", package)
    monkeypatch.setitem(sys.modules, "mindspeed_mm_fake.arguments", module)

    class MMArgs:  # what dcp_to_torch leaves under "args"
        pass

    def run(command):
        open("/tmp/wan22-pwned-foreign", "w").write(command)

    for obj in (MMArgs, run):
        obj.__module__, obj.__qualname__ = "mindspeed_mm_fake.arguments", obj.__name__
        setattr(module, obj.__name__, obj)
    return MMArgs, run


class ForeignCall:
    function = None

    def __reduce__(self):
        return (ForeignCall.function, ("pwned",))


def test_checkpoint_from_mindspeed_training_with_foreign_classes(tmp_path, tiny_checkpoints, monkeypatch, caplog):
    original = read_safetensors(tiny_checkpoints["t2v-a14b"] / "transformer")
    state = {convert_key(k, "diffusers", "mm"): v for k, v in original.items()}
    MMArgs, run = foreign_module(monkeypatch)
    args = MMArgs()
    args.lr, args.micro_batch_size = 1e-5, 1
    make_mindspeed_checkpoint(tmp_path / "trained", state, extra={
        "args": args, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-5}]}})
    ForeignCall.function = run
    make_mindspeed_checkpoint(tmp_path / "evil", state, extra={"payload": ForeignCall()})
    for name in ("mindspeed_mm_fake", "mindspeed_mm_fake.arguments"):
        monkeypatch.delitem(sys.modules, name)
    with caplog.at_level("WARNING", logger="wan22.weights"):
        mm_to_hf(str(tmp_path / "trained"), str(tmp_path / "hf"), progress=False)
    assert_same_tensors(original, read_safetensors(tmp_path / "hf"))
    assert "skipped args, checkpoint_version, iteration, optimizer" in caplog.text
    assert "mindspeed_mm_fake.arguments.MMArgs" in caplog.text and "never run" in caplog.text
    with pytest.raises(UserError, match="would call mindspeed_mm_fake.arguments.run") as refused:
        mm_to_hf(str(tmp_path / "evil"), str(tmp_path / "out"), progress=False)
    assert "\x1b" not in str(refused.value)
    assert not (tmp_path / "out").exists() and not os.path.exists("/tmp/wan22-pwned-foreign")


def corrupt_cases(tmp_path, tiny):
    """(name, source folder, expected message) for each bad input."""
    base = tiny["t2v-a14b"] / "transformer"
    cases = []

    def copy(name):
        d = tmp_path / name
        shutil.copytree(base, d)
        return d

    d = copy("truncated")
    f = d / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    cases.append((d, "truncated"))
    d = copy("garbage")
    (d / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    cases.append((d, "corrupt safetensors header"))
    d = copy("missing_key")
    state = load_file(d / "diffusion_pytorch_model.safetensors")
    del state["blocks.1.ffn.net.2.weight"]
    save_file(state, d / "diffusion_pytorch_model.safetensors")
    cases.append((d, "1 missing"))
    d = copy("extra_key")
    state = load_file(d / "diffusion_pytorch_model.safetensors")
    state["blocks.2.attn1.to_q.weight"] = state["blocks.1.attn1.to_q.weight"].clone()
    save_file(state, d / "diffusion_pytorch_model.safetensors")
    cases.append((d, "left over"))
    d = copy("unknown_name")
    state = load_file(d / "diffusion_pytorch_model.safetensors")
    state["blocks.0.attn1.to_qkv.weight"] = state.pop("blocks.0.attn1.to_q.weight")
    save_file(state, d / "diffusion_pytorch_model.safetensors")
    cases.append((d, "not a Wan2.2 DiT parameter name"))
    d = copy("wrong_variant")  # t2v weights with an i2v config
    config = json.loads((d / "config.json").read_text())
    config["in_channels"] = 36
    (d / "config.json").write_text(json.dumps(config))
    cases.append((d, "wrong shape.*right variant"))
    d = copy("bad_index")
    (d / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"proj_out.weight": "diffusion_pytorch_model-00001-of-00002.safetensors"}}))
    cases.append((d, "names shard"))
    d = tmp_path / "empty"
    d.mkdir()
    cases.append((d, "not a Wan checkpoint folder"))
    cases.append((tmp_path / "nope", "no such file"))
    return cases


def test_bad_inputs_give_a_message_and_no_output(tmp_path, tiny_checkpoints):
    for source, message in corrupt_cases(tmp_path, tiny_checkpoints):
        target = tmp_path / f"out-{source.name}"
        with pytest.raises(UserError, match=message):
            hf_to_mm(str(source), str(target), progress=False)
        assert not target.exists(), source.name
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers


def test_hf_dir_of_another_architecture_is_refused(tmp_path, tiny_checkpoints):
    hf_to_mm(str(tiny_checkpoints["ti2v-5b"]), str(tmp_path / "mm"), progress=False)
    with pytest.raises(UserError, match="different architecture"):
        mm_to_hf(str(tmp_path / "mm"), str(tmp_path / "hf"), hf_dir=str(tiny_checkpoints["t2v-a14b"]), progress=False)
    assert not (tmp_path / "hf").exists()


def test_unwritable_target(tmp_path, tiny_checkpoints):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((UserError, OSError)):
        hf_to_mm(str(tiny_checkpoints["ti2v-5b"]), str(blocker / "sub" / "out"), progress=False)


def test_fsspec_urls(tmp_path, tiny_checkpoints):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(str(tiny_checkpoints["ti2v-5b"] / "transformer") + "/", "/src/transformer", recursive=True)
    hf_to_mm("memory://src/transformer", "memory://out/mm", max_shard_size="50KB", progress=False)
    assert fs.exists("/out/mm/latest_checkpointed_iteration.txt") and not fs.exists("/out/mm.tmp-upload")
    mm_to_hf("memory://out/mm", str(tmp_path / "hf"), progress=False)
    assert_same_tensors(read_safetensors(tiny_checkpoints["ti2v-5b"] / "transformer"), read_safetensors(tmp_path / "hf"))


@pytest.mark.parametrize("preset", ["ti2v-5b", "t2v-a14b", "i2v-a14b"])
def test_real_size_key_coverage(preset):
    cfg = WanConfig.from_preset(preset)
    with torch.device("meta"):
        ours = WanDiT(cfg).state_dict()
        ref = WanTransformer3DModel(**{k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")}).state_dict()
    for layout in ("diffusers", "official"):
        there = {convert_key(k, "mm", layout) for k in ours}
        assert len(there) == len(ours)
        assert {convert_key(k, layout, "mm") for k in there} == set(ours)
    assert {convert_key(k, "mm", "diffusers") for k in ours} == set(ref)


def run(*args, exe="wan22"):
    if exe == "wan22":
        cmd = [sys.executable, "-m", "wan_core", *args]
    else:
        cmd = [sys.executable, "-c", "import sys; from wan_core.cli import mm_convert_main; sys.exit(mm_convert_main())",
               *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_command_lines(tmp_path, tiny_checkpoints):
    src = tiny_checkpoints["ti2v-5b"]
    r = run("WanConverter", "hf_to_mm", "--cfg.source_path", str(src / "transformer"), "--cfg.target_path",
            str(tmp_path / "mm"), exe="mm-convert")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mm" / "release" / "mp_rank_00" / "model_optim_rng.pt").is_file()  # MindSpeed-MM default
    r = run("WanConverter", "mm_to_hf", "--cfg.source_path", str(tmp_path / "mm"), "--cfg.target_path",
            str(tmp_path / "hf"), "--cfg.hf_path", str(src / "transformer"), exe="mm-convert")
    assert r.returncode == 0, r.stderr
    assert_same_tensors(read_safetensors(src / "transformer"), read_safetensors(tmp_path / "hf"))
    r = run("WanConverter", "hf_to_mm", "--cfg.source_path", str(src), "--cfg.target_path", str(tmp_path / "mm2"),
            "--cfg.format", "safetensors", exe="mm-convert")
    assert r.returncode == 0 and (tmp_path / "mm2" / "transformer" / "release" / "model.safetensors.index.json").is_file()
    r = run("convert", "hf-to-mm", "--source", str(src), "--target", str(tmp_path / "mm3"), "--quiet")
    assert r.returncode == 0 and (tmp_path / "mm3" / "transformer" / "release" / "model.safetensors.index.json").is_file()
    r = run("convert", "mm-to-hf", "--source", str(tmp_path / "mm3"), "--target", str(tmp_path / "off"),
            "--layout", "official", "--quiet")
    assert r.returncode == 0, r.stderr
    r = run("convert", "hf-to-mm", "--source", str(tmp_path / "missing"), "--target", str(tmp_path / "x"))
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = run("convert", "hf-to-mm", "--source", str(src), "--target", str(tmp_path / "x"), "--max-shard-size", "big")
    assert r.returncode == 2 and "--max-shard-size" in r.stderr and not (tmp_path / "x").exists()
    assert "NOTmemory-bounded" in "".join(run("convert", "hf-to-mm", "--help").stdout.split())


def test_mm_to_dcp_is_what_training_starts_from(tmp_path, tiny_checkpoints):
    """MindSpeed-MM's mm_to_dcp layout (checkpoint/sora_model/sora_model_converter.py: mm_to_dcp ->
    checkpoint/vlm_model/hf_to_mm.py: save_by_dcp): TARGET/release/ holding {"model": {mm key: tensor},
    "checkpoint_version": ...} as DCP, and the pointer "release"; read back with torch's own DCP tools."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from wan_core.weights.convert import mm_to_dcp

    src = tiny_checkpoints["t2v-a14b"]
    hf_to_mm(str(src), str(tmp_path / "mm"), progress=False)
    assert mm_to_dcp(str(tmp_path / "mm"), str(tmp_path / "dcp"), progress=False) == ["transformer", "transformer_2"]
    assert (tmp_path / "dcp" / "transformer" / "release" / ".metadata").is_file()
    low = tmp_path / "low-dcp"  # MindSpeed-MM's command line, one expert
    r = subprocess.run([sys.executable, "-c", "import sys; from wan_core.cli import mm_convert_main; "
                        "sys.exit(mm_convert_main(sys.argv[1:]))", "WanConverter", "mm_to_dcp", "--cfg.source_path",
                        str(tmp_path / "mm" / "transformer_2"), "--cfg.target_path", str(low), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (low / "latest_checkpointed_iteration.txt").read_text() == "release"
    dcp_to_torch_save(str(low / "release"), str(tmp_path / "low.pt"))
    blob = torch.load(tmp_path / "low.pt", weights_only=True)
    assert blob["checkpoint_version"] == 3.0
    assert_same_tensors(read_safetensors(tmp_path / "mm" / "transformer_2" / "release"), blob["model"])
    # every reader takes it: load_dit (what the trainer's build_model calls on load_path), and conversion back
    expected = wan_core.load_dit(src / "transformer_2").state_dict()
    got = wan_core.load_dit(low).state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    mm_to_hf(str(low), str(tmp_path / "back"), progress=False)
    assert_same_tensors(read_safetensors(src / "transformer_2"), read_safetensors(tmp_path / "back"))
