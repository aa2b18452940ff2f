"""ParallelDims: the layout of ranks (data-parallel shards x ring x Ulysses), validated once, when it is made
(torchtitan's shape), and one named DeviceMesh for it."""
from __future__ import annotations

import dataclasses

from wan_core.errors import UserError


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclasses.dataclass(frozen=True)
class ParallelDims:
    """world = dp x cp; cp = ring x ulysses (ulysses = cp for Ulysses, 1 for Ring, ulysses_degree for USP).
    Made from the real world size (nodes x devices per node) before anything launches, and again inside the
    run from the process group's; `num_heads` is checked when given (the model's attention heads)."""
    world_size: int
    cp: int = 1
    cp_algo: str = "ulysses"
    ulysses_degree: int | None = None
    num_heads: int | None = None

    def __post_init__(self):
        """Every constraint, with the valid choices in the message."""
        if self.world_size < 1:
            raise UserError(f"the run has {self.world_size} processes; it needs at least one")
        if self.cp < 1 or self.world_size % self.cp:
            raise UserError(f"parallel.cp={self.cp} must divide the number of processes {self.world_size} "
                            f"(valid: {', '.join(map(str, divisors(self.world_size)))}); the number of processes is "
                            "nodes x devices per node (locally --nproc)")
        if self.cp_algo == "usp" and self.cp > 1 and (not self.ulysses_degree or self.cp % self.ulysses_degree):
            raise UserError(f"parallel.ulysses_degree={self.ulysses_degree} must divide parallel.cp={self.cp} for "
                            f"usp (valid: {', '.join(map(str, divisors(self.cp)))})")
        if self.num_heads is not None and self.num_heads % self.ulysses:
            valid = ", ".join(map(str, divisors(self.num_heads)))
            what = "parallel.cp" if self.cp_algo == "ulysses" else "parallel.ulysses_degree"
            raise UserError(f"{what}={self.ulysses}: the model's {self.num_heads} attention heads must divide by the "
                            f"Ulysses degree (valid: {valid}); use cp_algo ring or usp for other CP sizes")

    @classmethod
    def of(cls, parallel, world_size: int, num_heads: int | None = None) -> "ParallelDims":
        """The layout a config's `parallel` section asks for on `world_size` processes."""
        return cls(world_size, parallel.cp, parallel.cp_algo, parallel.ulysses_degree, num_heads)

    @property
    def dp(self) -> int:
        return self.world_size // self.cp

    @property
    def ulysses(self) -> int:
        if self.cp_algo == "ulysses":
            return self.cp
        if self.cp_algo == "ring":
            return 1
        return min(self.ulysses_degree or 1, self.cp)

    @property
    def ring(self) -> int:
        return self.cp // self.ulysses

    def build_mesh(self):
        """One DeviceMesh [dp, ring, ulysses] (ranks in row-major order: a CP group is `cp` consecutive ranks,
        a Ulysses group consecutive runs inside it), with the flattened views context parallelism ("cp") and
        FSDP (over every rank: CP ranks hold the same parameters) use."""
        from torch.distributed.device_mesh import init_device_mesh

        from wan_core.device import accelerator_type

        mesh = init_device_mesh(accelerator_type(), (self.dp, self.ring, self.ulysses),
                                mesh_dim_names=("dp", "ring", "ulysses"))
        mesh["ring", "ulysses"]._flatten("cp")
        mesh["dp", "ring", "ulysses"]._flatten("dp_shard_cp")
        return mesh
