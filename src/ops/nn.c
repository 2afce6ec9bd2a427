/* Neural-network ops: softmax, norms, cross-entropy, embedding, RoPE, attention
 * masks, global-norm clipping. Forward passes are fused kernels; every VJP is
 * composed of engine ops so it is differentiable again. */
#include <math.h>
#include <string.h>

#include "../core/internal.h"

#define VJP(fn) static int fn(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin)
#define G (gout[0])
#define X (nd->in[0])
#define Y (nd->out[0])
#define DONE(expr)                         \
    do {                                   \
        (void)needs;                       \
        gin[0] = (expr);                   \
        return gin[0] ? TTT_OK : TTT_ERR;  \
    } while (0)

static const int LAST[1] = {-1};

static int check_float(ttt_ctx *ctx, const char *op, const ttt_tensor *x, int min_ndim) {
    char s[96];
    if (!ttt__is_float(x->dtype))
        return ttt__set_error(ctx, "%s: dtype %s is not supported (use f32, f64 or bf16)", op, ttt_dtype_name(x->dtype));
    if (x->ndim < min_ndim)
        return ttt__set_error(ctx, "%s: needs at least %d dims, got %s", op, min_ndim, ttt_shape_str(x, s, sizeof s));
    return TTT_OK;
}

static ttt_tensor *sum_last(ttt_ctx *ctx, ttt_tensor *x) { return ttt_sum(ctx, x, 1, LAST, 1); }
static ttt_tensor *mean_last(ttt_ctx *ctx, ttt_tensor *x) { return ttt_mean(ctx, x, 1, LAST, 1); }

/* ---- softmax ---------------------------------------------------------------------- */

VJP(softmax_vjp) { DONE(ttt_mul(ctx, Y, ttt_sub(ctx, G, sum_last(ctx, ttt_mul(ctx, G, Y))))); }
VJP(log_softmax_vjp) { DONE(ttt_sub(ctx, G, ttt_mul(ctx, ttt_exp(ctx, Y), sum_last(ctx, G)))); }

static ttt_tensor *softmax(ttt_ctx *ctx, ttt_tensor *x, int log) {
    const char *op = log ? "log_softmax" : "softmax";
    TTT_CHECK_NONNULL1(x);
    if (check_float(ctx, op, x, 1) != TTT_OK) return NULL;
    ttt_tensor *out = ttt__new_like(ctx, x), *xd = out ? ttt__dense(ctx, x) : NULL;
    if (!xd) return NULL;
    if (ttt_numel(out) && ctx->be->softmax(ctx->bs, out, xd, log) != TTT_OK) return ttt__backend_failed(ctx, op), NULL;
    if (ttt__recording(ctx, 1, &x) && !ttt__record(ctx, op, log ? log_softmax_vjp : softmax_vjp, 1, &x, 1, &out))
        return NULL;
    return out;
}

ttt_tensor *ttt_softmax(ttt_ctx *ctx, ttt_tensor *x) { return softmax(ctx, x, 0); }
ttt_tensor *ttt_log_softmax(ttt_ctx *ctx, ttt_tensor *x) { return softmax(ctx, x, 1); }

/* ---- layer / RMS norm -------------------------------------------------------------- */

/* ---- the RMS norm's gradient as a node (create_graph) and its second order ---------------------------------
 *
 * Per row of D, with r = 1 / sqrt(mean(x^2) + eps), n = r x and h = dy gamma (gamma absent: 1), the first-order
 * gradient is dx = J h with J = r (I - n n^T / D) (symmetric; dn = J dx), and dgx = dy n (gamma's gradient before
 * the sum over rows). Its VJP along u (of dx) and v (of dgx), with the row means a = n.u / D, m = n.h / D,
 * c = u.h / D and e = n.w / D (w = v dy):
 *   gdy    = gamma J u + v n
 *   ggamma = sum over rows of dy J u
 *   gx     = J w + d/dx (u.J h) = r (w - n e) + r^2 (n (3 a m - c) - m u - a h)
 * (the last from d(u.J h) = -r^2 (c n + m u + a h) dx + 3 r^2 a m n dx, row by row). Under create_graph the
 * backend's first-order kernel runs and its outputs become a node whose VJP is this, one kernel (norm_bwd2)
 * when grad mode is off, or these ops otherwise (third order, or no kernel), so gradients of gradients of a
 * norm cost two kernels instead of the composed backward's ten ops and their own VJPs. */
static ttt_tensor *zeros_if_null(ttt_ctx *ctx, ttt_tensor *t, ttt_tensor *like) { return t ? t : ttt_zeros_like(ctx, like); }

/* node: in = x, dy, gamma (optional); out = dx, dgx (with gamma); iattr[0] = kind; fattr[0] = eps */
VJP(rms_norm_bwd_vjp) {
    const double eps = nd->fattr[0];
    ttt_tensor *x = nd->in[0], *dy = nd->in[1], *gamma = nd->n_in > 2 ? nd->in[2] : NULL;
    ttt_tensor *u = gout[0], *v = nd->n_out > 1 ? gout[1] : NULL;
    const bool need_gamma = gamma && needs[2];
    if (ctx->be->norm_bwd2 && !ttt_grad_enabled(ctx) && !ctx->unfused) {
        ttt_tensor *xd = ttt__dense(ctx, x), *dyd = xd ? ttt__dense(ctx, dy) : NULL;
        ttt_tensor *gd = dyd && gamma ? ttt__dense(ctx, gamma) : NULL, *ud = u && dyd ? ttt__dense(ctx, u) : NULL;
        ttt_tensor *vd = v && dyd ? ttt__dense(ctx, v) : NULL;
        ttt_tensor *gx = dyd && needs[0] ? ttt__new_like(ctx, x) : NULL, *gdy = dyd && needs[1] ? ttt__new_like(ctx, x) : NULL;
        ttt_tensor *ggx = dyd && need_gamma ? ttt__new_like(ctx, x) : NULL;
        if (!dyd || (gamma && !gd) || (u && !ud) || (v && !vd) || (needs[0] && !gx) || (needs[1] && !gdy) ||
            (need_gamma && !ggx))
            return TTT_ERR;
        const int rc = ttt_numel(x) ? ctx->be->norm_bwd2(ctx->bs, (ttt_norm_kind)nd->iattr[0], gx, gdy, ggx, xd, gd, dyd,
                                                         ud, vd, eps)
                                    : TTT_OK;
        if (rc == TTT_OK) {
            gin[0] = gx, gin[1] = gdy;
            if (need_gamma && !(gin[2] = ttt_sum_to(ctx, ggx, gamma->ndim, gamma->shape))) return TTT_ERR;
            return TTT_OK;
        }
        if (rc != TTT_BACKEND_DECLINED) return ttt__backend_failed(ctx, "norm (second order)");
    }
    u = zeros_if_null(ctx, u, x);
    ttt_tensor *r = ttt_rsqrt(ctx, ttt_add_scalar(ctx, mean_last(ctx, ttt_mul(ctx, x, x)), eps));
    ttt_tensor *n = ttt_mul(ctx, x, r), *h = gamma ? ttt_mul(ctx, dy, gamma) : dy;
    ttt_tensor *a = mean_last(ctx, ttt_mul(ctx, n, u));
    ttt_tensor *ju = ttt_mul(ctx, r, ttt_sub(ctx, u, ttt_mul(ctx, n, a)));
    if (needs[1]) {
        ttt_tensor *gdy = gamma ? ttt_mul(ctx, ju, gamma) : ju;
        if (!(gin[1] = v ? ttt_add(ctx, gdy, ttt_mul(ctx, v, n)) : gdy)) return TTT_ERR;
    }
    if (need_gamma && !(gin[2] = ttt_sum_to(ctx, ttt_mul(ctx, dy, ju), gamma->ndim, gamma->shape))) return TTT_ERR;
    if (needs[0]) {
        ttt_tensor *m = mean_last(ctx, ttt_mul(ctx, n, h)), *c = mean_last(ctx, ttt_mul(ctx, u, h));
        ttt_tensor *coef = ttt_sub(ctx, ttt_scale(ctx, ttt_mul(ctx, a, m), 3.0), c);
        ttt_tensor *in = ttt_sub(ctx, ttt_sub(ctx, ttt_mul(ctx, n, coef), ttt_mul(ctx, m, u)), ttt_mul(ctx, a, h));
        ttt_tensor *gx = ttt_mul(ctx, ttt_mul(ctx, r, r), in);
        if (v) {
            ttt_tensor *w = ttt_mul(ctx, v, dy), *e = mean_last(ctx, ttt_mul(ctx, n, w));
            gx = ttt_add(ctx, gx, ttt_mul(ctx, r, ttt_sub(ctx, w, ttt_mul(ctx, n, e))));
        }
        if (!(gin[0] = gx)) return TTT_ERR;
    }
    return TTT_OK;
}

