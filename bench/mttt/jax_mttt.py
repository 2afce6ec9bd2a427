"""Pure-JAX reference of ttt's MTTT layer and ViT classifier (docs/design.md §1).

This computes the same functions, with the same parameter names and layouts,
as include/ttt/mttt.h (src/layers/mttt.c) and include/ttt/vit.h
(src/models/vit.c). Only jax + numpy are used (no flax, no optax), so it runs
wherever a plain `jax` is installed.

Conventions (row vectors: a token is a row, a map is x @ W):

  MTTT layer, X [B, n, D] -> Z [B, n, D], H heads of d = D / H:
    q = x psi_w + psi_b,  k = x phi_w + phi_b  (split into H column blocks of d)
    gh_j = g_w[:, block j]        [D, d]; head j decodes u -> u gh_j^T (d -> D)
    per (example b, head j):
      l(W; K, X) = 1/(2m) sum_i || dec(f(k_i; W)) - x_i ||^2  over the m tokens of a step
      dec(u) = u gh_j^T, or LN(u gh_j^T) * ln_g[j] + ln_b[j] for the MLP learner (eps 1e-6)
      W_t = W_{t-1} - eta * grad_W l(W_{t-1})          t = 1..T (batch GD: all n tokens;
                                                       SGD: T consecutive mini-batches of a
                                                       per-(b, j) permutation, the first
                                                       n mod T one token longer)
      u_i = f(q_i; W_T)
    z_i = sum_j u_ij h_w[block j, :] + h_b    (= merge heads, then @ h_w + h_b)
  learners: linear f(u; W) = u W, W_0 = 0 (not a parameter);
            mlp    f(u; W) = gelu(u w1 + b1) w2 + b2, W_0 = (w1[j], b1[j], w2[j], b2[j]) learned.
  The inner gradient is jax.grad inside the forward, so an outer jax.grad
  differentiates through every inner step (second order), like ttt_grad with
  create_graph.

  GELU is the tanh approximation; LayerNorm uses the biased variance and eps 1e-6.

  ViT: tokens [B, n, token_dim] -> @ embed.w + embed.b -> + pos ->
       depth x { x += seq(LN1(x)); x += fc2(gelu(fc1(LN2(x)))) } -> LN -> mean over
       tokens -> @ head.w + head.b.
  Training step: mean cross-entropy, global-norm clip 1.0 (scale max/(norm + 1e-6) when
  norm > max, as ttt_clip_grad_norm), AdamW as ttt's (decoupled weight decay
  p *= 1 - lr*wd on matrices only, bias-corrected moments, eps 1e-8 outside the sqrt).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, Dict

import numpy as np

import jax
import jax.numpy as jnp

LN_EPS = 1e-6
GELU_C = 0.7978845608028654  # sqrt(2/pi)
GELU_K = 0.044715

# ---------------------------------------------------------------------------------------------
# configs


@dataclasses.dataclass(frozen=True)
class MTTTConfig:
    kind: str = "mttt"            # "mttt" | "attention" | "linear_attention"
    learner: str = "mlp"          # "linear" | "mlp" | "kernel"   (kind "mttt" only)
    dim: int = 192                # D
    heads: int = 3                # H
    steps: int = 1                # T
    eta: float = 1.0              # inner learning rate
    sgd: bool = False             # False: batch GD; True: T mini-batches of a random split
    no_decoder_ln: bool = False   # MLP learner: drop the decoder LayerNorm
    feature: str = "identity"     # linear attention: "identity" (1/n) | "elu1"
    remat_inner: bool = False     # jax.checkpoint each inner step (ttt's opts.checkpoint)
    attn_impl: str = "naive"      # attention: "naive" (softmax of the full score matrix) or
                                  # an implementation of jax.nn.dot_product_attention: "xla", "cudnn"

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def has_inner_loop(self) -> bool:
        return self.kind == "mttt" and self.learner in ("linear", "mlp")

    @property
    def has_mlp(self) -> bool:
        return self.kind == "mttt" and self.learner == "mlp"

    @property
    def has_ln(self) -> bool:
        return self.has_mlp and not self.no_decoder_ln


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    token_dim: int = 1
    n_tokens: int = 784
    dim: int = 192
    depth: int = 12
    heads: int = 3
    mlp_ratio: int = 4
    classes: int = 10
    pos: str = "learned"          # "learned" | "sincos"
    seq: MTTTConfig = MTTTConfig()
    remat_block: bool = False     # jax.checkpoint each block
    compute_dtype: str = "float32"  # "float32" | "bfloat16" (master weights stay in the params' dtype)


# ---------------------------------------------------------------------------------------------
# elementwise pieces


def gelu(x):
    """tanh approximation (ttt_gelu)."""
    return 0.5 * x * (1.0 + jnp.tanh(GELU_C * (x + GELU_K * x * x * x)))


def layer_norm(x, g=None, b=None, eps=LN_EPS):
    """Over the last axis, biased variance (ttt_layer_norm); statistics in >= f32."""
    dt = x.dtype
    xf = x.astype(jnp.promote_types(dt, jnp.float32))
    mu = jnp.mean(xf, axis=-1, keepdims=True)
    xc = xf - mu
    var = jnp.mean(xc * xc, axis=-1, keepdims=True)
    y = (xc * jax.lax.rsqrt(var + eps)).astype(dt)
    if g is not None:
        y = y * g
    if b is not None:
        y = y + b
    return y


def elu1(x):
    return jnp.where(x > 0, x + 1.0, jnp.exp(jnp.minimum(x, 0.0)))


# ---------------------------------------------------------------------------------------------
# MTTT parameters


def mttt_param_names(cfg: MTTTConfig):
    """In ttt_mttt_params order."""
    names = ["psi_w", "psi_b", "phi_w", "phi_b", "g_w", "h_w", "h_b"]
    if cfg.has_mlp:
        names += ["w1", "b1", "w2", "b2"]
    if cfg.has_ln:
        names += ["ln_g", "ln_b"]
    return names


MTTT_MATRICES = {"psi_w", "phi_w", "g_w", "h_w", "w1", "w2"}  # weight decay 1 (ttt_mttt_params)


def init_mttt(rng: np.random.Generator, cfg: MTTTConfig, dtype=np.float32) -> Dict[str, np.ndarray]:
    """mttt.h INIT: projections U(+-sqrt(3/D)), w1/w2 Xavier U(+-sqrt(6/(5d))), biases 0, ln_g 1, ln_b 0.
    (Same distributions as ttt, not the same numbers: ttt draws from its own RNG.)"""
    D, H = cfg.dim, cfg.heads
    d = D // H
    proj = math.sqrt(3.0 / D)
    xav = math.sqrt(6.0 / (d + 4 * d))
    u = lambda lim, *shape: rng.uniform(-lim, lim, size=shape).astype(dtype)
    z = lambda *shape: np.zeros(shape, dtype)
    p = {"psi_w": u(proj, D, D), "psi_b": z(D), "phi_w": u(proj, D, D), "phi_b": z(D),
         "g_w": u(proj, D, D), "h_w": u(proj, D, D), "h_b": z(D)}
    if cfg.has_mlp:
        p.update(w1=u(xav, H, d, 4 * d), b1=z(H, 4 * d), w2=u(xav, H, 4 * d, d), b2=z(H, d))
    if cfg.has_ln:
        p.update(ln_g=np.ones((H, D), dtype), ln_b=z(H, D))
    return p


# ---------------------------------------------------------------------------------------------
# SGD token order: a port of ttt_mttt_sgd_order (splitmix64 + Fisher-Yates), for exact checks

_M64 = (1 << 64) - 1


def sgd_order_ttt(seed: int, batch: int, heads: int, n: int) -> np.ndarray:
    """order[b, h, i]: the i-th token head h of example b visits, bit-exact with ttt_mttt_sgd_order."""
    out = np.empty((batch * heads, n), np.int32)
    for e in range(batch * heads):
        s = (seed ^ ((0xD1B54A32D192ED03 * (e + 1)) & _M64)) & _M64
        o = list(range(n))
        for i in range(n - 1, 0, -1):
            s = (s + 0x9E3779B97F4A7C15) & _M64
            z = s
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
            z = z ^ (z >> 31)
            j = int(float(z >> 11) * 2.0 ** -53 * float(i + 1))
            j = min(j, i)
            o[i], o[j] = o[j], o[i]
        out[e] = o
    return out.reshape(batch, heads, n)


def vit_block_seed(seed: int, block: int) -> int:
    """ttt's per-block SGD seed (vit.c block_seed)."""
    z = (seed + 0x9E3779B97F4A7C15 * (block + 1)) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def random_orders(key, batch: int, heads: int, n: int):
    """A random permutation per (example, head), [B, H, n] int32 (for training: not ttt's stream)."""
    return jnp.argsort(jax.random.uniform(key, (batch, heads, n)), axis=-1).astype(jnp.int32)


