/* Scaled dot-product attention as one op entry point.
 *
 * Where the backend has fused attention kernels (backend.h: attention_fwd,
 * attention_bwd; the CUDA backend for f32), the forward pass is one kernel that
 * never forms the score matrix, and the node it records keeps only q, k, v,
 * out and the per-row log-sum-exp. Its VJP runs the fused backward kernel for
 * a first-order gradient; when the gradient must itself be differentiable
 * (grad mode on during the VJP: create_graph), it recomputes the composed
 * attention below on the same inputs and differentiates that, so every order
 * stays exact.
 *
 * Otherwise attention is composed of engine ops. Queries are processed in
 * blocks so that the score matrix of a long sequence never exists whole: with
 * a sliding window each block only multiplies the keys it can see, so the cost
 * grows with Tq * window, not Tq * Tk. Every piece is an engine op, so
 * gradients of any order come for free.
 *
 * It lives in src/composed, above the autodiff traversal, because it uses it:
 * large blocks are ttt_checkpoints and the higher-order VJPs differentiate a
 * recomputation with ttt__grad. The ops in src/ops use only the recording. */
#include <math.h>

#include "core/internal.h"

/* Scores per block are kept near this many elements (16 Mi floats = 64 MB f32). */
static const int64_t BLOCK_SCORES = (int64_t)1 << 24;
/* With a graph, attention whose scores exceed this many elements in all is
 * rematerialized block by block: the backward pass recomputes each block's
 * scores instead of keeping four [.., Tq, Tk] tensors per call alive. */
static const int64_t REMAT_SCORES = (int64_t)1 << 22;

typedef struct {
    int causal;
    int64_t window, q_offset; /* q_offset: the block's first query position relative to its first key */
    double scale;
} block_args;

static ttt_tensor *attend(ttt_ctx *ctx, const block_args *a, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v) {
    ttt_tensor *s = ttt_scale(ctx, ttt_matmul(ctx, q, k, 0, 1), a->scale);
    if (a->causal) s = ttt_attn_mask(ctx, s, a->window, a->q_offset, -INFINITY);
    return ttt_matmul(ctx, ttt_softmax(ctx, s), v, 0, 0);
}

static int attend_fn(ttt_ctx *ctx, void *user, int n_in, ttt_tensor *const *in, int n_out, ttt_tensor **out) {
    (void)n_in, (void)n_out;
    out[0] = attend(ctx, user, in[0], in[1], in[2]);
    return out[0] ? TTT_OK : TTT_ERR;
}

static int check_qkv(ttt_ctx *ctx, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, int causal,
                     int64_t window) {
    char sq[96], sk[96], sv[96];
    ttt_shape_str(q, sq, sizeof sq), ttt_shape_str(k, sk, sizeof sk), ttt_shape_str(v, sv, sizeof sv);
    if (q->ndim < 2 || k->ndim != q->ndim || v->ndim != q->ndim)
        return ttt__set_error(ctx, "attention: q %s, k %s, v %s must have the same rank >= 2", sq, sk, sv);
    if (q->dtype != k->dtype || q->dtype != v->dtype || !ttt__is_float(q->dtype))
        return ttt__set_error(ctx, "attention: q, k, v must share one float dtype (got %s, %s, %s)",
                              ttt_dtype_name(q->dtype), ttt_dtype_name(k->dtype), ttt_dtype_name(v->dtype));
    const int r = q->ndim;
    for (int i = 0; i < r - 2; i++)
        if (q->shape[i] != k->shape[i] || q->shape[i] != v->shape[i])
            return ttt__set_error(ctx, "attention: batch axes differ: q %s, k %s, v %s", sq, sk, sv);
    if (q->shape[r - 1] != k->shape[r - 1])
        return ttt__set_error(ctx, "attention: q %s and k %s differ in head dim", sq, sk);
    if (k->shape[r - 2] != v->shape[r - 2])
        return ttt__set_error(ctx, "attention: k %s and v %s differ in length", sk, sv);
    if (causal && q->shape[r - 2] > k->shape[r - 2])
        return ttt__set_error(ctx, "attention: causal needs at least as many keys as queries (q %s, k %s)", sq, sk);
    if (window < 0) return ttt__set_error(ctx, "attention: window %lld must be >= 0", (long long)window);
    if (window > 0 && !causal) return ttt__set_error(ctx, "attention: a window needs causal = 1");
    return TTT_OK;
}