/* create_graph: the first-order kernel (norm_bwd, or norm_affine_bwd with gamma) recorded as a rms_norm_backward
 * node. *dx, and with gamma *dgamma (gamma's gradient, summed over rows). TTT_BACKEND_DECLINED, having recorded
 * nothing, where the backend has no second order for it (layer norm, no kernels, TTT_FUSED=0, TTT_BWD_NODES=0). */
static int norm_bwd_recorded(ttt_ctx *ctx, ttt_norm_kind kind, ttt_tensor *x, ttt_tensor *gamma, ttt_tensor *y,
                             ttt_tensor *g, double eps, ttt_tensor **dx_out, ttt_tensor **dgamma_out) {
    if (kind != TTT_NORM_RMS || !ctx->be->norm_bwd2 || ctx->unfused || ctx->no_bwd_nodes ||
        (gamma ? !ctx->be->norm_affine_bwd : !ctx->be->norm_bwd || !y))
        return TTT_BACKEND_DECLINED;
    ttt_tensor *gd = ttt_contiguous(ctx, g); /* differentiable: dy may depend on what is differentiated */
    ttt_tensor *xd = gd ? ttt__dense(ctx, x) : NULL, *wd = xd && gamma ? ttt__dense(ctx, gamma) : NULL;
    ttt_tensor *yd = xd && !gamma ? ttt__dense(ctx, y) : NULL;
    ttt_tensor *dx = xd ? ttt__new_like(ctx, x) : NULL, *dgx = dx && gamma ? ttt__new_like(ctx, x) : NULL;
    if (!dx || (gamma && (!wd || !dgx)) || (!gamma && !yd)) return TTT_ERR;
    if (ttt_numel(dx) && (gamma ? ctx->be->norm_affine_bwd(ctx->bs, kind, dx, dgx, xd, wd, gd, eps)
                                : ctx->be->norm_bwd(ctx->bs, kind, dx, xd, yd, gd, eps)) != TTT_OK)
        return ttt__backend_failed(ctx, "norm (backward)");
    ttt_tensor *ins[3] = {x, gd, gamma}, *outs[2] = {dx, dgx};
    const int n_in = gamma ? 3 : 2;
    if (ttt__recording(ctx, n_in, ins)) {
        ttt_node *n = ttt__record(ctx, "rms_norm_backward", rms_norm_bwd_vjp, n_in, ins, gamma ? 2 : 1, outs);
        if (!n) return TTT_ERR;
        n->iattr[0] = kind;
        n->fattr[0] = eps;
    }
    *dx_out = dx;
    if (dgamma_out && !(*dgamma_out = gamma ? ttt_sum_to(ctx, dgx, gamma->ndim, gamma->shape) : NULL) && gamma)
        return TTT_ERR;
    return TTT_OK;
}

/* dx of a norm y = norm(x) from its output gradient g: one fused pass when grad mode is off and the backend
 * has norm_bwd (first order only); under create_graph a recorded rms_norm_backward node where the backend has
 * the second order; otherwise composed of ops, so create_graph can differentiate it again. */
static ttt_tensor *norm_dx(ttt_ctx *ctx, ttt_norm_kind kind, ttt_tensor *x, ttt_tensor *y, ttt_tensor *g, double eps) {
    if (!x || !y || !g) return NULL;
    if (ttt_grad_enabled(ctx)) {
        ttt_tensor *dx = NULL;
        const int rc = norm_bwd_recorded(ctx, kind, x, NULL, y, g, eps, &dx, NULL);
        if (rc != TTT_BACKEND_DECLINED) return rc == TTT_OK ? dx : NULL;
    }
    if (ctx->be->norm_bwd && !ttt_grad_enabled(ctx)) {
        ttt_tensor *xd = ttt__dense(ctx, x), *gd = ttt__dense(ctx, g), *yd = ttt__dense(ctx, y), *dx = ttt__new_like(ctx, x);
        if (!xd || !gd || !yd || !dx) return NULL;
        if (ttt_numel(dx) && ctx->be->norm_bwd(ctx->bs, kind, dx, xd, yd, gd, eps) != TTT_OK)
            return ttt__backend_failed(ctx, "norm (backward)"), NULL;
        return dx;
    }
    if (kind == TTT_NORM_LAYER) {
        /* dx = rstd (g - mean(g) - y mean(g y)) */
        ttt_tensor *xc = ttt_sub(ctx, x, mean_last(ctx, x));
        ttt_tensor *rstd = ttt_rsqrt(ctx, ttt_add_scalar(ctx, mean_last(ctx, ttt_mul(ctx, xc, xc)), eps));
        ttt_tensor *inner = ttt_sub(ctx, ttt_sub(ctx, g, mean_last(ctx, g)), ttt_mul(ctx, y, mean_last(ctx, ttt_mul(ctx, g, y))));
        return ttt_mul(ctx, rstd, inner);
    }
    /* RMS: dx = rstd (g - y mean(g y)) */
    ttt_tensor *rstd = ttt_rsqrt(ctx, ttt_add_scalar(ctx, mean_last(ctx, ttt_mul(ctx, x, x)), eps));
    return ttt_mul(ctx, rstd, ttt_sub(ctx, g, ttt_mul(ctx, y, mean_last(ctx, ttt_mul(ctx, g, y)))));
}

