"""The ttt language model (include/ttt/lm.h) written independently in PyTorch.

Same architecture and the same Hugging Face-style tensor names, so a
safetensors file from `ttt lm train` loads into it directly (and the other way):

    block:  h = rms(x; input_layernorm)
            q, k, v = h Wq^T, h Wk^T, h Wv^T, split into heads; q, k = rms(.; q_norm / k_norm) per head
            q, k = rope(q, k; pos0 + t, theta)  (rotate-half: pairs (i, i + hd/2))
            x += rms(attn(q, k, v; causal, window) Wo^T; post_attention_layernorm)
            [prime blocks] x += rms(swiglu_prime(rms(x; pre_prime_layernorm)); post_prime_layernorm)
            x += rms(swiglu(rms(x; pre_feedforward_layernorm)); post_feedforward_layernorm)
    head:   logits = rms(x; norm) @ embed^T (tied)

Used for the reference fixture (make_fixture.py) and as the benchmark peer:
    python3 bench/lm/torch_lm.py bench ...     training tokens/s, eager or torch.compile
    python3 bench/lm/torch_lm.py prefill ...   forward time of one long sequence
    python3 bench/lm/torch_lm.py selftest      CPU float64 checks of this file
The model class is device- and dtype-agnostic (float64, float32, bfloat16).
The safetensors reader/writer here needs no package beyond torch.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {"tiny": (64, 2, 4, 172), "small": (256, 4, 4, 688), "125m": (768, 12, 12, 2048)}


def preset(name, vocab, **over):
    d, depth, heads, hidden = PRESETS[name]
    cfg = dict(vocab=vocab, dim=d, depth=depth, heads=heads, mlp_hidden=hidden, window=0, prime_blocks=0,
               prime_hidden=0, qk_norm=1, rope_theta=10000.0, norm_eps=1e-6, init_std=0.02)
    cfg.update(over)
    return cfg


def config_from_model_string(s):
    """The config of a `ttt lm` checkpoint from its "model" metadata ("vocab=50257 dim=768 ...")."""
    kv = dict(item.split("=", 1) for item in s.split())
    cfg = preset("tiny", int(kv["vocab"]))
    for k in cfg:
        if k in kv:
            cfg[k] = float(kv[k]) if k in ("rope_theta", "norm_eps", "init_std") else int(kv[k])
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
    ang = pos[:, None] * theta ** (-2.0 * i / hd)  # [T, half], in float64 whatever x's dtype
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

    def forward(self, x, pos0=0):
        B, T, D = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.hd)
        k = self.k_proj(x).view(B, T, self.h, self.hd)
        v = self.v_proj(x).view(B, T, self.h, self.hd)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rope(q, pos0, self.theta), rope(k, pos0, self.theta)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if self.window:
            # query i sees key j iff j <= i and i - j < window
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

    def forward(self, x, pos0=0):
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), pos0))
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
    """Parameters are named as in lm.h (model.embed_tokens.weight, model.layers.i...)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)

    def hidden(self, ids, pos0=0):
        """rms(x; norm) [B, T, D] for ids [B, T] at positions pos0 .. pos0 + T - 1."""
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, pos0)
        return self.model.norm(x)

    def forward(self, ids, pos0=0):
        return self.hidden(ids, pos0) @ self.model.embed_tokens.weight.T

    def loss(self, ids, targets, reduction="mean"):
        """Next-token cross-entropy; targets -100 do not count. reduction "none" gives [B, T] (0 where ignored).
        Low-precision logits are upcast to float32 for the softmax; float64 stays float64."""
        logits = self(ids)
        if logits.dtype in (torch.bfloat16, torch.float16):
            logits = logits.float()
        out = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                              reduction=reduction)
        return out.view(targets.shape) if reduction == "none" else out


