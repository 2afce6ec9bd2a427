/* Backend work for the code above the ops (engine_private.h): it reaches the
 * context's backend instance here, so layers, data and optim need not know
 * struct ttt_ctx. */
#include "internal.h"

int ttt__upload(ttt_ctx *ctx, const char *op, ttt_tensor *dst, const void *host, size_t bytes) {
    if (ctx->be->upload(ctx->bs, dst->data, host, bytes) != TTT_OK) return ttt__backend_failed(ctx, op);
    return TTT_OK;
}

int ttt__scale_in_place(ttt_ctx *ctx, const char *op, ttt_tensor *t, double a) {
    if (ctx->be->unary(ctx->bs, TTT_U_AFFINE, t, t, a, 0.0) != TTT_OK) return ttt__backend_failed(ctx, op);
    return TTT_OK;
}

int ttt__adamw(ttt_ctx *ctx, ttt_tensor *p, const ttt_tensor *g, ttt_tensor *m, ttt_tensor *v, double lr,
               double beta1, double beta2, double eps, double weight_decay, int64_t step) {
    if (ctx->be->adamw(ctx->bs, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step) != TTT_OK)
        return ttt__backend_failed(ctx, "adamw");
    return TTT_OK;
}

int ttt__sgd(ttt_ctx *ctx, ttt_tensor *p, const ttt_tensor *g, ttt_tensor *buf, double lr, double momentum,
             double weight_decay, int nesterov) {
    if (ctx->be->sgd(ctx->bs, p, g, buf, lr, momentum, weight_decay, nesterov) != TTT_OK)
        return ttt__backend_failed(ctx, "sgd");
    return TTT_OK;
}

bool ttt__fused(const ttt_ctx *ctx) { return ctx && !ctx->unfused; }
void ttt__set_fused(ttt_ctx *ctx, bool on) {
    if (ctx) ctx->unfused = !on;
}
bool ttt__multi_tensor(const ttt_ctx *ctx) {
    return ttt__fused(ctx) && ctx->be->adamw_multi && ctx->be->sumsq_multi && ctx->be->scale_multi;
}

static bool one_dtype(int n, ttt_tensor *const *x) {
    for (int i = 1; i < n; i++)
        if (x[i]->dtype != x[0]->dtype) return false;
    return true;
}

int ttt__adamw_multi(ttt_ctx *ctx, int n, ttt_tensor *const *p, ttt_tensor *const *g, ttt_tensor *const *m,
                     ttt_tensor *const *v, const double *wd, double lr, double beta1, double beta2, double eps,
                     int64_t step) {
    if (n < 1) return TTT_OK;
    if (ttt__multi_tensor(ctx) && one_dtype(n, p)) {
        if (ctx->be->adamw_multi(ctx->bs, n, p, g, m, v, wd, lr, beta1, beta2, eps, step) != TTT_OK)
            return ttt__backend_failed(ctx, "adamw");
        return TTT_OK;
    }
    for (int i = 0; i < n; i++)
        if (ttt__adamw(ctx, p[i], g[i], m[i], v[i], lr, beta1, beta2, eps, wd[i], step) != TTT_OK) return TTT_ERR;
    return TTT_OK;
}

int ttt__scale_multi(ttt_ctx *ctx, const char *op, int n, ttt_tensor *const *x, double a) {
    if (n < 1) return TTT_OK;
    if (ttt__multi_tensor(ctx) && one_dtype(n, x)) {
        if (ctx->be->scale_multi(ctx->bs, n, x, a) != TTT_OK) return ttt__backend_failed(ctx, op);
        return TTT_OK;
    }
    for (int i = 0; i < n; i++)
        if (ttt__scale_in_place(ctx, op, x[i], a) != TTT_OK) return TTT_ERR;
    return TTT_OK;
}

int ttt__sumsq_multi(ttt_ctx *ctx, const char *op, int n, ttt_tensor *const *x, ttt_tensor **out) {
    *out = NULL;
    if (!ttt__multi_tensor(ctx))
        return ttt__set_error(ctx, "%s: the %s backend's multi-tensor entries are off or missing", op, ctx->be->name);
    if (n < 1 || !one_dtype(n, x)) return ttt__set_error(ctx, "%s: needs one or more tensors of one dtype", op);
    for (int i = 0; i < n; i++)
        if (!ttt__is_float(x[i]->dtype) || !ttt_is_contiguous(x[i]))
            return ttt__set_error(ctx, "%s: tensor %d is not a dense float tensor", op, i);
    ttt_tensor *dst = ttt_new(ctx, TTT_F64, 1, (const int64_t[]){1});
    if (!dst) return TTT_ERR;
    if (ctx->be->sumsq_multi(ctx->bs, dst, n, (const ttt_tensor *const *)x) != TTT_OK)
        return ttt__backend_failed(ctx, op);
    *out = dst;
    return TTT_OK;
}

int ttt__svd(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor **u, ttt_tensor **s, ttt_tensor **vt) {
    *u = *s = *vt = NULL;
    if (!a) return TTT_ERR;
    char sh[96];
    if (a->ndim != 2 || !ttt__is_float(a->dtype) || a->shape[0] < 1 || a->shape[1] < 1)
        return ttt__set_error(ctx, "svd: a %s %s must be a float matrix", ttt_dtype_name(a->dtype),
                              ttt_shape_str(a, sh, sizeof sh));
    if (!ctx->be->svd) return ttt__set_error(ctx, "svd: the %s backend has no SVD (a build without LAPACK)", ctx->be->name);
    /* the entry takes wide matrices: a tall a is done as a^T = u' s vt', a = vt'^T s u'^T */
    const int wide = a->shape[0] <= a->shape[1];
    ttt_no_grad_begin(ctx);
    ttt_tensor *w = ttt_contiguous(ctx, ttt_cast(ctx, wide ? a : ttt_transpose(ctx, a, 0, 1), TTT_F64));
    const int64_t m = w ? w->shape[0] : 0, n = w ? w->shape[1] : 0;
    ttt_tensor *U = w ? ttt_new(ctx, TTT_F64, TTT_DIMS(m, m)) : NULL, *S = U ? ttt_new(ctx, TTT_F64, TTT_DIMS(m)) : NULL;
    ttt_tensor *VT = S ? ttt_new(ctx, TTT_F64, TTT_DIMS(m, n)) : NULL;
    int rc = TTT_ERR;
    if (VT) {
        if (ctx->be->svd(ctx->bs, w, U, S, VT) != TTT_OK) ttt__backend_failed(ctx, "svd");
        else if (wide) *u = U, *s = S, *vt = VT, rc = TTT_OK;
        else {
            *u = ttt_contiguous(ctx, ttt_transpose(ctx, VT, 0, 1));
            *vt = ttt_contiguous(ctx, ttt_transpose(ctx, U, 0, 1));
            *s = S;
            rc = *u && *vt ? TTT_OK : TTT_ERR;
        }
    }
    ttt_no_grad_end(ctx);
    if (rc) *u = *s = *vt = NULL;
    return rc;
}
