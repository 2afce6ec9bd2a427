/* One MTTT-MLP inner step as one op (engine_private.h: ttt__mttt_mlp_step).
 *
 * THE STEP. Per (batch, head) pair, with the fast weights W = (W1 [d, F], b1 [1, F], W2 [F, d], b2 [1, d]),
 * the pair's m keys K [m, d], targets X [m, D], decoder G = gh[h] [D, d] and LN affine g, be = lng[h], lnb[h]:
 *   Z = K W1 + b1,  A = gelu(Z) (tanh form),  Y = A W2 + b2,  P = Y G^T                      [m, F] [m, d] [m, D]
 *   row by row: mu, r = 1 / sqrt(var(P) + eps), Xh = (P - mu) r,  dec = Xh o g + be   (no LN: dec = P)
 *   R = dec - X,  l = 1/(2m) sum ||R||^2
 *   W' = W - eta grad_W l, loss = sum over pairs of l (before the step).
 * The inner gradient (the forward kernel computes it directly):
 *   dDec = R / m, dXh = dDec o g, dP = r (dXh - mean(dXh) - Xh mean(dXh o Xh))   (no LN: dP = dDec)
 *   dY = dP G,  grad W2 = A^T dY, grad b2 = sum_i dY,  dZ = (dY W2^T) o gelu'(Z),
 *   grad W1 = K^T dZ, grad b1 = sum_i dZ.
 *
 * THE BACKWARD (the VJP of the step, second order in l). Given the cotangents U = (U1, u1, U2, u2) of W' and
 * lb of the loss, every input theta (W, K, X, G, g, be) gets
 *   d theta = [theta is W] U + d S / d theta,  S = lb l - eta <grad_W l, U> = lb l - eta lt,
 * where lt = <grad_W l, U> is the derivative of l along U (forward mode in W). So the kernel runs the
 * forward with tangents along U (suffix t; K, X, G, g, be have none), then reverse mode on S (suffix b: the
 * adjoint d S / d .). Hessian-vector products, gelu'' and the LN's second derivative all come out of these
 * two passes; no intermediate of the inner gradient is needed.
 * Tangents:
 *   Zt = K U1 + u1,  At = gelu'(Z) o Zt,  Yt = At W2 + A U2 + u2,  Pt = Yt G^T,
 *   Xht = J Pt = r (Pt - mean(Pt) - Xh c), c = mean(Pt o Xh)  (J = d Xh / d P = r (I - 1 1^T / D - Xh Xh^T / D),
 *   symmetric),  dect = Xht o g,  Rt = dect,  lt = 1/m sum <R, Rt>.
 * Adjoints (row i; sums over rows for g, be, G and the weights):
 *   Rb = (lb R - eta Rt) / m,  Rtb = -eta R / m,  Xb = -Rb                               (d S / d X)
 *   gb = sum_i Rb o Xh + Rtb o Xht,  beb = sum_i Rb,  Xhb = Rb o g,  T = Xhtb = Rtb o g
 *   through Xht = r (Pt - mean Pt) - r Xh c:
 *     Ptb = J T = r (T - mean(T) - Xh mean(T o Xh))
 *     Xhb += -r c T - r (sum_j T_j Xh_j) Pt / D                     (Xh directly, and through c)
 *     rb = sum_j T_j Xht_j / r                                      (r directly)
 *   through Xh = (P - mu) r (its usual VJP) and r's own adjoint (d r / d P = -r^2 Xh / D):
 *     Pb = r (Xhb - mean(Xhb) - Xh mean(Xhb o Xh)) - rb r^2 Xh / D
 *   (no LN: Pb = Rb, Ptb = Rtb)
 *   Yb = Pb G, Ytb = Ptb G,  Gb = Pb^T Y + Ptb^T Yt
 *   Ab = Yb W2^T + Ytb U2^T,  Atb = Ytb W2^T,  W2b = A^T Yb + At^T Ytb,  b2b = sum_i Yb
 *   Zb = Ab o gelu'(Z) + Atb o gelu''(Z) o Zt,  Ztb = Atb o gelu'(Z)
 *   Kb = Zb W1^T + Ztb U1^T,  W1b = K^T Zb,  b1b = sum_i Zb
 * with gelu''(z) = (1 - t^2) (u' + z/2 (u'' - 2 t u'^2)), t = tanh(u), u = c (z + k z^3), u' = c (1 + 3 k z^2),
 * u'' = 6 c k z. tests/test_mttt_fused.c checks all of it against the composed form (which differentiates
 * the ops above twice) and against finite differences of the fused forward.
 *
 * WHY RECOMPUTE. The backward kernel recomputes Z, A, Y, P and the LN statistics (about a ninth of its
 * arithmetic) rather than keeping them from the forward: m (F + D) values per pair would be written by every
 * forward and read back once, and the op's interface stays its inputs.
 *
 * ROUTES. The fused forward (backend.h: mttt_mlp_step) where the backend has it, the context is fused (not
 * TTT_FUSED=0) and, if a graph records, the backward kernel exists too; the node's VJP is one call of
 * mttt_mlp_step_bwd, or, when the gradient must itself be differentiable (grad mode on during the VJP:
 * create_graph, third order in l), the composed form recomputed on the node's inputs and differentiated, so
 * every order is exact. Everywhere else (no kernel, declined, TTT_FUSED=0) the op is the composed form: the
 * inner loss of ops, ttt_grad of it with create_graph while a graph records, W - eta grad. */
