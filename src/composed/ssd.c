/* The fused chunkwise decayed linear recurrence as one op (engine_private.h: ttt__ssd_fused): Mamba 2's SSD
 * core S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = q_t^T S_t, and with g NULL (no decay) causal linear
 * attention's, whose normaliser the caller carries as one more value column (linear_attention.c).
 *
 * One op for both because they are one recurrence: linear attention is SSD with g = 0, and its normaliser
 * z_t = sum k_s is the state column of a value that is always 1, so the kernels need no normaliser path
 * and the division by q . z + eps stays a composed op after the core. It is not the Gated DeltaNet entry
 * with beta NULL: that kernel's work is the WY transform (a triangular solve per chunk), which this
 * recurrence does not have, and its state-gradient scan would carry a [dk, dk] map where a scalar decay
 * suffices.
 *
 * As in gated_delta.c: the node keeps the state before each chunk (ceil(T / C) x dk x dv per head), the
 * backward kernel recomputes each chunk from it, and under create_graph the VJP differentiates the
 * composed core recomputed on the same inputs, so every order stays exact. */
#include "core/internal.h"

typedef struct {
    ttt__ssd_core_fn composed;
} ssd_node_info;

/* node: in = q, k, v[, g][, s0] (dense, the work dtype); out = o, s_out; pattr = states, ssd_node_info;
 * iattr = the kernels' chunk, the caller's chunk, whether g is an input, whether s0 is */
static int ssd_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    ttt_tensor *const *in = nd->in;
    const int n_in = nd->n_in;
    const int64_t chunk = nd->iattr[0], composed_chunk = nd->iattr[1];
    const int has_g = (int)nd->iattr[2], has_s0 = (int)nd->iattr[3];
    ttt_tensor *g = has_g ? in[3] : NULL, *s0 = has_s0 ? in[3 + has_g] : NULL;
    if (!gout[0] && !gout[1]) { /* no cotangent reached the core */
        for (int i = 0; i < n_in; i++)
            if (needs[i] && !(gin[i] = ttt_zeros_like(ctx, in[i]))) return TTT_ERR;
        return TTT_OK;
    }
    if (ttt_grad_enabled(ctx)) {
        /* create_graph: differentiate the composed core, recomputed on the same inputs */
        const ssd_node_info *info = nd->pattr[1];
        ttt_tensor *s = NULL;
        ttt_tensor *o = info->composed(ctx, in[0], in[1], in[2], g, composed_chunk, s0, &s);
        if (!o || !s) return TTT_ERR;
        ttt_tensor *outs[2], *gouts[2], *targets[5], *grads[5];
        int n_out = 0, n = 0;
        if (gout[0]) outs[n_out] = o, gouts[n_out++] = gout[0];
        if (gout[1]) outs[n_out] = s, gouts[n_out++] = gout[1];
        for (int i = 0; i < n_in; i++)
            if (needs[i]) targets[n++] = in[i];
        if (n && ttt__grad(ctx, n_out, outs, gouts, n, targets, grads, true, true) != TTT_OK) return TTT_ERR;
        for (int i = 0, j = 0; i < n_in; i++)
            if (needs[i]) gin[i] = grads[j++];
        return TTT_OK;
    }
    ttt_tensor *dout = gout[0] ? ttt__dense(ctx, gout[0]) : NULL, *ds = gout[1] ? ttt__dense(ctx, gout[1]) : NULL;
    if ((gout[0] && !dout) || (gout[1] && !ds)) return TTT_ERR;
    ttt_tensor *d[5] = {NULL};
    for (int i = 0; i < 3 + has_g; i++) /* the kernel writes dq, dk, dv and dg */
        if (!(d[i] = ttt__new_like(ctx, in[i]))) return TTT_ERR;
    const int is0 = 3 + has_g;
    if (has_s0 && needs[is0] && !(d[is0] = ttt__new_like(ctx, in[is0]))) return TTT_ERR;
    const int rc = ctx->be->ssd_chunk_bwd(ctx->bs, d[0], d[1], d[2], has_g ? d[3] : NULL, has_s0 ? d[is0] : NULL, in[0],
                                          in[1], in[2], g, nd->pattr[0], dout, ds, chunk);
    if (rc != TTT_OK) {
        if (rc == TTT_BACKEND_DECLINED) ttt_backend_error("the backward kernel declined what the forward took");
        return ttt__backend_failed(ctx, "ssd_chunked (fused backward)");
    }
    for (int i = 0; i < n_in; i++) gin[i] = needs[i] ? d[i] : NULL;
    return TTT_OK;
}

