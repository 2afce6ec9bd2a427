#!/usr/bin/env python3
"""Write tests/fixtures/mttt_jax_fixture.safetensors: float64 outputs and gradients of the MTTT
layer computed by JAX (bench/mttt/jax_mttt.py), for checking ttt's C implementation.

Tiny config: B=2, n=5, D=8, H=2 (d=4). Three cases, each under its own prefix P:
  mlp      MTTT-MLP, batch GD, T=2, eta=0.5, decoder LN
  linear   MTTT-Linear, batch GD, T=1, eta=1 (W_0 = 0)
  mlp_sgd  MTTT-MLP, SGD, T=2 (mini-batches of 3 and 2 tokens), eta=0.5, decoder LN, token order
           ttt_mttt_sgd_order(seed=7, B, H, n) (stored as P.order, I32 [B, H, n])
For each case:
  P.<name>       the parameters, names and shapes as in mttt.h (psi_w, psi_b, phi_w, phi_b, g_w,
                 h_w, h_b[, w1, b1, w2, b2, ln_g, ln_b])
  P.x            input [B, n, D]
  P.out          layer output [B, n, D]
  P.R            random weights [B, n, D] of the scalar loss L = sum(out * R)
  P.grad.<name>  dL/d<name> for every parameter, and P.grad.x = dL/dx
  P.inner_loss   [T + 1] the inner loss before each step (on that step's tokens) and after the last
                 (on all n), averaged over batch and heads (ttt_mttt_run_opts.inner_loss)
The header's __metadata__ holds each case's config as JSON (key P) and the generator's versions.

With --vit-out PATH it also writes a ViT fixture (not meant to be committed, ~150 KB): a
2-block ViT (tokens [3, 4, 3], D=8, H=2, 3 classes, learned positions, MTTT-MLP T=2 eta 0.5) under
the prefixes vit_gd (batch GD) and vit_sgd (SGD, ttt's orders for ttt_vit_run_opts.seed = 11):
  P.p.<vit.h name>  parameters (init distributions of vit.h, then + 0.05 N(0, 1) noise)
  P.tokens, P.labels (I32), P.logits, P.loss [1]  mean cross-entropy
  P.g.<name>        d loss / d parameter
  P.gnorm [1]       the global gradient norm before clipping
  P.n.<name>        the parameters after clipping to norm 0.5 and two AdamW steps with those
                    gradients (lr 1e-2, betas 0.9/0.999, eps 1e-8, wd 0.1 on vit.h's decay set)
bench/mttt/check_c.c compares ttt against both files.

Run with a CPU jax: python3 bench/mttt/make_fixture.py [--out PATH] [--vit-out PATH]
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import jax_mttt as jm  # noqa: E402

B, N, D, H = 2, 5, 8, 2
SEED = 20240601
SGD_SEED = 7

CASES = [
    ("mlp", jm.MTTTConfig(kind="mttt", learner="mlp", dim=D, heads=H, steps=2, eta=0.5)),
    ("linear", jm.MTTTConfig(kind="mttt", learner="linear", dim=D, heads=H, steps=1, eta=1.0)),
    ("mlp_sgd", jm.MTTTConfig(kind="mttt", learner="mlp", dim=D, heads=H, steps=2, eta=0.5, sgd=True)),
]


def make_params(rng, cfg):
    """mttt.h's init distributions for the matrices; biases and the LN affine drawn away from 0 / 1
    so that every path carries a nonzero value."""
    p = jm.init_mttt(rng, cfg, np.float64)
    for k in p:
        if k in ("psi_b", "phi_b", "h_b", "b1", "b2", "ln_b"):
            p[k] = 0.1 * rng.standard_normal(p[k].shape)
        elif k == "ln_g":
            p[k] = 1.0 + 0.1 * rng.standard_normal(p[k].shape)
    return p


def write_safetensors(path, tensors, metadata):
    """The safetensors format by hand: u64 LE header length, JSON header, raw little-endian data."""
    dtypes = {np.dtype("<f8"): "F64", np.dtype("<i4"): "I32"}
    header, blobs, off = {"__metadata__": {k: metadata[k] for k in sorted(metadata)}}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"))
        raw = a.tobytes()
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)  # pad to 8 bytes, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def vit_case(rng, sgd, seed=11):
    seq = jm.MTTTConfig(kind="mttt", learner="mlp", steps=2, eta=0.5, sgd=sgd)
    cfg = jm.ViTConfig(token_dim=3, n_tokens=4, dim=8, depth=2, heads=2, classes=3, seq=seq,
                       compute_dtype="float64")
    params, consts = jm.init_vit(rng, cfg, np.float64)
    params = {k: v + 0.05 * jnp.asarray(rng.standard_normal(v.shape)) for k, v in params.items()}
    tokens = jnp.asarray(rng.standard_normal((3, cfg.n_tokens, cfg.token_dim)))
    labels = jnp.asarray(rng.integers(0, cfg.classes, size=3).astype(np.int32))
    orders = None
    if sgd:
        orders = [jnp.asarray(jm.sgd_order_ttt(jm.vit_block_seed(seed, i), 3, cfg.heads, cfg.n_tokens))
                  for i in range(cfg.depth)]

    def loss_fn(p):
        return jm.cross_entropy(jm.vit_forward(p, consts, tokens, cfg, orders=orders), labels)

    logits = jm.vit_forward(params, consts, tokens, cfg, orders=orders)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    mask = jm.decay_mask(params)
    clipped, norm = jm.clip_by_global_norm(grads, 0.5)
    newp, st = jm.adamw_update(params, clipped, jm.adamw_init(params), 1e-2, 0.1, mask)
    newp, st = jm.adamw_update(newp, clipped, st, 1e-2, 0.1, mask)
    out = {"tokens": tokens, "labels": labels, "logits": logits, "loss": loss[None], "gnorm": norm[None]}
    for k in params:
        out["p." + k], out["g." + k], out["n." + k] = params[k], grads[k], newp[k]
    meta = {"token_dim": 3, "n_tokens": 4, "dim": 8, "depth": 2, "heads": 2, "classes": 3, "pos": "learned",
            "learner": "mlp", "steps": 2, "eta": 0.5, "sgd": int(sgd), "seed": seed, "clip": 0.5, "lr": 1e-2,
            "wd": 0.1, "adamw_steps": 2}
    return {k: np.asarray(v) for k, v in out.items()}, json.dumps(meta, sort_keys=True)


def save(path, tensors, meta):
    """Written by write_safetensors (byte-reproducible: sorted names and metadata; the safetensors
    library orders __metadata__ by hash), then, where the `safetensors` package is installed, read
    back with it and compared."""
    path = os.path.normpath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    write_safetensors(path, tensors, meta)
    os.chmod(path, 0o644)
    try:
        from safetensors.numpy import load_file
    except ImportError:
        how = "not re-read: no safetensors package"
    else:
        back = load_file(path)
        assert set(back) == set(tensors)
        assert all(back[k].dtype == tensors[k].dtype and np.array_equal(back[k], tensors[k]) for k in tensors)
        how = "re-read with safetensors.numpy: identical"
    print("wrote %s (%d tensors, %d bytes; %s)" % (path, len(tensors), os.path.getsize(path), how))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "fixtures", "mttt_jax_fixture.safetensors"))
    ap.add_argument("--vit-out", default="", help="also write the ViT fixture here")
    args = ap.parse_args()

    rng = np.random.default_rng(SEED)
    tensors, meta = {}, {}
    for prefix, cfg in CASES:
        p = make_params(rng, cfg)
        x = rng.standard_normal((B, N, D))
        R = rng.standard_normal((B, N, D))
        order = jm.sgd_order_ttt(SGD_SEED, B, H, N) if cfg.sgd else None
        pj = {k: jnp.asarray(v) for k, v in p.items()}
        oj = None if order is None else jnp.asarray(order)

        def loss(pj, x):
            return jnp.sum(jm.mttt_forward(pj, x, cfg, order=oj) * R)

        out, inner = jm.mttt_forward(pj, jnp.asarray(x), cfg, order=oj, return_inner=True)
        gp, gx = jax.grad(loss, argnums=(0, 1))(pj, jnp.asarray(x))
        assert set(p) == set(jm.mttt_param_names(cfg))
        for k in jm.mttt_param_names(cfg):
            tensors[f"{prefix}.{k}"] = p[k]
            tensors[f"{prefix}.grad.{k}"] = np.asarray(gp[k])
        tensors[f"{prefix}.x"] = x
        tensors[f"{prefix}.out"] = np.asarray(out)
        tensors[f"{prefix}.R"] = R
        tensors[f"{prefix}.grad.x"] = np.asarray(gx)
        tensors[f"{prefix}.inner_loss"] = np.asarray(inner)
        if order is not None:
            tensors[f"{prefix}.order"] = order.astype(np.int32)
        c = {"kind": cfg.kind, "learner": cfg.learner, "dim": D, "heads": H, "batch": B, "n": N,
             "steps": cfg.steps, "eta": cfg.eta, "sgd": int(cfg.sgd), "no_decoder_ln": int(cfg.no_decoder_ln),
             "loss": "sum(out * R)"}
        if cfg.sgd:
            c["sgd_seed"] = SGD_SEED
        meta[prefix] = json.dumps(c, sort_keys=True)
        assert all(np.isfinite(np.asarray(v)).all() for v in tensors.values())
    meta["generator"] = "bench/mttt/make_fixture.py (jax %s, numpy %s, seed %d, float64)" % (
        jax.__version__, np.__version__, SEED)

    save(args.out, tensors, meta)
    for k in sorted(tensors):
        print("  %-22s %-4s %s" % (k, "I32" if tensors[k].dtype == np.int32 else "F64", list(tensors[k].shape)))

    if args.vit_out:
        vrng = np.random.default_rng(SEED + 1)
        vt, vmeta = {}, {"generator": meta["generator"]}
        for prefix, sgd in (("vit_gd", False), ("vit_sgd", True)):
            t, m = vit_case(vrng, sgd)
            vt.update({prefix + "." + k: v for k, v in t.items()})
            vmeta[prefix] = m
        save(args.vit_out, vt, vmeta)


if __name__ == "__main__":
    main()
