/* TTT-Linear's decode step as one op (engine_private.h: ttt__ttt_linear_step).
 *
 * Per (batch, head), one token q, k (rotated), v [d] with inner learning rate eta at position r0 of a
 * mini-batch of bs tokens (tok = the per-position weights [bs]), from the state of that mini-batch: W [d, d]
 * and c [d] at its start, G [d, d] and Gc [d] the eta-weighted sums of the inner gradients of its tokens so
 * far (zero at its start):
 *   z = k W + c;  g = d/dz of 1/2 || LN(z) gam + bet - (v - k) ||^2
 *   G += eta k^T g;  Gc += eta g
 *   out = q + LN(q (W - t G) + c - t Gc) gam + bet,   t = tok[r0]
 *   r0 = bs - 1 (the mini-batch is complete): W -= t G, c -= t Gc, G = Gc = 0
 * which is src/layers/ttt_rnn.c's segment() in the primal form for one token. The backend entry
 * (backend.h: ttt_linear_step) updates the state in place, so this op is for inference only: it declines
 * (TTT_BACKEND_DECLINED, nothing changed) where a graph would record, where the context is unfused
 * (TTT_FUSED=0) and where the backend has no kernel or declines, and the layer then composes the step. */
#include "core/internal.h"

static int bad(ttt_ctx *ctx, const char *what, const ttt_tensor *t, const char *want) {
    char s[96];
    return ttt__set_error(ctx, "ttt_linear_step: %s %s %s must be %s", what, t ? ttt_dtype_name(t->dtype) : "NULL",
                          t ? ttt_shape_str(t, s, sizeof s) : "", want);
}

static bool shaped(const ttt_tensor *t, ttt_dtype dt, int ndim, const int64_t *shape) {
    if (!t || t->dtype != dt || t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

int ttt__ttt_linear_step(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta, ttt_tensor *tok,
                         ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *w, ttt_tensor *c, ttt_tensor *gw, ttt_tensor *gc,
                         int64_t r0, double eps, ttt_tensor **out) {
    if (!ctx) return TTT_ERR;
    if (!out) return ttt__set_error(ctx, "ttt_linear_step: NULL result pointer");
    *out = NULL;
    if (!q || q->ndim != 4 || q->shape[2] != 1 || (q->dtype != TTT_F32 && q->dtype != TTT_F64 && q->dtype != TTT_BF16))
        return bad(ctx, "q", q, "f32, f64 or bf16 [B, H, 1, d]");
    const ttt_dtype dt = q->dtype;
    const int64_t B = q->shape[0], H = q->shape[1], d = q->shape[3];
    if (!shaped(k, dt, 4, q->shape)) return bad(ctx, "k", k, "q's dtype and shape");
    if (!shaped(v, dt, 4, q->shape)) return bad(ctx, "v", v, "q's dtype and shape");
    if (!shaped(eta, dt, 3, q->shape)) return bad(ctx, "eta", eta, "of q's dtype and [B, H, 1]");
    if (!tok || tok->ndim != 1 || tok->dtype != dt) return bad(ctx, "tok", tok, "a vector [bs] of q's dtype");
    if (!shaped(ln_w, dt, TTT_DIMS(H, d))) return bad(ctx, "ln_w", ln_w, "of q's dtype and [H, d]");
    if (!shaped(ln_b, dt, TTT_DIMS(H, d))) return bad(ctx, "ln_b", ln_b, "of q's dtype and [H, d]");
    if (!shaped(w, dt, TTT_DIMS(B, H, d, d))) return bad(ctx, "w", w, "of q's dtype and [B, H, d, d]");
    if (!shaped(gw, dt, TTT_DIMS(B, H, d, d))) return bad(ctx, "gw", gw, "of q's dtype and [B, H, d, d]");
    if (!shaped(c, dt, TTT_DIMS(B, H, 1, d))) return bad(ctx, "c", c, "of q's dtype and [B, H, 1, d]");
    if (!shaped(gc, dt, TTT_DIMS(B, H, 1, d))) return bad(ctx, "gc", gc, "of q's dtype and [B, H, 1, d]");
    if (r0 < 0 || r0 >= tok->shape[0])
        return ttt__set_error(ctx, "ttt_linear_step: position %lld is outside the mini-batch of %lld", (long long)r0,
                              (long long)tok->shape[0]);
    if (!(eps >= 0)) return ttt__set_error(ctx, "ttt_linear_step: eps %g must be >= 0", eps);
    ttt_tensor *all[11] = {q, k, v, eta, tok, ln_w, ln_b, w, c, gw, gc};
    for (int i = 1; i < 11; i++)
        if (all[i]->device != q->device) return ttt__set_error(ctx, "ttt_linear_step: an input is on another device than q");
    ttt_tensor *state[4] = {w, c, gw, gc};
    for (int i = 0; i < 4; i++)
        if (!ttt_is_contiguous(state[i]))
            return ttt__set_error(ctx, "ttt_linear_step: the state tensors are updated in place and must be dense");
    /* the in-place kernel has no VJP: where a graph would record, the layer composes the step */
    if (!ttt__fused(ctx) || !ctx->be->ttt_linear_step || ttt__recording(ctx, 11, all)) return TTT_BACKEND_DECLINED;
    const ttt_mark_t mark = ttt_mark(ctx);
    ttt_tensor *in[7];
    for (int i = 0; i < 7; i++)
        if (!(in[i] = ttt_contiguous(ctx, all[i]))) return TTT_ERR;
    ttt_tensor *o = ttt__new_like(ctx, in[0]);
    if (!o) return TTT_ERR;
    const int rc = ctx->be->ttt_linear_step(ctx->bs, o, w, c, gw, gc, in[0], in[1], in[2], in[3], in[4], in[5], in[6], r0, eps);
    if (rc == TTT_BACKEND_DECLINED) {
        ttt_release(ctx, mark);
        return TTT_BACKEND_DECLINED;
    }
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "ttt_linear_step");
    *out = o;
    return TTT_OK;
}