#include <math.h>

#include "core/internal.h"

enum { N_IN = 9 };

static ttt_tensor *recon_loss(ttt_ctx *ctx, ttt_tensor *const *w, ttt_tensor *k, ttt_tensor *xt, ttt_tensor *gh,
                              ttt_tensor *lng, ttt_tensor *lnb, double eps) {
    const int64_t m = k->shape[2];
    ttt_tensor *a = ttt_gelu(ctx, ttt_add(ctx, ttt_matmul(ctx, k, w[0], 0, 0), w[1]));
    ttt_tensor *dec = ttt_matmul(ctx, ttt_add(ctx, ttt_matmul(ctx, a, w[2], 0, 0), w[3]), gh, 0, 1);
    if (lng) dec = ttt_add(ctx, ttt_mul(ctx, ttt_layer_norm(ctx, dec, NULL, NULL, eps), lng), lnb);
    ttt_tensor *r = ttt_sub(ctx, dec, xt);
    return ttt_scale(ctx, ttt_sum(ctx, ttt_mul(ctx, r, r), 0, NULL, 0), 0.5 / (double)m);
}

int ttt__mttt_mlp_step_composed(ttt_ctx *ctx, ttt_tensor *const *w, ttt_tensor *k, ttt_tensor *xt, ttt_tensor *gh,
                                ttt_tensor *lng, ttt_tensor *lnb, double eta, double eps, ttt_tensor **w_out,
                                ttt_tensor **loss) {
    /* The inner loss always needs a graph to W; the step's outputs are differentiable (create_graph)
     * only while the caller records. A weight no graph reaches becomes a leaf of the inner graph. */
    const int create_graph = ttt_grad_enabled(ctx);
    ttt_tensor *wl[4], *g[4];
    for (int i = 0; i < 4; i++) {
        wl[i] = w[i];
        if (!w[i]->requires_grad) {
            if (!(wl[i] = ttt_detach(ctx, w[i]))) return TTT_ERR;
            ttt_set_requires_grad(wl[i], 1);
        }
    }
    ttt_grad_mode prev = ttt_grad_mode_set(ctx, 1);
    ttt_tensor *l = recon_loss(ctx, wl, k, xt, gh, lng, lnb, eps);
    int rc = l ? ttt_grad(ctx, 1, &l, NULL, 4, wl, g, create_graph) : TTT_ERR;
    ttt_grad_mode_restore(ctx, prev);
    if (rc != TTT_OK) return TTT_ERR;
    for (int i = 0; i < 4; i++)
        if (!(w_out[i] = ttt_sub(ctx, w[i], ttt_scale(ctx, g[i], eta)))) return TTT_ERR;
    *loss = l;
    return TTT_OK;
}

/* ---- checks -------------------------------------------------------------------------------------- */

