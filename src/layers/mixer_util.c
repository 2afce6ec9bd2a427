/* Pieces the sequence mixers share (see mixers_internal.h): padding, the chunk-state
 * scan, heads, the short convolution, norms and parameter setup. All composed of ops. */
#include <math.h>
#include <stdlib.h>

#include "mixers_internal.h"

int64_t ttt__mx_chunk_len(int64_t chunk, int64_t T) {
    int64_t c = 1;
    while (c < T && c < chunk) c *= 2;
    return c;
}

int ttt__mx_check_chunk(ttt_ctx *ctx, const char *fn, int64_t chunk) {
    if (chunk < 1 || (chunk & (chunk - 1)))
        return ttt__set_error(ctx, "%s: chunk %lld must be a power of two >= 1", fn, (long long)chunk);
    return TTT_OK;
}

ttt_tensor *ttt__mx_pad(ttt_ctx *ctx, ttt_tensor *x, int axis, int64_t n) {
    if (!x) return NULL;
    if (axis < 0) axis += x->ndim;
    if (x->shape[axis] >= n) return x;
    int64_t shape[TTT_MAX_DIMS];
    for (int a = 0; a < x->ndim; a++) shape[a] = x->shape[a];
    shape[axis] = n - x->shape[axis];
    ttt_tensor *parts[2] = {x, ttt_zeros(ctx, x->dtype, x->ndim, shape)};
    return ttt_concat(ctx, 2, parts, axis);
}

int ttt__mx_state_scan(ttt_ctx *ctx, ttt_tensor *A, ttt_tensor *B, ttt_tensor *s0, ttt_tensor **prev,
                       ttt_tensor **last) {
    if (!B || !s0) return TTT_ERR;
    const int64_t N = B->shape[2];
    ttt_tensor **before = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)N);
    if (!before) return ttt__set_error(ctx, "state scan: out of host memory for %lld chunks", (long long)N);
    ttt_tensor *S = ttt_reshape(ctx, s0, TTT_DIMS(s0->shape[0], s0->shape[1], 1, s0->shape[2], s0->shape[3]));
    for (int64_t c = 0; c < N && S; c++) {
        before[c] = S;
        ttt_tensor *Bc = ttt_slice(ctx, B, 2, c, c + 1, 1);
        ttt_tensor *Ac = A ? ttt_slice(ctx, A, 2, c, c + 1, 1) : NULL;
        if (Ac) S = Ac->shape[4] == 1 ? ttt_mul(ctx, Ac, S) : ttt_matmul(ctx, Ac, S, 0, 0);
        S = ttt_add(ctx, S, Bc);
    }
    if (!S) return TTT_ERR;
    *prev = N == 1 ? before[0] : ttt_concat(ctx, (int)N, before, 2);
    *last = ttt_reshape(ctx, S, s0->ndim, s0->shape);
    return *prev && *last ? TTT_OK : TTT_ERR;
}

ttt_tensor *ttt__mx_split_heads(ttt_ctx *ctx, ttt_tensor *x, int64_t heads) {
    static const int perm[4] = {0, 2, 1, 3};
    if (!x) return NULL;
    const int64_t B = x->shape[0], T = x->shape[1], F = x->shape[2];
    return ttt_permute(ctx, ttt_reshape(ctx, x, TTT_DIMS(B, T, heads, F / heads)), perm);
}

ttt_tensor *ttt__mx_merge_heads(ttt_ctx *ctx, ttt_tensor *o) {
    static const int perm[4] = {0, 2, 1, 3};
    if (!o) return NULL;
    const int64_t B = o->shape[0], H = o->shape[1], T = o->shape[2], d = o->shape[3];
    return ttt_reshape(ctx, ttt_permute(ctx, o, perm), TTT_DIMS(B, T, H * d));
}

ttt_tensor *ttt__mx_as(ttt_ctx *ctx, ttt_tensor *p, ttt_dtype dt) {
    return p && p->dtype != dt ? ttt_cast(ctx, p, dt) : p;
}

ttt_tensor *ttt__mx_linear(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *w) {
    return x ? ttt_matmul(ctx, x, ttt__mx_as(ctx, w, x->dtype), 0, 1) : NULL;
}

ttt_tensor *ttt__mx_l2norm(ttt_ctx *ctx, ttt_tensor *x, double eps) {
    const int last = -1;
    ttt_tensor *ss = ttt_sum(ctx, ttt_mul(ctx, x, x), 1, &last, 1);
    return ttt_mul(ctx, x, ttt_rsqrt(ctx, ttt_add_scalar(ctx, ss, eps)));
}