/* The composed attention; arguments checked, scale resolved. */
static ttt_tensor *composed(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, int causal, int64_t window,
                            double scale) {
    const int r = q->ndim;
    const int64_t tq = q->shape[r - 2], tk = k->shape[r - 2];
    const int64_t off = causal ? tk - tq : 0; /* query i sits at absolute position off + i */
    int64_t batch = 1;
    for (int i = 0; i < r - 2; i++) batch *= q->shape[i];
    if (tq == 0 || batch == 0) return ttt_matmul(ctx, q, ttt_matmul(ctx, k, v, 1, 0), 0, 0); /* empty, right shape */

    /* Block size: a window's worth of queries sees at most 2 windows of keys. */
    const int64_t seen = window > 0 ? (window < tk ? window : tk) : tk;
    int64_t blk = BLOCK_SCORES / (batch * seen > 0 ? batch * seen : 1);
    if (window > 0 && blk > window) blk = window;
    if (blk < 1) blk = 1;
    if (blk > tq) blk = tq;
    const int64_t n_blk = (tq + blk - 1) / blk;

    /* Without a graph nothing of a block is needed after it: write each block's
     * result into a preallocated output and release its scores, so memory stays
     * one block's worth however long the sequence (long-context evaluation). */
    const int record = ttt__recording(ctx, 3, (ttt_tensor *const[]){q, k, v});
    ttt_tensor *out = NULL, **outs = NULL;
    if (record) outs = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)n_blk);
    else {
        int64_t shape[TTT_MAX_DIMS];
        for (int i = 0; i < r; i++) shape[i] = q->shape[i];
        shape[r - 1] = v->shape[r - 1];
        out = ttt_new(ctx, q->dtype, r, shape);
    }
    if (!outs && !out) return NULL;
    const int remat = record && batch * tq * seen > REMAT_SCORES;
    for (int64_t b = 0; b < n_blk; b++) {
        const int64_t q0 = b * blk, q1 = q0 + blk < tq ? q0 + blk : tq;
        int64_t k0 = 0, k1 = tk;
        if (causal) {
            k1 = off + q1; /* the last query of the block sees keys up to its own position */
            if (window > 0) k0 = off + q0 - window + 1 > 0 ? off + q0 - window + 1 : 0;
        }
        const ttt_mark_t mark = ttt_mark(ctx);
        ttt_tensor *qb = n_blk == 1 ? q : ttt_slice(ctx, q, r - 2, q0, q1, 1);
        ttt_tensor *kb = k0 == 0 && k1 == tk ? k : ttt_slice(ctx, k, r - 2, k0, k1, 1);
        ttt_tensor *vb = k0 == 0 && k1 == tk ? v : ttt_slice(ctx, v, r - 2, k0, k1, 1);
        block_args *a = ttt__meta_alloc(ctx, sizeof *a); /* lives until the backward pass (step arena) */
        if (!a) return NULL;
        *a = (block_args){causal, window, off + q0 - k0, scale};
        ttt_tensor *ob = NULL;
        if (remat) {
            if (ttt_checkpoint(ctx, attend_fn, a, 3, (ttt_tensor *const[]){qb, kb, vb}, 1, &ob) != TTT_OK) return NULL;
        } else {
            ob = attend(ctx, a, qb, kb, vb);
        }
        if (!ob) return NULL;
        if (record) outs[b] = ob;
        else {
            if (ttt__copy_into(ctx, out, r - 2, q0, 1, ob) != TTT_OK) return NULL;
            ttt_release(ctx, mark);
        }
    }
    if (!record) return out;
    return n_blk == 1 ? outs[0] : ttt_concat(ctx, (int)n_blk, outs, r - 2);
}

/* ---- the fused path ------------------------------------------------------------------------------------------ */

/* ---- the fused backward as a differentiable node (second order) ------------------------------------------- */

