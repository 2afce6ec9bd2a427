"""Causal linear attention and Gated DeltaNet written independently in PyTorch (float64),
token by token from the papers, for reference outputs and gradients. Not from ttt's C code.

    linear attention (Katharopoulos et al. 2020, eq. 4-5, causal):
        phi(x) = elu(x) + 1;  o_i = phi(q_i)^T sum_{j<=i} phi(k_j) v_j^T / (phi(q_i)^T sum_{j<=i} phi(k_j) + eps)
    Gated DeltaNet (Yang, Kautz, Hatamizadeh, arXiv 2412.06464, eq. 10), in the paper's layout
    (S is [dv, dk] here, the transpose of ttt's):
        S_t = S_{t-1} (alpha_t (I - beta_t k_t k_t^T)) + beta_t v_t k_t^T,   o_t = S_t q_t
    and the block around it as in the official GatedDeltaNet layer: q/k/v projections each
    through a causal depthwise conv (K taps, no bias) and SiLU, L2-normalized q and k, q scaled
    by dk^-1/2, beta = sigmoid(x Wb^T), alpha = exp(-exp(A_log) softplus(x Wa^T + dt_bias)),
    per-head RMSNorm of o times silu(x Wg^T), output projection.
    Mamba 2 (Dao, Gu, arXiv 2405.21060, SSD in its recurrent form), per head h with state
    H_t [P, N] in the paper's layout:
        H_t = exp(dt_t A_h) H_{t-1} + (dt_t x_t) B_t^T,   y_t = H_t C_t + D_h x_t
    and the Mamba2 module around it: one input projection to [z, xBC, dt], a causal
    depthwise conv with bias and SiLU on xBC, dt = softplus(dt + dt_bias), A = -exp(A_log),
    groups of B/C shared by H/G heads, y = RMSNorm_groups(y * silu(z)) * w, out projection.

    /tmp/torchenv/bin/python bench/mixers/torch_mixers.py fixture --out tests/fixtures/
        writes mixers_torch_fixture.safetensors, read by tests/test_mixers.c
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lm"))
from torch_lm import write_safetensors  # noqa: E402  (file IO only)

torch.set_default_dtype(torch.float64)


# ---- the recurrences, one token at a time -------------------------------------------------------

def linear_attention_rec(q, k, v, eps, s0=None, z0=None):
    """q, k [B, H, T, dk] (features), v [B, H, T, dv]; state S [B, H, dk, dv], z [B, H, dk]."""
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    S = torch.zeros(B, H, dk, dv) if s0 is None else s0
    z = torch.zeros(B, H, dk) if z0 is None else z0
    out = []
    for t in range(T):
        S = S + k[:, :, t, :, None] * v[:, :, t, None, :]
        z = z + k[:, :, t]
        num = torch.einsum("bhk,bhkv->bhv", q[:, :, t], S)
        den = (q[:, :, t] * z).sum(-1, keepdim=True)
        out.append(num / (den + eps))
    return torch.stack(out, 2), S, z


def gated_delta_rec(q, k, v, beta, g, s0=None):
    """The paper's form with St = S^T [B, H, dv, dk]; takes and returns ttt's layout [B, H, dk, dv]."""
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    St = torch.zeros(B, H, dv, dk) if s0 is None else s0.transpose(-1, -2)
    eye = torch.eye(dk)
    out = []
    for t in range(T):
        kt, vt, qt = k[:, :, t], v[:, :, t], q[:, :, t]
        a, b = g[:, :, t].exp()[..., None, None], beta[:, :, t][..., None, None]
        St = St @ (a * (eye - b * kt[..., :, None] * kt[..., None, :])) + b * vt[..., :, None] * kt[..., None, :]
        out.append(torch.einsum("bhvk,bhk->bhv", St, qt))
    return torch.stack(out, 2), St.transpose(-1, -2)


def ssd_rec(C, Bm, X, g, s0=None):
    """C, Bm [B, H, T, N], X [B, H, T, P] (already dt-scaled), g = dt A [B, H, T]; the paper's state
    [B, H, P, N]; takes and returns ttt's layout [B, H, N, P]."""
    B, H, T, N = C.shape
    P = X.shape[-1]
    Hs = torch.zeros(B, H, P, N) if s0 is None else s0.transpose(-1, -2)
    out = []
    for t in range(T):
        Hs = g[:, :, t].exp()[..., None, None] * Hs + X[:, :, t, :, None] * Bm[:, :, t, None, :]
        out.append(torch.einsum("bhpn,bhn->bhp", Hs, C[:, :, t]))
    return torch.stack(out, 2), Hs.transpose(-1, -2)