VJP(norm_vjp) { DONE(norm_dx(ctx, (ttt_norm_kind)nd->iattr[0], X, Y, G, nd->fattr[0])); }

/* y = norm(x) * gamma as one op (norm_affine). Its gradient has the composed ops' values: gamma's is
 * sum over rows of g * norm(x), x's the norm's gradient of g * gamma. */
static ttt_tensor *norm(ttt_ctx *ctx, const char *op, ttt_norm_kind kind, ttt_tensor *x, ttt_tensor *gamma, double eps);
VJP(norm_affine_vjp) {
    const ttt_norm_kind kind = (ttt_norm_kind)nd->iattr[0];
    const double eps = nd->fattr[0];
    ttt_tensor *x = nd->in[0], *gamma = nd->in[1];
    if (ctx->be->norm_affine_bwd && !ttt_grad_enabled(ctx)) {
        /* first order only: one fused pass for dx and g * norm(x), then the sum over rows (the composed one) */
        ttt_tensor *xd = ttt__dense(ctx, x), *gd = xd ? ttt__dense(ctx, G) : NULL, *wd = gd ? ttt__dense(ctx, gamma) : NULL;
        ttt_tensor *dx = wd ? ttt__new_like(ctx, x) : NULL, *dgx = dx && needs[1] ? ttt__new_like(ctx, x) : NULL;
        if (!dx || (needs[1] && !dgx)) return TTT_ERR;
        if (ttt_numel(dx) && ctx->be->norm_affine_bwd(ctx->bs, kind, dx, dgx, xd, wd, gd, eps) != TTT_OK)
            return ttt__backend_failed(ctx, "norm (backward)");
        if (needs[0]) gin[0] = dx;
        if (needs[1] && !(gin[1] = ttt_sum_to(ctx, dgx, gamma->ndim, gamma->shape))) return TTT_ERR;
        return TTT_OK;
    }
    if (ttt_grad_enabled(ctx)) {
        ttt_tensor *dx = NULL, *dgamma = NULL;
        const int rc = norm_bwd_recorded(ctx, kind, x, gamma, NULL, G, eps, &dx, needs[1] ? &dgamma : NULL);
        if (rc == TTT_OK) gin[0] = needs[0] ? dx : NULL, gin[1] = dgamma;
        if (rc != TTT_BACKEND_DECLINED) return rc;
    }
    ttt_tensor *y = norm(ctx, kind == TTT_NORM_RMS ? "rms_norm" : "layer_norm", kind, x, NULL, eps);
    if (needs[1] && !(gin[1] = ttt_sum_to(ctx, ttt_mul(ctx, G, y), gamma->ndim, gamma->shape))) return TTT_ERR;
    if (needs[0] && !(gin[0] = norm_dx(ctx, kind, x, y, ttt_mul(ctx, G, gamma), eps))) return TTT_ERR;
    return TTT_OK;
}

/* norm(x), or with gamma (a [D] weight, checked by the caller) norm(x) * gamma in one kernel */
static ttt_tensor *norm(ttt_ctx *ctx, const char *op, ttt_norm_kind kind, ttt_tensor *x, ttt_tensor *gamma, double eps) {
    if (check_float(ctx, op, x, 1) != TTT_OK) return NULL;
    if (!(eps >= 0)) return ttt__set_error(ctx, "%s: eps %g must be >= 0", op, eps), NULL;
    ttt_tensor *out = ttt__new_like(ctx, x), *xd = out ? ttt__dense(ctx, x) : NULL;
    ttt_tensor *gd = xd && gamma ? ttt__dense(ctx, gamma) : NULL;
    if (!xd || (gamma && !gd)) return NULL;
    if (ttt_numel(out) && (gamma ? ctx->be->norm_affine(ctx->bs, kind, out, xd, gd, eps) : ctx->be->norm(ctx->bs, kind, out, xd, eps)) != TTT_OK)
        return ttt__backend_failed(ctx, op), NULL;
    ttt_tensor *ins[2] = {x, gamma};
    const int n_in = gamma ? 2 : 1;
    if (ttt__recording(ctx, n_in, ins)) {
        ttt_node *n = ttt__record(ctx, op, gamma ? norm_affine_vjp : norm_vjp, n_in, ins, 1, &out);
        if (!n) return NULL;
        n->iattr[0] = kind;
        n->fattr[0] = eps;
    }
    return out;
}

/* norm(x) * gamma: one kernel where the backend has it and the fused paths are on (the same bits) */
static ttt_tensor *norm_times(ttt_ctx *ctx, const char *op, ttt_norm_kind kind, ttt_tensor *x, ttt_tensor *gamma, double eps) {
    if (gamma && ctx->be->norm_affine && ctx->be->norm_affine_bwd && !ctx->unfused) return norm(ctx, op, kind, x, gamma, eps);
    ttt_tensor *y = norm(ctx, op, kind, x, NULL, eps);
    return gamma ? ttt_mul(ctx, y, gamma) : y;
}

static int check_affine(ttt_ctx *ctx, const char *op, const ttt_tensor *x, const ttt_tensor *p, const char *what) {
    if (!p) return TTT_OK;
    if (p->ndim != 1 || p->shape[0] != x->shape[x->ndim - 1] || p->dtype != x->dtype) {
        char sx[96], sp[96];
        return ttt__set_error(ctx, "%s: %s %s %s must be a %s vector of the last size of x %s", op, what,
                              ttt_dtype_name(p->dtype), ttt_shape_str(p, sp, sizeof sp), ttt_dtype_name(x->dtype),
                              ttt_shape_str(x, sx, sizeof sx));
    }
    return TTT_OK;
}

ttt_tensor *ttt_layer_norm(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *gamma, ttt_tensor *beta, double eps) {
    TTT_CHECK_NONNULL1(x);
    if (check_float(ctx, "layer_norm", x, 1) != TTT_OK || check_affine(ctx, "layer_norm", x, gamma, "gamma") ||
        check_affine(ctx, "layer_norm", x, beta, "beta"))
        return NULL;
    ttt_tensor *y = norm_times(ctx, "layer_norm", TTT_NORM_LAYER, x, gamma, eps);
    if (beta) y = ttt_add(ctx, y, beta);
    return y;
}

ttt_tensor *ttt_rms_norm(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *gamma, double eps) {
    TTT_CHECK_NONNULL1(x);
    if (check_float(ctx, "rms_norm", x, 1) != TTT_OK || check_affine(ctx, "rms_norm", x, gamma, "gamma")) return NULL;
    return norm_times(ctx, "rms_norm", TTT_NORM_RMS, x, gamma, eps);
}

/* ---- cross-entropy ------------------------------------------------------------------- */

