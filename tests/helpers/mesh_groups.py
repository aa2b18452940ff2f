"""Run under torchrun (gloo): the process groups ParallelDims' mesh gives context parallelism and
FSDP, printed by rank 0 as JSON, for the test to compare with the layout written out by hand."""
import json
import sys

import torch.distributed as dist

from wan_core.parallel.mesh import ParallelDims

dist.init_process_group("gloo")
world = dist.get_world_size()
dims = ParallelDims(world, cp=int(sys.argv[1]), cp_algo=sys.argv[2], ulysses_degree=int(sys.argv[3]) or None)
mesh = dims.build_mesh()
mine = {name: dist.get_process_group_ranks(mesh[name].get_group())
        for name in ("cp", "ulysses", "ring", "dp_shard_cp")}
gathered = [None] * world
dist.all_gather_object(gathered, mine)
if dist.get_rank() == 0:
    print(json.dumps(gathered), flush=True)
dist.barrier()  # no rank leaves while another still talks to it (gloo aborts on a closed peer)
dist.destroy_process_group()
