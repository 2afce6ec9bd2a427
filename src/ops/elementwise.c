/* Elementwise ops: binary (broadcasting), unary, where. Each VJP is written
 * with these same ops, so it can be differentiated again. */
#include <math.h>

#include "../core/internal.h"

/* ---- shared plumbing ------------------------------------------------------------ */

static int check_float_pair(ttt_ctx *ctx, const char *op, const ttt_tensor *a, const ttt_tensor *b) {
    if (a->device != b->device) return ttt__set_error(ctx, "%s: operands are on different devices", op);
    if (a->dtype != b->dtype)
        return ttt__set_error(ctx, "%s: dtypes %s and %s differ (cast one first)", op, ttt_dtype_name(a->dtype),
                              ttt_dtype_name(b->dtype));
    if (!ttt__is_float(a->dtype))
        return ttt__set_error(ctx, "%s: dtype %s is not supported (use f32, f64 or bf16)", op, ttt_dtype_name(a->dtype));
    return TTT_OK;
}

/* Run a binary kernel with broadcasting; record a node when vjp is given. */
static ttt_tensor *binary(ttt_ctx *ctx, const char *name, ttt_binary_op op, ttt_tensor *a, ttt_tensor *b,
                          ttt_vjp_fn vjp) {
    TTT_CHECK_NONNULL2(a, b);
    if (check_float_pair(ctx, name, a, b) != TTT_OK) return NULL;
    int nd;
    int64_t shape[TTT_MAX_DIMS];
    if (ttt__broadcast_shape(ctx, name, a, b, &nd, shape) != TTT_OK) return NULL;
    ttt_tensor *out = ttt_new(ctx, a->dtype, nd, shape);
    ttt_tensor *va = out ? ttt__expanded_view(ctx, a, nd, shape) : NULL;
    ttt_tensor *vb = va ? ttt__expanded_view(ctx, b, nd, shape) : NULL;
    if (!vb) return NULL;
    if (ttt_numel(out) && ctx->be->binary(ctx->bs, op, out, va, vb) != TTT_OK) return ttt__backend_failed(ctx, name), NULL;
    ttt_tensor *ins[2] = {a, b};
    if (vjp && ttt__recording(ctx, 2, ins) && !ttt__record(ctx, name, vjp, 2, ins, 1, &out)) return NULL;
    return out;
}

/* Run a unary kernel; record a node when vjp is given (attrs p0, p1 saved). */
static ttt_tensor *unary(ttt_ctx *ctx, const char *name, ttt_unary_op op, ttt_tensor *x, double p0, double p1,
                         ttt_vjp_fn vjp) {
    TTT_CHECK_NONNULL1(x);
    if (!ttt__is_float(x->dtype))
        return ttt__set_error(ctx, "%s: dtype %s is not supported (use f32, f64 or bf16)", name, ttt_dtype_name(x->dtype)),
               NULL;
    ttt_tensor *out = ttt__new_like(ctx, x);
    if (!out) return NULL;
    if (ttt_numel(out) && ctx->be->unary(ctx->bs, op, out, x, p0, p1) != TTT_OK) return ttt__backend_failed(ctx, name), NULL;
    if (vjp && ttt__recording(ctx, 1, &x)) {
        ttt_node *nd = ttt__record(ctx, name, vjp, 1, &x, 1, &out);
        if (!nd) return NULL;
        nd->fattr[0] = p0;
        nd->fattr[1] = p1;
    }
    return out;
}

#define G (gout[0])
#define X (nd->in[0])
#define Y (nd->out[0])
#define VJP(fn) static int fn(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin)
#define DONE(expr) \
    do {           \
        (void)nd;  \
        gin[0] = (expr); \
        return gin[0] ? TTT_OK : TTT_ERR; \
    } while (0)

static ttt_tensor *sum_to_like(ttt_ctx *ctx, ttt_tensor *g, const ttt_tensor *like) {
    return ttt_sum_to(ctx, g, like->ndim, like->shape);
}

/* A 0/1 mask (no graph) from a unary predicate kernel. */
static ttt_tensor *mask_of(ttt_ctx *ctx, ttt_unary_op op, ttt_tensor *x, double p0, double p1) {
    return unary(ctx, "mask", op, x, p0, p1, NULL);
}

/* ---- binary ---------------------------------------------------------------------- */