/* The one-hot rows of targets in dtype dt, shaped like the logits. */
static ttt_tensor *one_hot(ttt_ctx *ctx, ttt_dtype dt, const ttt_tensor *logits, const ttt_tensor *targets, int ignore) {
    ttt_tensor *oh = ttt_new(ctx, dt, logits->ndim, logits->shape);
    if (oh && ttt_numel(oh) && ctx->be->one_hot(ctx->bs, oh, targets, ignore) != TTT_OK)
        return ttt__backend_failed(ctx, "cross_entropy"), NULL;
    return oh;
}

/* The loss of bf16 logits is f32: its sums run in f32 and a bf16 loss would lose digits that matter (the kernels
 * read the bf16 logits directly, so no f32 copy of [rows, V] is ever made). */
static ttt_dtype ce_loss_dtype(ttt_dtype logits) { return logits == TTT_BF16 ? TTT_F32 : logits; }

/* The logits as the kernels take them: rows evenly spaced with a unit last stride (a column slice of padded
 * logits passes without a copy), else a dense copy. */
static ttt_tensor *ce_logits(ttt_ctx *ctx, ttt_tensor *x) { return ttt_row_stride(x) >= 0 ? x : ttt__dense(ctx, x); }

/* The valid rows' indicator [..., 1] (0 where the target is ignored) and the one-hot rows, in dtype dt */
static ttt_tensor *ce_valid(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *t, int ignore, ttt_tensor **oh_out) {
    ttt_tensor *oh = one_hot(ctx, x->dtype, x, t, ignore);
    *oh_out = oh;
    return oh ? sum_last(ctx, oh) : NULL;
}

/* g [...] as [..., 1] in dtype dt */
static ttt_tensor *ce_row_column(ttt_ctx *ctx, ttt_tensor *g, ttt_dtype dt) {
    int64_t shape[TTT_MAX_DIMS];
    memcpy(shape, g->shape, sizeof shape);
    shape[g->ndim] = 1;
    return ttt_reshape(ctx, g->dtype == dt ? g : ttt_cast(ctx, g, dt), g->ndim + 1, shape);
}

/* The cross-entropy's gradient as a node (create_graph) and its second order. dz = grow (p - onehot(t)) per row
 * (p = softmax(z)) has, along u, the VJP gz = grow p (u - u.p) (the softmax's symmetric Jacobian) and
 * ggrow = u.p - u[t], zero on ignored rows: one kernel (cross_entropy_bwd2) with grad mode off, these ops
 * otherwise (third order, or no kernel).
 * node: in = logits, grow (dense); out = dz; pattr[0] = the dense targets; iattr[0] = ignore_index */
VJP(ce_bwd_vjp) {
    ttt_tensor *x = nd->in[0], *grow = nd->in[1], *t = nd->pattr[0], *u = gout[0];
    const int ignore = (int)nd->iattr[0];
    if (!u) {
        for (int i = 0; i < 2; i++)
            if (needs[i] && !(gin[i] = ttt_zeros_like(ctx, nd->in[i]))) return TTT_ERR;
        return TTT_OK;
    }
    if (ctx->be->cross_entropy_bwd2 && !ttt_grad_enabled(ctx) && !ctx->unfused) {
        ttt_tensor *xd = ce_logits(ctx, x), *ud = xd ? ttt__dense(ctx, u) : NULL, *gd = ud ? ttt__dense(ctx, grow) : NULL;
        ttt_tensor *gx = gd && needs[0] ? ttt__new_like(ctx, x) : NULL, *gg = gd && needs[1] ? ttt__new_like(ctx, grow) : NULL;
        if (!gd || (needs[0] && !gx) || (needs[1] && !gg)) return TTT_ERR;
        if (ttt_numel(x) && ctx->be->cross_entropy_bwd2(ctx->bs, gx, gg, xd, t, gd, ud, ignore) != TTT_OK)
            return ttt__backend_failed(ctx, "cross_entropy (second order)");
        gin[0] = gx, gin[1] = gg;
        return TTT_OK;
    }
    ttt_tensor *oh, *valid = ce_valid(ctx, x, t, ignore, &oh);
    ttt_tensor *p = ttt_softmax(ctx, x), *up = sum_last(ctx, ttt_mul(ctx, u, p));
    if (needs[0] &&
        !(gin[0] = ttt_mul(ctx, ttt_mul(ctx, ttt_mul(ctx, p, ttt_sub(ctx, u, up)), valid), ce_row_column(ctx, grow, x->dtype))))
        return TTT_ERR;
    if (needs[1]) {
        ttt_tensor *gg = ttt_mul(ctx, ttt_sub(ctx, up, sum_last(ctx, ttt_mul(ctx, u, oh))), valid); /* [..., 1] */
        gg = gg ? ttt_reshape(ctx, gg, grow->ndim, grow->shape) : NULL;
        if (!(gin[1] = gg && gg->dtype != grow->dtype ? ttt_cast(ctx, gg, grow->dtype) : gg)) return TTT_ERR;
    }
    return TTT_OK;
}

VJP(ce_rows_vjp) {
    /* d row_loss / d logits = softmax(x) - onehot(t); ignored rows get 0 */
    ttt_tensor *t = nd->pattr[0];
    if (ctx->be->cross_entropy_bwd && ctx->be->cross_entropy_bwd2 && ttt_grad_enabled(ctx) && !ctx->unfused &&
        !ctx->no_bwd_nodes) {
        /* create_graph with the second order: the fused first-order kernel as a cross_entropy_backward node */
        ttt_tensor *gd = ttt_contiguous(ctx, G); /* differentiable: grow may depend on what is differentiated */
        ttt_tensor *xd = gd ? ce_logits(ctx, X) : NULL, *out = xd ? ttt__new_like(ctx, X) : NULL;
        if (!out) return TTT_ERR;
        if (ttt_numel(out) && ctx->be->cross_entropy_bwd(ctx->bs, out, xd, t, gd, (int)nd->iattr[0]) != TTT_OK)
            return ttt__backend_failed(ctx, "cross_entropy (backward)");
        ttt_tensor *ins[2] = {X, gd};
        if (ttt__recording(ctx, 2, ins)) {
            ttt_node *n = ttt__record(ctx, "cross_entropy_backward", ce_bwd_vjp, 2, ins, 1, &out);
            if (!n) return TTT_ERR;
            n->pattr[0] = t;
            n->iattr[0] = nd->iattr[0];
        }
        DONE(out);
    }
    if (ctx->be->cross_entropy_bwd && !ttt_grad_enabled(ctx)) {
        /* first order only: one fused pass (create_graph needs the composed, differentiable form below) */
        ttt_tensor *gd = ttt__dense(ctx, G), *xd = ce_logits(ctx, X), *out = ttt__new_like(ctx, X);
        if (!gd || !xd || !out) return TTT_ERR;
        if (ttt_numel(out) && ctx->be->cross_entropy_bwd(ctx->bs, out, xd, t, gd, (int)nd->iattr[0]) != TTT_OK)
            return ttt__backend_failed(ctx, "cross_entropy (backward)");
        DONE(out);
    }
    ttt_tensor *oh, *valid = ce_valid(ctx, X, t, (int)nd->iattr[0], &oh);
    /* (G is f32 for bf16 logits: the composed, differentiable form runs in the logits' dtype) */
    ttt_tensor *g = valid ? ce_row_column(ctx, G, X->dtype) : NULL;
    DONE(ttt_mul(ctx, ttt_mul(ctx, ttt_sub(ctx, ttt_softmax(ctx, X), oh), valid), g));
}

