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
