/* Tensor headers, creation, host transfer and shape helpers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

size_t ttt_dtype_size(ttt_dtype dt) {
    switch (dt) {
    case TTT_F32: return 4;
    case TTT_F64: return 8;
    case TTT_BF16: return 2;
    case TTT_I32: return 4;
    }
    return 0;
}

const char *ttt_dtype_name(ttt_dtype dt) {
    switch (dt) {
    case TTT_F32: return "f32";
    case TTT_F64: return "f64";
    case TTT_BF16: return "bf16";
    case TTT_I32: return "i32";
    }
    return "?";
}

bool ttt__is_float(ttt_dtype dt) { return dt == TTT_F32 || dt == TTT_F64 || dt == TTT_BF16; }

int64_t ttt_numel(const ttt_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int ttt_is_contiguous(const ttt_tensor *t) {
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != expect) return 0;
        expect *= t->shape[i];
    }
    return 1;
}

int ttt_same_shape(const ttt_tensor *a, const ttt_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

char *ttt_shape_str(const ttt_tensor *t, char *buf, size_t n) {
    size_t k = 0;
    if (n == 0) return buf;
    buf[0] = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

void ttt__set_contiguous_strides(ttt_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}

ttt_tensor *ttt__header(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > TTT_MAX_DIMS)
        return ttt__set_error(ctx, "tensor: ndim %d outside [0, %d]", ndim, TTT_MAX_DIMS), NULL;
    if ((unsigned)dt > TTT_I32) return ttt__set_error(ctx, "tensor: unknown dtype %d", (int)dt), NULL;
    if (ndim > 0 && !shape) return ttt__set_error(ctx, "tensor: shape is NULL"), NULL;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return ttt__set_error(ctx, "tensor: negative size %lld at axis %d", (long long)shape[i], i), NULL;
        if (shape[i] > 0 && n > INT64_MAX / 16 / shape[i])
            return ttt__set_error(ctx, "tensor: shape too large at axis %d", i), NULL;
        n *= shape[i];
    }
    ttt_tensor *t = ttt__meta_alloc(ctx, sizeof *t);
    if (!t) return NULL;
    t->dtype = dt;
    t->device = ctx->be->device;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    ttt__set_contiguous_strides(t);
    return t;
}

ttt_tensor *ttt_new(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape) {
    if (!ctx) return NULL;
    ttt_tensor *t = ttt__header(ctx, dt, ndim, shape);
    if (!t) return NULL;
    t->data = ttt__data_alloc(ctx, (size_t)ttt_numel(t) * ttt_dtype_size(dt));
    return t->data ? t : NULL;
}

ttt_tensor *ttt__new_like(ttt_ctx *ctx, const ttt_tensor *t) { return ttt_new(ctx, t->dtype, t->ndim, t->shape); }

ttt_tensor *ttt__view(ttt_ctx *ctx, const ttt_tensor *base) {
    ttt_tensor *v = ttt__meta_alloc(ctx, sizeof *v);
    if (!v) return NULL;
    *v = *base;
    v->node = NULL;
    v->out_index = 0;
    v->requires_grad = 0;
    v->persistent = 0;
    v->grad = NULL;
    return v;
}

ttt_tensor *ttt_full(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, double value) {
    ttt_tensor *t = ttt_new(ctx, dt, ndim, shape);
    if (t && ttt_fill(ctx, t, value) != TTT_OK) return NULL;
    return t;
}

ttt_tensor *ttt_zeros(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape) {
    return ttt_full(ctx, dt, ndim, shape, 0.0);
}

ttt_tensor *ttt_zeros_like(ttt_ctx *ctx, const ttt_tensor *t) {
    if (!t) return NULL;
    return ttt_zeros(ctx, t->dtype, t->ndim, t->shape);
}

ttt_tensor *ttt_scalar(ttt_ctx *ctx, ttt_dtype dt, double value) { return ttt_full(ctx, dt, 0, NULL, value); }

ttt_tensor *ttt_from_host(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, const void *host) {
    if (!host) return ttt__set_error(ctx, "ttt_from_host: host pointer is NULL"), NULL;
    ttt_tensor *t = ttt_new(ctx, dt, ndim, shape);
    if (!t) return NULL;
    if (ctx->be->upload(ctx->bs, t->data, host, (size_t)ttt_numel(t) * ttt_dtype_size(dt)) != TTT_OK) {
        ttt__backend_failed(ctx, "ttt_from_host");
        return NULL;
    }
    return t;
}

int ttt_fill(ttt_ctx *ctx, ttt_tensor *dst, double value) {
    if (!dst) return TTT_ERR;
    if (ttt_numel(dst) == 0) return TTT_OK;
    if (ctx->be->fill(ctx->bs, dst, value) != TTT_OK) return ttt__backend_failed(ctx, "ttt_fill");
    return TTT_OK;
}

int ttt_assign(ttt_ctx *ctx, ttt_tensor *dst, const ttt_tensor *src) {
    if (!dst || !src) return TTT_ERR;
    if (!ttt_same_shape(dst, src)) {
        char a[96], b[96];
        return ttt__set_error(ctx, "ttt_assign: destination %s and source %s differ in shape",
                              ttt_shape_str(dst, a, sizeof a), ttt_shape_str(src, b, sizeof b));
    }
    if (dst->device != src->device)
        return ttt__set_error(ctx, "ttt_assign: tensors are on different devices");
    if (ttt_numel(dst) == 0) return TTT_OK;
    if (ctx->be->copy(ctx->bs, dst, src) != TTT_OK) return ttt__backend_failed(ctx, "ttt_assign");
    return TTT_OK;
}

int ttt_copy_to_host(ttt_ctx *ctx, const ttt_tensor *t, void *host, ttt_dtype host_dt) {
    if (!t) return TTT_ERR;
    if (!host) return ttt__set_error(ctx, "ttt_copy_to_host: host pointer is NULL");
    const ttt_tensor *src = t;
    /* Bring the data into dense layout of host_dt on the device first, then download. */
    ttt_mark_t m = ttt_mark(ctx);
    if (!ttt_is_contiguous(t) || t->dtype != host_dt) {
        ttt_tensor *tmp = ttt_new(ctx, host_dt, t->ndim, t->shape);
        if (!tmp) return TTT_ERR;
        if (ttt_numel(t) && ctx->be->copy(ctx->bs, tmp, t) != TTT_OK) {
            ttt_release(ctx, m);
            return ttt__backend_failed(ctx, "ttt_copy_to_host");
        }
        src = tmp;
    }
    int rc = ctx->be->download(ctx->bs, host, src->data, (size_t)ttt_numel(t) * ttt_dtype_size(host_dt));
    ttt_release(ctx, m);
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "ttt_copy_to_host");
    return TTT_OK;
}

