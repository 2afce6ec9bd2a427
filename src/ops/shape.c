/* Shape ops. reshape (of dense data), permute, slice and expand are views
 * that share data; concat, stack, contiguous, cast and slice_scatter copy. */
#include <string.h>

#include "../core/internal.h"

#define VJP(fn) static int fn(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin)

static ttt_tensor *record1(ttt_ctx *ctx, const char *op, ttt_vjp_fn vjp, ttt_tensor *x, ttt_tensor *out) {
    if (out && ttt__recording(ctx, 1, &x) && !ttt__record(ctx, op, vjp, 1, &x, 1, &out)) return NULL;
    return out;
}

/* ---- reshape ----------------------------------------------------------------------- */

VJP(reshape_vjp) {
    (void)needs;
    gin[0] = ttt_reshape(ctx, gout[0], nd->in[0]->ndim, nd->in[0]->shape);
    return gin[0] ? TTT_OK : TTT_ERR;
}

ttt_tensor *ttt_reshape(ttt_ctx *ctx, ttt_tensor *x, int ndim, const int64_t *shape) {
    TTT_CHECK_NONNULL1(x);
    if (ndim < 0 || ndim > TTT_MAX_DIMS || (ndim && !shape))
        return ttt__set_error(ctx, "reshape: bad target rank %d", ndim), NULL;
    int64_t sh[TTT_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        sh[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0) return ttt__set_error(ctx, "reshape: more than one -1 in the shape"), NULL;
            infer = i;
        } else if (shape[i] < 0) {
            return ttt__set_error(ctx, "reshape: negative size %lld", (long long)shape[i]), NULL;
        } else {
            known *= shape[i];
        }
    }
    int64_t n = ttt_numel(x);
    if (infer >= 0) {
        if (known == 0 || n % known) {
            char s[96];
            return ttt__set_error(ctx, "reshape: cannot infer -1 for %s", ttt_shape_str(x, s, sizeof s)), NULL;
        }
        sh[infer] = n / known;
        known = n;
    }
    if (known != n) {
        char s[96];
        return ttt__set_error(ctx, "reshape: %s has %lld elements; the target shape has %lld",
                              ttt_shape_str(x, s, sizeof s), (long long)n, (long long)known),
               NULL;
    }
    if (x->ndim == ndim && !memcmp(x->shape, sh, (size_t)ndim * sizeof *sh)) return x;
    ttt_tensor *d = ttt__dense(ctx, x);
    ttt_tensor *v = d ? ttt__view(ctx, d) : NULL;
    if (!v) return NULL;
    v->ndim = ndim;
    memcpy(v->shape, sh, sizeof sh);
    ttt__set_contiguous_strides(v);
    return record1(ctx, "reshape", reshape_vjp, x, v);
}

/* ---- permute / transpose -------------------------------------------------------------- */

VJP(permute_vjp) {
    (void)needs;
    int inv[TTT_MAX_DIMS];
    for (int i = 0; i < nd->in[0]->ndim; i++) inv[nd->iattr[i]] = i;
    gin[0] = ttt_permute(ctx, gout[0], inv);
    return gin[0] ? TTT_OK : TTT_ERR;
}

ttt_tensor *ttt_permute(ttt_ctx *ctx, ttt_tensor *x, const int *perm) {
    TTT_CHECK_NONNULL1(x);
    if (!perm) return ttt__set_error(ctx, "permute: perm is NULL"), NULL;
    int seen = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || (seen & (1 << perm[i])))
            return ttt__set_error(ctx, "permute: entry %d (= %d) does not make a permutation of %d axes", i, perm[i],
                                  x->ndim),
                   NULL;
        seen |= 1 << perm[i];
    }
    ttt_tensor *v = ttt__view(ctx, x);
    if (!v) return NULL;
    for (int i = 0; i < x->ndim; i++) {
        v->shape[i] = x->shape[perm[i]];
        v->stride[i] = x->stride[perm[i]];
    }
    v = record1(ctx, "permute", permute_vjp, x, v);
    if (v && v->node && v->node->in[0] == x)
        for (int i = 0; i < x->ndim; i++) v->node->iattr[i] = perm[i];
    return v;
}

