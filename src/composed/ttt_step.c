/* The TTT layers' decode steps as one op each (engine_private.h: ttt__ttt_linear_step, ttt__ttt_mlp_step).
 *
 * Per (batch, head), one token q, k (rotated), v [d] with inner learning rate eta at position r0 of a
 * mini-batch of bs tokens (tok = the per-position weights [bs]), from the state of that mini-batch: W [d, d]
 * and c [d] at its start, G [d, d] and Gc [d] the eta-weighted sums of the inner gradients of its tokens so
 * far (zero at its start):
 *   z = k W + c;  g = d/dz of 1/2 || LN(z) gam + bet - (v - k) ||^2
 *   G += eta k^T g;  Gc += eta g
 *   out = q + LN(q (W - t G) + c - t Gc) gam + bet,   t = tok[r0]
 *   r0 = bs - 1 (the mini-batch is complete): W -= t G, c -= t Gc, G = Gc = 0
 * which is src/layers/ttt_rnn.c's segment() in the primal form for one token. TTT-MLP's step
 * (ttt__ttt_mlp_step) is the same for f(x) = gelu(x W1 + b1) W2 + b2: z1 = k W1 + b1, x2 = gelu(z1),
 * g2 = the LN-loss gradient at z2 = x2 W2 + b2, g1 = (g2 W2^T) o gelu'(z1); the sums G1 += eta k^T g1,
 * Gb1 += eta g1, G2 += eta x2^T g2, Gb2 += eta g2; out = q + LN(gelu(q (W1 - t G1) + b1 - t Gb1)
 * (W2 - t G2) + b2 - t Gb2) gam + bet; the weights step at the mini-batch's end. The backend entries
 * (backend.h: ttt_linear_step, ttt_mlp_step) update the state in place, so this op is for inference only: it declines
 * (TTT_BACKEND_DECLINED, nothing changed) where a graph would record, where the context is unfused
 * (TTT_FUSED=0) and where the backend has no kernel or declines, and the layer then composes the step. */
#include "core/internal.h"

static int bad(ttt_ctx *ctx, const char *op, const char *what, const ttt_tensor *t, const char *want) {
    char s[96];
    return ttt__set_error(ctx, "%s: %s %s %s must be %s", op, what, t ? ttt_dtype_name(t->dtype) : "NULL",
                          t ? ttt_shape_str(t, s, sizeof s) : "", want);
}