/* The composed route to the gradient of Phi = sum_i <u_i, d_i>, (d_q, d_k, d_v) the
 * gradient of attention(q, k, v) against dout, with respect to the wanted ones of
 * (q, k, v, dout): recompute, differentiate with create_graph, differentiate Phi. */
static int bwd2_composed(ttt_ctx *ctx, ttt_tensor *const *in, ttt_tensor *const *u, const bool *needs, int causal,
                         int64_t window, double scale, ttt_tensor **gin) {
    /* bf16 is recomputed in f32 (scores and softmax, as the kernels do); the casts carry the gradients back.
     * The recomputation is recorded even inside a plain backward (no create_graph: recording is off there),
     * since phi's gradient is taken through it; without this every gradient came back zero. */
    const int outer_graph = ttt_grad_enabled(ctx);
    const ttt_grad_mode prev = ttt_grad_mode_set(ctx, 1);
    const ttt_dtype dt = in[0]->dtype == TTT_BF16 ? TTT_F32 : in[0]->dtype;
    ttt_tensor *x[4], *phi = NULL;
    int rc = TTT_OK;
    for (int i = 0; i < 4 && rc == TTT_OK; i++)
        if (!(x[i] = in[i]->dtype == dt ? in[i] : ttt_cast(ctx, in[i], dt))) rc = TTT_ERR;
    ttt_tensor *o = rc == TTT_OK ? composed(ctx, x[0], x[1], x[2], causal, window, scale) : NULL, *d1[3];
    if (!o || ttt__grad(ctx, 1, &o, &x[3], 3, x, d1, true, true) != TTT_OK) rc = TTT_ERR;
    for (int i = 0; i < 3 && rc == TTT_OK; i++)
        if (u[i]) {
            ttt_tensor *ui = u[i]->dtype == dt ? u[i] : ttt_cast(ctx, u[i], dt);
            ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, d1[i], ui), 0, NULL, 0);
            phi = phi ? ttt_add(ctx, phi, t) : t;
            if (!phi) rc = TTT_ERR;
        }
    ttt_grad_mode_restore(ctx, prev);
    if (rc != TTT_OK) return TTT_ERR;
    ttt_tensor *targets[4], *grads[4];
    int n = 0;
    for (int i = 0; i < 4; i++)
        if (needs[i]) targets[n++] = in[i];
    if (!phi) { /* no cotangent reached the backward */
        for (int i = 0; i < 4; i++)
            if (needs[i] && !(gin[i] = ttt_zeros_like(ctx, in[i]))) return TTT_ERR;
        return TTT_OK;
    }
    if (n && ttt__grad(ctx, 1, &phi, NULL, n, targets, grads, outer_graph, true) != TTT_OK) return TTT_ERR;
    for (int i = 0, j = 0; i < 4; i++)
        if (needs[i]) gin[i] = grads[j++];
    return TTT_OK;
}

/* node: in = q, k, v, dout (dense); out = dq, dk, dv; pattr = lse, delta; iattr = causal, window; fattr = scale */
static int bwd_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    ttt_tensor *const *in = nd->in;
    const int causal = (int)nd->iattr[0];
    const int64_t window = nd->iattr[1];
    const double scale = nd->fattr[0];
    ttt_tensor *u[3];
    for (int i = 0; i < 3; i++) u[i] = gout[i] ? ttt__dense(ctx, gout[i]) : NULL;
    if (ttt_grad_enabled(ctx)) /* third order and beyond: composed */
        return bwd2_composed(ctx, in, u, needs, causal, window, scale, gin);
    for (int i = 0; i < 3; i++)
        if (!u[i] && !(u[i] = ttt_zeros_like(ctx, in[i]))) return TTT_ERR;
    ttt_tensor *lse = nd->pattr[0], *delta = nd->pattr[1];
    ttt_tensor *g[4] = {ttt__new_like(ctx, in[0]), ttt__new_like(ctx, in[1]), ttt__new_like(ctx, in[2]),
                        ttt__new_like(ctx, in[3])};
    ttt_tensor *rows = ttt_new(ctx, TTT_F32, TTT_DIMS(2 * ttt_numel(lse)));
    if (!g[0] || !g[1] || !g[2] || !g[3] || !rows) return TTT_ERR;
    const int rc = ctx->be->attention_bwd2(ctx->bs, g[0], g[1], g[2], g[3], rows, in[0], in[1], in[2], in[3], lse, delta, u[0],
                                           u[1], u[2], causal, window, scale);
    if (rc == TTT_BACKEND_DECLINED) return bwd2_composed(ctx, in, u, needs, causal, window, scale, gin);
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "attention (double backward)");
    for (int i = 0; i < 4; i++) gin[i] = needs[i] ? g[i] : NULL;
    return TTT_OK;
}

