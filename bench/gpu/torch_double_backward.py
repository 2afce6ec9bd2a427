"""The PyTorch peer of bench/gpu/attn_double_backward.c: the double backward of
causal attention with scaled_dot_product_attention forced to the MATH backend
(the one whose backward is itself differentiable), on [B, H, T, d] tensors:

    out        = sdpa(q, k, v, causal, scale)            MATH backend
    L          = sum(out * w)
    dq, dk, dv = autograd.grad(L, (q, k, v), create_graph=True)
    S          = sum(dq * u1) + sum(dk * u2) + sum(dv * u3)
    hq, hk, hv = autograd.grad(S, (q, k, v))

Modes:
  (default)            time forward + first backward + double backward (median wall time of
                       --reps after --warmup, torch.cuda.synchronize() around each) for every
                       --T and --dtypes; one csv line each, the columns of the C program:
                         csv,impl,dtype,device,B,H,T,d,window,ms,gflop,tflops,mem_gb
                       ms is "OOM" where the GPU runs out of memory. mem_gb: peak allocated.
  --check PATH         write a float64 fixture (safetensors) for attn_double_backward --fixture:
                       two cases (window 0 with the default scale; window 3 with scale 0.3), each
                       with inputs CASE.{q,k,v,w,u1,u2,u3}, first-order CASE.{dq,dk,dv} and
                       second-order CASE.{hq,hk,hv}; metadata B, H, T, d, cases, CASE.window,
                       CASE.scale. Before writing, the math backend is checked against attention
                       written out by hand (the mask convention) and against finite differences.
  --table TTT TORCH    one markdown table from the csv lines of both programs (no torch needed).

The sliding window (--window > 0) is a boolean mask (SDPA has no window argument); without a
window the mask is is_causal=True. f32 matmuls run without TF32 (as ttt's default). gflop: the
roofline count of attn_double_backward.c, 7 x the causal forward (4 B H d per visible pair).
"""
import argparse
import gc
import json
import os
import statistics
import struct
import sys
import time

# ---- safetensors (8-byte little-endian header length, JSON header, raw little-endian data) ----


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype "F64"/"F32", shape tuple, raw little-endian bytes)}; metadata: {str: str}.
    Written to path.tmp, then renamed over path."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---- the computation ----


def pairs(t, window):
    if window <= 0 or window >= t:
        return t * (t + 1) / 2
    return window * (window + 1) / 2 + (t - window) * window


def gflop(b, h, t, d, window):
    return 28.0 * b * h * d * pairs(t, window) * 1e-9


def window_mask(torch, t, window, device):
    """True where query i may see key j: j <= i and i - j < window."""
    i = torch.arange(t, device=device).view(t, 1)
    j = torch.arange(t, device=device).view(1, t)
    return (j <= i) & (i - j < window)