def init_params(model, std=None):
    """lm.h's init: embedding, q/k/v/gate/up N(0, std^2); o_proj, down_proj N(0, (std / sqrt(2 depth))^2); gains 1."""
    std = model.cfg.get("init_std", 0.02) if std is None else std
    out_std = std / math.sqrt(2 * model.cfg["depth"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std)
    return model


def decay_flags(model):
    """lm.h's weight-decay flags: 1 for every 2-d weight (embedding included), 0 for the gains."""
    return {name: int(p.ndim == 2) for name, p in model.named_parameters()}


def loss_and_grads(model, ids, targets):
    """(logits, loss, {name: gradient}) of the mean next-token loss, gradients as fresh tensors."""
    model.zero_grad(set_to_none=True)
    logits = model(ids)
    lg = logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits
    loss = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return logits.detach(), loss.detach(), grads


# ---- safetensors: 8-byte little-endian header length, JSON header, raw little-endian data ----

_ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
              torch.int32: "I32", torch.int64: "I64"}
_ST_TORCH = {v: k for k, v in _ST_DTYPES.items()}


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} (and string metadata) to path atomically: path.tmp, fsync, rename, fsync the folder."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = dict(dtype=_ST_DTYPES[t.dtype], shape=list(t.shape), data_offsets=[off, off + len(raw)])
        blobs.append(raw)
        off += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # data starts 8-aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for raw in blobs:
            f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_safetensors(path):
    """({name: tensor (CPU)}, {metadata}) of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base, out = 8 + n, {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        dt = _ST_TORCH[h["dtype"]]
        raw = bytearray(data[base + a:base + b])
        t = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        out[name] = t.view(dt).reshape(h["shape"]).clone()
    return out, meta


def load_params(model, tensors, prefix=""):
    """Copies prefix + name for every parameter (extra tensors, e.g. optim.m / optim.v, are ignored)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            t = tensors.get(prefix + name)
            if t is None:
                raise KeyError(f"missing tensor {prefix + name}")
            if tuple(t.shape) != tuple(p.shape):
                raise ValueError(f"{prefix + name}: shape {tuple(t.shape)}, model wants {tuple(p.shape)}")
            p.copy_(t.to(p.dtype))
    return model


def load_checkpoint(path, dtype=torch.float32, device="cpu"):
    """The model of a `ttt lm train` checkpoint (config from its "model" metadata), and the metadata."""
    tensors, meta = read_safetensors(path)
    model = LM(config_from_model_string(meta["model"])).to(device, dtype)
    return load_params(model, tensors), meta


def save_checkpoint(model, path, metadata=None):
    """The parameters under their names, with the config in ttt's "model" metadata form."""
    c = model.cfg
    meta = {"format": "ttt-lm", "model": " ".join(f"{k}={c[k]}" for k in preset("tiny", 0) if k in c)}
    meta.update(metadata or {})
    write_safetensors(path, dict(model.named_parameters()), meta)


# ---- benchmarks ----

def bench(args):
    """Training tokens/s of the same model: AdamW step included, eager or compiled."""
    torch.manual_seed(0)
    dev = "cuda"
    cfg = preset(args.preset, args.vocab, window=args.window)
    model = init_params(LM(cfg)).to(dev)
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
    if args.profile:
        # where the peer's step goes, by kernel (device time; no synchronization between kernels)
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.profile):
                step(ids, tg)
            torch.cuda.synchronize()
        ka = prof.key_averages()
        key = "self_device_time_total" if hasattr(ka[0], "self_device_time_total") else "self_cuda_time_total"
        total = sum(getattr(e, key) for e in ka)
        print(f"torch profile over {args.profile} steps: {total / 1e3 / args.profile:.2f} ms of kernels per step", file=sys.stderr)
        for e in sorted(ka, key=lambda e: -getattr(e, key))[:45]:
            print(f"{getattr(e, key) / 1e3 / args.profile:9.3f} ms/step {e.count // args.profile:6d} calls/step  {e.key[:110]}",
                  file=sys.stderr)


@torch.no_grad()
def prefill(args):
    """Forward time of one sequence of T tokens (the prefill), full attention or a window."""
    torch.manual_seed(0)
    cfg = preset(args.preset, args.vocab, window=args.window)
    dt = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = init_params(LM(cfg)).to("cuda", dt).eval()
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


