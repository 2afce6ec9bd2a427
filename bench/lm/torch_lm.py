"""The ttt language model (include/ttt/lm.h) written independently in PyTorch.

Same architecture and the same Hugging Face-style tensor names, so a
safetensors file from `ttt lm train` loads into it directly (and the other way).
Used for the reference fixture (make_fixture.py) and as the benchmark peer
(`python3 bench/lm/torch_lm.py bench ...`: training tokens/s, eager and
torch.compile).

    block:  x += rms(o_proj(attn(rope(rms_h(q)), rope(rms_h(k)), v)); post_attention)   h = rms(x; input)
            [prime blocks] x += rms(swiglu_prime(rms(x; pre_prime)); post_prime)
            x += rms(swiglu(rms(x; pre_feedforward)); post_feedforward)
    head:   logits = rms(x; norm) @ embed^T (tied)
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {"tiny": (64, 2, 4, 172), "small": (256, 4, 4, 688), "125m": (768, 12, 12, 2048)}


def preset(name, vocab, **over):
    d, depth, heads, hidden = PRESETS[name]
    cfg = dict(vocab=vocab, dim=d, depth=depth, heads=heads, mlp_hidden=hidden, window=0, prime_blocks=0,
               prime_hidden=0, qk_norm=1, rope_theta=10000.0, norm_eps=1e-6)
    cfg.update(over)
    return cfg


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope(x, pos0, theta):
    """Rotate-half RoPE on x [B, T, H, hd]: pairs (i, i + hd/2), angle (pos0 + t) theta^(-2i/hd)."""
    T, hd = x.shape[1], x.shape[-1]
    half = hd // 2
    i = torch.arange(half, dtype=torch.float64, device=x.device)
    pos = torch.arange(pos0, pos0 + T, dtype=torch.float64, device=x.device)
    ang = pos[:, None] * theta ** (-2.0 * i / hd)  # [T, half]
    cos = ang.cos().to(x.dtype)[None, :, None, :]
    sin = ang.sin().to(x.dtype)[None, :, None, :]
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, self.h = cfg["dim"], cfg["heads"]
        self.hd = d // self.h
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        if cfg["qk_norm"]:
            self.q_norm = RMSNorm(self.hd, cfg["norm_eps"])
            self.k_norm = RMSNorm(self.hd, cfg["norm_eps"])
        self.qk_norm, self.theta, self.window = cfg["qk_norm"], cfg["rope_theta"], cfg["window"]

    def forward(self, x):
        B, T, D = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.hd)
        k = self.k_proj(x).view(B, T, self.h, self.hd)
        v = self.v_proj(x).view(B, T, self.h, self.hd)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rope(q, 0, self.theta), rope(k, 0, self.theta)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if self.window:
            i = torch.arange(T, device=x.device)
            seen = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < self.window)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=seen)
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, cfg, prime):
        super().__init__()
        d, eps = cfg["dim"], cfg["norm_eps"]
        self.input_layernorm = RMSNorm(d, eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(d, eps)
        self.prime = prime
        if prime:
            self.pre_prime_layernorm = RMSNorm(d, eps)
            self.prime_mlp = SwiGLU(d, cfg["prime_hidden"] or cfg["mlp_hidden"])
            self.post_prime_layernorm = RMSNorm(d, eps)
        self.pre_feedforward_layernorm = RMSNorm(d, eps)
        self.mlp = SwiGLU(d, cfg["mlp_hidden"])
        self.post_feedforward_layernorm = RMSNorm(d, eps)

    def forward(self, x):
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x)))
        if self.prime:
            x = x + self.post_prime_layernorm(self.prime_mlp(self.pre_prime_layernorm(x)))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab"], cfg["dim"])
        first_prime = cfg["depth"] - cfg["prime_blocks"]
        self.layers = nn.ModuleList(Block(cfg, i >= first_prime) for i in range(cfg["depth"]))
        self.norm = RMSNorm(cfg["dim"], cfg["norm_eps"])


class LM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)

    def forward(self, ids):
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x)
        return self.model.norm(x) @ self.model.embed_tokens.weight.T

    def loss(self, ids, targets):
        logits = self(ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)


def bench(args):
    """Training tokens/s of the same model: AdamW step included, eager or compiled."""
    torch.manual_seed(0)
    dev = "cuda"
    cfg = preset(args.preset, args.vocab, window=args.window)
    model = LM(cfg).to(dev)
    dt = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    if args.dtype == "f32":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    step_model = torch.compile(model) if args.compile else model

    def step(ids, tg):
        with torch.autocast("cuda", dtype=dt, enabled=args.dtype == "bf16"):
            logits = step_model(ids)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tg.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=dev)
    tg = torch.randint(0, args.vocab, (args.batch, args.seq), device=dev)
    for _ in range(args.warmup):
        step(ids, tg)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.steps):
        loss = step(ids, tg)
    torch.cuda.synchronize()
    dt_s = (time.perf_counter() - t) / args.steps
    n_params = sum(p.numel() for p in model.parameters())
    toks = args.batch * args.seq / dt_s
    # 6 N per token for the matrices, plus causal attention 6 * 2 * T * D per token per layer (half of full)
    flops_tok = 6 * n_params + 6 * cfg["depth"] * args.seq * cfg["dim"]
    print(json.dumps(dict(peer="pytorch", compile=args.compile, dtype=args.dtype, tf32=args.tf32, preset=args.preset,
                          seq=args.seq, batch=args.batch, params=n_params, ms_per_step=1e3 * dt_s, tokens_per_s=toks,
                          tflops=flops_tok * toks / 1e12, loss=float(loss),
                          peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30)), flush=True)


@torch.no_grad()
def prefill(args):
    """Forward time of one sequence of T tokens (the prefill), full attention or a window."""
    torch.manual_seed(0)
    cfg = preset(args.preset, args.vocab, window=args.window)
    dt = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = LM(cfg).to("cuda", dt).eval()
    ids = torch.randint(0, args.vocab, (1, args.seq), device="cuda")
    for _ in range(2):
        model(ids)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.steps):
        model(ids)
    torch.cuda.synchronize()
    s = (time.perf_counter() - t) / args.steps
    print(json.dumps(dict(peer="pytorch", what="prefill", dtype=args.dtype, preset=args.preset, seq=args.seq,
                          window=args.window, s=s, s_per_1k=s * 1024 / args.seq,
                          peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30)), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="training tokens/s on the GPU")
    b.add_argument("--preset", default="125m")
    b.add_argument("--vocab", type=int, default=50257)
    b.add_argument("--seq", type=int, default=1024)
    b.add_argument("--batch", type=int, default=8)
    b.add_argument("--window", type=int, default=0)
    b.add_argument("--dtype", default="bf16", choices=["f32", "bf16"])
    b.add_argument("--tf32", action="store_true")
    b.add_argument("--compile", action="store_true")
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--warmup", type=int, default=3)
    p = sub.add_parser("prefill", help="forward time of one long sequence")
    p.add_argument("--preset", default="125m")
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--window", type=int, default=0)
    p.add_argument("--dtype", default="bf16", choices=["f32", "bf16"])
    p.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    if a.cmd == "bench":
        bench(a)
    else:
        prefill(a)