static bool has_shape(const ttt_tensor *t, ttt_dtype dt, int ndim, const int64_t *shape) {
    if (t->dtype != dt || t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

static int bad(ttt_ctx *ctx, const char *what, const ttt_tensor *t, const char *want) {
    char s[96];
    return ttt__set_error(ctx, "mttt_mlp_step: %s %s %s must be %s", what, ttt_dtype_name(t->dtype),
                          ttt_shape_str(t, s, sizeof s), want);
}

static int check(ttt_ctx *ctx, ttt_tensor *const *x, double eta, double eps) {
    static const char *names[N_IN] = {"w1", "b1", "w2", "b2", "k", "xt", "gh", "lng", "lnb"};
    for (int i = 0; i < 7; i++)
        if (!x[i]) return ttt__set_error(ctx, "mttt_mlp_step: %s is NULL", names[i]);
    if (!x[7] != !x[8]) return ttt__set_error(ctx, "mttt_mlp_step: lng and lnb must both be given or both be NULL");
    ttt_tensor *k = x[4];
    if (k->ndim != 4 || (k->dtype != TTT_F32 && k->dtype != TTT_F64))
        return bad(ctx, "k", k, "f32 or f64 [B, H, m, d]");
    const ttt_dtype dt = k->dtype;
    const int64_t B = k->shape[0], H = k->shape[1], m = k->shape[2], d = k->shape[3];
    if (B < 1 || H < 1 || m < 1 || d < 1) return bad(ctx, "k", k, "[B, H, m, d] with every size >= 1");
    const int64_t F = x[0]->ndim == 4 ? x[0]->shape[3] : 0;
    if (F < 1 || !has_shape(x[0], dt, TTT_DIMS(B, H, d, F))) return bad(ctx, "w1", x[0], "of k's dtype and [B, H, d, F]");
    if (!has_shape(x[1], dt, TTT_DIMS(B, H, 1, F))) return bad(ctx, "b1", x[1], "of k's dtype and [B, H, 1, F]");
    if (!has_shape(x[2], dt, TTT_DIMS(B, H, F, d))) return bad(ctx, "w2", x[2], "of k's dtype and [B, H, F, d]");
    if (!has_shape(x[3], dt, TTT_DIMS(B, H, 1, d))) return bad(ctx, "b2", x[3], "of k's dtype and [B, H, 1, d]");
    const int64_t D = x[5]->ndim == 4 ? x[5]->shape[3] : 0;
    if (D < 1 || (!has_shape(x[5], dt, TTT_DIMS(B, 1, m, D)) && !has_shape(x[5], dt, TTT_DIMS(B, H, m, D))))
        return bad(ctx, "xt", x[5], "of k's dtype and [B, 1, m, D] or [B, H, m, D]");
    if (!has_shape(x[6], dt, TTT_DIMS(H, D, d))) return bad(ctx, "gh", x[6], "of k's dtype and [H, D, d]");
    for (int i = 7; i < N_IN; i++)
        if (x[i] && !has_shape(x[i], dt, TTT_DIMS(H, 1, D))) return bad(ctx, names[i], x[i], "of k's dtype and [H, 1, D]");
    for (int i = 0; i < N_IN; i++)
        if (x[i] && x[i]->device != k->device)
            return ttt__set_error(ctx, "mttt_mlp_step: %s is on another device than k", names[i]);
    if (!isfinite(eta)) return ttt__set_error(ctx, "mttt_mlp_step: eta %g must be finite", eta);
    if (!(eps >= 0) || !isfinite(eps)) return ttt__set_error(ctx, "mttt_mlp_step: eps %g must be finite and >= 0", eps);
    return TTT_OK;
}

/* ---- the fused route ------------------------------------------------------------------------------- */

/* The kernels' form of input i (no graph): a weight expanded over the batch (stride 0 in axis 0, the layer's
 * shared W_0 at step 0) as its [H, r, c] block, without a copy where that block is dense; k and xt (i = 4,
 * 5; q of the read-out, i = 4) as given where their last axis has unit stride (the kernels take their other
 * strides: the layer's k and q are permuted views, SGD's xt a slice); anything else dense. */
static ttt_tensor *kernel_arg(ttt_ctx *ctx, ttt_tensor *x, int i) {
    if (!x) return NULL;
    if ((i == 4 || i == 5) && x->stride[3] == 1 && x->stride[0] >= 0 && x->stride[1] >= 0 && x->stride[2] >= 0)
        return x;
    if (i < 4 && x->stride[0] == 0) {
        ttt_tensor *v = ttt__view(ctx, x);
        if (!v) return NULL;
        v->ndim = 3;
        for (int a = 0; a < 3; a++) v->shape[a] = x->shape[a + 1], v->stride[a] = x->stride[a + 1];
        return ttt__dense(ctx, v);
    }
    return ttt__dense(ctx, x);
}

static int kernel_args(ttt_ctx *ctx, ttt_tensor *const *x, ttt_tensor **kin) {
    for (int i = 0; i < N_IN; i++)
        if (!(kin[i] = kernel_arg(ctx, x[i], i)) && x[i]) return TTT_ERR;
    return TTT_OK;
}

/* node: in = w1, b1, w2, b2, k, xt, gh[, lng, lnb]; out = the four W', the loss (a scalar);
 * fattr = eta, eps */
static int step_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    const int n_in = nd->n_in;
    const double eta = nd->fattr[0], eps = nd->fattr[1];
    ttt_tensor *x[N_IN] = {0};
    for (int i = 0; i < n_in; i++) x[i] = nd->in[i];
    int any = 0;
    for (int i = 0; i < 5; i++) any |= gout[i] != NULL;
    if (!any) {
        for (int i = 0; i < n_in; i++)
            if (needs[i] && !(gin[i] = ttt_zeros_like(ctx, x[i]))) return TTT_ERR;
        return TTT_OK;
    }
    if (ttt_grad_enabled(ctx)) {
        /* create_graph: differentiate the composed form, recomputed on the same inputs */
        ttt_tensor *o[5], *outs[5], *gs[5], *targets[N_IN], *grads[N_IN];
        if (ttt__mttt_mlp_step_composed(ctx, x, x[4], x[5], x[6], x[7], x[8], eta, eps, o, &o[4])) return TTT_ERR;
        int n_out = 0, n = 0;
        for (int i = 0; i < 5; i++)
            if (gout[i]) outs[n_out] = o[i], gs[n_out++] = gout[i];
        for (int i = 0; i < n_in; i++)
            if (needs[i]) targets[n++] = x[i];
        if (n && ttt__grad(ctx, n_out, outs, gs, n, targets, grads, true, true) != TTT_OK) return TTT_ERR;
        for (int i = 0, j = 0; i < n_in; i++)
            if (needs[i]) gin[i] = grads[j++];
        return TTT_OK;
    }
    ttt_tensor *kin[N_IN];
    if (kernel_args(ctx, x, kin)) return TTT_ERR;
    ttt_tensor *k = x[4];
    const int64_t B = k->shape[0], H = k->shape[1], m = k->shape[2], d = k->shape[3], F = x[0]->shape[3];
    const int64_t D = x[5]->shape[3];
    const ttt_dtype dt = k->dtype;
    ttt_tensor *dw[4] = {NULL, NULL, NULL, NULL}, *dloss = NULL;
    for (int i = 0; i < 4; i++)
        if (gout[i] && !(dw[i] = ttt__dense(ctx, gout[i]))) return TTT_ERR;
    if (gout[4] && !(dloss = ttt__dense(ctx, ttt_expand(ctx, gout[4], TTT_DIMS(B, H))))) return TTT_ERR;
    const bool ln = x[7] != NULL;
    ttt_tensor *g[N_IN] = {ttt_new(ctx, dt, TTT_DIMS(B, H, d, F)), ttt_new(ctx, dt, TTT_DIMS(B, H, 1, F)),
                           ttt_new(ctx, dt, TTT_DIMS(B, H, F, d)), ttt_new(ctx, dt, TTT_DIMS(B, H, 1, d)),
                           ttt_new(ctx, dt, TTT_DIMS(B, H, m, d)), ttt_new(ctx, dt, TTT_DIMS(B, H, m, D)),
                           ttt_new(ctx, dt, TTT_DIMS(B, H, D, d)), ln ? ttt_new(ctx, dt, TTT_DIMS(B, H, 1, D)) : NULL,
                           ln ? ttt_new(ctx, dt, TTT_DIMS(B, H, 1, D)) : NULL};
    for (int i = 0; i < n_in; i++)
        if (!g[i]) return TTT_ERR;
    const int rc = ctx->be->mttt_mlp_step_bwd(ctx->bs, g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], dw[0], dw[1],
                                              dw[2], dw[3], dloss, kin[0], kin[1], kin[2], kin[3], kin[4], kin[5],
                                              kin[6], kin[7], kin[8], eta, eps);
    if (rc != TTT_OK) {
        if (rc == TTT_BACKEND_DECLINED) ttt_backend_error("the backward kernel declined what the forward took");
        return ttt__backend_failed(ctx, "mttt_mlp_step (backward)");
    }
    /* the weights and k are per pair as given; the rest are per-pair partial sums of what was shared */
    for (int i = 0; i < n_in; i++) {
        if (!needs[i]) continue;
        if (i < 5) gin[i] = g[i];
        else if (!(gin[i] = ttt_sum_to(ctx, g[i], x[i]->ndim, x[i]->shape))) return TTT_ERR;
    }
    return TTT_OK;
}