static int check_ce(ttt_ctx *ctx, const char *op, const ttt_tensor *logits, const ttt_tensor *targets) {
    if (check_float(ctx, op, logits, 1) != TTT_OK) return TTT_ERR;
    bool ok = targets->dtype == TTT_I32 && targets->ndim == logits->ndim - 1;
    for (int i = 0; ok && i < targets->ndim; i++) ok = targets->shape[i] == logits->shape[i];
    if (!ok) {
        char sl[96], st[96];
        return ttt__set_error(ctx, "%s: targets %s %s must be i32 with the logits' %s leading shape", op,
                              ttt_dtype_name(targets->dtype), ttt_shape_str(targets, st, sizeof st),
                              ttt_shape_str(logits, sl, sizeof sl));
    }
    return TTT_OK;
}

/* Per-row losses [...] from the fused kernel, in ce_loss_dtype; td receives the dense targets. */
static ttt_tensor *ce_rows(ttt_ctx *ctx, const char *op, ttt_tensor *logits, ttt_tensor *targets, int ignore_index,
                           ttt_tensor **td_out) {
    if (check_ce(ctx, op, logits, targets) != TTT_OK) return NULL;
    ttt_tensor *xd = ce_logits(ctx, logits), *td = ttt__dense(ctx, targets);
    ttt_tensor *rows = td ? ttt_new(ctx, ce_loss_dtype(logits->dtype), targets->ndim, targets->shape) : NULL;
    if (!rows || !xd) return NULL;
    if (ttt_numel(rows) && ctx->be->cross_entropy(ctx->bs, rows, xd, td, ignore_index) != TTT_OK)
        return ttt__backend_failed(ctx, op), NULL;
    if (ttt__recording(ctx, 1, &logits)) {
        ttt_node *n = ttt__record(ctx, "cross_entropy", ce_rows_vjp, 1, &logits, 1, &rows);
        if (!n) return NULL;
        n->iattr[0] = ignore_index;
        n->pattr[0] = td;
    }
    if (td_out) *td_out = td;
    return rows;
}

ttt_tensor *ttt_cross_entropy_rows(ttt_ctx *ctx, ttt_tensor *logits, ttt_tensor *targets, int ignore_index) {
    TTT_CHECK_NONNULL2(logits, targets);
    return ce_rows(ctx, "cross_entropy_rows", logits, targets, ignore_index, NULL);
}

ttt_tensor *ttt_cross_entropy(ttt_ctx *ctx, ttt_tensor *logits, ttt_tensor *targets, int ignore_index) {
    TTT_CHECK_NONNULL2(logits, targets);
    ttt_tensor *td = NULL, *rows = ce_rows(ctx, "cross_entropy", logits, targets, ignore_index, &td);
    if (!rows) return NULL;
    /* mean over the counted rows; the count is a constant */
    ttt_no_grad_begin(ctx);
    ttt_tensor *oh = one_hot(ctx, rows->dtype, logits, td, ignore_index);
    ttt_tensor *count = oh ? ttt_maximum(ctx, ttt_sum(ctx, oh, 0, NULL, 0), ttt_scalar(ctx, rows->dtype, 1.0)) : NULL;
    ttt_no_grad_end(ctx);
    return ttt_div(ctx, ttt_sum(ctx, rows, 0, NULL, 0), count);
}

/* ---- embedding / scatter-add ----------------------------------------------------------- */

static int check_ids(ttt_ctx *ctx, const char *op, const ttt_tensor *ids) {
    if (ids->dtype != TTT_I32) return ttt__set_error(ctx, "%s: ids must be i32, got %s", op, ttt_dtype_name(ids->dtype));
    return TTT_OK;
}

VJP(embedding_vjp) {
    ttt_tensor *ids = nd->pattr[0];
    DONE(ttt_scatter_add_rows(ctx, G, ids, X->shape[0]));
}

ttt_tensor *ttt_embedding(ttt_ctx *ctx, ttt_tensor *table, ttt_tensor *ids) {
    TTT_CHECK_NONNULL2(table, ids);
    if (check_float(ctx, "embedding", table, 2) != TTT_OK || check_ids(ctx, "embedding", ids) != TTT_OK) return NULL;
    if (table->ndim != 2 || ids->ndim + 1 > TTT_MAX_DIMS)
        return ttt__set_error(ctx, "embedding: table must be 2-d [V, D] and ids at most %d-d", TTT_MAX_DIMS - 1), NULL;
    int64_t shape[TTT_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof shape);
    shape[ids->ndim] = table->shape[1];
    ttt_tensor *out = ttt_new(ctx, table->dtype, ids->ndim + 1, shape);
    ttt_tensor *td = out ? ttt__dense(ctx, table) : NULL, *idd = td ? ttt__dense(ctx, ids) : NULL;
    if (!idd) return NULL;
    if (ttt_numel(out) && ctx->be->gather_rows(ctx->bs, out, td, idd) != TTT_OK) return ttt__backend_failed(ctx, "embedding"), NULL;
    if (ttt__recording(ctx, 1, &table)) {
        ttt_node *n = ttt__record(ctx, "embedding", embedding_vjp, 1, &table, 1, &out);
        if (!n) return NULL;
        n->pattr[0] = idd;
    }
    return out;
}

VJP(scatter_vjp) {
    ttt_tensor *ids = nd->pattr[0];
    DONE(ttt_reshape(ctx, ttt_embedding(ctx, G, ids), X->ndim, X->shape));
}

ttt_tensor *ttt_scatter_add_rows(ttt_ctx *ctx, ttt_tensor *src, ttt_tensor *ids, int64_t n_rows) {
    TTT_CHECK_NONNULL2(src, ids);
    if (check_float(ctx, "scatter_add_rows", src, 1) != TTT_OK || check_ids(ctx, "scatter_add_rows", ids) != TTT_OK)
        return NULL;
    bool ok = src->ndim == ids->ndim + 1 && n_rows >= 0;
    for (int i = 0; ok && i < ids->ndim; i++) ok = ids->shape[i] == src->shape[i];
    if (!ok) {
        char ss[96], si[96];
        return ttt__set_error(ctx, "scatter_add_rows: src %s must be ids %s plus a last axis (n_rows %lld)",
                              ttt_shape_str(src, ss, sizeof ss), ttt_shape_str(ids, si, sizeof si), (long long)n_rows),
               NULL;
    }
    int64_t d = src->shape[src->ndim - 1];
    ttt_tensor *out = ttt_zeros(ctx, src->dtype, TTT_DIMS(n_rows, d));
    ttt_tensor *sd = out ? ttt__dense(ctx, src) : NULL, *idd = sd ? ttt__dense(ctx, ids) : NULL;
    if (!idd) return NULL;
    if (ttt_numel(sd) && ctx->be->scatter_add_rows(ctx->bs, out, sd, idd) != TTT_OK)
        return ttt__backend_failed(ctx, "scatter_add_rows"), NULL;
    if (ttt__recording(ctx, 1, &src)) {
        ttt_node *n = ttt__record(ctx, "scatter_add_rows", scatter_vjp, 1, &src, 1, &out);
        if (!n) return NULL;
        n->pattr[0] = idd;
    }
    return out;
}

