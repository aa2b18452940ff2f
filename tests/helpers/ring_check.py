"""Run under torchrun: ring attention (flash-kernel and math paths) vs float64 reference, with padded keys."""
import sys

import torch
import torch.distributed as dist

from wan_core.parallel.mesh import ParallelDims
from wan_core.parallel.context_parallel import ContextParallel
from wan_core.model.kernels import attention_reference
dist.init_process_group("gloo")
r = dist.get_rank(); w = dist.get_world_size()
dims = ParallelDims(w, w, "ring"); cp = ContextParallel(dims, dims.build_mesh())
torch.manual_seed(0)
B,L,H,D = 2, 12, 2, 8
q,k,v = (torch.randn(B,L,H,D, dtype=torch.float64).float().requires_grad_() for _ in range(3))
mask = torch.ones(B, L, dtype=torch.bool); mask[:, 9:] = False  # padded keys (last chunk partly, and for w=4 chunk 3 fully)
g = torch.randn(B,L,H,D)
ref = attention_reference(q, k, v, mask); (ref*g).sum().backward()
grads = [t.grad.clone() for t in (q,k,v)]
for t in (q,k,v): t.grad=None
c = L // w
ql, kl, vl = (t[:, r*c:(r+1)*c].detach().requires_grad_() for t in (q,k,v))
path = sys.argv[1]
out = cp._ring(ql, kl, vl, mask[:, r*c:(r+1)*c]) if path == "flash" else cp._ring_math(ql, kl, vl, mask[:, r*c:(r+1)*c])
(out * g[:, r*c:(r+1)*c]).sum().backward()
err = max((out - ref[:, r*c:(r+1)*c]).abs().max().item(), *[(a.grad - b[:, r*c:(r+1)*c]).abs().max().item() for a, b in zip((ql,kl,vl), grads)])
assert err < 1e-5, (r, path, err)
print("ok", r, path, err)
dist.barrier()
dist.destroy_process_group()