/* The kernel's forward, recorded where a graph records, or TTT_BACKEND_DECLINED with nothing left allocated. */
static int fused(ttt_ctx *ctx, ttt_tensor *const *x, int record, double eta, double eps, ttt_tensor **w_out,
                 ttt_tensor **loss) {
    const ttt_mark_t mark = ttt_mark(ctx);
    ttt_tensor *kin[N_IN];
    if (kernel_args(ctx, x, kin)) return TTT_ERR;
    ttt_tensor *k = x[4];
    const int64_t B = k->shape[0], H = k->shape[1], d = k->shape[3], F = x[0]->shape[3];
    const ttt_dtype dt = k->dtype;
    ttt_tensor *o[5] = {ttt_new(ctx, dt, TTT_DIMS(B, H, d, F)), ttt_new(ctx, dt, TTT_DIMS(B, H, 1, F)),
                        ttt_new(ctx, dt, TTT_DIMS(B, H, F, d)), ttt_new(ctx, dt, TTT_DIMS(B, H, 1, d)), NULL};
    ttt_tensor *pairs = ttt_new(ctx, dt, TTT_DIMS(B, H));
    for (int i = 0; i < 4; i++)
        if (!o[i]) return TTT_ERR;
    if (!pairs) return TTT_ERR;
    const int rc = ctx->be->mttt_mlp_step(ctx->bs, o[0], o[1], o[2], o[3], pairs, kin[0], kin[1], kin[2], kin[3], kin[4],
                                          kin[5], kin[6], kin[7], kin[8], eta, eps);
    if (rc == TTT_BACKEND_DECLINED) {
        ttt_release(ctx, mark);
        return TTT_BACKEND_DECLINED;
    }
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "mttt_mlp_step");
    ttt_no_grad_begin(ctx);
    o[4] = ttt_sum(ctx, pairs, 0, NULL, 0);
    ttt_no_grad_end(ctx);
    if (!o[4]) return TTT_ERR;
    if (record) {
        ttt_node *nd = ttt__record(ctx, "mttt_mlp_step", step_vjp, x[7] ? N_IN : 7, x, 5, o);
        if (!nd) return TTT_ERR;
        nd->fattr[0] = eta;
        nd->fattr[1] = eps;
    }
    for (int i = 0; i < 4; i++) w_out[i] = o[i];
    *loss = o[4];
    return TTT_OK;
}