def attention(torch, q, k, v, window, scale, mask=None):
    """Causal SDPA on the MATH backend (mask: a precomputed window mask, or None to make one)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        if window > 0:
            if mask is None:
                mask = window_mask(torch, q.shape[-2], window, q.device)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)


def double_backward(torch, q, k, v, w, u, window, scale, mask=None, attn=None):
    """(first-order grads, second-order grads) of L = sum(attn(q, k, v) * w) and S = sum(g1 * u)."""
    attn = attn or (lambda q_, k_, v_: attention(torch, q_, k_, v_, window, scale, mask))
    out = attn(q, k, v)
    loss = (out * w).sum()
    g1 = torch.autograd.grad(loss, (q, k, v), create_graph=True)
    s = sum((g * ui).sum() for g, ui in zip(g1, u))
    g2 = torch.autograd.grad(s, (q, k, v), allow_unused=True)
    g2 = tuple(torch.zeros_like(x) if g is None else g for g, x in zip(g2, (q, k, v)))
    return g1, g2


# ---- timings ----


def is_oom(torch, e):
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (oom and isinstance(e, oom)) or "out of memory" in str(e).lower()


def bench_one(torch, b, h, t, d, window, dtype, reps, warmup):
    """(median ms, peak GB) or ("OOM", None)."""
    dev = "cuda"
    scale = 1.0 / d**0.5
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    gen = torch.Generator(device=dev).manual_seed(1)
    try:
        mk = lambda: torch.randn(b, h, t, d, device=dev, generator=gen).to(dtype)  # noqa: E731
        q, k, v = (mk().requires_grad_(True) for _ in range(3))
        w = mk()
        u = tuple(mk() for _ in range(3))
        mask = window_mask(torch, t, window, dev) if window > 0 else None
        times = []
        for r in range(warmup + reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            g1, g2 = double_backward(torch, q, k, v, w, u, window, scale, mask)
            torch.cuda.synchronize()
            if r >= warmup:
                times.append(1e3 * (time.perf_counter() - t0))
            if not all(torch.isfinite(g).all() for g in g2):
                raise RuntimeError("non-finite second-order gradient")
            del g1, g2
        return statistics.median(times), torch.cuda.max_memory_allocated() / 1e9
    except RuntimeError as e:
        if not is_oom(torch, e):
            raise
        return "OOM", None


def run_bench(args):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"# device: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
          f"SDPA MATH backend, create_graph=True; f32 without TF32", flush=True)
    if args.header:
        print("csv,impl,dtype,device,B,H,T,d,window,ms,gflop,tflops,mem_gb", flush=True)
    dtypes = {"f32": torch.float32, "bf16": torch.bfloat16, "f64": torch.float64}
    for t in args.T:
        for name in args.dtypes:
            ms, mem = bench_one(torch, args.batch, args.heads, t, args.dim, args.window, dtypes[name], args.reps,
                                args.warmup)
            gc.collect()  # the tensors of an OOM'ed attempt go with its frame
            torch.cuda.empty_cache()
            fl = gflop(args.batch, args.heads, t, args.dim, args.window)
            head = f"csv,torch-math,{name},cuda,{args.batch},{args.heads},{t},{args.dim},{args.window}"
            if ms == "OOM":
                print(f"{head},OOM,{fl:.2f},,", flush=True)
            else:
                print(f"{head},{ms:.3f},{fl:.2f},{fl / ms:.2f},{mem:.2f}", flush=True)


# ---- the float64 fixture ----


def run_check(args):
    import torch

    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    b, h, t, d = 2, 3, 9, 5
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    tensors, meta, fails = {}, {"B": b, "H": h, "T": t, "d": d, "made_by": "bench/gpu/torch_double_backward.py",
                                "torch": torch.__version__, "device": dev}, 0
    cases = [("full", 0, 1.0 / d**0.5), ("win", 3, 0.3)]
    for case, window, scale in cases:
        x = [torch.randn(b, h, t, d, generator=gen, dtype=torch.float64).to(dev) for _ in range(7)]
        q, k, v = (xi.clone().requires_grad_(True) for xi in x[:3])
        w, u = x[3], tuple(x[4:])
        g1, g2 = double_backward(torch, q, k, v, w, u, window, scale)

        # the same by hand: the mask convention (query i sees key j <= i, i - j < window) and the scale
        def by_hand(q_, k_, v_):
            s = (q_ @ k_.transpose(-1, -2)) * scale
            m = window_mask(torch, t, window if window > 0 else t + 1, dev)
            return torch.softmax(s.masked_fill(~m, float("-inf")), dim=-1) @ v_

        r1, r2 = double_backward(torch, q, k, v, w, u, window, scale, attn=by_hand)
        err = max(float((a - c).detach().abs().max() / c.detach().abs().max()) for a, c in zip(g1 + g2, r1 + r2))
        ok = err < 1e-12
        fails += not ok
        print(f"case {case} (window {window}, scale {scale:g}): SDPA math vs attention by hand, first and second "
              f"order: {err:.2e} {'ok' if ok else 'FAIL'}")

        # second order against central differences of S (from first-order gradients), a few coordinates
        def s_of(qkv):
            qq, kk, vv = (z.detach().clone().requires_grad_(True) for z in qkv)
            out = attention(torch, qq, kk, vv, window, scale)
            gg = torch.autograd.grad((out * w).sum(), (qq, kk, vv))
            return float(sum((gi * ui).sum() for gi, ui in zip(gg, u)))

        worst, eps = 0.0, 1e-5
        for which in range(3):
            for idx in torch.randint(0, b * h * t * d, (6,), generator=gen).tolist():
                plus = [z.detach().clone() for z in (q, k, v)]
                minus = [z.detach().clone() for z in (q, k, v)]
                plus[which].view(-1)[idx] += eps
                minus[which].view(-1)[idx] -= eps
                num = (s_of(plus) - s_of(minus)) / (2 * eps)
                ana = float(g2[which].reshape(-1)[idx])
                worst = max(worst, abs(ana - num) / (1e-6 + 1e-5 * abs(num)))
        ok = worst <= 1
        fails += not ok
        print(f"case {case}: second order vs finite differences (18 coordinates): worst {worst:.2e} "
              f"{'ok' if ok else 'FAIL'}")

        names = ["q", "k", "v", "w", "u1", "u2", "u3", "dq", "dk", "dv", "hq", "hk", "hv"]
        for name, val in zip(names, list(x) + list(g1) + list(g2)):
            arr = val.detach().to("cpu", torch.float64).contiguous()
            tensors[f"{case}.{name}"] = ("F64", tuple(arr.shape), arr.numpy().tobytes())
        meta[f"{case}.window"] = window
        meta[f"{case}.scale"] = repr(float(scale))
    meta["cases"] = ",".join(c for c, _, _ in cases)
    if fails:
        raise SystemExit(f"{fails} check(s) failed: no fixture written")
    write_safetensors(args.check, tensors, meta)
    print(f"wrote {args.check}")


# ---- the table ----


def read_rows(paths):
    rows = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                p = line.strip().split(",")
                if len(p) != 13 or p[0] != "csv" or p[1] == "impl":
                    continue
                _, impl, dtype, _, b, h, t, d, window, ms, fl, _, mem = p
                rows[(impl, dtype, int(t))] = (ms, float(fl), mem, (int(b), int(h), int(d), int(window)))
    return rows


def run_table(paths):
    rows = read_rows(paths)
    ts = sorted({k[2] for k in rows})
    shape = next(iter(rows.values()))[3] if rows else None
    if shape:
        print(f"B = {shape[0]}, H = {shape[1]}, d = {shape[2]}, window = {shape[3]}. ms: median of forward + first "
              "backward (create_graph) + double backward. TFLOP/s by the roofline count (7 x the causal forward). "
              "ratio: torch ms / ttt f32 ms (> 1: ttt is faster).")
        print()
    print("| T | impl | dtype | ms | TFLOP/s | peak GB | ratio torch / ttt f32 |")
    print("|---|---|---|---|---|---|---|")

    def ms_of(key):
        r = rows.get(key)
        try:
            return float(r[0]) if r else None
        except ValueError:
            return None

    for t in ts:
        base = ms_of(("ttt", "f32", t))
        for key in sorted((k for k in rows if k[2] == t), key=lambda k: (k[0] != "ttt", k[0], k[1])):
            ms, fl, mem, _ = rows[key]
            m = ms_of(key)
            tf = f"{fl / m:.2f}" if m else "-"
            ratio = f"{m / base:.2f}" if (m and base and key[0] != "ttt") else "-"
            print(f"| {t} | {key[0]} | {key[1]} | {ms if m is None else f'{m:.2f}'} | {tf} | {mem or '-'} | {ratio} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--window", type=int, default=0)
    ap.add_argument("--dtypes", nargs="+", default=["f32", "bf16"], choices=["f32", "bf16", "f64"])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-header", dest="header", action="store_false")
    ap.add_argument("--check", metavar="PATH", help="write the float64 fixture to PATH")
    ap.add_argument("--device", help="--check: cuda or cpu (default: cuda if available)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--table", nargs="+", metavar="CSV", help="print a markdown table of these csv files")
    args = ap.parse_args(argv)
    if args.table:
        run_table(args.table)
    elif args.check:
        run_check(args)
    else:
        run_bench(args)


if __name__ == "__main__":
    main(sys.argv[1:])
