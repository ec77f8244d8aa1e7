"""Whether bf16 pays on this CPU: a short matmul timing, bf16 against fp32.

CPUs differ: with AMX or AVX-512 BF16 a bf16 matmul runs 2-4x faster than fp32 (on an AMD Zen 5,
bf16 autocast trained benchmarks/trainer_throughput.py's cpu-d256 shape 2.2x faster), while on a
CPU without bf16 instructions PyTorch converts and the same step ran at 0.64x (ar) and 0.74x (mdm)
of fp32 (an Intel Xeon with AVX-512 BF16 but no AMX, one thread). A trial's precision is part of
what it trains, so the tool cannot switch it; it can say when the CPU at hand makes it slow.
"""

from __future__ import annotations

import time

import torch

_SIZE = 256  # rows and columns: a transformer block's matmuls at the quickstart's widths and up


def bf16_matmul_speed_ratio(repeats: int = 20, rounds: int = 3) -> float:
    """Throughput of a (256 x 256) @ (256 x 256) matmul in bf16 over fp32 on the CPU, > 1 when
    bf16 is faster; the best of `rounds` timings of `repeats` products each, about 20 ms in all."""
    a32 = torch.randn(_SIZE, _SIZE, generator=torch.Generator().manual_seed(0))
    b32 = torch.randn(_SIZE, _SIZE, generator=torch.Generator().manual_seed(1))
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def best_seconds(a: torch.Tensor, b: torch.Tensor) -> float:
        a @ b  # warm up the kernel choice
        timings = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                a @ b
            timings.append(time.perf_counter() - start)
        return min(timings)

    return best_seconds(a32, b32) / best_seconds(a16, b16)
