"""The peers of the mixer kernels (issue 14, item 4), timed the way bench/mixers/mixer_speed.c and
ttt_rnn_bench.c time ttt's, and printed in mixer_speed's csv so run_peer_gpu.sh can pair the rows:

    csv,impl,dtype,device,B,H,T,d,chunk,fwd_ms,fwd_bwd_ms,mem_gb

Implementations (--impl, comma-separated; the default is all that import):
  fla_gated_delta   flash-linear-attention's chunk_gated_delta_rule(q, l2norm(k), v, log sigmoid(a), sigmoid(b))
                    (the gates and the norm inside the timed region, as mixer_speed's gated_delta)
  fla_linear_attn   fla's chunk_linear_attn(elu1(q), elu1(k), v, normalize=True)   (mixer_speed's linear_attn)
  fla_ttt_linear    fla's chunk_ttt_linear (mini-batch 16, LayerNorm gain / bias [H, d], eta [B, T, H, 1])
  fla_ttt_linear_fused   fla's fused_chunk_ttt_linear, the same arguments
  official_ttt_linear, official_ttt_mlp   the official PyTorch layer (ttt-lm-pytorch's ttt.py, from --official)
                    at D = H d, mini-batch 16, the transformer backbone, on x [B, T, D]: projections,
                    RoPE, the inner loop, post-norm and output projection (ttt_rnn_bench's layer)

fla takes its own layout, [B, T, H, d]; the inputs are made in it (no transpose is timed). Each time is
the median of --reps runs after one warm-up, forward under no_grad, and forward + backward of
sum(y * y) with respect to every input (and the layer's parameters), synchronized at the end.

Usage (on the GPU machine; fla's wheels carried in .whl, see run_peer_gpu.sh):
  python3 bench/mixers/peer_speed.py --dtype bf16 --T 2048,8192 [--impl ...] [--official .peer/ttt.py]
"""
import argparse
import importlib.util
import statistics
import sys
import time
import types

import torch
import torch.nn.functional as F


