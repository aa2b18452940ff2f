"""MindSpeed-MM's configs train MindSpeed-MM's objective. Each reference below is MindSpeed-MM's formula written
out from its source (Ascend/MindSpeed-MM), not our code:
- mindspeed_mm/models/diffusion/wan_flow_match_scheduler.py: WanFlowMatchScheduler._set_timesteps (sigma grid
  and bell weights), q_sample (first-frame latents replace the noise of frame 0; ONE timestep index per batch,
  randint(int(min_b * N), int(max_b * N))), training_losses (MSE mean over every element, frame 0 included,
  times the weight of the batch's timestep);
- mindspeed_mm/models/predictor/dits/wan_dit.py: WanDiT.forward with seperated_timestep (5B): frame-0 tokens get
  timestep 0, the other frames t, whatever the task.
Our own default stays per-sample draws with frame 0 excluded from the TI2V loss; MindSpeed-MM configs switch
to per-batch draws and frame 0 included (objective.timestep_draw, data.ti2v_loss)."""
import json
import os

import pytest
import torch
import yaml

from wan_core.errors import UserError
from wan_core.train import objective
from wan_core.train.config import from_mindspeed

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "mindspeed-mm-wan2.2-configs")


def mm_set_timesteps(num_steps, shift, sigma_min, sigma_max, extra_one_step):
    """WanFlowMatchScheduler._set_timesteps(num_train_timesteps, training=True), float32 as MindSpeed-MM runs it."""
    sigma_start = sigma_min + (sigma_max - sigma_min)
    if extra_one_step:
        sigmas = torch.linspace(sigma_start, sigma_min, num_steps + 1)[:-1]
    else:
        sigmas = torch.linspace(sigma_start, sigma_min, num_steps)
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    timesteps = sigmas * num_steps
    y = torch.exp(-2 * ((timesteps - num_steps / 2) / num_steps) ** 2)
    y_shifted = y - y.min()
    return sigmas, timesteps, y_shifted * (num_steps / y_shifted.sum())


@pytest.mark.parametrize("params", [(1000, 5.0, 0.0, 1.0, True), (1000, 3.0, 0.003 / 1.002, 1.0, False),
                                    (500, 7.5, 0.01, 0.9, True)])
def test_schedule_equals_mindspeed_mm(params):
    ours = objective.FlowMatchSchedule(*params).tables()
    for a, b in zip(ours, mm_set_timesteps(*params)):
        torch.testing.assert_close(a.float(), b, rtol=2e-5, atol=2e-4)


def mm_config(tmp_path, folder, model_file, diffusion=None, predictor=None):
    """A copy of MindSpeed-MM's pretrain_model json with some diffusion / predictor keys replaced."""
    raw = json.loads(open(os.path.join(SHARED, folder, model_file)).read())
    if diffusion is not None:
        raw["diffusion"] = diffusion
    raw["predictor"].update(predictor or {})
    out = tmp_path / model_file
    out.write_text(json.dumps(raw))
    return os.path.join(SHARED, folder, "data.json"), str(out)


def test_diffusion_block_is_honoured_and_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, model = mm_config(tmp_path, "A14B/t2v", "pretrain_model_low.json",
                            {"model_id": "wan_flow_match_scheduler", "shift": 3.5, "min_timestep_boundary": 0.2,
                             "max_timestep_boundary": 0.6})
    cfg = from_mindspeed(data, model, ["save_path=s"])
    o = cfg.objective  # left-out keys take WanFlowMatchScheduler's constructor defaults
    assert (o.shift, o.num_train_timesteps, o.sigma_min, o.extra_one_step) == (3.5, 1000, 0.003 / 1.002, False)
    assert (o.min_timestep_boundary, o.max_timestep_boundary, o.timestep_draw) == (0.2, 0.6, "per_batch")
    assert cfg.model.expert == "low" and cfg.save_path == str(tmp_path / "s")  # working-folder paths
    sched = objective.FlowMatchSchedule(1000, 3.5, o.sigma_min, 1.0, False)
    assert sched.index_range(0.2, 0.6) == (200, 600)
    for bad, message in [({"shift": -1}, "shift"), ({"min_timestep_boundary": 0.7, "max_timestep_boundary": 0.6},
                                                    "boundary"), ({"model_id": "ddpm"}, "model_id"),
                         ({"sigma_min": 1.5}, "sigma_min")]:
        data, model = mm_config(tmp_path, "A14B/t2v", "pretrain_model_low.json",
                                {"model_id": "wan_flow_match_scheduler", **bad})
        with pytest.raises(UserError, match=message):
            from_mindspeed(data, model, ["save_path=s"])


