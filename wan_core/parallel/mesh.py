"""ParallelDims: the layout of ranks (data-parallel shards x context parallel), checked up front."""
from __future__ import annotations

import dataclasses

import torch

from wan_core.errors import UserError


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclasses.dataclass(frozen=True)
class ParallelDims:
    """world = dp_shard x cp; cp = ulysses x ring (ulysses = cp for Ulysses, 1 for Ring)."""
    world_size: int
    cp: int = 1
    cp_algo: str = "ulysses"
    ulysses_degree: int | None = None

    @property
    def dp(self) -> int:
        return self.world_size // self.cp

    @property
    def ulysses(self) -> int:
        if self.cp_algo == "ulysses":
            return self.cp
        if self.cp_algo == "ring":
            return 1
        return self.ulysses_degree or 1

    @property
    def ring(self) -> int:
        return self.cp // self.ulysses

    def validate(self, num_heads: int) -> None:
        """Every constraint, before any process group exists, with the valid choices in the message."""
        if self.cp < 1 or self.world_size % self.cp:
            raise UserError(f"parallel.cp={self.cp} must divide the number of processes {self.world_size} "
                            f"(valid: {', '.join(map(str, divisors(self.world_size)))})")
        if self.cp_algo == "usp":
            if not self.ulysses_degree or self.cp % self.ulysses_degree:
                raise UserError(f"parallel.ulysses_degree={self.ulysses_degree} must divide parallel.cp={self.cp} for "
                                f"usp (valid: {', '.join(map(str, divisors(self.cp)))})")
        if num_heads % self.ulysses:
            valid = ", ".join(map(str, divisors(num_heads)))
            what = "parallel.cp" if self.cp_algo == "ulysses" else "parallel.ulysses_degree"
            raise UserError(f"{what}={self.ulysses}: the model's {num_heads} attention heads must divide by the "
                            f"Ulysses degree (valid: {valid}); use cp_algo ring or usp for other CP sizes")

    def build_groups(self):
        """Process groups: cp (all CP ranks of my dp group), ulysses and ring subgroups, and a DeviceMesh
        over all ranks for FSDP (which shards over dp x cp: CP ranks hold the same parameters)."""
        from torch.distributed.device_mesh import init_device_mesh

        rank = torch.distributed.get_rank()
        groups = {}
        for name, members in (("cp", self._cp_members), ("ulysses", self._ulysses_members),
                              ("ring", self._ring_members)):
            mine = None
            for ranks in members():
                g = torch.distributed.new_group(ranks)
                if rank in ranks:
                    mine = (g, ranks)
            groups[name] = mine
        from wan_core.device import accelerator_type

        device_type = accelerator_type()  # the one device rule, which also chose the collective backend
        groups["fsdp_mesh"] = init_device_mesh(device_type, (self.world_size,), mesh_dim_names=("dp_shard_cp",))
        return groups

    def _cp_members(self):
        return [list(range(d * self.cp, (d + 1) * self.cp)) for d in range(self.dp)]

    def _ulysses_members(self):  # consecutive runs of `ulysses` ranks inside each cp group
        return [list(range(s, s + self.ulysses)) for s in range(0, self.world_size, self.ulysses)]

    def _ring_members(self):  # ranks with the same ulysses index inside a cp group
        out = []
        for d in range(self.dp):
            base = d * self.cp
            for j in range(self.ulysses):
                out.append([base + r * self.ulysses + j for r in range(self.ring)])
        return out
