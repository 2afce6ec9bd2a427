/* Reductions: sum, mean, max over any set of axes; sum_to (reverse broadcast). */
#include "../core/internal.h"

/* Dense version of x for kernels that need contiguous input (no graph). */
ttt_tensor *ttt__dense(ttt_ctx *ctx, ttt_tensor *x) {
    if (!x || ttt_is_contiguous(x)) return x;
    ttt_tensor *c = ttt__new_like(ctx, x);
    if (!c) return NULL;
    if (ttt_numel(c) && ctx->be->copy(ctx->bs, c, x) != TTT_OK) return ttt__backend_failed(ctx, "contiguous"), NULL;
    return c;
}

/* Parse axes into a bitmask; n_axes == 0 means all. Returns -1 on error. */
static int axes_mask(ttt_ctx *ctx, const char *op, const ttt_tensor *x, int n_axes, const int *axes) {
    if (n_axes == 0) return (1 << x->ndim) - 1;
    if (n_axes < 0 || !axes) return ttt__set_error(ctx, "%s: bad axes list", op), -1;
    int mask = 0;
    for (int i = 0; i < n_axes; i++) {
        int a = ttt__norm_axis(ctx, op, axes[i], x->ndim);
        if (a < 0) return -1;
        if (mask & (1 << a)) return ttt__set_error(ctx, "%s: axis %d given twice", op, axes[i]), -1;
        mask |= 1 << a;
    }
    return mask;
}

static void keep_shape(const ttt_tensor *x, int mask, int64_t *shape) {
    for (int i = 0; i < x->ndim; i++) shape[i] = (mask & (1 << i)) ? 1 : x->shape[i];
}

/* Drop the reduced axes from a keepdim-shaped contiguous tensor, in place. */
static void squeeze_axes(ttt_tensor *t, int mask) {
    int k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (!(mask & (1 << i))) t->shape[k++] = t->shape[i];
    t->ndim = k;
    ttt__set_contiguous_strides(t);
}

static ttt_tensor *reduce(ttt_ctx *ctx, const char *op, ttt_reduce_op rop, ttt_tensor *x, int mask, int keepdim,
                          ttt_vjp_fn vjp) {
    if (!ttt__is_float(x->dtype))
        return ttt__set_error(ctx, "%s: dtype %s is not supported (use f32, f64 or bf16)", op, ttt_dtype_name(x->dtype)),
               NULL;
    int64_t shape[TTT_MAX_DIMS];
    keep_shape(x, mask, shape);
    if (rop == TTT_R_MAX)
        for (int i = 0; i < x->ndim; i++)
            if ((mask & (1 << i)) && x->shape[i] == 0)
                return ttt__set_error(ctx, "%s: cannot take the max over the empty axis %d", op, i), NULL;
    ttt_tensor *out = ttt_new(ctx, x->dtype, x->ndim, shape);
    ttt_tensor *xd = out ? ttt__dense(ctx, x) : NULL;
    if (!xd) return NULL;
    if (ttt_numel(out)) {
        if (ttt_numel(xd) == 0) {
            if (ttt_fill(ctx, out, 0.0) != TTT_OK) return NULL;
        } else if (ctx->be->reduce(ctx->bs, rop, out, xd) != TTT_OK) {
            return ttt__backend_failed(ctx, op), NULL;
        }
    }
    if (!keepdim) squeeze_axes(out, mask);
    if (ttt__recording(ctx, 1, &x)) {
        ttt_node *nd = ttt__record(ctx, op, vjp, 1, &x, 1, &out);
        if (!nd) return NULL;
        nd->iattr[0] = mask;
        nd->iattr[1] = keepdim;
    }
    return out;
}

/* g (shape of the reduced output) reshaped to keepdim form. */
static ttt_tensor *as_keepdim(ttt_ctx *ctx, ttt_tensor *g, const ttt_tensor *x, int mask) {
    int64_t shape[TTT_MAX_DIMS];
    keep_shape(x, mask, shape);
    return ttt_reshape(ctx, g, x->ndim, shape);
}