def sgd_slices(n: int, T: int):
    """(start, size) of the T mini-batches: the first n mod T take one token more."""
    base, extra = divmod(n, T)
    out, start = [], 0
    for t in range(T):
        m = base + (1 if t < extra else 0)
        out.append((start, m))
        start += m
    return out


# ---------------------------------------------------------------------------------------------
# MTTT forward


def _learner_apply(learner: str, W, u):
    if learner == "linear":
        return u @ W[0]
    w1, b1, w2, b2 = W
    return gelu(u @ w1 + b1) @ w2 + b2


def _head(cfg: MTTTConfig, W0, q, k, gh, lng, lnb, order, xt, want_inner: bool):
    """One (example, head): q, k [n, d], gh [D, d], lng/lnb [D] or None, order [n] or None,
    xt [n, D] (the reconstruction target = the layer's input). Returns u [n, d] and the inner
    losses [T + 1] (before each step, on its tokens; after the last, on all n) or None."""
    n = k.shape[0]

    def recon(W, ks, xs):
        dec = _learner_apply(cfg.learner, W, ks) @ gh.T
        if lng is not None:
            dec = layer_norm(dec, lng, lnb)
        r = dec - xs
        return (0.5 / ks.shape[0]) * jnp.sum(r * r)

    grad_fn = jax.value_and_grad(recon)

    def step(W, ks, xs):
        loss, g = grad_fn(W, ks, xs)
        return jax.tree_util.tree_map(lambda w, gw: w - cfg.eta * gw, W, g), loss

    if cfg.remat_inner:
        step = jax.checkpoint(step)

    kp, xp = k, xt
    if cfg.sgd and cfg.steps > 0:
        kp, xp = k[order], xt[order]
    W = W0
    losses = []
    for t, (start, m) in enumerate(sgd_slices(n, cfg.steps) if cfg.sgd else [(0, n)] * cfg.steps):
        ks = jax.lax.slice_in_dim(kp, start, start + m, axis=0)
        xs = jax.lax.slice_in_dim(xp, start, start + m, axis=0)
        W, loss = step(W, ks, xs)
        losses.append(loss)
    u = _learner_apply(cfg.learner, W, q)
    if not want_inner:
        return u, None
    losses.append(jax.lax.stop_gradient(recon(W, k, xt)))
    return u, jnp.stack(losses)