int ttt__mttt_mlp_step(ttt_ctx *ctx, ttt_tensor *const *w, ttt_tensor *k, ttt_tensor *xt, ttt_tensor *gh, ttt_tensor *lng,
                       ttt_tensor *lnb, double eta, double eps, ttt_tensor **w_out, ttt_tensor **loss) {
    if (!ctx) return TTT_ERR;
    if (!w || !w_out || !loss) return ttt__set_error(ctx, "mttt_mlp_step: NULL weight or result pointer");
    w_out[0] = w_out[1] = w_out[2] = w_out[3] = *loss = NULL;
    ttt_tensor *x[N_IN] = {w[0], w[1], w[2], w[3], k, xt, gh, lng, lnb};
    if (check(ctx, x, eta, eps)) return TTT_ERR;
    const int record = ttt__recording(ctx, x[7] ? N_IN : 7, x);
    if (ttt__fused(ctx) && ctx->be->mttt_mlp_step && (!record || ctx->be->mttt_mlp_step_bwd)) { /* TTT_FUSED=0: composed */
        const int rc = fused(ctx, x, record, eta, eps, w_out, loss);
        if (rc != TTT_BACKEND_DECLINED) return rc;
    }
    return ttt__mttt_mlp_step_composed(ctx, w, k, xt, gh, lng, lnb, eta, eps, w_out, loss);
}