def selftest(args):
    """CPU float64 checks of this file; prints one line per check and exits non-zero on a failure."""
    import tempfile
    torch.manual_seed(0)
    fails = 0

    def check(ok, what):
        nonlocal fails
        fails += not ok
        print(("ok   " if ok else "FAIL ") + what, flush=True)

    cfg = preset("tiny", 97, dim=32, depth=2, heads=4, mlp_hidden=40, window=5, prime_blocks=1, prime_hidden=24)
    model = init_params(LM(cfg)).double()
    n = sum(p.numel() for p in model.parameters())
    D, F_, Fp, V, L = 32, 40, 24, 97, 2
    want = V * D + L * (4 * D + 4 * D * D + 3 * D * F_ + 2 * (D // 4)) + 2 * D + 3 * D * Fp + D
    check(n == want, f"parameter count {n} == {want}")
    w = model.model.embed_tokens.weight
    check(abs(w.std().item() / 0.02 - 1) < 0.1, f"embedding std {w.std().item():.4f} ~ 0.02")
    o = model.model.layers[0].self_attn.o_proj.weight
    check(abs(o.std().item() / (0.02 / 2) - 1) < 0.1, f"o_proj std {o.std().item():.4f} ~ 0.01")
    ids = torch.randint(0, V, (2, 20))
    tg = torch.randint(0, V, (2, 20))
    tg[0, 4] = -100
    a, b = model(ids), model(ids, pos0=37)
    check((a - b).abs().max().item() < 1e-10, "logits do not depend on pos0 (RoPE is relative)")
    ids2 = ids.clone()
    ids2[:, 6] = (ids2[:, 6] + 1) % V
    c = model(ids2)
    reach = 6 + L * (cfg["window"] - 1)
    check((a[:, :6] - c[:, :6]).abs().max() < 1e-13 and (a[:, reach + 1:] - c[:, reach + 1:]).abs().max() < 1e-13
          and (a[:, reach] - c[:, reach]).abs().max() > 1e-8, "causal, window reach depth * (window - 1)")
    per = model.loss(ids, tg, reduction="none")
    loss = model.loss(ids, tg)
    check(per.dtype == torch.float64 and per[0, 4] == 0 and abs(per.sum() / 39 - loss).item() < 1e-14,
          "float64 loss stays float64, mean over counted targets")
    logits, l2, grads = loss_and_grads(model, ids, tg)
    check(abs(l2 - loss).item() < 1e-14 and set(grads) == set(n for n, _ in model.named_parameters()),
          "loss_and_grads: every parameter's gradient")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.safetensors")
        extra = {"ids": ids.int(), "bf": torch.randn(3, 5).bfloat16(), "empty": torch.zeros(0, 4), "loss": loss}
        write_safetensors(path, {**dict(model.named_parameters()), **extra}, {"made_by": "selftest"})
        t, meta = read_safetensors(path)
        check(meta == {"made_by": "selftest"} and all(torch.equal(t[k], v) for k, v in extra.items()),
              "safetensors round trip (i32, bf16, empty, metadata)")
        save_checkpoint(model, path)
        m2, meta = load_checkpoint(path, dtype=torch.float64)
        check(m2.cfg == model.cfg and torch.equal(m2(ids), a), "save_checkpoint / load_checkpoint")
        try:
            from safetensors.torch import load_file
            ref = load_file(path)
            check(all(torch.equal(ref[k], v) for k, v in dict(model.named_parameters()).items()),
                  "the safetensors package reads our file")
        except ImportError:
            print("skip the safetensors package is not installed")
    if fails:
        raise SystemExit(f"{fails} check(s) failed")


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
    b.add_argument("--profile", type=int, default=0, help="then profile this many steps (kernel table to stderr)")
    p = sub.add_parser("prefill", help="forward time of one long sequence")
    p.add_argument("--preset", default="125m")
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--window", type=int, default=0)
    p.add_argument("--dtype", default="bf16", choices=["f32", "bf16"])
    p.add_argument("--steps", type=int, default=3)
    sub.add_parser("selftest", help="CPU float64 checks of this file")
    a = ap.parse_args()
    {"bench": bench, "prefill": prefill, "selftest": selftest}[a.cmd](a)
