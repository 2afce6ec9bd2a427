"""Independent float64 PyTorch reference for TTT-Linear / TTT-MLP (Sun et al., arXiv 2407.04620),
written from the paper's equations in their PRIMAL form, with the inner gradient taken by
torch.autograd (create_graph=True) from the inner loss itself, so it shares no formula with the
C layer's dual form (src/layers/ttt_rnn.c, which writes the LayerNorm/L2 backward and gelu's
derivative out by hand). Writes tests/fixtures/ttt_rnn_fixture.safetensors:
    c<i>.<param suffix>, c<i>.x, c<i>.r, c<i>.y, c<i>.grad.<param suffix>, c<i>.grad.x
for L = sum(y * r), with the configuration in the metadata.
    /tmp/torchenv/bin/python bench/mixers/torch_ttt_rnn.py --out tests/fixtures

The layer, per head h (head dim d), for inputs x [B, T, D]:
    q, k, v projections (mamba backbone: q, k from causal depthwise convs of one projection)
    q, k rotated by RoPE at the position within the mini-batch (rotate-half pairs (i, i + d/2))
    f(z; W) = z + LN_h(f_res(z; W)),  l(W; t) = 1/2 ||f(k_t; W) - v_t||^2
    eta_t = base_lr sigmoid(x_t . w_h + b_h) / d,   tok_i = max(0, 1/i + offset_i)
    W_i = W_0 - tok_i sum_{j<=i} eta_j grad_W l(W_0; j) within each mini-batch; the next starts at W_b
    z_i = f(q_i; W_i); then post LayerNorm, (mamba) gelu(x Wg^T) gate, o projection.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lm"))
from torch_lm import write_safetensors  # noqa: E402

EPS = 1e-6
CONFIGS = [
    dict(kind=0, backbone=0, dim=8, heads=2, mini_batch=4, base_lr=1.0, B=2, T=11),  # Linear, transformer
    dict(kind=1, backbone=0, dim=8, heads=2, mini_batch=4, base_lr=0.1, B=2, T=11),  # MLP, transformer
    dict(kind=0, backbone=1, dim=8, heads=2, mini_batch=4, base_lr=1.0, B=2, T=11),  # Linear, mamba
    dict(kind=1, backbone=1, dim=8, heads=2, mini_batch=4, base_lr=0.1, B=2, T=11),  # MLP, mamba
]
THETA = 10000.0


def rope(x, pos):  # x [..., n, d] at positions pos [n]
    d = x.shape[-1]
    inv = THETA ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2.0 / d)
    ang = pos.double()[:, None] * inv[None, :]
    a, b = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()], dim=-1)


def layer_norm(z, w, b):  # over the last axis, biased variance
    mu = z.mean(-1, keepdim=True)
    var = ((z - mu) ** 2).mean(-1, keepdim=True)
    return (z - mu) / torch.sqrt(var + EPS) * w + b


def causal_conv(u, w, bias):  # u [B, T, C], w [C, K]
    K = w.shape[1]
    up = F.pad(u, (0, 0, K - 1, 0))
    T = u.shape[1]
    return sum(up[:, j:j + T] * w[:, j] for j in range(K)) + bias


def params_for(cfg, gen):
    D, H = cfg["dim"], cfg["heads"]
    d, mlp, mamba = D // H, cfg["kind"] == 1, cfg["backbone"] == 1
    Fw = 4 * d if mlp else d
    r = lambda *s, sc=0.4: (sc * torch.randn(*s, generator=gen, dtype=torch.float64))  # noqa: E731
    p = {"q_proj.weight": r(D, D)}
    if not mamba:
        p["k_proj.weight"] = r(D, D)
    p["v_proj.weight"] = r(D, D)
    p["o_proj.weight"] = r(D, D)
    if mamba:
        p["g_proj.weight"] = r(D, D)
        p["conv_q.weight"], p["conv_q.bias"] = r(D, 4), r(D, sc=0.1)
        p["conv_k.weight"], p["conv_k.bias"] = r(D, 4), r(D, sc=0.1)
    p["ttt_lr.weight"], p["ttt_lr.bias"] = r(H, D), r(H, sc=0.3)
    p["token_idx_offset"] = r(cfg["mini_batch"], sc=0.05)
    p["ttt_norm.weight"], p["ttt_norm.bias"] = 1 + r(H, d, sc=0.2), r(H, d, sc=0.2)
    p["W1"], p["b1"] = r(H, d, Fw), r(H, 1, Fw, sc=0.2)
    if mlp:
        p["W2"], p["b2"] = r(H, Fw, d), r(H, 1, d, sc=0.2)
    p["post_norm.weight"], p["post_norm.bias"] = 1 + r(D, sc=0.2), r(D, sc=0.2)
    return p


def f_apply(z, W, p, mlp):  # z [B, H, d] one token per (b, h); W per (b, h)
    h = torch.einsum("bhi,bhio->bho", z, W[0]) + W[1][:, :, 0]
    if mlp:
        h = torch.einsum("bhi,bhio->bho", F.gelu(h, approximate="tanh"), W[2]) + W[3][:, :, 0]
    return z + layer_norm(h, p["ttt_norm.weight"], p["ttt_norm.bias"])


def forward(cfg, p, x):
    B, T, D = x.shape
    H, b = cfg["heads"], cfg["mini_batch"]
    d, mlp, mamba = D // H, cfg["kind"] == 1, cfg["backbone"] == 1
    if mamba:
        u = x @ p["q_proj.weight"].T
        q, k = causal_conv(u, p["conv_q.weight"], p["conv_q.bias"]), causal_conv(u, p["conv_k.weight"], p["conv_k.bias"])
    else:
        q, k = x @ p["q_proj.weight"].T, x @ p["k_proj.weight"].T
    v = x @ p["v_proj.weight"].T
    split = lambda t: t.reshape(B, T, H, d).transpose(1, 2)  # noqa: E731  [B, H, T, d]
    pos = torch.arange(T) % b
    q, k, v = rope(split(q), pos), rope(split(k), pos), split(v)
    eta = torch.sigmoid(x @ p["ttt_lr.weight"].T + p["ttt_lr.bias"]) * cfg["base_lr"] / d  # [B, T, H]
    eta = eta.transpose(1, 2)  # [B, H, T]
    tok = torch.clamp(1.0 / torch.arange(1, b + 1, dtype=torch.float64) + p["token_idx_offset"], min=0.0)
    names = ["W1", "b1", "W2", "b2"][: 4 if mlp else 2]
    W0 = [p[n].unsqueeze(0).expand(B, *p[n].shape) for n in names]
    outs = []
    for s in range(0, T, b):
        G = [torch.zeros_like(w) for w in W0]
        for t in range(s, min(s + b, T)):
            i = t - s
            # the inner gradient of token t at W_0, from the loss itself (autograd, differentiable)
            loss_t = (0.5 * ((f_apply(k[:, :, t], W0, p, mlp) - v[:, :, t]) ** 2).sum(-1) * eta[:, :, t]).sum()
            grads = torch.autograd.grad(loss_t, W0, create_graph=True)
            G = [g + gr for g, gr in zip(G, grads)]
            Wi = [w - tok[i] * g for w, g in zip(W0, G)]
            outs.append(f_apply(q[:, :, t], Wi, p, mlp))
        W0 = Wi
    z = torch.stack(outs, dim=2)  # [B, H, T, d]
    z = z.transpose(1, 2).reshape(B, T, D)
    z = layer_norm(z, p["post_norm.weight"], p["post_norm.bias"])
    if mamba:
        z = F.gelu(x @ p["g_proj.weight"].T, approximate="tanh") * z
    return z @ p["o_proj.weight"].T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(2407)
    tensors, meta = {}, {}
    for ci, cfg in enumerate(CONFIGS):
        p = {n: t.requires_grad_() for n, t in params_for(cfg, gen).items()}
        x = torch.randn(cfg["B"], cfg["T"], cfg["dim"], generator=gen, dtype=torch.float64).requires_grad_()
        r = torch.randn(cfg["B"], cfg["T"], cfg["dim"], generator=gen, dtype=torch.float64)
        y = forward(cfg, p, x)
        L = (y * r).sum()
        names = list(p)
        grads = torch.autograd.grad(L, [p[n] for n in names] + [x])
        for n, g in zip(names, grads):
            tensors[f"c{ci}.{n}"] = p[n].detach()
            tensors[f"c{ci}.grad.{n}"] = g
        tensors[f"c{ci}.x"], tensors[f"c{ci}.grad.x"] = x.detach(), grads[-1]
        tensors[f"c{ci}.r"], tensors[f"c{ci}.y"] = r, y.detach()
        for kk, vv in cfg.items():
            meta[f"c{ci}.{kk}"] = str(vv)
        print(f"config {ci} {cfg}: L = {L.item():.12f}")
    meta["configs"] = str(len(CONFIGS))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "ttt_rnn_fixture.safetensors")
    write_safetensors(path, tensors, meta)
    print("wrote", path)


if __name__ == "__main__":
    main()