/* ---- RoPE ------------------------------------------------------------------------------- */

static ttt_tensor *rope(ttt_ctx *ctx, ttt_tensor *x, int seq_axis, int64_t pos0, double theta, int inverse,
                        const ttt_tensor *layout);

/* The gradient comes back in the memory order of the forward's input: the LM rotates a head permutation of
 * its projection, so its gradient is then the projection's layout, with no copy. */
VJP(rope_vjp) { DONE(rope(ctx, G, (int)nd->iattr[0], nd->iattr[1], nd->fattr[0], !nd->iattr[2], X)); }

/* A new tensor of x's shape in the memory order of layout when that is a permuted dense tensor, else dense. */
static ttt_tensor *new_in_layout(ttt_ctx *ctx, const ttt_tensor *x, const ttt_tensor *layout) {
    const int nd = x->ndim;
    int perm[TTT_MAX_DIMS], inv[TTT_MAX_DIMS];
    if (!layout || layout->ndim != nd) return ttt__new_like(ctx, x);
    for (int i = 0; i < nd; i++) perm[i] = i;
    for (int i = 1; i < nd; i++) /* axes by decreasing stride, ties in axis order */
        for (int j = i; j > 0 && layout->stride[perm[j]] > layout->stride[perm[j - 1]]; j--) {
            const int t = perm[j];
            perm[j] = perm[j - 1], perm[j - 1] = t;
        }
    int64_t want = 1, shape[TTT_MAX_DIMS];
    for (int i = nd - 1; i >= 0; i--) {
        const int a = perm[i];
        if (layout->shape[a] != x->shape[a] || (x->shape[a] != 1 && layout->stride[a] != want)) return ttt__new_like(ctx, x);
        want *= x->shape[a];
    }
    bool identity = true;
    for (int i = 0; i < nd; i++) shape[i] = x->shape[perm[i]], inv[perm[i]] = i, identity = identity && perm[i] == i;
    if (identity) return ttt__new_like(ctx, x);
    ttt_tensor *base = ttt_new(ctx, x->dtype, nd, shape);
    return base ? ttt_permute(ctx, base, inv) : NULL;
}

static ttt_tensor *rope(ttt_ctx *ctx, ttt_tensor *x, int seq_axis, int64_t pos0, double theta, int inverse,
                        const ttt_tensor *layout) {
    TTT_CHECK_NONNULL1(x);
    if (check_float(ctx, "rope", x, 2) != TTT_OK) return NULL;
    int a = ttt__norm_axis(ctx, "rope", seq_axis, x->ndim);
    if (a < 0) return NULL;
    char s[96];
    if (a == x->ndim - 1 || x->shape[x->ndim - 1] % 2 || !(theta > 0))
        return ttt__set_error(ctx, "rope: x %s needs an even last axis and seq_axis (%d) before it; theta %g > 0",
                              ttt_shape_str(x, s, sizeof s), seq_axis, theta),
               NULL;
    /* the kernels take any strides with a unit last one (a head permutation is read in place) */
    ttt_tensor *out = new_in_layout(ctx, x, layout), *xd = out ? (x->stride[x->ndim - 1] == 1 ? x : ttt__dense(ctx, x)) : NULL;
    if (!xd) return NULL;
    if (ttt_numel(out) && ctx->be->rope(ctx->bs, out, xd, a, pos0, theta, inverse) != TTT_OK)
        return ttt__backend_failed(ctx, "rope"), NULL;
    if (ttt__recording(ctx, 1, &x)) {
        ttt_node *n = ttt__record(ctx, "rope", rope_vjp, 1, &x, 1, &out);
        if (!n) return NULL;
        n->iattr[0] = a;
        n->iattr[1] = pos0;
        n->iattr[2] = inverse;
        n->fattr[0] = theta;
    }
    return out;
}

ttt_tensor *ttt_rope(ttt_ctx *ctx, ttt_tensor *x, int seq_axis, int64_t pos0, double theta) {
    return rope(ctx, x, seq_axis, pos0, theta, 0, NULL);
}

/* ---- attention mask ----------------------------------------------------------------------- */

VJP(mask_vjp) { DONE(ttt_attn_mask(ctx, G, nd->iattr[0], nd->iattr[1], 0.0)); }

ttt_tensor *ttt_attn_mask(ttt_ctx *ctx, ttt_tensor *x, int64_t window, int64_t q_offset, double fill) {
    TTT_CHECK_NONNULL1(x);
    if (check_float(ctx, "attn_mask", x, 2) != TTT_OK) return NULL;
    if (q_offset < 0) return ttt__set_error(ctx, "attn_mask: q_offset %lld must be >= 0", (long long)q_offset), NULL;
    ttt_tensor *out = ttt__new_like(ctx, x), *xd = out ? ttt__dense(ctx, x) : NULL;
    if (!xd) return NULL;
    if (ttt_numel(out) && ctx->be->attn_mask(ctx->bs, out, xd, window, q_offset, fill) != TTT_OK)
        return ttt__backend_failed(ctx, "attn_mask"), NULL;
    if (ttt__recording(ctx, 1, &x)) {
        ttt_node *n = ttt__record(ctx, "attn_mask", mask_vjp, 1, &x, 1, &out);
        if (!n) return NULL;
        n->iattr[0] = window;
        n->iattr[1] = q_offset;
    }
    return out;
}

/* ---- global-norm clipping (differentiable) ---------------------------------------------------- */

int ttt_clip_by_global_norm(ttt_ctx *ctx, int n, ttt_tensor *const *xs, double max_norm, ttt_tensor **out,
                            ttt_tensor **norm_out) {
    if (n <= 0 || !xs || !out) return ttt__set_error(ctx, "clip_by_global_norm: no tensors given");
    if (!(max_norm > 0)) return ttt__set_error(ctx, "clip_by_global_norm: max_norm %g must be > 0", max_norm);
    ttt_tensor *total = NULL;
    for (int i = 0; i < n; i++) {
        if (!xs[i]) return TTT_ERR;
        if (xs[i]->dtype != xs[0]->dtype)
            return ttt__set_error(ctx, "clip_by_global_norm: tensor %d is %s, tensor 0 is %s", i,
                                  ttt_dtype_name(xs[i]->dtype), ttt_dtype_name(xs[0]->dtype));
        ttt_tensor *sq = ttt_sum(ctx, ttt_mul(ctx, xs[i], xs[i]), 0, NULL, 0);
        total = total ? ttt_add(ctx, total, sq) : sq;
    }
    ttt_tensor *norm = ttt_sqrt(ctx, total);
    /* scale = min(1, max_norm / (norm + 1e-6)) */
    ttt_tensor *scale = ttt_minimum(ctx, ttt_div(ctx, ttt_scalar(ctx, xs[0]->dtype, max_norm), ttt_add_scalar(ctx, norm, 1e-6)),
                                    ttt_scalar(ctx, xs[0]->dtype, 1.0));
    for (int i = 0; i < n; i++)
        if (!(out[i] = ttt_mul(ctx, xs[i], scale))) return TTT_ERR;
    if (norm_out) *norm_out = norm;
    return TTT_OK;
}

