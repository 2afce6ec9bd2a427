"""ttt's bf16 attention through cuDNN against ttt's own kernels and PyTorch SDPA
(flash backend, and its cuDNN backend where this torch has one), causal,
B = 1, H = 12, d 64 and 128, T 2K to 32K, forward and forward + backward.

Usage: cudnn_attention_bench.py ENGINE_CSV
  ENGINE_CSV: the csv lines of `test_attention_cudnn --bench` (paths
              cudnn_bf16, cudnnfwd_bf16 (TTT_CUDNN=fwd: cuDNN's forward, our
              backward), cudnndet_bf16 (TTT_CUDNN=det: cuDNN's deterministic
              backward; both forwards are cudnn_bf16's) and own_bf16; a cuDNN
              line is missing where cuDNN declined, and the csv says why in a
              "# cudnn declined" line)

FLOP convention as bench/gpu/attention_bench.py (causal forward 2 B H T^2 d,
forward + backward 3.5x that). ratio = SDPA flash ms / path ms (1.00x: as fast
as SDPA flash).
"""
import os
import sys

import torch
from torch.nn.attention import SDPBackend

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attention_bench import fwd_flops, read_csv, sdpa_times  # noqa: E402


def main():
    engine = read_csv(sys.argv[1] if len(sys.argv) > 1 else None)
    name = torch.cuda.get_device_name()
    cudnn_backend = getattr(SDPBackend, "CUDNN_ATTENTION", None)
    print(f"# device: {name}; torch {torch.__version__}; torch's cuDNN {torch.backends.cudnn.version()}")
    h = 12
    for d in (64, 128):
        print()
        print(f"Causal bf16 attention, B = 1, H = {h}, d = {d}. ms = median; TFLOP/s: fwd 2 B H T^2 d, fwd+bwd 3.5x; "
              f"ratio = SDPA flash ms / ms.")
        print()
        print("| T | path | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | ratio fwd | ratio fwd+bwd |")
        print("|---|---|---|---|---|---|---|---|")
        for t in (2048, 4096, 8192, 16384, 32768):
            flops = fwd_flops(1, h, t, d, 0)
            reps = 10 if t >= 16384 else 20
            rows = []
            for path, label in (("cudnn_bf16", "ttt via cuDNN"), ("cudnndet_bf16", "ttt via cuDNN, deterministic backward"),
                                ("cudnnfwd_bf16", "ttt, cuDNN forward + our backward"), ("own_bf16", "ttt own kernels")):
                f = engine.get((path if path in ("cudnn_bf16", "own_bf16") else "cudnn_bf16", "fwd", t, 0, 1, d))
                fb = engine.get((path, "fwd+bwd", t, 0, 1, d))
                rows.append((label, f[1] if f else None, fb[1] if fb else None))
            flash = sdpa_times(1, h, t, d, torch.bfloat16, SDPBackend.FLASH_ATTENTION, reps=reps)
            rows.append(("SDPA flash", *(flash if flash else (None, None))))
            if cudnn_backend is not None:
                r = sdpa_times(1, h, t, d, torch.bfloat16, cudnn_backend, reps=reps)
                rows.append(("SDPA cuDNN", *(r if r else (None, None))))
            sf, sfb = flash if flash else (None, None)
            for label, fms, fbms in rows:
                a = "-" if fms is None else f"{fms:.3f}"
                at = "-" if fms is None else f"{flops / fms / 1e9:.1f}"
                c = "-" if fbms is None else f"{fbms:.3f}"
                ct = "-" if fbms is None else f"{3.5 * flops / fbms / 1e9:.1f}"
                rf = f"{sf / fms:.2f}x" if sf and fms else "-"
                rfb = f"{sfb / fbms:.2f}x" if sfb and fbms else "-"
                print(f"| {t} | {label} | {a} | {at} | {c} | {ct} | {rf} | {rfb} |", flush=True)


if __name__ == "__main__":
    main()
