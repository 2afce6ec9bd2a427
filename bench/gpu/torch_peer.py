"""PyTorch peer for bench_cuda: the same ops and sizes, timed the same way
(CUDA events, median of 20), so the two tables can be read side by side."""
import torch

torch.backends.cuda.matmul.allow_tf32 = False  # FP32 math, like the ttt run
dev = "cuda"


def bench(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    return sorted(times)[reps // 2]


print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
print("\n== torch matmul f32 (no TF32) ==")
for n in (1024, 4096, 8192):
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    t = bench(lambda: a @ b)
    print(f"{n:<8} {2 * n**3 / t * 1e-12:16.1f} TFLOP/s")

N = 1 << 27
x = torch.randn(N, device=dev)
y = torch.randn(N, device=dev)
rows = x.view(N // 1024, 1024)
ops = [
    ("add", lambda: x + y, 12 * N),
    ("exp", lambda: torch.exp(x), 8 * N),
    ("gelu", lambda: torch.nn.functional.gelu(x, approximate="tanh"), 8 * N),
    ("sum over last axis (1024)", lambda: rows.sum(-1), 4 * N),
    ("softmax (rows of 1024)", lambda: torch.softmax(rows, -1), 8 * N),
    ("layer_norm (rows of 1024)", lambda: torch.nn.functional.layer_norm(rows, (1024,)), 8 * N),
    ("transpose copy (contiguous)", lambda: rows.t().contiguous(), 8 * N),
]
print(f"\n== torch bandwidth f32, {N} elements ==")
for name, fn, nbytes in ops:
    print(f"{name:<32} {nbytes / bench(fn) * 1e-9:10.0f} GB/s")