/* ---- TTT-E2E's inner step: SGD with a per-sequence global-norm clip ---------------------------------------------
 *
 * out_i = w_i - eta s_b g_i on sequence b (the leading axis), s_b = clip / max(N_b, clip) (1 when clip <= 0),
 * N_b = sqrt(sum_i |g_i[b]|^2): optax's clip_by_global_norm per sequence, then the step. Its VJP along dout_i is
 * dw_i = dout_i and, with r_b = sum_i <dout_i[b], g_i[b]>, on a clipped sequence (N_b >= clip > 0: ttt_maximum
 * gives a tie's gradient to N_b, so the composed form counts a tie as clipped)
 *   dg_i = -eta clip / N_b dout_i + eta clip r_b / N_b^3 g_i,
 * elsewhere dg_i = -eta dout_i. With the backend's clip_step / clip_step_bwd that is two passes over the tensors
 * each way, where the composed form runs about 5n ops forward and twice that backward (TTT-E2E: n = 3 prime
 * weights per suffix block, every chunk). The node keeps N_b. Under create_graph the VJP is the formula in ops, so
 * every order is exact; without the kernels, where they decline, and under TTT_FUSED=0 the op is the composed
 * ops themselves (composed_step), with their bits. */

/* sum over every axis but the leading one: [B] */
static ttt_tensor *per_seq_sum(ttt_ctx *ctx, ttt_tensor *x) {
    int axes[TTT_MAX_DIMS];
    if (!x || x->ndim == 1) return x;
    for (int d = 1; d < x->ndim; d++) axes[d - 1] = d;
    return ttt_sum(ctx, x, x->ndim - 1, axes, 0);
}

/* s [B] as [B, 1, ...] against a tensor of ndim axes (a view) */
static ttt_tensor *per_seq_view(ttt_ctx *ctx, ttt_tensor *s, int ndim) {
    int64_t shape[TTT_MAX_DIMS];
    if (!s) return NULL;
    shape[0] = s->shape[0];
    for (int d = 1; d < ndim; d++) shape[d] = 1;
    return ttt_reshape(ctx, s, ndim, shape);
}

/* The ops TTT-E2E's inner update was written with (each sequence's squares summed per tensor, the sums added in
 * tensor order, sqrt, clip / max(N, clip), eta times that, g times it, w minus it): TTT_FUSED=0 keeps its bits. */
static int composed_step(ttt_ctx *ctx, int n, ttt_tensor *const *w, ttt_tensor *const *g, double eta, double clip,
                         ttt_tensor **out) {
    ttt_tensor *scale = NULL;
    if (clip > 0) {
        ttt_tensor *sq = NULL;
        for (int i = 0; i < n; i++) {
            ttt_tensor *s = per_seq_sum(ctx, ttt_mul(ctx, g[i], g[i]));
            sq = sq ? ttt_add(ctx, sq, s) : s;
        }
        ttt_tensor *norm = ttt_sqrt(ctx, sq);
        if (!norm) return TTT_ERR;
        ttt_tensor *c = ttt_scalar(ctx, norm->dtype, clip);
        if (!(scale = ttt_scale(ctx, ttt_div(ctx, c, ttt_maximum(ctx, norm, c)), eta))) return TTT_ERR;
    }
    for (int i = 0; i < n; i++) {
        ttt_tensor *step = scale ? ttt_mul(ctx, g[i], per_seq_view(ctx, scale, g[i]->ndim)) : ttt_scale(ctx, g[i], eta);
        if (!(out[i] = ttt_sub(ctx, w[i], step))) return TTT_ERR;
    }
    return TTT_OK;
}

/* The VJP's g part in ops (differentiable: create_graph, or a backend without the backward kernel). M = max(N, c)
 * is formed as sqrt(max(N^2, c^2)), so an unclipped sequence's gradient never meets sqrt's derivative at 0 (all of
 * its g zero, e.g. a chunk whose targets are all ignored). dout[i] NULL: zero. */
static int clip_step_dg(ttt_ctx *ctx, int n, ttt_tensor *const *g, ttt_tensor *const *dout, const bool *needs,
                        double eta, double clip, ttt_tensor **dg) {
    ttt_tensor *a = NULL, *k = NULL; /* dg_i = a_b dout_i + k_b g_i */
    if (clip > 0) {
        ttt_tensor *sq = NULL, *r = NULL;
        for (int i = 0; i < n; i++) {
            ttt_tensor *s = per_seq_sum(ctx, ttt_mul(ctx, g[i], g[i]));
            sq = sq ? ttt_add(ctx, sq, s) : s;
            if (dout[i]) {
                ttt_tensor *d = per_seq_sum(ctx, ttt_mul(ctx, dout[i], g[i]));
                r = r ? ttt_add(ctx, r, d) : d;
            }
        }
        ttt_tensor *c2 = sq ? ttt_scalar(ctx, sq->dtype, clip * clip) : NULL;
        ttt_tensor *m = ttt_sqrt(ctx, ttt_maximum(ctx, sq, c2));
        a = ttt_scale(ctx, ttt_div(ctx, ttt_scalar(ctx, g[0]->dtype, clip), m), -eta);
        if (r) k = ttt_mul(ctx, ttt_ge(ctx, sq, c2), ttt_scale(ctx, ttt_div(ctx, r, ttt_pow(ctx, m, 3.0)), eta * clip));
        if (!a || (r && !k)) return TTT_ERR;
    }
    for (int i = 0; i < n; i++) {
        if (!needs[i]) continue;
        const int nd = g[i]->ndim;
        ttt_tensor *d = !dout[i] ? NULL : a ? ttt_mul(ctx, dout[i], per_seq_view(ctx, a, nd)) : ttt_scale(ctx, dout[i], -eta);
        ttt_tensor *e = k ? ttt_mul(ctx, g[i], per_seq_view(ctx, k, nd)) : NULL;
        dg[i] = d && e ? ttt_add(ctx, d, e) : d ? d : e ? e : ttt_zeros_like(ctx, g[i]);
        if (!dg[i]) return TTT_ERR;
    }
    return TTT_OK;
}

/* node: in = w_0 .. w_{n-1}, g_0 .. g_{n-1}; out = out_0 .. out_{n-1}; pattr[0] = N [B] f64 (NULL when clip <= 0);
 * fattr = eta, clip */
