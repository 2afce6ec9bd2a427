/* The fused chunkwise Gated DeltaNet core as one op (engine_private.h: ttt__gated_delta_fused).
 *
 * Where the backend has gdn_chunk_fwd and gdn_chunk_bwd (backend.h), the forward pass is one kernel that
 * walks each (batch, head)'s chunks with its state S [dk, dv] on chip, and the node it records keeps the
 * inputs and the state before each chunk: ceil(T / C) x dk x dv per head, as much memory as one more
 * [T, dk] input at dk = C, so the backward pass reads them instead of running the whole recurrence again
 * (it could not start from the end otherwise: the chunk map S -> A_c S + B_c need not be invertible).
 * The backward kernel recomputes each chunk's intermediates (decays, U, the products within the chunk)
 * from its stored state, so nothing of size C x C per chunk is kept.
 *
 * Its VJP runs the backward kernel for first-order gradients. When the gradient must itself be
 * differentiable (grad mode on during the VJP: create_graph), it recomputes the composed core on the same
 * inputs and differentiates that, as ttt_attention does without a fused double backward: gradients of
 * gradients stay exact, at the composed path's cost. Lives in src/composed because that route calls the
 * traversal (ttt__grad). */
#include "core/internal.h"

typedef struct {
    ttt__gdn_core_fn composed;
} gdn_node_info;

/* node: in = q, k, v, beta, g[, s0] (dense, the work dtype); out = o, s_out;
 * pattr = states, gdn_node_info; iattr = the kernels' chunk, the caller's chunk (the composed core's) */
static int gdn_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    ttt_tensor *const *in = nd->in;
    const int n_in = nd->n_in;
    const int64_t chunk = nd->iattr[0], composed_chunk = nd->iattr[1];
    if (!gout[0] && !gout[1]) { /* no cotangent reached the core */
        for (int i = 0; i < n_in; i++)
            if (needs[i] && !(gin[i] = ttt_zeros_like(ctx, in[i]))) return TTT_ERR;
        return TTT_OK;
    }
    if (ttt_grad_enabled(ctx)) {
        /* create_graph: differentiate the composed core, recomputed on the same inputs */
        const gdn_node_info *info = nd->pattr[1];
        ttt_tensor *s = NULL;
        ttt_tensor *o = info->composed(ctx, in[0], in[1], in[2], in[3], in[4], composed_chunk, n_in > 5 ? in[5] : NULL, &s);
        if (!o || !s) return TTT_ERR;
        ttt_tensor *outs[2], *gouts[2], *targets[6], *grads[6];
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
    ttt_tensor *d[6] = {NULL};
    for (int i = 0; i < 5; i++)
        if (!(d[i] = ttt__new_like(ctx, in[i]))) return TTT_ERR; /* the kernel writes all five */
    if (n_in > 5 && needs[5] && !(d[5] = ttt__new_like(ctx, in[5]))) return TTT_ERR;
    const int rc = ctx->be->gdn_chunk_bwd(ctx->bs, d[0], d[1], d[2], d[3], d[4], d[5], in[0], in[1], in[2], in[3], in[4],
                                          nd->pattr[0], dout, ds, chunk);
    if (rc != TTT_OK) {
        if (rc == TTT_BACKEND_DECLINED) ttt_backend_error("the backward kernel declined what the forward took");
        return ttt__backend_failed(ctx, "gated_delta_chunked (fused backward)");
    }
    for (int i = 0; i < n_in; i++) gin[i] = needs[i] ? d[i] : NULL;
    return TTT_OK;
}

static ttt_tensor *as_work(ttt_ctx *ctx, ttt_tensor *x, ttt_dtype wd) {
    if (x && x->dtype != wd) x = ttt_cast(ctx, x, wd);
    return x ? ttt_contiguous(ctx, x) : NULL;
}

ttt_tensor *ttt__gated_delta_fused(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *beta,
                                   ttt_tensor *g, int64_t chunk, ttt_tensor *s0, ttt_tensor **s_out,
                                   ttt__gdn_core_fn composed, int *declined) {
    *declined = 0;
    if (!ctx->be->gdn_chunk_fwd || !ctx->be->gdn_chunk_bwd || ctx->unfused || chunk < 1 || !composed) {
        *declined = 1;
        return NULL;
    }
    const ttt_dtype wd = q->dtype == TTT_BF16 ? TTT_F32 : q->dtype; /* the cores compute bf16 in f32 */
    const ttt_mark_t mark = ttt_mark(ctx);
    ttt_tensor *in[6] = {as_work(ctx, q, wd), as_work(ctx, k, wd), as_work(ctx, v, wd), as_work(ctx, beta, wd),
                         as_work(ctx, g, wd), s0 ? as_work(ctx, s0, wd) : NULL};
    const int n_in = s0 ? 6 : 5;
    for (int i = 0; i < n_in; i++)
        if (!in[i]) return NULL;
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], dk = q->shape[3], dv = v->shape[3];
    const int64_t C = chunk < T ? chunk : T, N = (T + C - 1) / C;
    const int record = ttt__recording(ctx, n_in, in);
    ttt_tensor *out[2] = {ttt_new(ctx, wd, TTT_DIMS(B, H, T, dv)), ttt_new(ctx, wd, TTT_DIMS(B, H, dk, dv))};
    ttt_tensor *states = record ? ttt_new(ctx, wd, TTT_DIMS(B, H, N, dk, dv)) : NULL;
    if (!out[0] || !out[1] || (record && !states)) return NULL;
    const int rc = ctx->be->gdn_chunk_fwd(ctx->bs, out[0], out[1], states, in[0], in[1], in[2], in[3], in[4], in[5], C);
    if (rc == TTT_BACKEND_DECLINED) {
        ttt_release(ctx, mark);
        *declined = 1;
        return NULL;
    }
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "gated_delta_chunked (fused)"), NULL;
    if (record) {
        gdn_node_info *info = ttt__meta_alloc(ctx, sizeof *info);
        ttt_node *nd = info ? ttt__record(ctx, "gated_delta_chunked", gdn_vjp, n_in, in, 2, out) : NULL;
        if (!nd) return NULL;
        info->composed = composed;
        nd->pattr[0] = states;
        nd->pattr[1] = info;
        nd->iattr[0] = C;
        nd->iattr[1] = chunk;
    }
    if (s_out) *s_out = out[1];
    return out[0]->dtype == q->dtype ? out[0] : ttt_cast(ctx, out[0], q->dtype);
}