ttt_tensor *ttt_transpose(ttt_ctx *ctx, ttt_tensor *x, int axis0, int axis1) {
    TTT_CHECK_NONNULL1(x);
    int a = ttt__norm_axis(ctx, "transpose", axis0, x->ndim), b = a < 0 ? -1 : ttt__norm_axis(ctx, "transpose", axis1, x->ndim);
    if (b < 0) return NULL;
    int perm[TTT_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) perm[i] = i;
    perm[a] = b;
    perm[b] = a;
    return ttt_permute(ctx, x, perm);
}

/* ---- slice / slice_scatter -------------------------------------------------------------- */

VJP(slice_vjp) {
    (void)needs;
    ttt_tensor *x = nd->in[0];
    gin[0] = ttt_slice_scatter(ctx, gout[0], x->ndim, x->shape, (int)nd->iattr[0], nd->iattr[1], nd->iattr[2]);
    return gin[0] ? TTT_OK : TTT_ERR;
}

bool ttt__slice_node(const ttt_node *nd, int *axis, int64_t *start, int64_t *step) {
    if (!nd || nd->vjp != slice_vjp) return false;
    *axis = (int)nd->iattr[0];
    *start = nd->iattr[1];
    *step = nd->iattr[2];
    return true;
}

ttt_tensor *ttt_slice(ttt_ctx *ctx, ttt_tensor *x, int axis, int64_t start, int64_t stop, int64_t step) {
    TTT_CHECK_NONNULL1(x);
    int a = ttt__norm_axis(ctx, "slice", axis, x->ndim);
    if (a < 0) return NULL;
    int64_t n = x->shape[a];
    if (step <= 0) return ttt__set_error(ctx, "slice: step %lld must be positive", (long long)step), NULL;
    if (start < 0) start += n;
    if (stop < 0) stop += n;
    if (stop > n) stop = n;
    if (start < 0 || start > n || stop < start)
        return ttt__set_error(ctx, "slice: range [%lld, %lld) is outside axis %d of size %lld", (long long)start,
                              (long long)stop, a, (long long)n),
               NULL;
    ttt_tensor *v = ttt__view(ctx, x);
    if (!v) return NULL;
    v->shape[a] = (stop - start + step - 1) / step;
    v->stride[a] = x->stride[a] * step;
    if (v->shape[a] > 0) v->data = (char *)x->data + (size_t)(start * x->stride[a]) * ttt_dtype_size(x->dtype);
    v = record1(ctx, "slice", slice_vjp, x, v);
    if (v && v->node && v->node->in[0] == x) {
        v->node->iattr[0] = a;
        v->node->iattr[1] = start;
        v->node->iattr[2] = step;
    }
    return v;
}

VJP(slice_scatter_vjp) {
    (void)needs;
    const ttt_tensor *src = nd->in[0];
    int64_t start = nd->iattr[1], step = nd->iattr[2];
    int a = (int)nd->iattr[0];
    gin[0] = ttt_slice(ctx, gout[0], a, start, start + (src->shape[a] - 1) * step + 1, step);
    return gin[0] ? TTT_OK : TTT_ERR;
}

int ttt__copy_into(ttt_ctx *ctx, ttt_tensor *dst, int axis, int64_t start, int64_t step, const ttt_tensor *src) {
    ttt_tensor *v = ttt__view(ctx, dst);
    if (!v) return TTT_ERR;
    v->shape[axis] = src->shape[axis];
    v->stride[axis] = dst->stride[axis] * step;
    v->data = (char *)dst->data + (size_t)(start * dst->stride[axis]) * ttt_dtype_size(dst->dtype);
    if (ttt_numel(src) && ctx->be->copy(ctx->bs, v, src) != TTT_OK) return ttt__backend_failed(ctx, "copy_into");
    return TTT_OK;
}