def _split_heads(t, H):
    B, n, D = t.shape
    return t.reshape(B, n, H, D // H).transpose(0, 2, 1, 3)  # [B, H, n, d]


def _merge_heads(t):
    B, H, n, d = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, n, H * d)


def mttt_forward(p: Dict[str, Any], x, cfg: MTTTConfig, order=None, return_inner: bool = False):
    """Z = layer(X), x [B, n, D]. order [B, H, n] int (SGD only; e.g. sgd_order_ttt or
    random_orders). With return_inner, also the inner losses [T + 1] averaged over batch and
    heads (like ttt_mttt_run_opts.inner_loss; None for layers without an inner loop)."""
    B, n, D = x.shape
    H, d = cfg.heads, D // cfg.heads
    assert D == cfg.dim and D % H == 0
    q = _split_heads(x @ p["psi_w"] + p["psi_b"], H)
    k = _split_heads(x @ p["phi_w"] + p["phi_b"], H)
    inner = None
    if cfg.kind == "attention" or (cfg.kind == "mttt" and cfg.learner == "kernel"):
        v = _split_heads(x @ p["g_w"], H)
        if cfg.attn_impl == "naive":
            s = jnp.einsum("bhid,bhjd->bhij", q, k) * (1.0 / math.sqrt(d))
            z = jnp.einsum("bhij,bhjd->bhid", jax.nn.softmax(s, axis=-1), v)
        else:  # [B, n, H, d] layout, scale 1/sqrt(d) by default
            t = lambda a: a.transpose(0, 2, 1, 3)
            z = t(jax.nn.dot_product_attention(t(q), t(k), t(v), implementation=cfg.attn_impl))
    elif cfg.kind == "linear_attention":
        v = _split_heads(x @ p["g_w"], H)
        if cfg.feature == "identity":
            kv = jnp.einsum("bhjd,bhje->bhde", k, v)
            z = jnp.einsum("bhid,bhde->bhie", q, kv) * (1.0 / n)
        else:
            qf, kf = elu1(q), elu1(k)
            num = jnp.einsum("bhid,bhde->bhie", qf, jnp.einsum("bhjd,bhje->bhde", kf, v))
            den = jnp.einsum("bhid,bhd->bhi", qf, kf.sum(axis=2))[..., None]
            z = num / den
    else:
        if cfg.sgd and cfg.steps > 0:
            assert order is not None, "MTTT with SGD needs an order [B, H, n]"
            assert n >= cfg.steps, "SGD needs n >= T"
        else:
            order = None
        gh = p["g_w"].reshape(D, H, d).transpose(1, 0, 2)  # [H, D, d]
        if cfg.learner == "linear":
            W0 = (jnp.zeros((H, d, d), x.dtype),)
        else:
            W0 = (p["w1"], p["b1"], p["w2"], p["b2"])
        lng = p["ln_g"] if cfg.has_ln else None
        lnb = p["ln_b"] if cfg.has_ln else None
        f = partial(_head, cfg, want_inner=return_inner)
        # heads: W0, q, k, gh, lng, lnb, order mapped; x shared
        f = jax.vmap(f, in_axes=(0, 0, 0, 0, 0, 0, 0, None))
        # batch: q, k, order, x mapped; W0 and the decoder shared
        f = jax.vmap(f, in_axes=(None, 0, 0, None, None, None, 0, 0))
        z, losses = f(W0, q, k, gh, lng, lnb, order, x)
        if return_inner:
            inner = losses.mean(axis=(0, 1))
    out = _merge_heads(z) @ p["h_w"] + p["h_b"]
    return (out, inner) if return_inner else out