static bool shaped(const ttt_tensor *t, ttt_dtype dt, int ndim, const int64_t *shape) {
    if (!t || t->dtype != dt || t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

/* The checks both steps share: q, k, v, eta, tok, ln_w, ln_b (x[0..7)), r0, eps; then the state x[7..n) is
 * dense and on q's device. */
static int check_common(ttt_ctx *ctx, const char *op, ttt_tensor *const *x, int n, int64_t r0, double eps) {
    ttt_tensor *q = x[0], *tok = x[4];
    if (!q || q->ndim != 4 || q->shape[2] != 1 || (q->dtype != TTT_F32 && q->dtype != TTT_F64 && q->dtype != TTT_BF16))
        return bad(ctx, op, "q", q, "f32, f64 or bf16 [B, H, 1, d]");
    const ttt_dtype dt = q->dtype;
    const int64_t H = q->shape[1], d = q->shape[3];
    if (!shaped(x[1], dt, 4, q->shape)) return bad(ctx, op, "k", x[1], "q's dtype and shape");
    if (!shaped(x[2], dt, 4, q->shape)) return bad(ctx, op, "v", x[2], "q's dtype and shape");
    if (!shaped(x[3], dt, 3, q->shape)) return bad(ctx, op, "eta", x[3], "of q's dtype and [B, H, 1]");
    if (!tok || tok->ndim != 1 || tok->dtype != dt) return bad(ctx, op, "tok", tok, "a vector [bs] of q's dtype");
    if (!shaped(x[5], dt, TTT_DIMS(H, d))) return bad(ctx, op, "ln_w", x[5], "of q's dtype and [H, d]");
    if (!shaped(x[6], dt, TTT_DIMS(H, d))) return bad(ctx, op, "ln_b", x[6], "of q's dtype and [H, d]");
    if (r0 < 0 || r0 >= tok->shape[0])
        return ttt__set_error(ctx, "%s: position %lld is outside the mini-batch of %lld", op, (long long)r0,
                              (long long)tok->shape[0]);
    if (!(eps >= 0)) return ttt__set_error(ctx, "%s: eps %g must be >= 0", op, eps);
    for (int i = 1; i < n; i++)
        if (x[i]->device != q->device) return ttt__set_error(ctx, "%s: an input is on another device than q", op);
    for (int i = 7; i < n; i++)
        if (!ttt_is_contiguous(x[i]))
            return ttt__set_error(ctx, "%s: the state tensors are updated in place and must be dense", op);
    return TTT_OK;
}

/* The backend's step on dense copies of the token's inputs, or TTT_BACKEND_DECLINED with nothing changed. */
static int run_step(ttt_ctx *ctx, const char *op, ttt_tensor *const *x, int n, int64_t r0, double eps, ttt_tensor **out) {
    const int mlp = n == 15;
    if (!ttt__fused(ctx) || !(mlp ? (void *)ctx->be->ttt_mlp_step : (void *)ctx->be->ttt_linear_step) ||
        ttt__recording(ctx, n, x))
        return TTT_BACKEND_DECLINED; /* the in-place kernel has no VJP: where a graph would record, the layer composes */
    const ttt_mark_t mark = ttt_mark(ctx);
    ttt_tensor *in[7];
    for (int i = 0; i < 7; i++)
        if (!(in[i] = ttt_contiguous(ctx, x[i]))) return TTT_ERR;
    ttt_tensor *o = ttt__new_like(ctx, in[0]);
    if (!o) return TTT_ERR;
    const int rc = mlp ? ctx->be->ttt_mlp_step(ctx->bs, o, x + 7, x + 11, in[0], in[1], in[2], in[3], in[4], in[5], in[6],
                                               r0, eps)
                       : ctx->be->ttt_linear_step(ctx->bs, o, x[7], x[8], x[9], x[10], in[0], in[1], in[2], in[3], in[4],
                                                  in[5], in[6], r0, eps);
    if (rc == TTT_BACKEND_DECLINED) {
        ttt_release(ctx, mark);
        return TTT_BACKEND_DECLINED;
    }
    if (rc != TTT_OK) return ttt__backend_failed(ctx, op);
    *out = o;
    return TTT_OK;
}

int ttt__ttt_linear_step(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta, ttt_tensor *tok,
                         ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *w, ttt_tensor *c, ttt_tensor *gw, ttt_tensor *gc,
                         int64_t r0, double eps, ttt_tensor **out) {
    static const char op[] = "ttt_linear_step";
    if (!ctx) return TTT_ERR;
    if (!out) return ttt__set_error(ctx, "%s: NULL result pointer", op);
    *out = NULL;
    ttt_tensor *x[11] = {q, k, v, eta, tok, ln_w, ln_b, w, c, gw, gc};
    if (!q) return bad(ctx, op, "q", q, "f32, f64 or bf16 [B, H, 1, d]");
    const int64_t B = q->shape[0], H = q->ndim == 4 ? q->shape[1] : 0, d = q->ndim == 4 ? q->shape[3] : 0;
    const ttt_dtype dt = q->dtype;
    if (q->ndim == 4) {
        if (!shaped(w, dt, TTT_DIMS(B, H, d, d))) return bad(ctx, op, "w", w, "of q's dtype and [B, H, d, d]");
        if (!shaped(gw, dt, TTT_DIMS(B, H, d, d))) return bad(ctx, op, "gw", gw, "of q's dtype and [B, H, d, d]");
        if (!shaped(c, dt, TTT_DIMS(B, H, 1, d))) return bad(ctx, op, "c", c, "of q's dtype and [B, H, 1, d]");
        if (!shaped(gc, dt, TTT_DIMS(B, H, 1, d))) return bad(ctx, op, "gc", gc, "of q's dtype and [B, H, 1, d]");
    }
    if (check_common(ctx, op, x, 11, r0, eps)) return TTT_ERR;
    return run_step(ctx, op, x, 11, r0, eps, out);
}

int ttt__ttt_mlp_step(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta, ttt_tensor *tok,
                      ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *const *w, ttt_tensor *const *g, int64_t r0, double eps,
                      ttt_tensor **out) {
    static const char op[] = "ttt_mlp_step";
    static const char *names[4] = {"w1", "b1", "w2", "b2"}, *gnames[4] = {"g1", "gb1", "g2", "gb2"};
    if (!ctx) return TTT_ERR;
    if (!out || !w || !g) return ttt__set_error(ctx, "%s: NULL result or state pointer", op);
    *out = NULL;
    ttt_tensor *x[15] = {q, k, v, eta, tok, ln_w, ln_b, w[0], w[1], w[2], w[3], g[0], g[1], g[2], g[3]};
    if (!q) return bad(ctx, op, "q", q, "f32, f64 or bf16 [B, H, 1, d]");
    if (q->ndim == 4) {
        const int64_t B = q->shape[0], H = q->shape[1], d = q->shape[3], F = w[0] && w[0]->ndim == 4 ? w[0]->shape[3] : 0;
        const int64_t shapes[4][4] = {{B, H, d, F}, {B, H, 1, F}, {B, H, F, d}, {B, H, 1, d}};
        for (int i = 0; i < 4; i++) {
            if (F < 1 || !shaped(w[i], q->dtype, 4, shapes[i]))
                return bad(ctx, op, names[i], w[i], "of q's dtype and [B, H, d, F], [B, H, 1, F], [B, H, F, d], [B, H, 1, d]");
            if (!shaped(g[i], q->dtype, 4, shapes[i])) return bad(ctx, op, gnames[i], g[i], "the shape of its weight");
        }
    }
    if (check_common(ctx, op, x, 15, r0, eps)) return TTT_ERR;
    return run_step(ctx, op, x, 15, r0, eps, out);
}
