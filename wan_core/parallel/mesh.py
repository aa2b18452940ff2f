"""ParallelDims: the layout of ranks (data-parallel shards x ring x Ulysses), validated once, when it is made
(torchtitan's shape), and one named DeviceMesh for it."""
from __future__ import annotations

import dataclasses

from wan_core.errors import UserError

CP_ALGO_NAMES = ("ulysses", "ring", "usp")  # the context-parallel algorithms
# ours and MindSpeed-MM's names for them
CP_ALGOS = {**{name: name for name in CP_ALGO_NAMES}, "ulysses_cp_algo": "ulysses", "megatron_cp_algo": "ring",
            "hybrid_cp_algo": "usp"}


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclasses.dataclass(frozen=True)
class ParallelDims:
    """world = dp x cfg x cp; cp = ring x ulysses (ulysses = cp for Ulysses, 1 for Ring, ulysses_degree for USP).
    Made from the real world size (nodes x devices per node) before anything launches, and again inside the
    run from the process group's; `num_heads` is checked when given (the model's attention heads).
    `cfg` is sampling's CFG-parallel degree (2: the conditional and unconditional passes on two ranks; training
    has 1); for sampling "dp" counts the groups that each make their own videos. `knobs` names the settings in
    messages: "train" (parallel.cp, ...) or "sample" (--cp, ...)."""
    world_size: int
    cp: int = 1
    cp_algo: str = "ulysses"
    ulysses_degree: int | None = None
    num_heads: int | None = None
    cfg: int = 1
    knobs: str = "train"

    def _name(self, knob: str) -> str:
        return f"parallel.{knob}" if self.knobs == "train" else "--" + knob.replace("_", "-")

    def __post_init__(self):
        """Every constraint, with the valid choices in the message."""
        if self.world_size < 1:
            raise UserError(f"the run has {self.world_size} processes; it needs at least one")
        if self.cfg not in (1, 2):
            raise UserError(f"the CFG-parallel degree is 1 or 2, got {self.cfg}")
        where = ("nodes x devices per node (locally --nproc)" if self.knobs == "train" else "--nproc")
        if self.cp < 1 or self.world_size % (self.cp * self.cfg):
            valid = [d for d in divisors(self.world_size) if self.world_size % (d * self.cfg) == 0]
            what = f"{self._name('cp')}={self.cp}"
            if self.cfg == 2:
                what += f" x 2 (--cfg-parallel) = {2 * self.cp} processes per video"
            raise UserError(f"{what} must divide the number of processes {self.world_size} (valid: "
                            f"{', '.join(map(str, valid)) or 'none'}); the number of processes is {where}")
        if self.cp_algo == "usp" and self.cp > 1 and (not self.ulysses_degree or self.cp % self.ulysses_degree):
            raise UserError(f"{self._name('ulysses_degree')}={self.ulysses_degree} must divide {self._name('cp')}="
                            f"{self.cp} for usp (valid: {', '.join(map(str, divisors(self.cp)))})")
        if self.num_heads is not None and self.num_heads % self.ulysses:
            valid = ", ".join(map(str, divisors(self.num_heads)))
            what = self._name("cp") if self.cp_algo == "ulysses" else self._name("ulysses_degree")
            raise UserError(f"{what}={self.ulysses}: the model's {self.num_heads} attention heads must divide by the "
                            f"Ulysses degree (valid: {valid}); use {self._name('cp_algo')} ring or usp for other CP sizes")

    @classmethod
    def of(cls, parallel, world_size: int, num_heads: int | None = None) -> "ParallelDims":
        """The layout a config's `parallel` section asks for on `world_size` processes."""
        return cls(world_size, parallel.cp, parallel.cp_algo, parallel.ulysses_degree, num_heads)

    @property
    def dp(self) -> int:
        return self.world_size // (self.cp * self.cfg)

    @property
    def group_size(self) -> int:
        """Processes that make one video together (sampling): cfg x cp."""
        return self.cfg * self.cp

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
        """One DeviceMesh [dp, cfg, ring, ulysses] (ranks in row-major order: a CP group is `cp` consecutive ranks,
        a Ulysses group consecutive runs inside it), with the flattened views context parallelism ("cp"), training's
        FSDP (over every rank: CP ranks hold the same parameters) and sampling's weight sharding (over the
        processes of one video, "group") use."""
        from torch.distributed.device_mesh import init_device_mesh

        from wan_core.device import accelerator_type

        mesh = init_device_mesh(accelerator_type(), (self.dp, self.cfg, self.ring, self.ulysses),
                                mesh_dim_names=("dp", "cfg", "ring", "ulysses"))
        return LayoutMesh(mesh, {"cp": mesh["ring", "ulysses"]._flatten("cp"),
                                 "dp_shard_cp": mesh["dp", "cfg", "ring", "ulysses"]._flatten("dp_shard_cp"),
                                 "group": mesh["cfg", "ring", "ulysses"]._flatten("group")})


class LayoutMesh:
    """The layout's DeviceMesh and its flattened views, each by name (torch asks callers to keep the flattened
    meshes they make rather than slice them back out of the root)."""

    def __init__(self, root, flattened: dict):
        self.root, self._flattened = root, flattened

    def __getitem__(self, name: str):
        return self._flattened[name] if name in self._flattened else self.root[name]
