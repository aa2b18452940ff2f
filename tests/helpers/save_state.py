"""Save the same model + optimizer state as a DCP checkpoint from 1 process or from N FSDP ranks.
usage: [torchrun ...] save_state.py MODEL_DIR SAVE_PATH"""
import sys

import torch

import wan_core
from wan_core.parallel.env import init_distributed
from wan_core.train.checkpoint import CheckpointManager

penv = init_distributed(120)
model = wan_core.load_dit(sys.argv[1], dtype=torch.float32)
if penv is not None and penv.world_size > 1:
    from wan_core.parallel.fsdp import parallelize
    from wan_core.parallel.mesh import ParallelDims

    dims = ParallelDims(penv.world_size)
    parallelize(model, dims, dims.build_mesh(), "fp32")
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
CheckpointManager(sys.argv[2], keep_last=2).save(7, model, optimizer, {"step": 7, "model_config": model.config.to_diffusers()}
                                                  if hasattr(model, "config") else {"step": 7})
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
