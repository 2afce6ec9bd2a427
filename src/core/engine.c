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
