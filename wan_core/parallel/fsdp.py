"""Applying the parallel layout to the DiT (torchtitan's order): activation checkpointing, then regional
compilation, then FSDP2 per block and on the root, then context parallelism on self-attention."""
from __future__ import annotations

import torch


def parallelize(model, dims, groups, dtype: str, activation_checkpointing: bool = False, checkpoint_every: int = 1,
                compile_blocks: bool = False):
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from wan_core.parallel.context_parallel import ContextParallel

    if activation_checkpointing:
        model.enable_activation_checkpointing(checkpoint_every)
    if compile_blocks:
        model.compile_blocks()
    # bf16 parameters in compute, fp32 gradient reduction, fp32 master weights in the optimizer;
    # "fp32" keeps everything in fp32 (the layout-equality tests run that way)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if dtype == "bf16" else None,
                                  reduce_dtype=torch.float32)
    mesh = groups["fsdp_mesh"]
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    if dims.cp > 1:
        model.enable_context_parallel(ContextParallel(dims, groups))
    return model