VJP(add_vjp) {
    if (needs[0] && !(gin[0] = sum_to_like(ctx, G, nd->in[0]))) return TTT_ERR;
    if (needs[1] && !(gin[1] = sum_to_like(ctx, G, nd->in[1]))) return TTT_ERR;
    return TTT_OK;
}
VJP(sub_vjp) {
    if (needs[0] && !(gin[0] = sum_to_like(ctx, G, nd->in[0]))) return TTT_ERR;
    if (needs[1] && !(gin[1] = sum_to_like(ctx, ttt_neg(ctx, G), nd->in[1]))) return TTT_ERR;
    return TTT_OK;
}
VJP(mul_vjp) {
    if (needs[0] && !(gin[0] = sum_to_like(ctx, ttt_mul(ctx, G, nd->in[1]), nd->in[0]))) return TTT_ERR;
    if (needs[1] && !(gin[1] = sum_to_like(ctx, ttt_mul(ctx, G, nd->in[0]), nd->in[1]))) return TTT_ERR;
    return TTT_OK;
}
VJP(div_vjp) {
    ttt_tensor *b = nd->in[1];
    if (needs[0] && !(gin[0] = sum_to_like(ctx, ttt_div(ctx, G, b), nd->in[0]))) return TTT_ERR;
    /* d(a/b)/db = -(a/b)/b */
    if (needs[1] && !(gin[1] = sum_to_like(ctx, ttt_neg(ctx, ttt_mul(ctx, G, ttt_div(ctx, Y, b))), b)))
        return TTT_ERR;
    return TTT_OK;
}
/* max/min: the gradient goes to a where a wins or ties, else to b. */
static int select_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin,
                      ttt_tensor *a_wins) {
    if (!a_wins) return TTT_ERR;
    ttt_tensor *ga = ttt_mul(ctx, G, a_wins);
    if (needs[0] && !(gin[0] = sum_to_like(ctx, ga, nd->in[0]))) return TTT_ERR;
    if (needs[1] && !(gin[1] = sum_to_like(ctx, ttt_sub(ctx, G, ga), nd->in[1]))) return TTT_ERR;
    return TTT_OK;
}
VJP(max_vjp) { return select_vjp(ctx, nd, gout, needs, gin, ttt_ge(ctx, nd->in[0], nd->in[1])); }
VJP(min_vjp) { return select_vjp(ctx, nd, gout, needs, gin, ttt_ge(ctx, nd->in[1], nd->in[0])); }

ttt_tensor *ttt_add(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) { return binary(ctx, "add", TTT_B_ADD, a, b, add_vjp); }
ttt_tensor *ttt_sub(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) { return binary(ctx, "sub", TTT_B_SUB, a, b, sub_vjp); }
ttt_tensor *ttt_mul(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) { return binary(ctx, "mul", TTT_B_MUL, a, b, mul_vjp); }
ttt_tensor *ttt_div(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) { return binary(ctx, "div", TTT_B_DIV, a, b, div_vjp); }
ttt_tensor *ttt_maximum(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) {
    return binary(ctx, "maximum", TTT_B_MAX, a, b, max_vjp);
}
ttt_tensor *ttt_minimum(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) {
    return binary(ctx, "minimum", TTT_B_MIN, a, b, min_vjp);
}
ttt_tensor *ttt_gt(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) { return binary(ctx, "gt", TTT_B_GT, a, b, NULL); }
ttt_tensor *ttt_ge(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) { return binary(ctx, "ge", TTT_B_GE, a, b, NULL); }
ttt_tensor *ttt_eq(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) { return binary(ctx, "eq", TTT_B_EQ, a, b, NULL); }

/* ---- unary ------------------------------------------------------------------------ */

static ttt_tensor *affine(ttt_ctx *ctx, ttt_tensor *x, double a, double b);

VJP(neg_vjp) { (void)needs; DONE(ttt_neg(ctx, G)); }
VJP(exp_vjp) { (void)needs; DONE(ttt_mul(ctx, G, Y)); }
VJP(log_vjp) { (void)needs; DONE(ttt_div(ctx, G, X)); }
VJP(tanh_vjp) { (void)needs; DONE(ttt_mul(ctx, G, affine(ctx, ttt_mul(ctx, Y, Y), -1.0, 1.0))); }
VJP(sigmoid_vjp) { (void)needs; DONE(ttt_mul(ctx, G, ttt_mul(ctx, Y, affine(ctx, Y, -1.0, 1.0)))); }
/* gelu and silu take their derivative from one fused op (gelu_grad, silu_grad); the derivatives' own
 * gradients (second order: meta-learning through inner steps) are composed of ops, so every order works. */
