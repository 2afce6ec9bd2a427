"""TTT-E2E (SPEC section 3) written independently in PyTorch, for reference
outputs: a functional float64 implementation from the paper's description and
the official JAX code's behaviour, not from ttt's C code.

    prefix blocks: run once over the whole sequence, sliding-window attention
    suffix blocks: chunk by chunk (b tokens), each sequence on its own:
        keys = [cached keys of the last window - 1 positions, the chunk's keys];
        the cache holds keys after QK-norm and *before* RoPE, and RoPE is applied
        with positions counted from the cache's start (as the official SWA does);
        ttt's C code rotates with absolute positions instead: RoPE is relative,
        so both give one function, and the fixture checks it.
        L_i = mean next-token cross-entropy of the chunk with W_{i-1}
        g = dL_i / dW_{i-1}  (torch.autograd.grad, create_graph for the outer pass)
        g *= clip / max(|g|, clip)   (global norm over every prime weight, per sequence)
        W_i = W_{i-1} - eta g
    loss = mean over chunks and sequences of L_i

    python3 bench/lm/torch_e2e.py fixture --out tests/fixtures/   # tests/test_lm_e2e.c reads it
    python3 bench/lm/torch_e2e.py selftest                        # eta = 0 equals a plain windowed pass
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_lm import write_safetensors  # noqa: E402  (file IO only)


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):
    """x [T, H, hd] rotated at positions pos [T] (rotate-half pairs (i, i + hd/2))."""
    hd = x.shape[-1]
    half = hd // 2
    inv = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
    ang = pos.double()[:, None] * inv  # [T, half]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


def swiglu(x, gate, up, down):
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T


def attend(q, k, v, qpos, kpos, window):
    """q [Tq, H, hd], k, v [Tk, H, hd]; query at qpos sees keys at kpos <= qpos within window."""
    s = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
    d = qpos[:, None] - kpos[None, :]
    mask = (d >= 0) & (d < window)
    s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("hqk,khd->qhd", s.softmax(-1), v)


class Cfg:
    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.hd = self.dim // self.heads


def qkv(P, i, h, c):
    pre = f"model.layers.{i}.self_attn."
    T = h.shape[0]
    q = (h @ P[pre + "q_proj.weight"].T).view(T, c.heads, c.hd)
    k = (h @ P[pre + "k_proj.weight"].T).view(T, c.heads, c.hd)
    v = (h @ P[pre + "v_proj.weight"].T).view(T, c.heads, c.hd)
    return rms(q, P[pre + "q_norm.weight"], c.eps), rms(k, P[pre + "k_norm.weight"], c.eps), v


def after_attention(P, i, x, o, c, prime):
    L = f"model.layers.{i}."
    T = x.shape[0]
    x = x + rms(o.reshape(T, c.dim) @ P[L + "self_attn.o_proj.weight"].T, P[L + "post_attention_layernorm.weight"], c.eps)
    if prime is not None:
        x = x + rms(swiglu(rms(x, P[L + "pre_prime_layernorm.weight"], c.eps), *prime), P[L + "post_prime_layernorm.weight"],
                    c.eps)
    mlp = [P[L + f"mlp.{n}_proj.weight"] for n in ("gate", "up", "down")]
    return x + rms(swiglu(rms(x, P[L + "pre_feedforward_layernorm.weight"], c.eps), *mlp),
                   P[L + "post_feedforward_layernorm.weight"], c.eps)


def prefix_block(P, i, x, c):
    """A block over one whole sequence x [T, D] with sliding-window attention."""
    T = x.shape[0]
    q, k, v = qkv(P, i, rms(x, P[f"model.layers.{i}.input_layernorm.weight"], c.eps), c)
    pos = torch.arange(T)
    o = attend(rope(q, pos, c.theta), rope(k, pos, c.theta), v, pos, pos, c.window)
    return after_attention(P, i, x, o, c, None)


def suffix_block(P, i, x, cache, c, prime):
    """A suffix block over one chunk x [b, D]; cache = (k, v) before RoPE of the
    last window - 1 positions, or None. Returns the output and the new cache."""
    b = x.shape[0]
    q, k, v = qkv(P, i, rms(x, P[f"model.layers.{i}.input_layernorm.weight"], c.eps), c)
    if cache is not None:
        k, v = torch.cat([cache[0], k]), torch.cat([cache[1], v])
    n = k.shape[0]
    kpos = torch.arange(n)           # counted from the cache's start
    qpos = kpos[n - b:]
    o = attend(rope(q, qpos, c.theta), rope(k, kpos, c.theta), v, qpos, kpos, c.window)
    keep = min(n, c.window - 1)
    return after_attention(P, i, x, o, c, prime), (k[n - keep:], v[n - keep:])


def e2e_loss(P, c, ids, tg, eta, first_order):
    """The outer loss, and the chunk losses [n] averaged over the batch."""
    B, T = ids.shape
    first = c.depth - c.prime_blocks
    per_seq = []
    for s in range(B):
        x = P["model.embed_tokens.weight"][ids[s]]
        for i in range(first):
            x = prefix_block(P, i, x, c)
        W = [P[f"model.layers.{i}.prime_mlp.{n}_proj.weight"] for i in range(first, c.depth)
             for n in ("gate", "up", "down")]
        caches = [None] * c.prime_blocks
        losses = []
        for t0 in range(0, T, c.chunk):
            h = x[t0:t0 + c.chunk]
            new_caches = []
            for j, i in enumerate(range(first, c.depth)):
                h, cache = suffix_block(P, i, h, caches[j], c, W[3 * j:3 * j + 3])
                new_caches.append(cache)
            logits = rms(h, P["model.norm.weight"], c.eps) @ P["model.embed_tokens.weight"].T
            loss = F.cross_entropy(logits, tg[s, t0:t0 + c.chunk])
            g = torch.autograd.grad(loss, W, create_graph=not first_order, retain_graph=True)
            if first_order:
                g = [t.detach() for t in g]
            scale = 1.0
            if c.clip > 0:
                norm = torch.sqrt(sum((t * t).sum() for t in g))
                scale = c.clip / torch.maximum(norm, torch.tensor(c.clip, dtype=norm.dtype))
                c.bound = getattr(c, "bound", 0) + int(norm.item() > c.clip)
            W = [w - eta * scale * t for w, t in zip(W, g)]
            caches = new_caches
            losses.append(loss)
        per_seq.append(torch.stack(losses))
    chunk = torch.stack(per_seq).mean(0)
    return chunk.mean(), chunk


NAMES_BLOCK = ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "self_attn.q_norm", "self_attn.k_norm", "post_attention_layernorm", "pre_prime_layernorm",
               "prime_mlp.gate_proj", "prime_mlp.up_proj", "prime_mlp.down_proj", "post_prime_layernorm",
               "pre_feedforward_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
               "post_feedforward_layernorm"]


def make_params(c, gen):
    """Random parameters, larger than the init so that every part matters; norm gains around 1."""
    D, F_, Fp, V = c.dim, c.mlp_hidden, c.prime_hidden, c.vocab
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    for i in range(c.depth):
        for n in NAMES_BLOCK:
            if "prime" in n and i < c.depth - c.prime_blocks:
                continue
            shp = {"self_attn.q_proj": (D, D), "self_attn.k_proj": (D, D), "self_attn.v_proj": (D, D),
                   "self_attn.o_proj": (D, D), "self_attn.q_norm": (c.hd,), "self_attn.k_norm": (c.hd,),
                   "prime_mlp.gate_proj": (Fp, D), "prime_mlp.up_proj": (Fp, D), "prime_mlp.down_proj": (D, Fp),
                   "mlp.gate_proj": (F_, D), "mlp.up_proj": (F_, D), "mlp.down_proj": (D, F_)}.get(n, (D,))
            shapes[f"model.layers.{i}.{n}.weight"] = shp
    P = {}
    for name, shp in shapes.items():
        r = torch.randn(shp, generator=gen, dtype=torch.float64)
        P[name] = (1 + 0.2 * r) if len(shp) == 1 else 0.4 * r
        P[name].requires_grad_(True)
    return P


CONFIGS = [
    # several chunks, a window shorter than the context but longer than a chunk, a clip that binds
    dict(vocab=29, dim=16, depth=4, heads=2, mlp_hidden=24, prime_blocks=2, prime_hidden=20, window=6, chunk=4,
         clip=0.3, eta=0.7, theta=500000.0, B=2, T=16),
    # a window shorter than a chunk, no clip, one prime block
    dict(vocab=23, dim=8, depth=2, heads=2, mlp_hidden=12, prime_blocks=1, prime_hidden=12, window=3, chunk=4,
         clip=0.0, eta=1.0, theta=10000.0, B=2, T=12),
]


def fixture(args):
    gen = torch.Generator().manual_seed(2026)
    tensors, meta = {}, {}
    for ci, kw in enumerate(CONFIGS):
        c = Cfg(eps=1e-6, **kw)
        P = make_params(c, gen)
        ids = torch.randint(0, c.vocab, (c.B, c.T), generator=gen)
        tg = torch.randint(0, c.vocab, (c.B, c.T), generator=gen)
        names = list(P)
        for order, fo in (("grad2", False), ("grad1", True)):
            c.bound = 0
            loss, chunk = e2e_loss(P, c, ids, tg, c.eta, fo)
            grads = torch.autograd.grad(loss, [P[n] for n in names])
            for n, g in zip(names, grads):
                tensors[f"c{ci}.{order}.{n}"] = g.detach().clone()
            print(f"config {ci} {order}: loss {loss.item():.15f}, chunk losses "
                  f"{[round(x, 6) for x in chunk.tolist()]}, clip bound in {c.bound} inner steps")
        for n in names:
            tensors[f"c{ci}.{n}"] = P[n].detach().clone()
        tensors[f"c{ci}.ids"] = ids.int()
        tensors[f"c{ci}.targets"] = tg.int()
        tensors[f"c{ci}.loss"] = loss.detach().clone()
        tensors[f"c{ci}.chunk_losses"] = chunk.detach().clone()
        for k, v in kw.items():
            meta[f"c{ci}.{k}"] = repr(v) if isinstance(v, float) else str(v)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "lm_e2e_torch_fixture.safetensors")
    write_safetensors(path, tensors, meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def selftest(args):
    """eta = 0 equals one plain windowed pass over the whole sequence."""
    gen = torch.Generator().manual_seed(7)
    c = Cfg(eps=1e-6, **CONFIGS[0])
    P = make_params(c, gen)
    ids = torch.randint(0, c.vocab, (1, c.T), generator=gen)
    tg = torch.randint(0, c.vocab, (1, c.T), generator=gen)
    loss, _ = e2e_loss(P, c, ids, tg, 0.0, False)
    x = P["model.embed_tokens.weight"][ids[0]]
    for i in range(c.depth):
        if i < c.depth - c.prime_blocks:
            x = prefix_block(P, i, x, c)
        else:
            h = rms(x, P[f"model.layers.{i}.input_layernorm.weight"], c.eps)
            q, k, v = qkv(P, i, h, c)
            pos = torch.arange(c.T)
            o = attend(rope(q, pos, c.theta), rope(k, pos, c.theta), v, pos, pos, c.window)
            prime = [P[f"model.layers.{i}.prime_mlp.{n}_proj.weight"] for n in ("gate", "up", "down")]
            x = after_attention(P, i, x, o, c, prime)
    plain = F.cross_entropy(rms(x, P["model.norm.weight"], c.eps) @ P["model.embed_tokens.weight"].T, tg[0])
    d = abs(loss.item() - plain.item())
    print(f"selftest: eta = 0 loss {loss.item():.15f}, plain windowed pass {plain.item():.15f}, diff {d:.2e}")
    assert d < 1e-12


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixture")
    f.add_argument("--out", default="tests/fixtures")
    sub.add_parser("selftest")
    args = ap.parse_args()
    {"fixture": fixture, "selftest": selftest}[args.cmd](args)


if __name__ == "__main__":
    main()