VJP(clip_step_vjp) {
    const int n = nd->n_out;
    const double eta = nd->fattr[0], clip = nd->fattr[1];
    ttt_tensor *const *g = nd->in + n;
    bool any = false;
    for (int i = 0; i < n; i++) {
        if (needs[i] && !(gin[i] = gout[i] ? gout[i] : ttt_zeros_like(ctx, nd->in[i]))) return TTT_ERR;
        any |= needs[n + i];
    }
    if (!any) return TTT_OK;
    if (!ttt_grad_enabled(ctx)) { /* first order: one fused pass per direction */
        ttt_tensor **d = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)(3 * n));
        if (!d) return TTT_ERR;
        ttt_tensor **dg = d, **dout = d + n, **gd = d + 2 * n;
        for (int i = 0; i < n; i++) {
            if ((gout[i] && !(dout[i] = ttt__dense(ctx, gout[i]))) || !(gd[i] = ttt__dense(ctx, g[i])) ||
                (needs[n + i] && !(dg[i] = ttt__new_like(ctx, g[i]))))
                return TTT_ERR;
        }
        const int rc = ctx->be->clip_step_bwd(ctx->bs, n, dg, (const ttt_tensor *const *)dout,
                                              (const ttt_tensor *const *)gd, nd->pattr[0], eta, clip);
        if (rc == TTT_OK) {
            for (int i = 0; i < n; i++) gin[n + i] = dg[i];
            return TTT_OK;
        }
        if (rc != TTT_BACKEND_DECLINED) return ttt__backend_failed(ctx, "clip_step (backward)");
    }
    return clip_step_dg(ctx, n, g, gout, needs + n, eta, clip, gin + n);
}

/* The kernel's forward, recorded where a graph records, or TTT_BACKEND_DECLINED with nothing left allocated. */
static int fused_step(ttt_ctx *ctx, int n, ttt_tensor *const *w, ttt_tensor *const *g, double eta, double clip,
                      ttt_tensor **out) {
    const ttt_mark_t mark = ttt_mark(ctx);
    ttt_tensor **d = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)(3 * n));
    if (!d) return TTT_ERR;
    ttt_tensor **o = d, **wd = d + n, **gd = d + 2 * n;
    for (int i = 0; i < n; i++)
        if (!(wd[i] = ttt__dense(ctx, w[i])) || !(gd[i] = ttt__dense(ctx, g[i])) || !(o[i] = ttt__new_like(ctx, w[i])))
            return TTT_ERR;
    ttt_tensor *norm = clip > 0 ? ttt_new(ctx, TTT_F64, 1, g[0]->shape) : NULL;
    if (clip > 0 && !norm) return TTT_ERR;
    const int rc = ctx->be->clip_step(ctx->bs, n, o, norm, (const ttt_tensor *const *)wd, (const ttt_tensor *const *)gd,
                                      eta, clip);
    if (rc == TTT_BACKEND_DECLINED) {
        ttt_release(ctx, mark);
        return TTT_BACKEND_DECLINED;
    }
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "clip_step");
    ttt_tensor **ins = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)(2 * n));
    if (!ins) return TTT_ERR;
    memcpy(ins, w, sizeof(ttt_tensor *) * (size_t)n);
    memcpy(ins + n, g, sizeof(ttt_tensor *) * (size_t)n);
    if (ttt__recording(ctx, 2 * n, ins)) {
        ttt_node *nd = ttt__record(ctx, "clip_step", clip_step_vjp, 2 * n, ins, n, o);
        if (!nd) return TTT_ERR;
        nd->pattr[0] = norm;
        nd->fattr[0] = eta;
        nd->fattr[1] = clip;
    }
    memcpy(out, o, sizeof(ttt_tensor *) * (size_t)n);
    return TTT_OK;
}

static int clip_step_check(ttt_ctx *ctx, int n, ttt_tensor *const *w, ttt_tensor *const *g, double eta, double clip) {
    char s0[96], s1[96];
    for (int i = 0; i < n; i++)
        if (!w[i] || !g[i]) return TTT_ERR; /* an earlier op failed: its message stands */
    const ttt_tensor *ref = g[0];
    if (!ttt__is_float(ref->dtype))
        return ttt__set_error(ctx, "clip_step: dtype %s is not supported (use f32, f64 or bf16)", ttt_dtype_name(ref->dtype));
    if (ref->ndim < 1) return ttt__set_error(ctx, "clip_step: g[0] is a scalar; tensors need a leading sequence axis [B, ...]");
    for (int i = 0; i < n; i++) {
        const ttt_tensor *x[2] = {w[i], g[i]};
        for (int k = 0; k < 2; k++) {
            const char *name = k ? "g" : "w";
            if (x[k]->dtype != ref->dtype)
                return ttt__set_error(ctx, "clip_step: %s[%d] is %s, g[0] is %s (one dtype)", name, i,
                                      ttt_dtype_name(x[k]->dtype), ttt_dtype_name(ref->dtype));
            if (x[k]->device != ref->device) return ttt__set_error(ctx, "clip_step: %s[%d] is on another device than g[0]", name, i);
            if (x[k]->ndim < 1 || x[k]->shape[0] != ref->shape[0])
                return ttt__set_error(ctx, "clip_step: %s[%d] %s must lead with g[0]'s %lld sequences (g[0] is %s)", name, i,
                                      ttt_shape_str(x[k], s0, sizeof s0), (long long)ref->shape[0],
                                      ttt_shape_str(ref, s1, sizeof s1));
        }
        bool same = w[i]->ndim == g[i]->ndim;
        for (int d = 0; same && d < w[i]->ndim; d++) same = w[i]->shape[d] == g[i]->shape[d];
        if (!same)
            return ttt__set_error(ctx, "clip_step: w[%d] %s and g[%d] %s must have one shape", i,
                                  ttt_shape_str(w[i], s0, sizeof s0), i, ttt_shape_str(g[i], s1, sizeof s1));
    }
    if (!isfinite(eta)) return ttt__set_error(ctx, "clip_step: eta %g must be finite", eta);
    if (!isfinite(clip)) return ttt__set_error(ctx, "clip_step: clip %g must be finite (<= 0: no clipping)", clip);
    return TTT_OK;
}

int ttt_clip_step(ttt_ctx *ctx, int n, ttt_tensor *const *w, ttt_tensor *const *g, double eta, double clip,
                  ttt_tensor **out) {
    if (n < 1) return ttt__set_error(ctx, "clip_step: n %d must be >= 1", n);
    if (!w || !g || !out) return ttt__set_error(ctx, "clip_step: the w, g and out arrays must not be NULL");
    for (int i = 0; i < n; i++) out[i] = NULL;
    if (clip_step_check(ctx, n, w, g, eta, clip) != TTT_OK) return TTT_ERR;
    if (ctx->be->clip_step && ctx->be->clip_step_bwd && !ctx->unfused) {
        const int rc = fused_step(ctx, n, w, g, eta, clip, out);
        if (rc != TTT_BACKEND_DECLINED) return rc;
    }
    return composed_step(ctx, n, w, g, eta, clip, out);
}
