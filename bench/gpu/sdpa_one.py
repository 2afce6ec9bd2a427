"""One bf16 causal attention forward + backward through PyTorch SDPA's flash backend (B 1, H 12), a warm-up and
3 more runs, for a profiler to pick its kernels from (bench/gpu/ncu_attention.sh).
Usage: sdpa_one.py T D"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

t, d = int(sys.argv[1]), int(sys.argv[2])
q, k, v = (torch.randn(1, 12, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
g = torch.randn(1, 12, t, d, device="cuda", dtype=torch.bfloat16)
with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
    for _ in range(4):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o.backward(g)
torch.cuda.synchronize()
print(f"sdpa flash T {t} d {d}: ok")