def timed(fn, reps):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def load_official(path):
    """Imports the official ttt.py. Newer transformers lack a name or two it imports at the top
    (utilities, not the layer's math); those are filled in before the import, and said so."""
    import transformers.utils.import_utils as iu
    import transformers

    notes = []
    if not hasattr(iu, "is_causal_conv1d_available"):
        iu.is_causal_conv1d_available = lambda: False
        notes.append("is_causal_conv1d_available")
    if not hasattr(transformers, "PretrainedConfig") and hasattr(transformers, "PreTrainedConfig"):
        transformers.PretrainedConfig = transformers.PreTrainedConfig
        notes.append("PretrainedConfig")
    spec = importlib.util.spec_from_file_location("ttt_official", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if notes:
        print(f"# official ttt.py imported with {', '.join(notes)} filled in for transformers {transformers.__version__}",
              file=sys.stderr)
    return mod


def make_problem(impl, B, H, T, d, dtype, dev, official):
    """Returns (inputs needing grad, params, forward fn)."""
    shape = (B, T, H, d)
    if impl in ("fla_gated_delta", "fla_linear_attn", "fla_ttt_linear", "fla_ttt_linear_fused"):
        n_in = {"fla_gated_delta": 5, "fla_linear_attn": 3}.get(impl, 4)
        ins = [torch.randn(shape, device=dev, dtype=dtype) for _ in range(3)]
        if impl == "fla_gated_delta":
            ins += [torch.randn((B, T, H), device=dev, dtype=dtype) for _ in range(2)]
        elif n_in == 4:
            ins.append(torch.randn((B, T, H, 1), device=dev, dtype=dtype))
        for t in ins:
            t.requires_grad_(True)
        params = []
        if impl == "fla_gated_delta":
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule

            def fwd():
                q, k, v, a, b = ins
                return chunk_gated_delta_rule(F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, F.logsigmoid(a),
                                              torch.sigmoid(b), scale=1.0)[0]
        elif impl == "fla_linear_attn":
            from fla.ops.linear_attn import chunk_linear_attn

            def fwd():
                q, k, v = ins
                return chunk_linear_attn(F.elu(q) + 1, F.elu(k) + 1, v, scale=1.0, normalize=True)[0]
        else:
            from fla.ops.ttt import chunk_ttt_linear, fused_chunk_ttt_linear

            op = chunk_ttt_linear if impl == "fla_ttt_linear" else fused_chunk_ttt_linear
            w = torch.ones((H, d), device=dev, dtype=dtype, requires_grad=True)
            b = torch.zeros((H, d), device=dev, dtype=dtype, requires_grad=True)
            params = [w, b]

            def fwd():
                q, k, v, eta = ins
                return op(q, k, v, w, b, torch.sigmoid(eta) / d, scale=1.0, chunk_size=16)[0]
        return ins, params, fwd
    if impl in ("official_ttt_linear", "official_ttt_mlp"):
        mod = official()
        D = H * d
        cfg = mod.TTTConfig(hidden_size=D, num_attention_heads=H, intermediate_size=4 * D, num_hidden_layers=1,
                            mini_batch_size=16, ttt_layer_type="linear" if impl.endswith("linear") else "mlp",
                            ttt_base_lr=1.0 if impl.endswith("linear") else 0.1, use_gate=False, share_qk=False,
                            pre_conv=False, max_position_embeddings=max(T, 2048), scan_checkpoint_group_size=0)
        layer = (mod.TTTLinear if impl.endswith("linear") else mod.TTTMLP)(cfg, layer_idx=0).to(dev, dtype)
        x = torch.randn((B, T, D), device=dev, dtype=dtype, requires_grad=True)
        pos = torch.arange(T, device=dev).unsqueeze(0).expand(B, T)

        def fwd():
            return layer(x, position_ids=pos)
        return [x], list(layer.parameters()), fwd
    raise SystemExit(f"peer_speed: unknown --impl {impl}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impl", default="fla_gated_delta,fla_linear_attn,fla_ttt_linear,fla_ttt_linear_fused,"
                                       "official_ttt_linear,official_ttt_mlp")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--T", default="2048,8192")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--official", default=".peer/ttt-lm-pytorch/ttt.py", help="the official ttt.py (not committed)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("peer_speed: needs a CUDA GPU")
    dev = "cuda"
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    cache = {}

    def official():
        if "m" not in cache:
            cache["m"] = load_official(a.official)
        return cache["m"]

    print(f"# device {torch.cuda.get_device_name()} torch {torch.__version__}")
    try:
        import fla

        print(f"# fla {getattr(fla, '__version__', '?')}")
    except Exception as e:  # reported per row below as well
        print(f"# fla did not import: {e}")
    print("csv,impl,dtype,device,B,H,T,d,chunk,fwd_ms,fwd_bwd_ms,mem_gb")
    for impl in a.impl.split(","):
        for T in [int(t) for t in a.T.split(",")]:
            torch.manual_seed(0)
            torch.cuda.reset_peak_memory_stats()
            try:
                ins, params, fwd = make_problem(impl, a.batch, a.heads, T, a.dim, dtype, dev, official)

                def f_only():
                    with torch.no_grad():
                        fwd()

                def f_b():
                    y = fwd()
                    (y.float() * y.float()).sum().backward()
                    for t in ins + params:
                        t.grad = None
                print(f"# {impl} T {T}: running", file=sys.stderr, flush=True)
                fms = timed(f_only, a.reps)
            except Exception as e:  # one peer failing must not hide the others
                print(f"# {impl} T {T}: failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            try:
                bms = timed(f_b, a.reps)
            except Exception as e:  # e.g. fla refuses its gated backward on Hopper with Triton < 3.7.1
                print(f"# {impl} T {T}: forward only; the backward failed: {type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}")
                bms = float("nan")
            chunk = 16 if "ttt" in impl else 64
            mem = torch.cuda.max_memory_allocated() / 2**30
            print(f"csv,{impl},{a.dtype},cuda,{a.batch},{a.heads},{T},{a.dim},{chunk},{fms:.3f},{bms:.3f},{mem:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