VJP(gelu_vjp) { (void)needs; DONE(ttt_mul(ctx, G, ttt_gelu_grad(ctx, X))); }
VJP(silu_vjp) { (void)needs; DONE(ttt_mul(ctx, G, ttt_silu_grad(ctx, X))); }
VJP(gelu_grad_vjp) {
    (void)needs;
    /* y = 0.5 (1 + t) + 0.5 x s u', t = tanh(u), u = c (x + k x^3), u' = c (1 + 3 k x^2), s = 1 - t^2:
     * y' = s (u' + 3 c k x^2 - x t u'^2) */
    const double c = 0.7978845608028654, k = 0.044715;
    ttt_tensor *x = X, *x2 = ttt_mul(ctx, x, x);
    ttt_tensor *t = ttt_tanh(ctx, ttt_mul(ctx, x, affine(ctx, x2, c * k, c)));
    ttt_tensor *s = affine(ctx, ttt_mul(ctx, t, t), -1.0, 1.0), *du = affine(ctx, x2, 3.0 * c * k, c);
    ttt_tensor *inner = ttt_sub(ctx, affine(ctx, x2, 6.0 * c * k, c), ttt_mul(ctx, ttt_mul(ctx, x, t), ttt_mul(ctx, du, du)));
    DONE(ttt_mul(ctx, G, ttt_mul(ctx, s, inner)));
}
VJP(silu_grad_vjp) {
    (void)needs;
    /* y = s (1 + x (1 - s)): y' = s (1 - s) (2 + x (1 - 2 s)) */
    ttt_tensor *s = ttt_sigmoid(ctx, X);
    ttt_tensor *a = ttt_mul(ctx, s, affine(ctx, s, -1.0, 1.0));
    DONE(ttt_mul(ctx, G, ttt_mul(ctx, a, affine(ctx, ttt_mul(ctx, X, affine(ctx, s, -2.0, 1.0)), 1.0, 2.0))));
}
VJP(relu_vjp) { (void)needs; DONE(ttt_mul(ctx, G, mask_of(ctx, TTT_U_STEP, X, 0, 0))); }
VJP(sqrt_vjp) { (void)needs; DONE(ttt_div(ctx, ttt_scale(ctx, G, 0.5), Y)); }
VJP(rsqrt_vjp) { (void)needs; DONE(ttt_mul(ctx, G, ttt_scale(ctx, ttt_mul(ctx, Y, ttt_mul(ctx, Y, Y)), -0.5))); }
VJP(abs_vjp) { (void)needs; DONE(ttt_mul(ctx, G, ttt_sign(ctx, X))); }
VJP(pow_vjp) {
    (void)needs;
    double p = nd->fattr[0];
    if (p == 0.0) DONE(ttt_zeros_like(ctx, X));
    if (p == 1.0) DONE(G);
    DONE(ttt_mul(ctx, G, ttt_scale(ctx, ttt_pow(ctx, X, p - 1.0), p)));
}
VJP(clamp_vjp) { (void)needs; DONE(ttt_mul(ctx, G, mask_of(ctx, TTT_U_INRANGE, X, nd->fattr[0], nd->fattr[1]))); }
VJP(affine_vjp) { (void)needs; DONE(ttt_scale(ctx, G, nd->fattr[0])); }
VJP(elu1_vjp) {
    (void)needs;
    /* y' = 1 for x > 0, exp(x) = y otherwise: y + step(x) (1 - y) */
    ttt_tensor *m = mask_of(ctx, TTT_U_STEP, X, 0, 0);
    DONE(ttt_mul(ctx, G, ttt_add(ctx, Y, ttt_mul(ctx, m, affine(ctx, Y, -1.0, 1.0)))));
}

static ttt_tensor *affine(ttt_ctx *ctx, ttt_tensor *x, double a, double b) {
    return unary(ctx, "affine", TTT_U_AFFINE, x, a, b, affine_vjp);
}