def mm_loss(model, x0, noise, first_frame_latents, text, index, sched, separated):
    """q_sample + WanDiT.forward (seperated_timestep) + training_losses, for one micro-batch."""
    sigmas, timesteps, weights = (t.float() for t in sched)
    noise = noise.clone()
    if first_frame_latents is not None:
        noise[:, :, 0:1] = first_frame_latents
    timestep, sigma = timesteps[index], sigmas[index]  # one index for the whole batch
    x_t = (1 - sigma) * x0 + sigma * noise
    b, _, frames, h, w = x0.shape
    if separated:
        per_token = torch.cat([torch.zeros(1, h * w // 4), torch.ones(frames - 1, h * w // 4) * timestep]).flatten()
        t_in = per_token.expand(b, -1)
    else:
        t_in = timestep.expand(b)
    out = model(x_t, t_in, text)
    return torch.nn.functional.mse_loss(out.float(), (noise - x0).float()) * weights[index]


@pytest.mark.parametrize("folder,task", [("5B/ti2v", "ti2v"), ("5B/t2v", "t2v")])
def test_5b_loss_equals_mindspeed_mm(tmp_path, monkeypatch, tiny_checkpoints, folder, task):
    from wan_core.data.dataset import VideoClipDataset, collate
    from wan_core.data.demo import make_demo_dataset
    from wan_core.train.trainer import Trainer

    demo = make_demo_dataset(tmp_path / "demo", videos=2)
    monkeypatch.chdir(tmp_path)
    cfg = from_mindspeed(os.path.join(SHARED, folder, "data.json"), os.path.join(SHARED, folder, "pretrain_model.json"),
                         [f"model.from_pretrained={tiny_checkpoints['ti2v-5b']}", f"data.data_txt={demo / 'data.txt'}",
                          "data.num_frames=9", "data.height=32", "data.width=32", "save_path=save"])
    assert cfg.model.task == task and cfg.objective.separated_timestep and cfg.data.ti2v_loss == "all_frames"
    trainer = Trainer(cfg)
    d = cfg.data
    dataset = VideoClipDataset(trainer.entries, d.num_frames, d.height, d.width, d.fps, cfg.train.seed)
    batch = collate([dataset[0], dataset[1]])  # a micro-batch of two: one timestep for both (per batch)
    ours = trainer.loss(batch)
    shape = trainer.variant.latent_shape(d.num_frames, d.height, d.width)
    draws = trainer.per_sample_draws(batch, shape)
    assert draws["index"][0] == draws["index"][1]
    x0, text, _ = trainer.encode(batch, draws["drop"])
    first = x0[:, :, :1] if task == "ti2v" else None  # MindSpeed-MM encodes frame 0 alone: same latent (causal VAE)
    with torch.no_grad():
        reference = mm_loss(trainer.model, x0, draws["noise"], first, text, int(draws["index"][0]),
                            trainer.schedule.tables(), separated=True)
    torch.testing.assert_close(ours.detach(), reference, rtol=1e-5, atol=1e-7)


def mm_load_from_mm(load_dir):
    """checkpoint/sora_model/convert_utils/save_load_utils.py: load_from_mm (no pipeline parallelism): the pointer's
    first line compared to "release" without stripping, then every mp_rank folder's model_optim_rng.pt."""
    with open(os.path.join(load_dir, "latest_checkpointed_iteration.txt")) as f:
        latest = f.readline()
    directory = "release" if latest == "release" else "iter_{:07d}".format(int(latest))
    states = {}
    for sub_dir in os.listdir(os.path.join(load_dir, directory)):
        states[sub_dir] = torch.load(os.path.join(load_dir, directory, sub_dir, "model_optim_rng.pt"),
                                     map_location="cpu", weights_only=True)
    return states


def test_mindspeed_mm_reads_the_mm_folders_we_write(tmp_path, tiny_checkpoints):
    import wan_core
    from wan_core.weights.checkpoint_layout import read_pointer, write_pointer
    from wan_core.weights.convert import hf_to_mm

    hf_to_mm(str(tiny_checkpoints["t2v-a14b"] / "transformer"), str(tmp_path / "mm"), fmt="mm-pt", progress=False)
    states = mm_load_from_mm(tmp_path / "mm")
    assert list(states) == ["mp_rank_00"]
    expected = wan_core.load_dit(tiny_checkpoints["t2v-a14b"] / "transformer").state_dict()
    got = states["mp_rank_00"]["model"]
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    # our readers take both spellings of the pointer (Megatron's bare value and an older trailing newline)
    (tmp_path / "mm" / "latest_checkpointed_iteration.txt").write_text("release\n")
    assert read_pointer(tmp_path / "mm") == "release"
    write_pointer(tmp_path / "mm", 7)
    assert (tmp_path / "mm" / "latest_checkpointed_iteration.txt").read_text() == "7"


MM_TRAIN_CONFIGS = [("5B/t2v", "pretrain_model.json"), ("5B/ti2v", "pretrain_model.json"),
                    ("A14B/t2v", "pretrain_model_high.json"), ("A14B/t2v", "pretrain_model_low.json"),
                    ("A14B/i2v", "pretrain_model_high.json"), ("A14B/i2v", "pretrain_model_low.json")]


@pytest.mark.parametrize("folder,model_file", MM_TRAIN_CONFIGS)
def test_grids_are_mindspeed_mms_bit_for_bit(folder, model_file, tmp_path, monkeypatch):
    """Under each MindSpeed-MM config the sigma, timestep and weight grids are WanFlowMatchScheduler's float32
    ones exactly (torch.equal), built from the file's own diffusion block."""
    monkeypatch.chdir(tmp_path)
    cfg = from_mindspeed(os.path.join(SHARED, folder, "data.json"), os.path.join(SHARED, folder, model_file),
                         ["save_path=s"])
    o = cfg.objective
    raw = json.loads(open(os.path.join(SHARED, folder, model_file)).read()).get("diffusion", {})
    reference = mm_set_timesteps(raw.get("num_train_timesteps", 1000), raw.get("shift", 3.0),
                                 raw.get("sigma_min", 0.003 / 1.002), raw.get("sigma_max", 1.0),
                                 raw.get("extra_one_step", False))
    ours = objective.FlowMatchSchedule(o.num_train_timesteps, o.shift, o.sigma_min, o.sigma_max, o.extra_one_step,
                                       o.grid_dtype).tables()
    for a, b in zip(ours, reference):
        assert a.dtype == torch.float32 and torch.equal(a, b)