ttt_tensor *ttt__mttt_mlp_loss(ttt_ctx *ctx, ttt_tensor *const *w, ttt_tensor *k, ttt_tensor *xt, ttt_tensor *gh,
                               ttt_tensor *lng, ttt_tensor *lnb, double eps) {
    if (!ctx) return NULL;
    if (!w) return ttt__set_error(ctx, "mttt_mlp_loss: NULL weights"), NULL;
    ttt_tensor *x[N_IN] = {w[0], w[1], w[2], w[3], k, xt, gh, lng, lnb};
    if (check(ctx, x, 0, eps)) return NULL;
    if (ttt__recording(ctx, x[7] ? N_IN : 7, x) || !ttt__fused(ctx) || !ctx->be->mttt_mlp_step)
        return recon_loss(ctx, w, k, xt, gh, lng, lnb, eps);
    const ttt_mark_t mark = ttt_mark(ctx);
    ttt_tensor *kin[N_IN], *pairs = ttt_new(ctx, k->dtype, TTT_DIMS(k->shape[0], k->shape[1]));
    if (!pairs || kernel_args(ctx, x, kin)) return NULL;
    const int rc = ctx->be->mttt_mlp_step(ctx->bs, NULL, NULL, NULL, NULL, pairs, kin[0], kin[1], kin[2], kin[3], kin[4],
                                          kin[5], kin[6], kin[7], kin[8], 0, eps);
    if (rc == TTT_BACKEND_DECLINED) {
        ttt_release(ctx, mark);
        return recon_loss(ctx, w, k, xt, gh, lng, lnb, eps);
    }
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "mttt_mlp_step (loss)"), NULL;
    return ttt_sum(ctx, pairs, 0, NULL, 0); /* not recording: no graph */
}

/* ---- the read-out: out = gelu(q W1 + b1) W2 + b2 (engine_private.h: ttt__mttt_mlp_apply) ---------------------
 * First order by the backward kernel (recomputing gelu(q W1 + b1)); under create_graph the VJP differentiates
 * the composed form, as the step's does. */

ttt_tensor *ttt__mttt_mlp_apply_composed(ttt_ctx *ctx, ttt_tensor *const *w, ttt_tensor *q) {
    ttt_tensor *a = ttt_gelu(ctx, ttt_add(ctx, ttt_matmul(ctx, q, w[0], 0, 0), w[1]));
    return ttt_add(ctx, ttt_matmul(ctx, a, w[2], 0, 0), w[3]);
}

static int check_apply(ttt_ctx *ctx, ttt_tensor *const *x) {
    static const char *names[5] = {"w1", "b1", "w2", "b2", "q"};
    for (int i = 0; i < 5; i++)
        if (!x[i]) return ttt__set_error(ctx, "mttt_mlp_apply: %s is NULL", names[i]);
    ttt_tensor *q = x[4];
    char s[96];
    if (q->ndim != 4 || (q->dtype != TTT_F32 && q->dtype != TTT_F64) || ttt_numel(q) == 0)
        return ttt__set_error(ctx, "mttt_mlp_apply: q %s %s must be f32 or f64 [B, H, n, d], not empty",
                              ttt_dtype_name(q->dtype), ttt_shape_str(q, s, sizeof s));
    const int64_t B = q->shape[0], H = q->shape[1], d = q->shape[3], F = x[0]->ndim == 4 ? x[0]->shape[3] : 0;
    const int64_t want[4][4] = {{B, H, d, F}, {B, H, 1, F}, {B, H, F, d}, {B, H, 1, d}};
    for (int i = 0; i < 4; i++)
        if (F < 1 || !has_shape(x[i], q->dtype, 4, want[i]) || x[i]->device != q->device)
            return ttt__set_error(ctx, "mttt_mlp_apply: %s %s %s must be of q's dtype and device and [B, H, %s]",
                                  names[i], ttt_dtype_name(x[i]->dtype), ttt_shape_str(x[i], s, sizeof s),
                                  (const char *[]){"d, F", "1, F", "F, d", "1, d"}[i]);
    return TTT_OK;
}