ttt_tensor *ttt_neg(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "neg", TTT_U_NEG, x, 0, 0, neg_vjp); }
ttt_tensor *ttt_exp(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "exp", TTT_U_EXP, x, 0, 0, exp_vjp); }
ttt_tensor *ttt_log(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "log", TTT_U_LOG, x, 0, 0, log_vjp); }
ttt_tensor *ttt_tanh(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "tanh", TTT_U_TANH, x, 0, 0, tanh_vjp); }
ttt_tensor *ttt_sigmoid(ttt_ctx *ctx, ttt_tensor *x) {
    return unary(ctx, "sigmoid", TTT_U_SIGMOID, x, 0, 0, sigmoid_vjp);
}
ttt_tensor *ttt_gelu(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "gelu", TTT_U_GELU, x, 0, 0, gelu_vjp); }
ttt_tensor *ttt_silu(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "silu", TTT_U_SILU, x, 0, 0, silu_vjp); }
ttt_tensor *ttt_gelu_grad(ttt_ctx *ctx, ttt_tensor *x) {
    return unary(ctx, "gelu_grad", TTT_U_GELU_GRAD, x, 0, 0, gelu_grad_vjp);
}
ttt_tensor *ttt_silu_grad(ttt_ctx *ctx, ttt_tensor *x) {
    return unary(ctx, "silu_grad", TTT_U_SILU_GRAD, x, 0, 0, silu_grad_vjp);
}
ttt_tensor *ttt_relu(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "relu", TTT_U_RELU, x, 0, 0, relu_vjp); }
ttt_tensor *ttt_sqrt(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "sqrt", TTT_U_SQRT, x, 0, 0, sqrt_vjp); }
ttt_tensor *ttt_rsqrt(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "rsqrt", TTT_U_RSQRT, x, 0, 0, rsqrt_vjp); }
ttt_tensor *ttt_abs(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "abs", TTT_U_ABS, x, 0, 0, abs_vjp); }
ttt_tensor *ttt_sign(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "sign", TTT_U_SIGN, x, 0, 0, NULL); }
ttt_tensor *ttt_pow(ttt_ctx *ctx, ttt_tensor *x, double p) {
    return unary(ctx, "pow", TTT_U_POW, x, p, 0, pow_vjp);
}
ttt_tensor *ttt_clamp(ttt_ctx *ctx, ttt_tensor *x, double lo, double hi) {
    if (x && !(lo <= hi)) return ttt__set_error(ctx, "clamp: lo %g is above hi %g", lo, hi), NULL;
    return unary(ctx, "clamp", TTT_U_CLAMP, x, lo, hi, clamp_vjp);
}
ttt_tensor *ttt_scale(ttt_ctx *ctx, ttt_tensor *x, double a) { return affine(ctx, x, a, 0.0); }
ttt_tensor *ttt_add_scalar(ttt_ctx *ctx, ttt_tensor *x, double b) { return affine(ctx, x, 1.0, b); }
ttt_tensor *ttt_elu1(ttt_ctx *ctx, ttt_tensor *x) { return unary(ctx, "elu1", TTT_U_ELU1, x, 0, 0, elu1_vjp); }

/* ---- SwiGLU ------------------------------------------------------------------------- */

/* SwiGLU's gradient as a node (create_graph) and its second order. With s = sigmoid(a), s1 = silu'(a) and
 * s2 = silu''(a) = s (1 - s) (2 + a (1 - 2 s)), the first-order gradient (da, db) = (dy b s1, dy silu(a)) has
 * the VJP along u (of da) and v (of db)
 *   ga = u dy b s2 + v dy s1,   gb = u dy s1,   gdy = u b s1 + v silu(a):
 * one kernel (swiglu_bwd2) when grad mode is off, these ops otherwise (third order, or no kernel). */
