"""Run under torchrun (gloo): a WanSampler with --shard-weights over the whole world; rank 0 prints, as JSON,
the parameter elements each rank holds for the DiT(s) and the text encoder, next to the whole models'."""
import json
import sys

import torch.distributed as dist

import wan_core
from wan_core.sample.parallel import SampleGroup, SampleLayout
from wan_core.sample.sampler import WanSampler

folder = sys.argv[1]
dist.init_process_group("gloo")
group = SampleGroup(SampleLayout(cp=2, shard_weights=True), num_heads=2)
sampler = WanSampler(folder, group=group)


def local(module):
    return sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in module.parameters())


mine = {"dit": sum(local(e) for e in sampler.experts), "text": local(sampler.text.model)}
gathered = [None] * dist.get_world_size()
dist.all_gather_object(gathered, mine)
if dist.get_rank() == 0:
    whole = WanSampler(folder)
    full = {"dit": sum(p.numel() for e in whole.experts for p in e.parameters()),
            "text": sum(p.numel() for p in whole.text.model.parameters())}
    print(json.dumps({"ranks": gathered, "full": full}), flush=True)
dist.barrier()
dist.destroy_process_group()
