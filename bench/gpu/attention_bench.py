"""Attention timings: ttt's fused and composed paths (f32) and its fused bf16
path against PyTorch's scaled_dot_product_attention in f32 (whichever backend
it picks, named) and in bf16 with the flash backend, in one run on one GPU.

Usage: attention_bench.py ENGINE_CSV [BF16_CSV]
  ENGINE_CSV: the csv lines of `test_attention_fused --bench`
  BF16_CSV:   optional csv lines of dev/cuda/attention_bf16 --bench (ttt's bf16
              kernels one by one, in each configuration)

FLOP convention: causal forward = 4 * B * H * d * (visible query-key pairs),
T^2 / 2 pairs without a window (2 products of 2 flops per pair); backward =
2.5 x forward; forward + backward = 3.5 x forward. For the single kernels of
the bf16 backward: dK/dV (4 products) = 2 x forward, dQ (3 products) = 1.5 x
forward (ttt's deterministic backward does 7 products where FlashAttention-2
does 5, so its TFLOP/s by the 2.5 x convention undercount its work by 7/5).
"""
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def pairs(t, window):
    if window <= 0 or window >= t:
        return t * (t + 1) / 2
    return window * (window + 1) / 2 + (t - window) * window


def fwd_flops(b, h, t, d, window):
    return 4.0 * b * h * d * pairs(t, window)


def read_csv(path):
    rows = {}
    if not path:
        return rows
    with open(path) as f:
        for line in f:
            p = line.strip().split(",")
            if len(p) != 9 or p[0] != "csv" or p[1] == "path":
                continue
            _, path_, pas, b, h, t, d, w, ms = p
            rows[(path_, pas, int(t), int(w), int(b), int(d))] = (int(b), float(ms))
    return rows


def time_ms(fn, reps):
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)