/* create_graph with a fused double backward: the first-order kernel's dq, dk, dv
 * as outputs of a node that bwd_vjp differentiates. TTT_BACKEND_DECLINED (nothing
 * recorded) when the kernels do not take these inputs. */
static int fused_bwd_recorded(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *g, const bool *needs, ttt_tensor **gin) {
    ttt_tensor *q = nd->in[0], *k = nd->in[1], *v = nd->in[2], *lse = nd->pattr[0];
    const ttt_mark_t mark = ttt_mark(ctx);
    ttt_tensor *gd = ttt_contiguous(ctx, g); /* differentiable: dout may depend on what is differentiated */
    ttt_tensor *d[3] = {ttt__new_like(ctx, q), ttt__new_like(ctx, k), ttt__new_like(ctx, v)};
    ttt_tensor *delta = ttt__new_like(ctx, lse);
    if (!gd || !d[0] || !d[1] || !d[2] || !delta) return TTT_ERR;
    int rc = ctx->be->attention_bwd(ctx->bs, d[0], d[1], d[2], delta, gd, q, k, v, nd->out[0], lse, (int)nd->iattr[0],
                                    nd->iattr[1], nd->fattr[0]);
    if (rc == TTT_BACKEND_DECLINED) {
        ttt_release(ctx, mark);
        return TTT_BACKEND_DECLINED;
    }
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "attention");
    ttt_tensor *ins[4] = {q, k, v, gd};
    if (ttt__recording(ctx, 4, ins)) {
        ttt_node *n2 = ttt__record(ctx, "attention_backward", bwd_vjp, 4, ins, 3, d);
        if (!n2) return TTT_ERR;
        n2->pattr[0] = lse;
        n2->pattr[1] = delta;
        n2->iattr[0] = nd->iattr[0];
        n2->iattr[1] = nd->iattr[1];
        n2->fattr[0] = nd->fattr[0];
    }
    for (int i = 0; i < 3; i++) gin[i] = needs[i] ? d[i] : NULL;
    return TTT_OK;
}

/* node: in = q, k, v (dense); out = out; pattr[0] = lse; iattr = causal, window; fattr = scale */
static int fused_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    ttt_tensor *q = nd->in[0], *k = nd->in[1], *v = nd->in[2], *g = gout[0];
    const int causal = (int)nd->iattr[0];
    const int64_t window = nd->iattr[1];
    const double scale = nd->fattr[0];
    if (!g) {
        for (int i = 0; i < 3; i++)
            if (needs[i] && !(gin[i] = ttt_zeros_like(ctx, nd->in[i]))) return TTT_ERR;
        return TTT_OK;
    }
    if (ttt_grad_enabled(ctx) && ctx->be->attention_bwd2) {
        /* create_graph with a fused double backward: record the first-order kernel as a node */
        const int rc = fused_bwd_recorded(ctx, nd, g, needs, gin);
        if (rc != TTT_BACKEND_DECLINED) return rc;
    }
    if (ttt_grad_enabled(ctx)) {
        /* create_graph: the gradient must be differentiable, so differentiate the
         * composed attention (recomputed here) with respect to the same inputs. */
        ttt_tensor *targets[3], *grads[3];
        int n = 0;
        for (int i = 0; i < 3; i++)
            if (needs[i]) targets[n++] = nd->in[i];
        ttt_tensor *o = composed(ctx, q, k, v, causal, window, scale);
        if (!o || ttt__grad(ctx, 1, &o, &g, n, targets, grads, true, true) != TTT_OK) return TTT_ERR;
        for (int i = 0, j = 0; i < 3; i++)
            if (needs[i]) gin[i] = grads[j++];
        return TTT_OK;
    }
    ttt_tensor *gd = ttt__dense(ctx, g), *lse = nd->pattr[0];
    ttt_tensor *dq = ttt__new_like(ctx, q), *dk = ttt__new_like(ctx, k), *dv = ttt__new_like(ctx, v);
    ttt_tensor *delta = ttt__new_like(ctx, lse);
    if (!gd || !dq || !dk || !dv || !delta) return TTT_ERR;
    int rc = ctx->be->attention_bwd(ctx->bs, dq, dk, dv, delta, gd, q, k, v, nd->out[0], lse, causal, window, scale);
    if (rc != TTT_OK) {
        if (rc == TTT_BACKEND_DECLINED) ttt_backend_error("the backward kernel declined what the forward took");
        return ttt__backend_failed(ctx, "attention");
    }
    gin[0] = needs[0] ? dq : NULL;
    gin[1] = needs[1] ? dk : NULL;
    gin[2] = needs[2] ? dv : NULL;
    return TTT_OK;
}