ttt_tensor *ttt__mx_softplus(ttt_ctx *ctx, ttt_tensor *x) {
    ttt_tensor *tail = ttt_log(ctx, ttt_add_scalar(ctx, ttt_exp(ctx, ttt_neg(ctx, ttt_abs(ctx, x))), 1.0));
    return ttt_add(ctx, ttt_relu(ctx, x), tail);
}

ttt_tensor *ttt__mx_short_conv(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *w, ttt_tensor *hist, ttt_tensor **hist_out) {
    if (!x || !w) return NULL;
    const int64_t B = x->shape[0], T = x->shape[1], C = x->shape[2], K = w->shape[1];
    w = ttt__mx_as(ctx, w, x->dtype);
    ttt_tensor *xp = x;
    if (K > 1) {
        if (!hist) hist = ttt_zeros(ctx, x->dtype, TTT_DIMS(B, K - 1, C));
        ttt_tensor *parts[2] = {ttt__mx_as(ctx, hist, x->dtype), x};
        xp = ttt_concat(ctx, 2, parts, 1);
    }
    ttt_tensor *y = NULL;
    for (int64_t j = 0; j < K; j++) {
        ttt_tensor *tap = ttt_reshape(ctx, ttt_slice(ctx, w, 1, j, j + 1, 1), TTT_DIMS(C));
        ttt_tensor *term = ttt_mul(ctx, ttt_slice(ctx, xp, 1, j, j + T, 1), tap);
        y = y ? ttt_add(ctx, y, term) : term;
    }
    if (hist_out) *hist_out = K > 1 ? ttt_slice(ctx, xp, 1, T, T + K - 1, 1) : NULL;
    return y;
}

ttt_tensor *ttt__mx_snapshot(ttt_ctx *ctx, const ttt_tensor *t, ttt_dtype dt) {
    if (!t) return NULL;
    ttt_tensor *c = ttt_new(ctx, dt, t->ndim, t->shape);
    return c && ttt_assign(ctx, c, t) == TTT_OK ? c : NULL;
}

int ttt__mx_param(ttt_ctx *ctx, ttt_tensor **p, ttt_dtype dt, int ndim, const int64_t *shape, const char *name,
                  double std, double lo, double hi) {
    *p = ttt_param(ctx, dt, ndim, shape, name);
    if (!*p) return TTT_ERR;
    if (std <= 0 && !(lo < hi)) return ttt_fill(ctx, *p, lo);
    ttt_mark_t m = ttt_mark(ctx);
    int rc = ttt_assign(ctx, *p, std > 0 ? ttt_randn(ctx, dt, ndim, shape, std) : ttt_rand(ctx, dt, ndim, shape, lo, hi));
    ttt_release(ctx, m);
    return rc;
}

int ttt__mx_zero_state(ttt_ctx *ctx, ttt_tensor **p, ttt_dtype dt, int ndim, const int64_t *shape, const char *name) {
    *p = ttt_persistent(ctx, dt, ndim, shape, name);
    return *p ? ttt_fill(ctx, *p, 0.0) : TTT_ERR;
}

int ttt__mx_check_x(ttt_ctx *ctx, const char *fn, const ttt_tensor *x, int64_t dim) {
    char s[96];
    if (!x) return TTT_ERR;
    if (x->ndim != 3 || x->shape[0] < 1 || x->shape[1] < 1 || x->shape[2] != dim)
        return ttt__set_error(ctx, "%s: input %s must be [B, T, %lld] with B, T >= 1", fn, ttt_shape_str(x, s, sizeof s),
                              (long long)dim);
    if (!ttt__is_float(x->dtype))
        return ttt__set_error(ctx, "%s: input must be a float tensor, not %s", fn, ttt_dtype_name(x->dtype));
    return TTT_OK;
}

int ttt__mx_init_gate(ttt_ctx *ctx, ttt_tensor *A_log, ttt_tensor *dt_bias) {
    ttt_mark_t m = ttt_mark(ctx);
    ttt_no_grad_begin(ctx);
    ttt_tensor *dt = ttt_maximum(ctx, ttt_exp(ctx, dt_bias), ttt_scalar(ctx, dt_bias->dtype, 1e-4));
    /* softplus^-1(dt) = dt + log(1 - exp(-dt)) */
    ttt_tensor *inv = ttt_add(ctx, dt, ttt_log(ctx, ttt_add_scalar(ctx, ttt_neg(ctx, ttt_exp(ctx, ttt_neg(ctx, dt))), 1.0)));
    int rc = ttt_assign(ctx, A_log, ttt_log(ctx, A_log));
    if (rc == TTT_OK) rc = ttt_assign(ctx, dt_bias, inv);
    ttt_no_grad_end(ctx);
    ttt_release(ctx, m);
    return rc;
}
