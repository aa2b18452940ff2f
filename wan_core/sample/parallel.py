"""Sampling across processes: groups of (cfg x cp) processes each make one video at a time; the prompts are
split across the groups (group g takes prompts g, g + groups, ...).

Inside a group the DiT's sequence is sharded by the same context-parallel code training uses (Ulysses, Ring
or USP), `--cfg-parallel` puts the conditional and unconditional passes on two halves of the group, and
`--shard-weights` FSDP2-shards the DiT and the text encoder over the group (Wan2.2's `--dit_fsdp --t5_fsdp`).
Every rank of a group holds the same latents and takes the same scheduler steps (same noise, same gathered
predictions); the group's first rank decodes and writes.
MindSpeed-MM's inference.sh maps on: NPUS_PER_NODE -> --nproc, CP -> --cp, --context-parallel-algo
ulysses_cp_algo / megatron_cp_algo / hybrid_cp_algo -> --cp-algo, --ulysses-degree-in-cp -> --ulysses-degree.
"""
from __future__ import annotations

import dataclasses

import torch

from wan_core.errors import UserError
from wan_core.parallel.mesh import CP_ALGOS, ParallelDims


@dataclasses.dataclass(frozen=True)
class SampleLayout:
    """How the processes of one sampling run share the work (validated once against --nproc by `dims`)."""
    cp: int = 1
    cp_algo: str = "ulysses"
    ulysses_degree: int | None = None
    cfg_parallel: bool = False
    shard_weights: bool = False

    def __post_init__(self):
        if self.cp_algo not in CP_ALGOS:
            raise UserError(f"--cp-algo: one of ulysses, ring, usp (or MindSpeed-MM's ulysses_cp_algo, "
                            f"megatron_cp_algo, hybrid_cp_algo), got {self.cp_algo!r}")
        object.__setattr__(self, "cp_algo", CP_ALGOS[self.cp_algo])
        if self.cp < 1:
            raise UserError(f"--cp must be at least 1, got {self.cp}")
        if self.shard_weights and self.group_size == 1:
            raise UserError("--shard-weights shards the weights over the processes that make one video, and with "
                            "--cp 1 and no --cfg-parallel that is one process: add --cp K (or --cfg-parallel)")

    @property
    def group_size(self) -> int:
        return self.cp * (2 if self.cfg_parallel else 1)

    @property
    def needs_process_group(self) -> bool:
        """Whether the processes talk to each other (otherwise each works alone on its share of prompts)."""
        return self.group_size > 1 or self.shard_weights

    def dims(self, world_size: int, num_heads: int | None = None) -> ParallelDims:
        return ParallelDims(world_size, self.cp, self.cp_algo, self.ulysses_degree, num_heads,
                            cfg=2 if self.cfg_parallel else 1, knobs="sample")


class SampleGroup:
    """This process's place in a distributed sampling run: its mesh, its group, its role in the group."""

    def __init__(self, layout: SampleLayout, num_heads: int):
        import torch.distributed as dist

        from wan_core.parallel.context_parallel import ContextParallel

        self.layout = layout
        self.rank = dist.get_rank()
        self.dims = layout.dims(dist.get_world_size(), num_heads)
        self.mesh = self.dims.build_mesh()
        position = self.rank % self.dims.group_size
        self.group_index, self.groups = self.rank // self.dims.group_size, self.dims.dp
        self.cfg_rank = position // self.dims.cp
        self.writes = position == 0  # the group's first rank decodes and writes its videos
        self.context_parallel = ContextParallel(self.dims, self.mesh) if self.dims.cp > 1 else None
        self.shard_mesh = self.mesh["group"] if layout.shard_weights else None
        self._cfg_group = self.mesh["cfg"].get_group()

    @property
    def cfg_split(self) -> bool:
        return self.dims.cfg == 2

    def gather_guidance(self, mine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditional, unconditional) predictions from the CFG pair's two ranks (rank 0 of the pair made the
        conditional one)."""
        from wan_core.parallel.context_parallel import all_gather

        both = all_gather(mine, self._cfg_group, 2)
        return both.chunk(2)
