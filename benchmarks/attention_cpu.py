"""Measures the CPU attention candidates once, to fix the rule in wan_core.model.kernels.attention.

Forward + backward in fp32 of SDPA (fused CPU kernel) vs plain matmul-softmax, over shapes from tiny
to Wan-sized. Prints ms and GFLOP/s per shape, and a large fp32 matmul's GFLOP/s as the peer.
    python benchmarks/attention_cpu.py
"""
import time

import torch
import torch.nn.functional as F

from wan_core.model.kernels import attention_math

SHAPES = [(1, 64, 2, 16, 64), (1, 256, 2, 16, 32), (2, 1536, 8, 64, 1536), (2, 1536, 8, 64, 512),
          (1, 1024, 2, 128, 1024), (1, 2048, 24, 128, 512)]


def best_time(fn, repeats=3):
    out = fn()
    grad = torch.randn_like(out)
    out.backward(grad)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn().backward(grad)
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    torch.manual_seed(0)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    matmul = 2 * 2048**3 * 5 / (time.perf_counter() - t0) / 1e9
    print(f"fp32 matmul 2048^3: {matmul:.1f} GFLOP/s")
    for bsz, lq, heads, d, lk in SHAPES:
        q = torch.randn(bsz, lq, heads, d, requires_grad=True)
        k, v = (torch.randn(bsz, lk, heads, d, requires_grad=True) for _ in range(2))
        flops = 12 * bsz * heads * lq * lk * d  # 2 matmuls forward, 4 backward
        sdpa = best_time(lambda: F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))))
        plain = best_time(lambda: attention_math(q, k, v))
        print(f"B={bsz} Lq={lq} H={heads} D={d} Lk={lk}: sdpa {sdpa * 1e3:8.2f} ms ({flops / sdpa / 1e9:6.1f} GFLOP/s)"
              f"  math {plain * 1e3:8.2f} ms ({flops / plain / 1e9:6.1f} GFLOP/s)  sdpa/math time {sdpa / plain:.2f}")


if __name__ == "__main__":
    main()
