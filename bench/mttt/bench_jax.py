#!/usr/bin/env python3
"""Training throughput of the JAX reference ViT (bench/mttt/jax_mttt.py) for ttt's vision bench.

Times the jitted training step (forward, outer backward through the inner loops, global-norm
clip 1.0, AdamW) on random data, and prints one JSON line per config:
compile time, median / min / max step time over --steps timed steps, images/s (batch / median),
peak device memory (memory_stats()['peak_bytes_in_use'] where the backend reports it) and XLA's
compiled memory estimate.

Default: the paper's "pixels" setting at Fashion-MNIST size: 784 tokens of 1 feature, D=192,
depth 12, 3 heads (ViT-Tiny-like), MTTT-MLP, T=1, batch GD, eta 1.

  python3 bench/mttt/bench_jax.py                                   # the default config
  python3 bench/mttt/bench_jax.py --tokens 49,784,3136 --layer mttt-mlp,attention --batch 32
  python3 bench/mttt/bench_jax.py --depth 2 --dim 64 --heads 2 --batch 4 --steps 3   # a quick run

Comma lists in --tokens, --layer, --batch, --inner-steps, --dtype run the cartesian product,
each config in its own subprocess (so that peak memory is per config and an out-of-memory config
reports an error line instead of ending the sweep). Token features default to 784 // tokens for
tokens < 784 (49 -> 4x4 patches of 16 features, 196 -> 2x2 patches of 4) and 1 otherwise
(784 raw pixels, 3136 = pixels of 56x56 upsampled images).

Matmul precision defaults to "highest" (true fp32, like ttt's cublasSgemm, which runs without
TF32); --precision default lets XLA use TF32 on the GPU.
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

LAYERS = {
    # name: (kind, learner, feature)   -- the same names as `ttt vision --layer`
    "mttt-mlp": ("mttt", "mlp", "identity"),
    "mttt-linear": ("mttt", "linear", "identity"),
    "mttt-kernel": ("mttt", "kernel", "identity"),
    "attention": ("attention", "mlp", "identity"),
    "linear-attention": ("linear_attention", "mlp", "identity"),
    "linear-attention-elu": ("linear_attention", "mlp", "elu1"),
}

LIST_FLAGS = ("tokens", "layer", "batch", "inner_steps", "dtype")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="784", help="tokens per image n (comma list); default 784")
    ap.add_argument("--token-dim", type=int, default=0, help="features per token (0: 784 // n for n < 784, else 1)")
    ap.add_argument("--dim", type=int, default=192, help="width D (192)")
    ap.add_argument("--depth", type=int, default=12, help="blocks (12)")
    ap.add_argument("--heads", type=int, default=3, help="heads H (3)")
    ap.add_argument("--mlp-ratio", type=int, default=4)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--pos", choices=("learned", "sincos"), default="learned")
    ap.add_argument("--batch", default="64", help="images per step (comma list); default 64")
    ap.add_argument("--layer", default="mttt-mlp", help="comma list of: " + ", ".join(LAYERS))
    ap.add_argument("--inner-steps", default="1", help="MTTT inner steps T (comma list); default 1")
    ap.add_argument("--eta", type=float, default=1.0, help="inner learning rate (1.0)")
    ap.add_argument("--sgd", action="store_true", help="MTTT inner SGD over T random mini-batches")
    ap.add_argument("--no-decoder-ln", action="store_true", help="MTTT-MLP without the decoder LayerNorm")
    ap.add_argument("--remat", choices=("none", "block", "inner"), default="none",
                    help="jax.checkpoint each ViT block, or each MTTT inner step (ttt's --checkpoint)")
    ap.add_argument("--attn-impl", choices=("naive", "xla", "cudnn"), default="naive",
                    help="attention: naive = softmax of the full score matrix (as ttt); xla / cudnn = "
                         "jax.nn.dot_product_attention(implementation=...)")
    ap.add_argument("--dtype", default="float32", help="compute dtype float32 | bfloat16 (comma list); "
                                                       "parameters and AdamW state stay float32")
    ap.add_argument("--precision", choices=("highest", "high", "default"), default="highest",
                    help="jax_default_matmul_precision (highest = fp32, as ttt's cuBLAS Sgemm)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling (2)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-isolate", action="store_true", help="run several configs in this process")
    ap.add_argument("--out", default="", help="also append the JSON lines to this file")
    return ap.parse_args(argv)


def split_list(s, typ):
    return [typ(v) for v in str(s).split(",") if v.strip()]


def configs(args):
    lists = {
        "tokens": split_list(args.tokens, int),
        "layer": split_list(args.layer, str),
        "batch": split_list(args.batch, int),
        "inner_steps": split_list(args.inner_steps, int),
        "dtype": split_list(args.dtype, str),
    }
    for layer in lists["layer"]:
        if layer not in LAYERS:
            sys.exit("bench_jax: unknown --layer %s (one of %s)" % (layer, ", ".join(LAYERS)))
    for dt in lists["dtype"]:
        if dt not in ("float32", "bfloat16"):
            sys.exit("bench_jax: --dtype must be float32 or bfloat16, not %s" % dt)
    keys = list(lists)
    for combo in itertools.product(*(lists[k] for k in keys)):
        c = dict(zip(keys, combo))
        if not LAYERS[c["layer"]][0] == "mttt" or LAYERS[c["layer"]][1] == "kernel":
            # T only matters for the MTTT learners with an inner loop: do not repeat the others
            if c["inner_steps"] != lists["inner_steps"][0]:
                continue
        yield c


def emit(rec, args):
    line = json.dumps(rec, sort_keys=False)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


def run_one(args, c):
    """One config in this process: returns the JSON record."""
    import jax
    jax.config.update("jax_default_matmul_precision", args.precision)
    import numpy as np
    import jax.numpy as jnp
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    import jax_mttt as jm

    n = c["tokens"]
    token_dim = args.token_dim or (784 // n if n < 784 and 784 % n == 0 else 1)
    kind, learner, feature = LAYERS[c["layer"]]
    seq = jm.MTTTConfig(kind=kind, learner=learner, feature=feature, dim=args.dim, heads=args.heads,
                        steps=c["inner_steps"], eta=args.eta, sgd=args.sgd, no_decoder_ln=args.no_decoder_ln,
                        remat_inner=args.remat == "inner", attn_impl=args.attn_impl)
    cfg = jm.ViTConfig(token_dim=token_dim, n_tokens=n, dim=args.dim, depth=args.depth, heads=args.heads,
                       mlp_ratio=args.mlp_ratio, classes=args.classes, pos=args.pos, seq=seq,
                       remat_block=args.remat == "block", compute_dtype=c["dtype"])
    B = c["batch"]
    dev = jax.devices()[0]
    rec = {"layer": c["layer"], "tokens": n, "token_dim": token_dim, "dim": args.dim, "depth": args.depth,
           "heads": args.heads, "batch": B,
           "inner_steps": c["inner_steps"] if seq.has_inner_loop else None,
           "eta": args.eta if seq.has_inner_loop else None,
           "sgd": bool(args.sgd) if seq.has_inner_loop else None,
           "decoder_ln": (not args.no_decoder_ln) if seq.has_mlp else None,
           "attn_impl": args.attn_impl if kind == "attention" or learner == "kernel" else None,
           "dtype": c["dtype"], "precision": args.precision, "remat": args.remat,
           "device": getattr(dev, "device_kind", str(dev)), "platform": dev.platform, "jax": jax.__version__}
    try:
        rng = np.random.default_rng(args.seed)
        params, consts = jm.init_vit(rng, cfg, np.float32)
        rec["params"] = int(sum(int(np.prod(v.shape)) for v in params.values()))
        mask = jm.decay_mask(params)
        opt = jm.adamw_init(params)
        tokens = jnp.asarray(rng.standard_normal((B, n, token_dim)).astype(np.float32))
        labels = jnp.asarray(rng.integers(0, args.classes, size=B).astype(np.int32))
        lr = jnp.float32(args.lr)
        step = jm.make_train_step(cfg, mask, weight_decay=args.wd, clip=1.0)
        key = jax.random.PRNGKey(args.seed)

        t0 = time.perf_counter()
        compiled = step.lower(params, opt, consts, tokens, labels, lr, key).compile()
        rec["compile_s"] = round(time.perf_counter() - t0, 3)
        try:
            ma = compiled.memory_analysis()
            if ma is not None:
                rec["xla_temp_bytes"] = int(ma.temp_size_in_bytes)
                rec["xla_arg_bytes"] = int(ma.argument_size_in_bytes)
        except Exception:  # not every backend / version has it
            pass

        losses, times = [], []
        for i in range(args.warmup + args.steps):
            key, sub = jax.random.split(key)
            t0 = time.perf_counter()
            params, opt, loss, gnorm = compiled(params, opt, consts, tokens, labels, lr, sub)
            loss.block_until_ready()
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times.append(dt)
            losses.append(float(loss))
        med = statistics.median(times)
        rec.update(step_ms_median=round(med * 1e3, 3), step_ms_min=round(min(times) * 1e3, 3),
                   step_ms_max=round(max(times) * 1e3, 3), timed_steps=len(times),
                   images_per_s=round(B / med, 2), loss_first=round(losses[0], 5), loss_last=round(losses[-1], 5))
        if not all(np.isfinite(losses)):
            rec["warning"] = "non-finite loss"
        stats = None
        try:
            stats = dev.memory_stats()
        except Exception:
            pass
        rec["peak_bytes"] = int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None
        if rec["peak_bytes"] is not None:
            rec["peak_gib"] = round(rec["peak_bytes"] / 2**30, 3)
    except Exception as e:  # out of memory and friends: report, do not end a sweep
        msg = str(e).strip().splitlines()
        rec["error"] = "%s: %s" % (type(e).__name__, msg[0][:400] if msg else "")
    return rec


def main():
    args = parse_args()
    cs = list(configs(args))
    if len(cs) == 1 or args.no_isolate:
        for c in cs:
            emit(run_one(args, c), args)
        return
    # one subprocess per config, same flags with single values
    for c in cs:
        argv = [sys.executable, os.path.abspath(__file__)]
        skip_next = False
        raw = sys.argv[1:]
        for i, a in enumerate(raw):  # drop the list flags and --out; re-add single values
            if skip_next:
                skip_next = False
                continue
            name = a.split("=", 1)[0]
            if name.lstrip("-").replace("-", "_") in LIST_FLAGS + ("out",):
                skip_next = "=" not in a
                continue
            argv.append(a)
        for k in LIST_FLAGS:
            argv += ["--" + k.replace("_", "-"), str(c[k])]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        if p.returncode == 0 and lines:
            rec = json.loads(lines[-1])
        else:
            rec = dict(c, error="subprocess exit %d: %s" % (p.returncode, p.stderr.strip()[-400:]))
        emit(rec, args)


if __name__ == "__main__":
    main()
