"""Applying the parallel layout to the DiT (torchtitan's order): activation checkpointing, then regional
compilation, then FSDP2 per block and on the root, then context parallelism on self-attention."""
from __future__ import annotations

import torch


def parallelize(model, dims, mesh, dtype: str, activation_checkpointing: bool = False,
                compile_blocks: bool = False):
    """`mesh`: dims.build_mesh(); FSDP shards over its flattened "dp_shard_cp" view (every rank)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from wan_core.parallel.context_parallel import ContextParallel

    if activation_checkpointing:
        model.enable_activation_checkpointing()
    if compile_blocks:
        model.compile_blocks()
    # bf16 parameters in compute, fp32 gradient reduction, fp32 master weights in the optimizer;
    # "fp32" keeps everything in fp32 (the layout-equality tests run that way)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if dtype == "bf16" else None,
                                  reduce_dtype=torch.float32)
    shards = mesh["dp_shard_cp"]
    for block in model.blocks:
        fully_shard(block, mesh=shards, mp_policy=policy)
    fully_shard(model, mesh=shards, mp_policy=policy)
    if dims.cp > 1:
        model.enable_context_parallel(ContextParallel(dims, mesh))
    return model


def shard_for_inference(model, blocks, mesh):
    """FSDP2 for a frozen model at inference (sampling's --shard-weights, Wan's --dit_fsdp/--t5_fsdp): each block
    and the root sharded over the 1-D `mesh`; a block's weights are gathered for its forward and freed after."""
    from torch.distributed.fsdp import fully_shard

    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model