/* The fused forward, or NULL with *declined set when the backend leaves these
 * arguments to the composed path (then nothing is left allocated). */
static ttt_tensor *fused(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, int causal, int64_t window,
                         double scale, int *declined) {
    *declined = 0;
    const int r = q->ndim;
    const ttt_mark_t mark = ttt_mark(ctx);
    const int record = ttt__recording(ctx, 3, (ttt_tensor *const[]){q, k, v});
    ttt_tensor *in[3] = {ttt_contiguous(ctx, q), ttt_contiguous(ctx, k), ttt_contiguous(ctx, v)};
    if (!in[0] || !in[1] || !in[2]) return NULL;
    int64_t shape[TTT_MAX_DIMS];
    for (int i = 0; i < r; i++) shape[i] = q->shape[i];
    shape[r - 1] = v->shape[r - 1];
    ttt_tensor *out = ttt_new(ctx, q->dtype, r, shape);
    ttt_tensor *lse = record ? ttt_new(ctx, TTT_F32, r - 1, shape) : NULL; /* [..., Tq] */
    if (!out || (record && !lse)) return NULL;
    const int rc = ctx->be->attention_fwd(ctx->bs, out, lse, in[0], in[1], in[2], causal, window, scale);
    if (rc == TTT_BACKEND_DECLINED) {
        ttt_release(ctx, mark);
        *declined = 1;
        return NULL;
    }
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "attention"), NULL;
    if (record) {
        ttt_node *nd = ttt__record(ctx, "attention", fused_vjp, 3, in, 1, &out);
        if (!nd) return NULL;
        nd->pattr[0] = lse;
        nd->iattr[0] = causal;
        nd->iattr[1] = window;
        nd->fattr[0] = scale;
    }
    return out;
}

ttt_tensor *ttt_attention(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, int causal, int64_t window,
                          double scale) {
    if (!ctx) return NULL;
    if (!q || !k || !v) return ttt__set_error(ctx, "attention: NULL input"), NULL;
    if (check_qkv(ctx, q, k, v, causal, window) != TTT_OK) return NULL;
    const int64_t d = q->shape[q->ndim - 1];
    if (!(scale > 0)) scale = 1.0 / sqrt((double)(d > 0 ? d : 1));
    if (ctx->be->attention_fwd && ctx->be->attention_bwd) {
        int declined;
        ttt_tensor *out = fused(ctx, q, k, v, causal, window, scale, &declined);
        if (out || !declined) return out;
    }
    if (q->dtype == TTT_BF16) /* no bf16 kernel: form the scores and the softmax in f32, as flash kernels do */
        return ttt_cast(ctx,
                        ttt_attention(ctx, ttt_cast(ctx, q, TTT_F32), ttt_cast(ctx, k, TTT_F32), ttt_cast(ctx, v, TTT_F32),
                                      causal, window, scale),
                        TTT_BF16);
    return composed(ctx, q, k, v, causal, window, scale);
}
