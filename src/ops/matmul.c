/* Batched matrix product with transpose flags and broadcasting batch axes. */
#include <string.h>

#include "../core/internal.h"

/* A view of x usable by the kernel: unit stride in the last axis (a
 * transposed view is handled by flipping *trans instead of copying), batch
 * axes expanded to the output's. */
static ttt_tensor *kernel_view(ttt_ctx *ctx, ttt_tensor *x, int *trans, int nd, const int64_t *out_shape) {
    int l = x->ndim - 1;
    ttt_tensor *v = ttt__view(ctx, x);
    if (!v) return NULL;
    if (x->stride[l] != 1 && x->shape[l] != 1) {
        if (x->stride[l - 1] == 1 || x->shape[l - 1] == 1) {
            /* Column-major storage: it is the transpose of a row-major matrix. */
            v->shape[l] = x->shape[l - 1];
            v->shape[l - 1] = x->shape[l];
            v->stride[l] = x->stride[l - 1];
            v->stride[l - 1] = x->stride[l];
            if (v->shape[l] == 1) v->stride[l] = 1;
            *trans = !*trans;
        } else {
            ttt_tensor *d = ttt__dense(ctx, x);
            if (!d || !(v = ttt__view(ctx, d))) return NULL;
        }
    }
    if (v->shape[l] == 1) v->stride[l] = 1;
    /* Rows sharing memory (an expanded vector, row stride 0) have no BLAS
     * leading dimension: give the kernel a dense copy. */
    if (v->ndim >= 2 && v->shape[l - 1] > 1 && v->stride[l - 1] < v->shape[l]) {
        ttt_tensor *d = ttt__dense(ctx, v);
        if (!d) return NULL;
        v = d;
    }
    /* Expand batch axes; keep the matrix axes. */
    int64_t shape[TTT_MAX_DIMS];
    memcpy(shape, out_shape, (size_t)nd * sizeof *shape);
    shape[nd - 2] = v->shape[l - 1];
    shape[nd - 1] = v->shape[l];
    return ttt__expanded_view(ctx, v, nd, shape);
}

static int matmul_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    ttt_tensor *a = nd->in[0], *b = nd->in[1], *g = gout[0];
    int ta = (int)nd->iattr[0], tb = (int)nd->iattr[1];
    ttt_tensor *ga = NULL, *gb = NULL;
    if (needs[0]) {
        if (!ta) ga = tb ? ttt_matmul(ctx, g, b, 0, 0) : ttt_matmul(ctx, g, b, 0, 1);
        else ga = tb ? ttt_matmul(ctx, b, g, 1, 1) : ttt_matmul(ctx, b, g, 0, 1);
        if (!(gin[0] = ttt_sum_to(ctx, ga, a->ndim, a->shape))) return TTT_ERR;
    }
    if (needs[1]) {
        if (!tb) gb = ta ? ttt_matmul(ctx, a, g, 0, 0) : ttt_matmul(ctx, a, g, 1, 0);
        else gb = ta ? ttt_matmul(ctx, g, a, 1, 1) : ttt_matmul(ctx, g, a, 1, 0);
        if (!(gin[1] = ttt_sum_to(ctx, gb, b->ndim, b->shape))) return TTT_ERR;
    }
    return TTT_OK;
}

ttt_tensor *ttt_matmul(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b, int trans_a, int trans_b) {
    TTT_CHECK_NONNULL2(a, b);
    char sa[96], sb[96];
    if (a->ndim < 2 || b->ndim < 2)
        return ttt__set_error(ctx, "matmul: operands need at least 2 dims, got %s and %s", ttt_shape_str(a, sa, sizeof sa),
                              ttt_shape_str(b, sb, sizeof sb)),
               NULL;
    if (a->dtype != b->dtype || !ttt__is_float(a->dtype) || a->device != b->device)
        return ttt__set_error(ctx, "matmul: operands must share a float dtype and device (got %s and %s)",
                              ttt_dtype_name(a->dtype), ttt_dtype_name(b->dtype)),
               NULL;
    int64_t m = trans_a ? a->shape[a->ndim - 1] : a->shape[a->ndim - 2];
    int64_t ka = trans_a ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    int64_t kb = trans_b ? b->shape[b->ndim - 1] : b->shape[b->ndim - 2];
    int64_t n = trans_b ? b->shape[b->ndim - 2] : b->shape[b->ndim - 1];
    if (ka != kb)
        return ttt__set_error(ctx, "matmul: inner sizes differ: %s%s (K=%lld) and %s%s (K=%lld)",
                              ttt_shape_str(a, sa, sizeof sa), trans_a ? "^T" : "", (long long)ka,
                              ttt_shape_str(b, sb, sizeof sb), trans_b ? "^T" : "", (long long)kb),
               NULL;
    /* A batch of rows times one matrix ([..., M, K] x [K, N], a linear layer)
     * is one matrix product of the rows flattened: a single large GEMM instead
     * of a strided batch of small ones, and, above all, a gradient of b that is
     * one GEMM contracting over every row instead of a batch of [K, N]
     * products summed afterwards (which, for a vocabulary-sized b, writes and
     * reads batch x K x N elements). */
    if (b->ndim == 2 && a->ndim > 2 && !trans_a) {
        int64_t rows = 1, oshape[TTT_MAX_DIMS];
        for (int i = 0; i < a->ndim - 1; i++) rows *= a->shape[i], oshape[i] = a->shape[i];
        oshape[a->ndim - 1] = n;
        if (rows > 0) {
            ttt_tensor *a2 = ttt_reshape(ctx, a, TTT_DIMS(rows, ka));
            return ttt_reshape(ctx, ttt_matmul(ctx, a2, b, 0, trans_b), a->ndim, oshape);
        }
    }
    /* Broadcast the batch axes. */
    ttt_tensor ba = *a, bb = *b;
    ba.ndim -= 2;
    bb.ndim -= 2;
    int nb;
    int64_t shape[TTT_MAX_DIMS];
    if (ttt__broadcast_shape(ctx, "matmul (batch axes)", &ba, &bb, &nb, shape) != TTT_OK) return NULL;
    shape[nb] = m;
    shape[nb + 1] = n;
    int nd = nb + 2;
    ttt_tensor *out = ttt_new(ctx, a->dtype, nd, shape);
    if (!out) return NULL;
    if (ttt_numel(out)) {
        int ta = trans_a, tb = trans_b;
        ttt_tensor *va = kernel_view(ctx, a, &ta, nd, shape);
        ttt_tensor *vb = va ? kernel_view(ctx, b, &tb, nd, shape) : NULL;
        if (!vb) return NULL;
        if (ctx->be->matmul(ctx->bs, out, va, vb, ta, tb) != TTT_OK) return ttt__backend_failed(ctx, "matmul"), NULL;
    }
    ttt_tensor *ins[2] = {a, b};
    if (ttt__recording(ctx, 2, ins)) {
        ttt_node *node = ttt__record(ctx, "matmul", matmul_vjp, 2, ins, 1, &out);
        if (!node) return NULL;
        node->iattr[0] = trans_a;
        node->iattr[1] = trans_b;
    }
    return out;
}