VJP(swiglu_bwd_vjp) {
    ttt_tensor *a = nd->in[0], *b = nd->in[1], *dy = nd->in[2], *u = gout[0], *v = gout[1];
    if (ctx->be->swiglu_bwd2 && !ttt_grad_enabled(ctx) && !ctx->unfused) {
        ttt_tensor *ad = ttt__dense(ctx, a), *bd = ad ? ttt__dense(ctx, b) : NULL, *dyd = bd ? ttt__dense(ctx, dy) : NULL;
        ttt_tensor *ud = u && dyd ? ttt__dense(ctx, u) : NULL, *vd = v && dyd ? ttt__dense(ctx, v) : NULL;
        for (int i = 0; i < 3 && dyd; i++) gin[i] = needs[i] ? ttt__new_like(ctx, nd->in[i]) : NULL;
        if (!dyd || (u && !ud) || (v && !vd) || (needs[0] && !gin[0]) || (needs[1] && !gin[1]) || (needs[2] && !gin[2]))
            return TTT_ERR;
        if (ttt_numel(dyd) && ctx->be->swiglu_bwd2(ctx->bs, gin[0], gin[1], gin[2], ad, bd, dyd, ud, vd) != TTT_OK)
            return ttt__backend_failed(ctx, "swiglu (second order)");
        return TTT_OK;
    }
    ttt_tensor *s1 = ttt_silu_grad(ctx, a), *ga = NULL, *gb = NULL, *gdy = NULL;
    if (u) {
        ttt_tensor *s = ttt_sigmoid(ctx, a);
        ttt_tensor *s2 = ttt_mul(ctx, ttt_mul(ctx, s, affine(ctx, s, -1.0, 1.0)),
                                 affine(ctx, ttt_mul(ctx, a, affine(ctx, s, -2.0, 1.0)), 1.0, 2.0));
        ttt_tensor *udy = ttt_mul(ctx, u, dy);
        ga = ttt_mul(ctx, ttt_mul(ctx, udy, b), s2);
        gb = ttt_mul(ctx, udy, s1);
        gdy = ttt_mul(ctx, ttt_mul(ctx, u, b), s1);
    }
    if (v) {
        ttt_tensor *vga = ttt_mul(ctx, ttt_mul(ctx, v, dy), s1), *vgdy = ttt_mul(ctx, v, ttt_silu(ctx, a));
        ga = ga ? ttt_add(ctx, ga, vga) : vga;
        gdy = gdy ? ttt_add(ctx, gdy, vgdy) : vgdy;
    }
    ttt_tensor *g[3] = {ga, gb, gdy};
    for (int i = 0; i < 3; i++)
        if (needs[i] && !(gin[i] = g[i] ? g[i] : ttt_zeros_like(ctx, nd->in[i]))) return TTT_ERR;
    return TTT_OK;
}

/* da = (g b) silu'(a), db = g silu(a): the order of ttt_mul(ttt_silu(a), b)'s graph. Under create_graph with
 * the backend's second order, the fused first-order kernel recorded as a swiglu_backward node (above). */
VJP(swiglu_vjp) {
    ttt_tensor *a = nd->in[0], *b = nd->in[1];
    if (ctx->be->swiglu_bwd && ctx->be->swiglu_bwd2 && ttt_grad_enabled(ctx) && !ctx->unfused && !ctx->no_bwd_nodes) {
        ttt_tensor *gd = ttt_contiguous(ctx, G); /* differentiable: dy may depend on what is differentiated */
        ttt_tensor *ad = gd ? ttt__dense(ctx, a) : NULL, *bd = ad ? ttt__dense(ctx, b) : NULL;
        ttt_tensor *d[2] = {bd ? ttt__new_like(ctx, a) : NULL, bd ? ttt__new_like(ctx, b) : NULL};
        if (!d[0] || !d[1]) return TTT_ERR;
        if (ttt_numel(gd) && ctx->be->swiglu_bwd(ctx->bs, d[0], d[1], ad, bd, gd) != TTT_OK)
            return ttt__backend_failed(ctx, "swiglu (backward)");
        ttt_tensor *ins[3] = {a, b, gd};
        if (ttt__recording(ctx, 3, ins) && !ttt__record(ctx, "swiglu_backward", swiglu_bwd_vjp, 3, ins, 2, d))
            return TTT_ERR;
        gin[0] = needs[0] ? d[0] : NULL, gin[1] = needs[1] ? d[1] : NULL;
        return TTT_OK;
    }
    if (ctx->be->swiglu_bwd && !ttt_grad_enabled(ctx)) {
        /* first order only: one fused pass (create_graph needs the composed, differentiable form below) */
        ttt_tensor *gd = ttt__dense(ctx, G), *ad = gd ? ttt__dense(ctx, a) : NULL, *bd = ad ? ttt__dense(ctx, b) : NULL;
        ttt_tensor *da = bd && needs[0] ? ttt__new_like(ctx, a) : NULL, *db = bd && needs[1] ? ttt__new_like(ctx, b) : NULL;
        if (!bd || (needs[0] && !da) || (needs[1] && !db)) return TTT_ERR;
        if (ttt_numel(gd) && ctx->be->swiglu_bwd(ctx->bs, da, db, ad, bd, gd) != TTT_OK)
            return ttt__backend_failed(ctx, "swiglu (backward)");
        if (needs[0]) gin[0] = da;
        if (needs[1]) gin[1] = db;
        return TTT_OK;
    }
    if (needs[0] && !(gin[0] = ttt_mul(ctx, ttt_mul(ctx, G, b), ttt_silu_grad(ctx, a)))) return TTT_ERR;
    if (needs[1] && !(gin[1] = ttt_mul(ctx, G, ttt_silu(ctx, a)))) return TTT_ERR;
    return TTT_OK;
}