ttt_tensor *ttt_slice_scatter(ttt_ctx *ctx, ttt_tensor *src, int ndim, const int64_t *full_shape, int axis,
                              int64_t start, int64_t step) {
    TTT_CHECK_NONNULL1(src);
    if (ndim != src->ndim || !full_shape)
        return ttt__set_error(ctx, "slice_scatter: target rank %d differs from the source's %d", ndim, src->ndim),
               NULL;
    int a = ttt__norm_axis(ctx, "slice_scatter", axis, ndim);
    if (a < 0) return NULL;
    ttt_tensor *out = ttt_zeros(ctx, src->dtype, ndim, full_shape);
    if (!out) return NULL;
    int64_t last = start + (src->shape[a] - 1) * step;
    for (int i = 0; i < ndim; i++)
        if (i != a && full_shape[i] != src->shape[i]) {
            char s[96];
            return ttt__set_error(ctx, "slice_scatter: source %s does not fit the target at axis %d",
                                  ttt_shape_str(src, s, sizeof s), i),
                   NULL;
        }
    if (step <= 0 || start < 0 || (src->shape[a] > 0 && last >= full_shape[a]))
        return ttt__set_error(ctx, "slice_scatter: slice start %lld step %lld x %lld does not fit size %lld",
                              (long long)start, (long long)step, (long long)src->shape[a], (long long)full_shape[a]),
               NULL;
    if (ttt__copy_into(ctx, out, a, start, step, src) != TTT_OK) return NULL;
    out = record1(ctx, "slice_scatter", slice_scatter_vjp, src, out);
    if (out && out->node && out->node->in[0] == src) {
        out->node->iattr[0] = a;
        out->node->iattr[1] = start;
        out->node->iattr[2] = step;
    }
    return out;
}

/* ---- expand -------------------------------------------------------------------------------- */

VJP(expand_vjp) {
    (void)needs;
    gin[0] = ttt_sum_to(ctx, gout[0], nd->in[0]->ndim, nd->in[0]->shape);
    return gin[0] ? TTT_OK : TTT_ERR;
}

ttt_tensor *ttt_expand(ttt_ctx *ctx, ttt_tensor *x, int ndim, const int64_t *shape) {
    TTT_CHECK_NONNULL1(x);
    if (ndim < x->ndim || ndim > TTT_MAX_DIMS || (ndim && !shape))
        return ttt__set_error(ctx, "expand: cannot expand a %d-d tensor to %d dims", x->ndim, ndim), NULL;
    int off = ndim - x->ndim;
    for (int i = 0; i < x->ndim; i++)
        if (x->shape[i] != 1 && x->shape[i] != shape[i + off]) {
            char s[96];
            return ttt__set_error(ctx, "expand: %s cannot expand to size %lld at axis %d",
                                  ttt_shape_str(x, s, sizeof s), (long long)shape[i + off], i + off),
                   NULL;
        }
    if (ndim == x->ndim && !memcmp(x->shape, shape, (size_t)ndim * sizeof *shape)) return x;
    return record1(ctx, "expand", expand_vjp, x, ttt__expanded_view(ctx, x, ndim, shape));
}

/* ---- contiguous / cast ---------------------------------------------------------------------- */

VJP(identity_vjp) {
    (void)ctx;
    (void)nd;
    (void)needs;
    gin[0] = gout[0];
    return TTT_OK;
}

ttt_tensor *ttt_contiguous(ttt_ctx *ctx, ttt_tensor *x) {
    TTT_CHECK_NONNULL1(x);
    if (ttt_is_contiguous(x)) return x;
    return record1(ctx, "contiguous", identity_vjp, x, ttt__dense(ctx, x));
}

VJP(cast_vjp) {
    (void)needs;
    gin[0] = ttt_cast(ctx, gout[0], nd->in[0]->dtype);
    return gin[0] ? TTT_OK : TTT_ERR;
}

ttt_tensor *ttt_cast(ttt_ctx *ctx, ttt_tensor *x, ttt_dtype dt) {
    TTT_CHECK_NONNULL1(x);
    if ((unsigned)dt > TTT_I32) return ttt__set_error(ctx, "cast: unknown dtype %d", (int)dt), NULL;
    if (x->dtype == dt) return x;
    ttt_tensor *out = ttt_new(ctx, dt, x->ndim, x->shape);
    if (!out) return NULL;
    if (ttt_numel(out) && ctx->be->copy(ctx->bs, out, x) != TTT_OK) return ttt__backend_failed(ctx, "cast"), NULL;
    /* Gradients flow between float types only. */
    if (ttt__is_float(dt) && ttt__is_float(x->dtype)) return record1(ctx, "cast", cast_vjp, x, out);
    return out;
}