static int sum_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    (void)needs;
    ttt_tensor *x = nd->in[0];
    gin[0] = ttt_expand(ctx, as_keepdim(ctx, gout[0], x, (int)nd->iattr[0]), x->ndim, x->shape);
    return gin[0] ? TTT_OK : TTT_ERR;
}

static int max_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    (void)needs;
    ttt_tensor *x = nd->in[0];
    int mask = (int)nd->iattr[0];
    int axes[TTT_MAX_DIMS], n = 0;
    for (int i = 0; i < x->ndim; i++)
        if (mask & (1 << i)) axes[n++] = i;
    /* The maximising entries (ties share) form a constant mask. */
    ttt_tensor *xd = ttt_detach(ctx, x);
    ttt_tensor *mx = as_keepdim(ctx, ttt_detach(ctx, nd->out[0]), x, mask);
    ttt_tensor *hit = ttt_eq(ctx, xd, mx);
    ttt_tensor *share = ttt_div(ctx, hit, ttt_sum(ctx, hit, n, axes, 1));
    gin[0] = ttt_mul(ctx, as_keepdim(ctx, gout[0], x, mask), share);
    return gin[0] ? TTT_OK : TTT_ERR;
}

ttt_tensor *ttt_sum(ttt_ctx *ctx, ttt_tensor *x, int n_axes, const int *axes, int keepdim) {
    TTT_CHECK_NONNULL1(x);
    int mask = axes_mask(ctx, "sum", x, n_axes, axes);
    return mask < 0 ? NULL : reduce(ctx, "sum", TTT_R_SUM, x, mask, keepdim, sum_vjp);
}

ttt_tensor *ttt_max(ttt_ctx *ctx, ttt_tensor *x, int n_axes, const int *axes, int keepdim) {
    TTT_CHECK_NONNULL1(x);
    int mask = axes_mask(ctx, "max", x, n_axes, axes);
    return mask < 0 ? NULL : reduce(ctx, "max", TTT_R_MAX, x, mask, keepdim, max_vjp);
}

ttt_tensor *ttt_mean(ttt_ctx *ctx, ttt_tensor *x, int n_axes, const int *axes, int keepdim) {
    TTT_CHECK_NONNULL1(x);
    int mask = axes_mask(ctx, "mean", x, n_axes, axes);
    if (mask < 0) return NULL;
    int64_t count = 1;
    for (int i = 0; i < x->ndim; i++)
        if (mask & (1 << i)) count *= x->shape[i];
    if (count == 0) return ttt__set_error(ctx, "mean: reducing over zero elements"), NULL;
    return ttt_scale(ctx, reduce(ctx, "sum", TTT_R_SUM, x, mask, keepdim, sum_vjp), 1.0 / (double)count);
}

ttt_tensor *ttt_sum_to(ttt_ctx *ctx, ttt_tensor *x, int ndim, const int64_t *shape) {
    TTT_CHECK_NONNULL1(x);
    if (ndim > x->ndim || ndim < 0 || (ndim && !shape))
        return ttt__set_error(ctx, "sum_to: cannot sum a %d-d tensor to %d dims", x->ndim, ndim), NULL;
    int off = x->ndim - ndim, mask = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i < off) {
            mask |= 1 << i;
        } else if (shape[i - off] != x->shape[i]) {
            if (shape[i - off] != 1) {
                char s[96];
                return ttt__set_error(ctx, "sum_to: %s does not broadcast from size %lld at axis %d",
                                      ttt_shape_str(x, s, sizeof s), (long long)shape[i - off], i - off),
                       NULL;
            }
            mask |= 1 << i;
        }
    }
    if (!mask) return x;
    /* summing axes of size 1 changes no value: a reshape (the reduction kernels took 1.8 ms on an H200 for
     * TTT-E2E's [1, 1664, 768] weight gradients, a sum over one row) */
    bool ones = true;
    for (int i = 0; i < x->ndim && ones; i++)
        if (mask & (1 << i)) ones = x->shape[i] == 1;
    if (ones) return ttt_reshape(ctx, x, ndim, shape);
    return ttt_reshape(ctx, reduce(ctx, "sum", TTT_R_SUM, x, mask, 1, sum_vjp), ndim, shape);
}