def sdpa_times(b, h, t, d, dtype, backend, reps=10):
    """(fwd ms, fwd+bwd ms) of causal SDPA, or None where the backend refuses."""
    q, k, v = (torch.randn(b, h, t, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    g = torch.randn(b, h, t, d, device="cuda", dtype=dtype)
    ctx = sdpa_kernel([backend]) if backend is not None else None

    def fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def fwd_bwd():
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.autograd.grad(o, (q, k, v), g)

    try:
        if ctx is not None:
            with ctx:
                return time_ms(fwd, reps), time_ms(fwd_bwd, reps)
        return time_ms(fwd, reps), time_ms(fwd_bwd, reps)
    except RuntimeError as e:
        print(f"# sdpa {dtype} {backend}: {str(e).splitlines()[0]}")
        return None


def default_backend(dtype):
    """The backend SDPA picks by itself for causal [B, H, T, 64] inputs."""
    q = torch.randn(1, 12, 1024, 64, device="cuda", dtype=dtype)
    try:
        return SDPBackend(torch._fused_sdp_choice(q, q, q, is_causal=True)).name
    except Exception as e:  # a private helper: say so rather than guess
        return f"unknown ({type(e).__name__})"


def main():
    engine = read_csv(sys.argv[1] if len(sys.argv) > 1 else None)
    bf16_dev = read_csv(sys.argv[2] if len(sys.argv) > 2 else None)
    name = torch.cuda.get_device_name()
    f32_backend = default_backend(torch.float32)
    print(f"# device: {name}; torch {torch.__version__}; SDPA f32 default backend: {f32_backend}; "
          f"bf16 default: {default_backend(torch.bfloat16)}")
    h, d = 12, 64
    lines = []
    lines.append(f"GPU: {name}. Causal attention, H = {h}, d = {d}, B * T = 16K tokens (B = 1 from T = 16K). "
                 f"ms = median; TFLOP/s by the convention in attention_bench.py (fwd 2 B H T^2 d, fwd+bwd 3.5x that).")
    lines.append("")
    lines.append("| T | B | path | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | speed vs ttt fused (fwd / fwd+bwd) |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for t in (2048, 4096, 8192, 16384, 32768):
        b = 1 if t >= 16384 else 16384 // t
        flops = fwd_flops(b, h, t, d, 0)
        peers = []
        for path, label in (("fused", "ttt fused f32"), ("composed", "ttt composed f32"),
                            ("fused_bf16", "ttt fused bf16")):
            f = engine.get((path, "fwd", t, 0, b, d))
            fb = engine.get((path, "fwd+bwd", t, 0, b, d))
            if f or fb:
                peers.append((label, f[1] if f else None, fb[1] if fb else None))
        r = sdpa_times(b, h, t, d, torch.float32, None)
        if r:
            peers.append((f"SDPA f32 ({f32_backend})", *r))
        r = sdpa_times(b, h, t, d, torch.bfloat16, SDPBackend.FLASH_ATTENTION)
        if r:
            peers.append(("SDPA bf16 flash", *r))
        base_f = next((p[1] for p in peers if p[0] == "ttt fused f32"), None)
        base = next((p[2] for p in peers if p[0] == "ttt fused f32"), None)

        def fmt(ms, fl):
            return ("-", "-") if ms is None else (f"{ms:.2f}", f"{fl / ms / 1e9:.1f}")

        for label, fms, fbms in peers:
            a, at = fmt(fms, flops)
            c, ct = fmt(fbms, 3.5 * flops)
            ratio = (f"{base_f / fms:.2f}x" if base_f and fms else "-") + " / " + \
                (f"{base / fbms:.2f}x" if base and fbms else "-")
            lines.append(f"| {t} | {b} | {label} | {a} | {at} | {c} | {ct} | {ratio} |")
        print("\n".join(lines[-len(peers):]), flush=True)
    lines.append("")
    for dd in (64, 128):
        lines.append(f"bf16, causal, B = 1, H = {h}, d = {dd}: ttt's fused bf16 path (ttt_attention on bf16 tensors: "
                     f"mma.sync kernels) against SDPA bf16 flash. ratio = SDPA ms / ttt ms (1.00x: as fast as SDPA).")
        lines.append("")
        lines.append("| T | path | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | ratio fwd | ratio fwd+bwd |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for t in (2048, 4096, 8192, 16384, 32768, 65536, 131072):
            flops = fwd_flops(1, h, t, dd, 0)
            f = engine.get(("fused_bf16", "fwd", t, 0, 1, dd))
            fb = engine.get(("fused_bf16", "fwd+bwd", t, 0, 1, dd))
            if not f and not fb:
                continue
            r = sdpa_times(1, h, t, dd, torch.bfloat16, SDPBackend.FLASH_ATTENTION, reps=5 if t >= 65536 else 20)
            rows = [("ttt fused bf16", f[1] if f else None, fb[1] if fb else None)]
            if r:
                rows.append(("SDPA bf16 flash", *r))
            sf, sfb = (r[0], r[1]) if r else (None, None)
            for label, fms, fbms in rows:
                a = "-" if fms is None else f"{fms:.3f}"
                at = "-" if fms is None else f"{flops / fms / 1e9:.1f}"
                c = "-" if fbms is None else f"{fbms:.3f}"
                ct = "-" if fbms is None else f"{3.5 * flops / fbms / 1e9:.1f}"
                rf = f"{sf / fms:.2f}x" if sf and fms else "-"
                rfb = f"{sfb / fbms:.2f}x" if sfb and fbms else "-"
                lines.append(f"| {t} | {label} | {a} | {at} | {c} | {ct} | {rf} | {rfb} |")
            print("\n".join(lines[-len(rows):]), flush=True)
        lines.append("")
    kernels = [k for k in bf16_dev if k[0].startswith("bf16dev:")]
    if kernels:
        lines.append("")
        lines.append("bf16 kernels one by one (dev/cuda/attention_bf16.cu), causal, B = 1, H = 12: "
                     "ms (TFLOP/s: fwd 1x, dkdv 2x, dq 1.5x the forward's flops; delta: ms only)")
        lines.append("")
        lines.append("| d | T | kernel:config | ms | TFLOP/s |")
        lines.append("|---|---|---|---|---|")
        for (path, pas, t, w, b, dd), (_, ms) in sorted(bf16_dev.items(), key=lambda kv: (kv[0][5], kv[0][2], kv[0][0])):
            if not path.startswith("bf16dev:"):
                continue
            name = path[len("bf16dev:"):]
            mult = {"fwd": 1.0, "dkdv": 2.0, "dq": 1.5}.get(name.split(":")[0])
            tf = f"{mult * fwd_flops(b, 12, t, dd, w) / ms / 1e9:.1f}" if mult else "-"
            lines.append(f"| {dd} | {t} | {name} | {ms:.3f} | {tf} |")
    lines.append("")
    lines.append("Sliding window 8192, forward, B = 1, H = 12, d = 64 (SDPA has no window short of a dense mask):")
    lines.append("")
    lines.append("| T | path | ms | us per token | TFLOP/s |")
    lines.append("|---|---|---|---|---|")
    for t in (32768, 65536, 131072):
        for label, r in (("ttt fused f32", engine.get(("fused", "fwd", t, 8192, 1, d))),
                         ("ttt composed f32", engine.get(("composed", "fwd", t, 8192, 1, d))),
                         ("ttt fused bf16", engine.get(("fused_bf16", "fwd", t, 8192, 1, d)))):
            if r:
                fl = fwd_flops(1, h, t, d, 8192)
                lines.append(f"| {t} | {label} | {r[1]:.2f} | {1e3 * r[1] / t:.3f} | {fl / r[1] / 1e9:.1f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
