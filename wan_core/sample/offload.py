"""Where the sampler's weights live between uses: `--offload none | model | sequential`.

- none: every component on the device throughout (the fastest; needs the most memory).
- model: one component on the device at a time: the text encoder while it encodes, then the active expert
  (A14B swaps its two experts at the boundary), then the VAE for decoding (diffusers'
  enable_model_cpu_offload; Wan2.2's reference `--offload_model --t5_cpu`).
- sequential: as model, and the DiT's blocks stream to the device one at a time for their own forward
  (diffusers' enable_sequential_cpu_offload): the least device memory, the most host-device traffic.
Moving weights changes no number: the frames are those of `none`.
"""
from __future__ import annotations

import torch

from wan_core.memory import OFFLOAD_ORDER as OFFLOAD_MODES  # one list: the plan orders them, this module runs them

HOME = torch.device("cpu")  # where offloaded weights wait


class Offloader:
    def __init__(self, mode: str, device: torch.device):
        if mode not in OFFLOAD_MODES:
            raise ValueError(f"offload mode {mode!r} is not one of {', '.join(OFFLOAD_MODES)}")
        self.mode, self.device = mode, torch.device(device)
        self.components: dict[str, torch.nn.Module] = {}
        self.streamed: set[str] = set()  # sequential mode: components whose blocks stream
        self.active: str | None = None
        self.moves: list[tuple[str, str]] = []  # (component, "device" | "home"), in order: what tests read
        self.block_moves = 0  # sequential: blocks brought to the device

    @property
    def initial(self) -> torch.device:
        """Where a component is loaded: the device (none) or the host (model, sequential)."""
        return self.device if self.mode == "none" else HOME

    def add(self, name: str, module: torch.nn.Module, blocks=None) -> None:
        """Register a component; with `blocks` (a DiT's), sequential mode streams those blocks."""
        self.components[name] = module
        if self.mode == "sequential" and blocks is not None:
            self.streamed.add(name)
            for block in blocks:
                block.register_forward_pre_hook(self._block_in)
                block.register_forward_hook(self._block_out)

    def use(self, name: str) -> None:
        """Make `name` ready to run: in model/sequential mode the previous component goes home first."""
        if self.mode == "none" or self.active == name:
            return
        if self.active is not None:
            self._move(self.active, HOME, "home")
        module = self.components[name]
        if name in self.streamed:
            # everything but the blocks (embeddings, head: small) stays on the device while it runs
            for child_name, child in module.named_children():
                if child_name != "blocks":
                    child.to(self.device)
            self.moves.append((name, "device"))
        else:
            self._move(name, self.device, "device")
        self.active = name

    def _move(self, name: str, where: torch.device, label: str) -> None:
        self.components[name].to(where)
        self.moves.append((name, label))

    def _block_in(self, block, args):
        self.block_moves += 1
        block.to(self.device)

    def _block_out(self, block, args, output):
        block.to(HOME)