double ttt_item(ttt_ctx *ctx, const ttt_tensor *t) {
    if (!t) return NAN;
    if (ttt_numel(t) != 1) {
        char s[96];
        ttt__set_error(ctx, "ttt_item: tensor of shape %s has %lld elements, not 1", ttt_shape_str(t, s, sizeof s),
                       (long long)ttt_numel(t));
        return NAN;
    }
    double v;
    if (ttt_copy_to_host(ctx, t, &v, TTT_F64) != TTT_OK) return NAN;
    return v;
}

/* ---- random numbers: splitmix64 + Box-Muller, generated on the host --------- */

void ttt_manual_seed(ttt_ctx *ctx, uint64_t seed) { ctx->rng_state = seed; }

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

static ttt_tensor *random_tensor(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, int normal,
                                 double a, double b) {
    ttt_tensor *t = ttt_new(ctx, dt, ndim, shape);
    if (!t) return NULL;
    int64_t n = ttt_numel(t);
    double *host = malloc((size_t)(n ? n : 1) * sizeof *host);
    if (!host) return ttt__set_error(ctx, "out of host memory (random tensor)"), NULL;
    for (int64_t i = 0; i < n; i++) {
        if (normal) {
            double u1 = rng_uniform(&ctx->rng_state), u2 = rng_uniform(&ctx->rng_state);
            host[i] = b * sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2);
        } else {
            host[i] = a + (b - a) * rng_uniform(&ctx->rng_state);
        }
    }
    /* Upload as f64, convert on the device. */
    int64_t shp[TTT_MAX_DIMS];
    memcpy(shp, t->shape, sizeof shp);
    ttt_tensor *h = ttt_from_host(ctx, TTT_F64, ndim, shp, host);
    free(host);
    if (!h) return NULL;
    if (n && ctx->be->copy(ctx->bs, t, h) != TTT_OK) return ttt__backend_failed(ctx, "ttt_randn"), NULL;
    return t;
}

ttt_tensor *ttt_randn(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, double stddev) {
    return random_tensor(ctx, dt, ndim, shape, 1, 0.0, stddev);
}

ttt_tensor *ttt_rand(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, double lo, double hi) {
    return random_tensor(ctx, dt, ndim, shape, 0, lo, hi);
}

/* ---- shape helpers used by the ops ---------------------------------------------- */

int ttt__norm_axis(ttt_ctx *ctx, const char *op, int axis, int ndim) {
    int a = axis < 0 ? axis + ndim : axis;
    if (a < 0 || a >= ndim) {
        ttt__set_error(ctx, "%s: axis %d out of range for a %d-d tensor", op, axis, ndim);
        return -1;
    }
    return a;
}

int ttt__broadcast_shape(ttt_ctx *ctx, const char *op, const ttt_tensor *a, const ttt_tensor *b, int *ndim,
                         int64_t *shape) {
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < n; i++) {
        int ia = i - (n - a->ndim), ib = i - (n - b->ndim);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char x[96], y[96];
            return ttt__set_error(ctx, "%s: shapes %s and %s are not broadcastable", op,
                                  ttt_shape_str(a, x, sizeof x), ttt_shape_str(b, y, sizeof y));
        }
        shape[i] = sa == 1 ? sb : sa;
    }
    *ndim = n;
    return TTT_OK;
}

/* A view of t broadcast to shape (stride 0 on new or size-1 axes); no graph. */
ttt_tensor *ttt__expanded_view(ttt_ctx *ctx, const ttt_tensor *t, int ndim, const int64_t *shape) {
    ttt_tensor *v = ttt__view(ctx, t);
    if (!v) return NULL;
    int off = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int it = i - off;
        if (it >= 0 && t->shape[it] == shape[i]) {
            v->stride[i] = t->stride[it];
        } else {
            v->stride[i] = 0;
        }
        v->shape[i] = shape[i];
    }
    v->ndim = ndim;
    return v;
}