/* node: in = w1, b1, w2, b2, q; out = the read-out */
static int apply_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    ttt_tensor *const *x = nd->in;
    if (!gout[0]) {
        for (int i = 0; i < 5; i++)
            if (needs[i] && !(gin[i] = ttt_zeros_like(ctx, x[i]))) return TTT_ERR;
        return TTT_OK;
    }
    if (ttt_grad_enabled(ctx)) { /* create_graph: differentiate the composed form, recomputed */
        ttt_tensor *o = ttt__mttt_mlp_apply_composed(ctx, x, x[4]), *targets[5], *grads[5];
        int n = 0;
        for (int i = 0; i < 5; i++)
            if (needs[i]) targets[n++] = x[i];
        if (!o || (n && ttt__grad(ctx, 1, &o, gout, n, targets, grads, true, true) != TTT_OK)) return TTT_ERR;
        for (int i = 0, j = 0; i < 5; i++)
            if (needs[i]) gin[i] = grads[j++];
        return TTT_OK;
    }
    ttt_tensor *kin[N_IN] = {0}, *dout = ttt__dense(ctx, gout[0]);
    if (!dout) return TTT_ERR;
    for (int i = 0; i < 5; i++)
        if (!(kin[i] = kernel_arg(ctx, x[i], i))) return TTT_ERR;
    ttt_tensor *g[5];
    for (int i = 0; i < 5; i++)
        if (!(g[i] = ttt__new_like(ctx, x[i]))) return TTT_ERR;
    const int rc = ctx->be->mttt_mlp_apply_bwd(ctx->bs, g[4], g[0], g[1], g[2], g[3], dout, kin[0], kin[1], kin[2], kin[3],
                                               kin[4]);
    if (rc != TTT_OK) {
        if (rc == TTT_BACKEND_DECLINED) ttt_backend_error("the backward kernel declined what the forward took");
        return ttt__backend_failed(ctx, "mttt_mlp_apply (backward)");
    }
    for (int i = 0; i < 5; i++) gin[i] = needs[i] ? g[i] : NULL;
    return TTT_OK;
}

ttt_tensor *ttt__mttt_mlp_apply(ttt_ctx *ctx, ttt_tensor *const *w, ttt_tensor *q) {
    if (!ctx) return NULL;
    if (!w) return ttt__set_error(ctx, "mttt_mlp_apply: NULL weights"), NULL;
    ttt_tensor *x[5] = {w[0], w[1], w[2], w[3], q};
    if (check_apply(ctx, x)) return NULL;
    const int record = ttt__recording(ctx, 5, x);
    if (ttt__fused(ctx) && ctx->be->mttt_mlp_apply && (!record || ctx->be->mttt_mlp_apply_bwd)) {
        const ttt_mark_t mark = ttt_mark(ctx);
        ttt_tensor *kin[5], *out = ttt__new_like(ctx, q);
        if (!out) return NULL;
        for (int i = 0; i < 5; i++)
            if (!(kin[i] = kernel_arg(ctx, x[i], i))) return NULL;
        const int rc = ctx->be->mttt_mlp_apply(ctx->bs, out, kin[0], kin[1], kin[2], kin[3], kin[4]);
        if (rc == TTT_OK) {
            if (record && !ttt__record(ctx, "mttt_mlp_apply", apply_vjp, 5, x, 1, &out)) return NULL;
            return out;
        }
        if (rc != TTT_BACKEND_DECLINED) return ttt__backend_failed(ctx, "mttt_mlp_apply"), NULL;
        ttt_release(ctx, mark);
    }
    return ttt__mttt_mlp_apply_composed(ctx, w, q);
}