/* ---- concat / stack --------------------------------------------------------------------------- */

VJP(concat_vjp) {
    int a = (int)nd->iattr[0];
    int64_t off = 0;
    for (int i = 0; i < nd->n_in; i++) {
        int64_t len = nd->in[i]->shape[a];
        if (needs[i] && !(gin[i] = ttt_slice(ctx, gout[0], a, off, off + len, 1))) return TTT_ERR;
        off += len;
    }
    return TTT_OK;
}

ttt_tensor *ttt_concat(ttt_ctx *ctx, int n, ttt_tensor *const *xs, int axis) {
    if (n <= 0 || !xs) return ttt__set_error(ctx, "concat: no tensors given"), NULL;
    for (int i = 0; i < n; i++)
        if (!xs[i]) return NULL;
    int a = ttt__norm_axis(ctx, "concat", axis, xs[0]->ndim);
    if (a < 0) return NULL;
    int64_t shape[TTT_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    shape[a] = 0;
    for (int i = 0; i < n; i++) {
        bool ok = xs[i]->ndim == xs[0]->ndim && xs[i]->dtype == xs[0]->dtype && xs[i]->device == xs[0]->device;
        for (int d = 0; ok && d < xs[0]->ndim; d++) ok = d == a || xs[i]->shape[d] == xs[0]->shape[d];
        if (!ok) {
            char s0[96], si[96];
            return ttt__set_error(ctx, "concat: tensor %d (%s %s) does not match tensor 0 (%s %s) off axis %d", i,
                                  ttt_dtype_name(xs[i]->dtype), ttt_shape_str(xs[i], si, sizeof si),
                                  ttt_dtype_name(xs[0]->dtype), ttt_shape_str(xs[0], s0, sizeof s0), a),
                   NULL;
        }
        shape[a] += xs[i]->shape[a];
    }
    ttt_tensor *out = ttt_new(ctx, xs[0]->dtype, xs[0]->ndim, shape);
    if (!out) return NULL;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        ttt_tensor *v = ttt__view(ctx, out);
        if (!v) return NULL;
        v->shape[a] = xs[i]->shape[a];
        v->data = (char *)out->data + (size_t)(off * out->stride[a]) * ttt_dtype_size(out->dtype);
        if (ttt_numel(v) && ctx->be->copy(ctx->bs, v, xs[i]) != TTT_OK) return ttt__backend_failed(ctx, "concat"), NULL;
        off += xs[i]->shape[a];
    }
    if (ttt__recording(ctx, n, xs)) {
        ttt_node *nd = ttt__record(ctx, "concat", concat_vjp, n, xs, 1, &out);
        if (!nd) return NULL;
        nd->iattr[0] = a;
    }
    return out;
}

ttt_tensor *ttt_stack(ttt_ctx *ctx, int n, ttt_tensor *const *xs, int axis) {
    if (n <= 0 || !xs) return ttt__set_error(ctx, "stack: no tensors given"), NULL;
    for (int i = 0; i < n; i++)
        if (!xs[i]) return NULL;
    int nd = xs[0]->ndim + 1;
    int a = ttt__norm_axis(ctx, "stack", axis, nd);
    if (a < 0) return NULL;
    ttt_tensor **parts = ttt__meta_alloc(ctx, (size_t)n * sizeof *parts);
    if (!parts) return NULL;
    for (int i = 0; i < n; i++) {
        if (!ttt_same_shape(xs[i], xs[0])) {
            char s0[96], si[96];
            return ttt__set_error(ctx, "stack: tensor %d %s differs in shape from tensor 0 %s", i,
                                  ttt_shape_str(xs[i], si, sizeof si), ttt_shape_str(xs[0], s0, sizeof s0)),
                   NULL;
        }
        int64_t shape[TTT_MAX_DIMS];
        for (int d = 0, k = 0; d < nd; d++) shape[d] = d == a ? 1 : xs[i]->shape[k++];
        if (!(parts[i] = ttt_reshape(ctx, xs[i], nd, shape))) return NULL;
    }
    return ttt_concat(ctx, n, parts, a);
}