static ttt_tensor *as_work(ttt_ctx *ctx, ttt_tensor *x, ttt_dtype wd) {
    if (x && x->dtype != wd) x = ttt_cast(ctx, x, wd);
    return x ? ttt_contiguous(ctx, x) : NULL;
}

ttt_tensor *ttt__ssd_fused(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *g, int64_t chunk,
                           ttt_tensor *s0, ttt_tensor **s_out, ttt__ssd_core_fn composed, int *declined) {
    *declined = 0;
    if (!ctx->be->ssd_chunk_fwd || !ctx->be->ssd_chunk_bwd || ctx->unfused || chunk < 1 || !composed) {
        *declined = 1;
        return NULL;
    }
    const ttt_dtype wd = q->dtype == TTT_BF16 ? TTT_F32 : q->dtype; /* the cores compute bf16 in f32 */
    const ttt_mark_t mark = ttt_mark(ctx);
    ttt_tensor *in[5];
    int n_in = 0;
    in[n_in++] = as_work(ctx, q, wd);
    in[n_in++] = as_work(ctx, k, wd);
    in[n_in++] = as_work(ctx, v, wd);
    if (g) in[n_in++] = as_work(ctx, g, wd);
    if (s0) in[n_in++] = as_work(ctx, s0, wd);
    for (int i = 0; i < n_in; i++)
        if (!in[i]) return NULL;
    ttt_tensor *gw = g ? in[3] : NULL, *s0w = s0 ? in[n_in - 1] : NULL;
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], dk = q->shape[3], dv = v->shape[3];
    const int64_t C = chunk < T ? chunk : T, N = (T + C - 1) / C;
    const int record = ttt__recording(ctx, n_in, in);
    ttt_tensor *out[2] = {ttt_new(ctx, wd, TTT_DIMS(B, H, T, dv)), ttt_new(ctx, wd, TTT_DIMS(B, H, dk, dv))};
    ttt_tensor *states = record ? ttt_new(ctx, wd, TTT_DIMS(B, H, N, dk, dv)) : NULL;
    if (!out[0] || !out[1] || (record && !states)) return NULL;
    const int rc = ctx->be->ssd_chunk_fwd(ctx->bs, out[0], out[1], states, in[0], in[1], in[2], gw, s0w, C);
    if (rc == TTT_BACKEND_DECLINED) {
        ttt_release(ctx, mark);
        *declined = 1;
        return NULL;
    }
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "ssd_chunked (fused)"), NULL;
    if (record) {
        ssd_node_info *info = ttt__meta_alloc(ctx, sizeof *info);
        ttt_node *nd = info ? ttt__record(ctx, "ssd_chunked", ssd_vjp, n_in, in, 2, out) : NULL;
        if (!nd) return NULL;
        info->composed = composed;
        nd->pattr[0] = states;
        nd->pattr[1] = info;
        nd->iattr[0] = C;
        nd->iattr[1] = chunk;
        nd->iattr[2] = g != NULL;
        nd->iattr[3] = s0 != NULL;
    }
    if (s_out) *s_out = out[1];
    return out[0]->dtype == q->dtype ? out[0] : ttt_cast(ctx, out[0], q->dtype);
}