ttt_tensor *ttt_swiglu(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) {
    TTT_CHECK_NONNULL2(a, b);
    if (check_float_pair(ctx, "swiglu", a, b) != TTT_OK) return NULL;
    bool same = a->ndim == b->ndim;
    for (int i = 0; same && i < a->ndim; i++) same = a->shape[i] == b->shape[i];
    if (!same) {
        char sa[96], sb[96];
        return ttt__set_error(ctx, "swiglu: a %s and b %s must have one shape (no broadcasting)",
                              ttt_shape_str(a, sa, sizeof sa), ttt_shape_str(b, sb, sizeof sb)),
               NULL;
    }
    if (ctx->unfused) return ttt_mul(ctx, ttt_silu(ctx, a), b); /* TTT_FUSED=0: the composed ops */
    ttt_tensor *ad = ttt__dense(ctx, a), *bd = ad ? ttt__dense(ctx, b) : NULL, *out = bd ? ttt__new_like(ctx, a) : NULL;
    if (!out) return NULL;
    if (ttt_numel(out) && ctx->be->swiglu(ctx->bs, out, ad, bd) != TTT_OK) return ttt__backend_failed(ctx, "swiglu"), NULL;
    ttt_tensor *ins[2] = {a, b};
    if (ttt__recording(ctx, 2, ins) && !ttt__record(ctx, "swiglu", swiglu_vjp, 2, ins, 1, &out)) return NULL;
    return out;
}

/* ---- where ------------------------------------------------------------------------- */

VJP(where_vjp) {
    /* cond (input 0) carries no gradient; a gets g where cond, b the rest. */
    ttt_tensor *m = ttt_sign(ctx, ttt_abs(ctx, ttt_detach(ctx, nd->in[0]))); /* 0/1 */
    ttt_tensor *ga = ttt_mul(ctx, G, m);
    if (needs[1] && !(gin[1] = sum_to_like(ctx, ga, nd->in[1]))) return TTT_ERR;
    if (needs[2] && !(gin[2] = sum_to_like(ctx, ttt_sub(ctx, G, ga), nd->in[2]))) return TTT_ERR;
    if (needs[0] && !(gin[0] = ttt_zeros_like(ctx, nd->in[0]))) return TTT_ERR;
    return TTT_OK;
}

ttt_tensor *ttt_where(ttt_ctx *ctx, ttt_tensor *cond, ttt_tensor *a, ttt_tensor *b) {
    TTT_CHECK_NONNULL3(cond, a, b);
    if (check_float_pair(ctx, "where", a, b) != TTT_OK || check_float_pair(ctx, "where", cond, a) != TTT_OK)
        return NULL;
    int nd1, nd2;
    int64_t s1[TTT_MAX_DIMS], s2[TTT_MAX_DIMS];
    if (ttt__broadcast_shape(ctx, "where", a, b, &nd1, s1) != TTT_OK) return NULL;
    ttt_tensor ab = *a; /* shape carrier for the three-way broadcast */
    ab.ndim = nd1;
    for (int i = 0; i < nd1; i++) ab.shape[i] = s1[i];
    if (ttt__broadcast_shape(ctx, "where", cond, &ab, &nd2, s2) != TTT_OK) return NULL;
    ttt_tensor *out = ttt_new(ctx, a->dtype, nd2, s2);
    ttt_tensor *vc = out ? ttt__expanded_view(ctx, cond, nd2, s2) : NULL;
    ttt_tensor *va = vc ? ttt__expanded_view(ctx, a, nd2, s2) : NULL;
    ttt_tensor *vb = va ? ttt__expanded_view(ctx, b, nd2, s2) : NULL;
    if (!vb) return NULL;
    if (ttt_numel(out) && ctx->be->where(ctx->bs, out, vc, va, vb) != TTT_OK) return ttt__backend_failed(ctx, "where"), NULL;
    ttt_tensor *ins[3] = {cond, a, b};
    if (ttt__recording(ctx, 3, ins) && !ttt__record(ctx, "where", where_vjp, 3, ins, 1, &out)) return NULL;
    return out;
}

ttt_tensor *ttt_masked_fill(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *mask, double value) {
    TTT_CHECK_NONNULL2(x, mask);
    return ttt_where(ctx, mask, ttt_scalar(ctx, x->dtype, value), x);
}