# ---------------------------------------------------------------------------------------------
# ViT


def _trunc_normal(rng, sd, shape, dtype):
    v = rng.standard_normal(size=int(np.prod(shape)) * 2 + 64) * sd
    v = v[np.abs(v) <= 2 * sd]
    while v.size < int(np.prod(shape)):
        w = rng.standard_normal(size=int(np.prod(shape)) + 64) * sd
        v = np.concatenate([v, w[np.abs(w) <= 2 * sd]])
    return v[: int(np.prod(shape))].reshape(shape).astype(dtype)


def sincos_2d(n: int, D: int) -> np.ndarray:
    g = int(round(math.sqrt(n)))
    assert g * g == n and D % 4 == 0
    q = D // 4
    w = 10000.0 ** (-np.arange(q) / q)
    t = np.arange(n)
    r, c = (t // g)[:, None] * w, (t % g)[:, None] * w
    return np.concatenate([np.sin(c), np.cos(c), np.sin(r), np.cos(r)], axis=1)


def vit_seq_config(cfg: ViTConfig) -> MTTTConfig:
    return dataclasses.replace(cfg.seq, dim=cfg.dim, heads=cfg.heads)


def init_vit(rng: np.random.Generator, cfg: ViTConfig, dtype=np.float32):
    """Flat dict keyed by ttt's checkpoint names (vit.h), plus, for sin-cos positions, the
    constant table under "pos" in the returned `consts` dict. Returns (params, consts)."""
    D, R = cfg.dim, cfg.mlp_ratio * cfg.dim
    seq = vit_seq_config(cfg)
    xav = math.sqrt(6.0 / (D + R))
    p = {"embed.w": _trunc_normal(rng, 0.02, (cfg.token_dim, D), dtype), "embed.b": np.zeros(D, dtype)}
    consts = {}
    if cfg.pos == "learned":
        p["pos"] = _trunc_normal(rng, 0.02, (cfg.n_tokens, D), dtype)
    else:
        consts["pos"] = sincos_2d(cfg.n_tokens, D).astype(dtype)
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        p[b + "norm1.g"], p[b + "norm1.b"] = np.ones(D, dtype), np.zeros(D, dtype)
        for k, v in init_mttt(rng, seq, dtype).items():
            p[b + "seq." + k] = v
        p[b + "norm2.g"], p[b + "norm2.b"] = np.ones(D, dtype), np.zeros(D, dtype)
        p[b + "mlp.fc1.w"] = rng.uniform(-xav, xav, (D, R)).astype(dtype)
        p[b + "mlp.fc1.b"] = np.zeros(R, dtype)
        p[b + "mlp.fc2.w"] = rng.uniform(-xav, xav, (R, D)).astype(dtype)
        p[b + "mlp.fc2.b"] = np.zeros(D, dtype)
    p["norm.g"], p["norm.b"] = np.ones(D, dtype), np.zeros(D, dtype)
    p["head.w"] = _trunc_normal(rng, 0.02, (D, cfg.classes), dtype)
    p["head.b"] = np.zeros(cfg.classes, dtype)
    return ({k: jnp.asarray(v) for k, v in p.items()}, {k: jnp.asarray(v) for k, v in consts.items()})


def decay_mask(params: Dict[str, Any]) -> Dict[str, bool]:
    """vit.h weight-decay flags: the maps (embed.w, the MTTT matrices, fc1.w, fc2.w, head.w)."""
    def flag(name):
        leaf = name.split(".")[-1]
        if name in ("embed.w", "head.w") or name.endswith(("fc1.w", "fc2.w")):
            return True
        return ".seq." in name and leaf in MTTT_MATRICES
    return {k: flag(k) for k in params}


def _sub(params, prefix):
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def vit_forward(params, consts, tokens, cfg: ViTConfig, orders=None, return_inner: bool = False):
    """logits [B, classes] for tokens [B, n, token_dim]. orders: list (one per block) of
    [B, H, n] int arrays when the sequence layer uses SGD."""
    seq = vit_seq_config(cfg)
    pos = params["pos"] if cfg.pos == "learned" else consts["pos"]
    x = tokens @ params["embed.w"] + params["embed.b"] + pos
    inner = []

    def block(bp, x, order):
        h = layer_norm(x, bp["norm1.g"], bp["norm1.b"])
        z = mttt_forward(_sub(bp, "seq."), h, seq, order=order, return_inner=return_inner)
        if return_inner:
            z, il = z
        else:
            il = None
        x = x + z
        h = layer_norm(x, bp["norm2.g"], bp["norm2.b"])
        x = x + gelu(h @ bp["mlp.fc1.w"] + bp["mlp.fc1.b"]) @ bp["mlp.fc2.w"] + bp["mlp.fc2.b"]
        return x, il

    if cfg.remat_block:
        block = jax.checkpoint(block)
    for i in range(cfg.depth):
        x, il = block(_sub(params, f"blocks.{i}."), x, None if orders is None else orders[i])
        inner.append(il)
    x = layer_norm(x, params["norm.g"], params["norm.b"]).mean(axis=1)
    logits = x @ params["head.w"] + params["head.b"]
    if return_inner:
        return logits, (jnp.stack(inner) if seq.has_inner_loop else None)
    return logits


def cross_entropy(logits, labels):
    logits = logits.astype(jnp.float32) if logits.dtype != jnp.float64 else logits
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return jnp.mean(lse - picked)


# ---------------------------------------------------------------------------------------------
# outer optimiser (ttt's AdamW and clip)


def adamw_init(params):
    zeros = lambda t: jax.tree_util.tree_map(jnp.zeros_like, t)
    return {"m": zeros(params), "v": zeros(params), "step": jnp.zeros((), jnp.int32)}


def clip_by_global_norm(grads, max_norm=1.0):
    """ttt_clip_grad_norm: if norm > max, scale by max / (norm + 1e-6)."""
    leaves = jax.tree_util.tree_leaves(grads)
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32) if g.dtype != jnp.float64 else g))
                        for g in leaves))
    scale = jnp.where(norm > max_norm, max_norm / (norm + 1e-6), 1.0)
    return jax.tree_util.tree_map(lambda g: (g * scale).astype(g.dtype), grads), norm