# ---- the blocks ----------------------------------------------------------------------------------

def heads(x, H):
    B, T, F_ = x.shape
    return x.view(B, T, H, F_ // H).transpose(1, 2)


def merge(o):
    B, H, T, d = o.shape
    return o.transpose(1, 2).reshape(B, T, H * d)


def linattn_block(P, x, H, eps):
    q = F.elu(heads(x @ P["q_proj.weight"].T, H)) + 1
    k = F.elu(heads(x @ P["k_proj.weight"].T, H)) + 1
    v = heads(x @ P["v_proj.weight"].T, H)
    o, _, _ = linear_attention_rec(q, k, v, eps)
    return merge(o) @ P["o_proj.weight"].T


def short_conv(x, w):
    """x [B, T, C], w [C, K]: causal depthwise conv (cross-correlation, tap K-1 on the current token)."""
    T, K = x.shape[1], w.shape[1]
    y = F.conv1d(x.transpose(1, 2), w[:, None, :], padding=K - 1, groups=w.shape[0])[..., :T]
    return y.transpose(1, 2)


def l2n(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def gdn_block(P, x, H, dk, dv, eps):
    q = F.silu(short_conv(x @ P["q_proj.weight"].T, P["q_conv1d.weight"]))
    k = F.silu(short_conv(x @ P["k_proj.weight"].T, P["k_conv1d.weight"]))
    v = F.silu(short_conv(x @ P["v_proj.weight"].T, P["v_conv1d.weight"]))
    q, k, v = l2n(heads(q, H)) * dk ** -0.5, l2n(heads(k, H)), heads(v, H)
    beta = torch.sigmoid(x @ P["b_proj.weight"].T).transpose(1, 2)
    g = (-P["A_log"].exp() * F.softplus(x @ P["a_proj.weight"].T + P["dt_bias"])).transpose(1, 2)
    o, _ = gated_delta_rec(q, k, v, beta, g)
    o = o.transpose(1, 2)  # [B, T, H, dv]
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + eps) * P["o_norm.weight"]
    B, T = x.shape[:2]
    o = o * F.silu((x @ P["g_proj.weight"].T).view(B, T, H, dv))
    return o.reshape(B, T, H * dv) @ P["o_proj.weight"].T


def mamba2_block(P, x, Dm, N, expand, hd, G, eps):
    Bsz, T, _ = x.shape
    Di = expand * Dm
    H = Di // hd
    zxbcdt = x @ P["in_proj.weight"].T
    z, xbc, dt = torch.split(zxbcdt, [Di, Di + 2 * G * N, H], dim=-1)
    dt = F.softplus(dt + P["dt_bias"])  # [B, T, H]
    xbc = F.silu(short_conv(xbc, P["conv1d.weight"]) + P["conv1d.bias"])
    xs, Bm, Cm = torch.split(xbc, [Di, G * N, G * N], dim=-1)
    xs = xs.view(Bsz, T, H, hd)
    rep = H // G
    Bm = Bm.view(Bsz, T, G, N).repeat_interleave(rep, dim=2)  # head h -> group h // rep
    Cm = Cm.view(Bsz, T, G, N).repeat_interleave(rep, dim=2)
    A = -P["A_log"].exp()
    y, _ = ssd_rec(Cm.transpose(1, 2), Bm.transpose(1, 2), (xs * dt[..., None]).transpose(1, 2), (dt * A).transpose(1, 2))
    y = y.transpose(1, 2) + xs * P["D"][:, None]
    y = y.reshape(Bsz, T, Di) * F.silu(z)
    yg = y.view(Bsz, T, G, Di // G)
    y = (yg * torch.rsqrt(yg.pow(2).mean(-1, keepdim=True) + eps)).reshape(Bsz, T, Di) * P["norm.weight"]
    return y @ P["out_proj.weight"].T


# ---- the fixture ---------------------------------------------------------------------------------

def grads(loss, named):
    names = list(named)
    gs = torch.autograd.grad(loss, [named[n] for n in names])
    return {n: g for n, g in zip(names, gs)}


def fixture(out_dir):
    torch.manual_seed(1234)
    T_ = {}
    meta = {}
    # core: linear attention from a nonzero state
    B, H, T, dk, dv, eps = 2, 3, 21, 5, 4, 1e-6
    q = (F.elu(torch.randn(B, H, T, dk)) + 1).requires_grad_()
    k = (F.elu(torch.randn(B, H, T, dk)) + 1).requires_grad_()
    v = torch.randn(B, H, T, dv, requires_grad=True)
    s0 = torch.randn(B, H, dk, dv, requires_grad=True)
    z0 = torch.rand(B, H, dk).add(0.5).requires_grad_()
    R, Rs, Rz = torch.randn(B, H, T, dv), torch.randn(B, H, dk, dv), torch.randn(B, H, dk)
    o, S, z = linear_attention_rec(q, k, v, eps, s0, z0)
    loss = (o * R).sum() + (S * Rs).sum() + (z * Rz).sum()
    ins = dict(q=q, k=k, v=v, s0=s0, z0=z0)
    for n, g in grads(loss, ins).items():
        T_[f"la_core.grad.{n}"] = g
    T_.update({f"la_core.{n}": t for n, t in ins.items()})
    T_.update({"la_core.R": R, "la_core.Rs": Rs, "la_core.Rz": Rz, "la_core.o": o, "la_core.s": S, "la_core.z": z})
    meta.update({"la_core.eps": eps})

    # core: gated delta rule from a nonzero state, strong and weak decays
    B, H, T, dk, dv = 2, 2, 23, 6, 5
    q = torch.randn(B, H, T, dk, requires_grad=True)
    k = l2n(torch.randn(B, H, T, dk)).requires_grad_()
    v = torch.randn(B, H, T, dv, requires_grad=True)
    beta = torch.rand(B, H, T).requires_grad_()
    g = (-torch.rand(B, H, T) * 2.0).requires_grad_()
    s0 = torch.randn(B, H, dk, dv, requires_grad=True)
    R, Rs = torch.randn(B, H, T, dv), torch.randn(B, H, dk, dv)
    o, S = gated_delta_rec(q, k, v, beta, g, s0)
    loss = (o * R).sum() + (S * Rs).sum()
    ins = dict(q=q, k=k, v=v, beta=beta, g=g, s0=s0)
    for n, gr in grads(loss, ins).items():
        T_[f"gdn_core.grad.{n}"] = gr
    T_.update({f"gdn_core.{n}": t for n, t in ins.items()})
    T_.update({"gdn_core.R": R, "gdn_core.Rs": Rs, "gdn_core.o": o, "gdn_core.s": S})

    # block: linear attention
    B, T, D, H = 2, 19, 12, 3
    d = D // H
    P = {n: (torch.randn(*s) * 0.3).requires_grad_() for n, s in
         [("q_proj.weight", (D, D)), ("k_proj.weight", (D, D)), ("v_proj.weight", (D, D)), ("o_proj.weight", (D, D))]}
    x = torch.randn(B, T, D, requires_grad=True)
    y = linattn_block(P, x, H, 1e-6)
    R = torch.randn(B, T, D)
    gr = grads((y * R).sum(), {"x": x, **P})
    T_.update({f"la_block.{n}": t for n, t in P.items()})
    T_.update({"la_block.x": x, "la_block.y": y, "la_block.R": R})
    T_.update({f"la_block.grad.{n}": t for n, t in gr.items()})
    meta.update({"la_block.dim": D, "la_block.heads": H, "la_block.head_dim": d})

    # block: Gated DeltaNet, dk != dv
    B, T, D, H, dk, dv, K, eps = 2, 19, 12, 2, 4, 6, 4, 1e-5
    shapes = [("q_proj.weight", (H * dk, D)), ("k_proj.weight", (H * dk, D)), ("v_proj.weight", (H * dv, D)),
              ("a_proj.weight", (H, D)), ("b_proj.weight", (H, D)), ("A_log", (H,)), ("dt_bias", (H,)),
              ("q_conv1d.weight", (H * dk, K)), ("k_conv1d.weight", (H * dk, K)), ("v_conv1d.weight", (H * dv, K)),
              ("g_proj.weight", (H * dv, D)), ("o_norm.weight", (dv,)), ("o_proj.weight", (D, H * dv))]
    P = {}
    for n, s in shapes:
        t = torch.randn(*s) * 0.4
        if n == "A_log":
            t = torch.empty(s).uniform_(1, 16).log()
        elif n == "o_norm.weight":
            t = 1 + 0.2 * torch.randn(*s)
        P[n] = t.requires_grad_()
    x = torch.randn(B, T, D, requires_grad=True)
    y = gdn_block(P, x, H, dk, dv, eps)
    R = torch.randn(B, T, D)
    gr = grads((y * R).sum(), {"x": x, **P})
    T_.update({f"gdn_block.{n}": t for n, t in P.items()})
    T_.update({"gdn_block.x": x, "gdn_block.y": y, "gdn_block.R": R})
    T_.update({f"gdn_block.grad.{n}": t for n, t in gr.items()})
    meta.update({"gdn_block.dim": D, "gdn_block.heads": H, "gdn_block.head_k_dim": dk, "gdn_block.head_v_dim": dv,
                 "gdn_block.conv_size": K, "gdn_block.norm_eps": eps})

    # core: SSD from a nonzero state
    B, H, T, N, P_ = 2, 2, 22, 3, 4
    C = torch.randn(B, H, T, N, requires_grad=True)
    Bm = torch.randn(B, H, T, N, requires_grad=True)
    X = torch.randn(B, H, T, P_, requires_grad=True)
    g = (-torch.rand(B, H, T) * 2.0).requires_grad_()
    s0 = torch.randn(B, H, N, P_, requires_grad=True)
    R, Rs = torch.randn(B, H, T, P_), torch.randn(B, H, N, P_)
    o, S = ssd_rec(C, Bm, X, g, s0)
    ins = dict(q=C, k=Bm, v=X, g=g, s0=s0)
    for n, gr in grads((o * R).sum() + (S * Rs).sum(), ins).items():
        T_[f"ssd_core.grad.{n}"] = gr
    T_.update({f"ssd_core.{n}": t for n, t in ins.items()})
    T_.update({"ssd_core.R": R, "ssd_core.Rs": Rs, "ssd_core.o": o, "ssd_core.s": S})

    # block: Mamba 2 with 2 groups of 2 heads
    B, T, D, N, expand, hd, G, K, eps = 2, 19, 8, 3, 2, 4, 2, 4, 1e-5
    Di = expand * D
    H = Di // hd
    shapes = [("in_proj.weight", (2 * Di + 2 * G * N + H, D)), ("conv1d.weight", (Di + 2 * G * N, K)),
              ("conv1d.bias", (Di + 2 * G * N,)), ("dt_bias", (H,)), ("A_log", (H,)), ("D", (H,)),
              ("norm.weight", (Di,)), ("out_proj.weight", (D, Di))]
    P = {}
    for n, s_ in shapes:
        t = torch.randn(*s_) * 0.4
        if n == "A_log":
            t = torch.empty(s_).uniform_(1, 16).log()
        elif n in ("norm.weight", "D"):
            t = 1 + 0.2 * torch.randn(*s_)
        P[n] = t.requires_grad_()
    x = torch.randn(B, T, D, requires_grad=True)
    y = mamba2_block(P, x, D, N, expand, hd, G, eps)
    R = torch.randn(B, T, D)
    gr = grads((y * R).sum(), {"x": x, **P})
    T_.update({f"m2_block.{n}": t for n, t in P.items()})
    T_.update({"m2_block.x": x, "m2_block.y": y, "m2_block.R": R})
    T_.update({f"m2_block.grad.{n}": t for n, t in gr.items()})

    path = os.path.join(out_dir, "mixers_torch_fixture.safetensors")
    write_safetensors(path, {n: t.detach() for n, t in T_.items()}, {k: repr(v) for k, v in meta.items()})
    print(f"wrote {path}: {len(T_)} tensors")


def selftest():
    """The paper's gated delta rule with alpha = 1, beta -> 0 is plain accumulation; linear attention's
    recurrence equals its quadratic (masked) form."""
    torch.manual_seed(0)
    B, H, T, d = 1, 2, 9, 3
    q, k, v = F.elu(torch.randn(B, H, T, d)) + 1, F.elu(torch.randn(B, H, T, d)) + 1, torch.randn(B, H, T, d)
    o, _, _ = linear_attention_rec(q, k, v, 0.0)
    A = torch.tril(q @ k.transpose(-1, -2))
    ref = (A @ v) / A.sum(-1, keepdim=True)
    assert torch.allclose(o, ref, atol=1e-12), (o - ref).abs().max()
    # delta rule, one token from zero: S = beta k v^T
    k1 = l2n(torch.randn(B, H, 1, d))
    o, S = gated_delta_rec(q[:, :, :1], k1, v[:, :, :1], torch.full((B, H, 1), 0.7), torch.zeros(B, H, 1))
    assert torch.allclose(S, 0.7 * k1[:, :, 0, :, None] * v[:, :, 0, None, :], atol=1e-14)
    print("selftest ok")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["fixture", "selftest"])
    ap.add_argument("--out", default="tests/fixtures")
    a = ap.parse_args()
    selftest() if a.what == "selftest" else fixture(a.out)