def adamw_update(params, grads, state, lr, weight_decay, mask, beta1=0.9, beta2=0.999, eps=1e-8):
    """ttt's fused AdamW (cpu_optim.c): p = p*(1 - lr*wd) - lr * (m/bc1) / (sqrt(v/bc2) + eps)."""
    step = state["step"] + 1
    t = step.astype(jnp.result_type(float))  # float64 under jax_enable_x64
    bc1 = 1.0 - beta1 ** t
    bc2 = 1.0 - beta2 ** t
    new_p, new_m, new_v = {}, {}, {}
    for k in params:
        p, g = params[k], grads[k]
        m = beta1 * state["m"][k] + (1.0 - beta1) * g
        v = beta2 * state["v"][k] + (1.0 - beta2) * g * g
        wd = weight_decay if mask[k] else 0.0
        new_p[k] = (p * (1.0 - lr * wd) - lr * (m / bc1) / (jnp.sqrt(v / bc2) + eps)).astype(p.dtype)
        new_m[k], new_v[k] = m, v
    return new_p, {"m": new_m, "v": new_v, "step": step}


# ---------------------------------------------------------------------------------------------
# training step


def make_train_step(cfg: ViTConfig, mask: Dict[str, bool], weight_decay: float = 1e-4,
                    clip: float = 1.0, donate: bool = True):
    """A jitted step(params, opt_state, consts, tokens, labels, lr, key) ->
    (params, opt_state, loss, grad_norm). key draws the SGD splits (random_orders per block)."""
    seq = vit_seq_config(cfg)
    cdt = jnp.dtype(cfg.compute_dtype)

    def loss_fn(params, consts, tokens, labels, key):
        orders = None
        if seq.has_inner_loop and seq.sgd and seq.steps > 0:
            keys = jax.random.split(key, cfg.depth)
            orders = [random_orders(keys[i], tokens.shape[0], cfg.heads, tokens.shape[1]) for i in range(cfg.depth)]
        cast = lambda t: jax.tree_util.tree_map(
            lambda a: a.astype(cdt) if jnp.issubdtype(a.dtype, jnp.floating) else a, t)
        logits = vit_forward(cast(params), cast(consts), tokens.astype(cdt), cfg, orders=orders)
        return cross_entropy(logits, labels)

    def step(params, opt_state, consts, tokens, labels, lr, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, consts, tokens, labels, key)
        grads, gnorm = clip_by_global_norm(grads, clip)
        params, opt_state = adamw_update(params, grads, opt_state, lr, weight_decay, mask)
        return params, opt_state, loss, gnorm

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def make_eval_fn(cfg: ViTConfig):
    """Jitted logits(params, consts, tokens). The inner loops still run; SGD layers use a fixed
    split (key 0)."""
    seq = vit_seq_config(cfg)

    def f(params, consts, tokens):
        orders = None
        if seq.has_inner_loop and seq.sgd and seq.steps > 0:
            keys = jax.random.split(jax.random.PRNGKey(0), cfg.depth)
            orders = [random_orders(keys[i], tokens.shape[0], cfg.heads, tokens.shape[1]) for i in range(cfg.depth)]
        return vit_forward(params, consts, tokens, cfg, orders=orders)

    return jax.jit(f)
