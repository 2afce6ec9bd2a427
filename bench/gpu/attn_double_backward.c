/* attn_double_backward: the double backward of causal attention, timed, and
 * checked.
 *
 * TTT-E2E's outer loop differentiates through an inner gradient step, so it
 * needs d/dtheta of the first-order gradients (dL/dq, dL/dk, dL/dv) of
 * attention. This program builds, on [B, H, T, d] tensors,
 *
 *   out        = ttt_attention(q, k, v, causal = 1, window, scale)
 *   L          = sum(out * w)                                 w fixed, random
 *   dq, dk, dv = ttt_grad(L -> q, k, v, create_graph = 1)
 *   S          = sum(dq * u1) + sum(dk * u2) + sum(dv * u3)   u fixed, random
 *   hq, hk, hv = ttt_grad(S -> q, k, v)                       the double backward
 *
 * and prints the median time of the whole (forward + first backward + double
 * backward, synchronized by reading one element back) as a csv line:
 *
 *   csv,impl,dtype,device,B,H,T,d,window,ms,gflop,tflops,mem_gb
 *
 * gflop is the roofline count: a causal forward is 2 products of 2 d flops per
 * visible query-key pair (4 B H d pairs, as in bench/gpu/attention_bench.py);
 * the first backward is 4 products, the double backward 8 (the 4 products of
 * the backward each need 1 or 2 more for q, k and v, and QK^T 2), so the whole
 * is 14 products = 7 x the forward. mem_gb: the data arenas held at the end.
 *
 * --check: at a tiny size on the chosen device, in float64, each of hq, hk,
 *   hv is compared element by element with central finite differences of S
 *   computed from first-order gradients (no create_graph), for windows 0 and 3
 *   (or --window). Then the timed dtype (f32 by default; on CUDA that is the
 *   fused forward whose create_graph VJP differentiates the composed path) is
 *   compared with the float64 result. Exit status 1 on a mismatch.
 * --fixture PATH: compare with PyTorch's float64 math-backend values written by
 *   bench/gpu/torch_double_backward.py --check PATH (safetensors, read with
 *   ttt_load_safetensors; needs a build with json-c).
 * --first-order: time forward + first backward only (no create_graph), the
 *   baseline the double backward is measured against (issue 13: <= 4x).
 * --label NAME: the csv's impl field (default ttt), e.g. to tell runs with
 *   TTT_ATTN_BWD2_BF16=0 (bf16 through the composed path, cast to f32) apart.
 * --vs-f32: bf16 against f32 from the same (bf16-rounded) values, on the chosen
 *   device, at a few shapes (causal, windows, d 64 and 128, lengths off the
 *   tiles; --T, --dim, --window add one): first- and second-order gradients as
 *   max |bf16 - f32| / max |f32| (the largest over dq, dk and dv of that order:
 *   dq at window 1 is zero but for rounding), within 3e-2. On CUDA the f32 side is the fused
 *   f32 kernels, the bf16 side the bf16 kernels (attention_bwd2_bf16.cuh) unless
 *   TTT_ATTN_BWD2_BF16=0. Exit status 1 on a mismatch.
 *
 * Usage: attn_double_backward [--device cpu|cuda] [--dtype f32|f64|bf16]
 *          [--T n] [--heads n] [--dim n] [--batch n] [--window n] [--scale x]
 *          [--reps n] [--warmup n] [--seed n] [--no-header] [--check] [--fixture PATH]
 *          [--first-order] [--label NAME] [--vs-f32] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ttt/runtime.h" /* ttt_runtime_error: why a CUDA context could not be made */
#include "ttt/ttt.h"

typedef struct {
    ttt_device device;
    ttt_dtype dtype;
    int64_t b, h, t, d, window; /* -1: not given (each mode has its defaults) */
    double scale;
    int reps, warmup, header, check, first_order, vs_f32;
    const char *fixture, *label;
    uint64_t seed;
} opts;

/* q, k, v (leaves that require grad), w, u1, u2, u3 */
typedef struct {
    ttt_tensor *q, *k, *v, *w, *u[3];
} inputs;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pairs(int64_t t, int64_t window) {
    if (window <= 0 || window >= t) return (double)t * (double)(t + 1) / 2;
    return (double)window * (double)(window + 1) / 2 + (double)(t - window) * (double)window;
}

/* ---- the computation --------------------------------------------------------------------------------------- */

static ttt_tensor *sum_all(ttt_ctx *ctx, ttt_tensor *x) { return ttt_sum(ctx, x, 0, NULL, 0); }

/* First-order gradients g1 = (dq, dk, dv) of L = sum(attention(q, k, v) * w). */
static int first_order(ttt_ctx *ctx, const inputs *in, int64_t window, double scale, ttt_tensor **g1,
                       int create_graph) {
    ttt_tensor *out = ttt_attention(ctx, in->q, in->k, in->v, 1, window, scale);
    ttt_tensor *loss = sum_all(ctx, ttt_mul(ctx, out, in->w));
    if (!loss) return TTT_ERR;
    ttt_tensor *qkv[3] = {in->q, in->k, in->v};
    return ttt_grad(ctx, 1, &loss, NULL, 3, qkv, g1, create_graph);
}

/* S = sum(dq * u1) + sum(dk * u2) + sum(dv * u3) */
static ttt_tensor *contract(ttt_ctx *ctx, ttt_tensor *const *g1, ttt_tensor *const *u) {
    ttt_tensor *s = NULL;
    for (int i = 0; i < 3; i++) {
        ttt_tensor *term = sum_all(ctx, ttt_mul(ctx, g1[i], u[i]));
        s = i == 0 ? term : ttt_add(ctx, s, term);
    }
    return s;
}

/* The double backward: g2 = dS/d(q, k, v); g1 (may be NULL) receives the first-order gradients. */
static int double_backward(ttt_ctx *ctx, const inputs *in, int64_t window, double scale, ttt_tensor **g1,
                           ttt_tensor **g2) {
    ttt_tensor *first[3];
    if (first_order(ctx, in, window, scale, first, 1) != TTT_OK) return TTT_ERR;
    ttt_tensor *s = contract(ctx, first, in->u);
    if (!s) return TTT_ERR;
    ttt_tensor *qkv[3] = {in->q, in->k, in->v};
    if (ttt_grad(ctx, 1, &s, NULL, 3, qkv, g2, 0) != TTT_OK) return TTT_ERR;
    if (g1)
        for (int i = 0; i < 3; i++) g1[i] = first[i];
    return TTT_OK;
}

/* Waits for the device through the public API: reading one element back
 * synchronizes the stream (include/ttt/tensor.h: downloads synchronize). */
static int sync_on(ttt_ctx *ctx, ttt_tensor *t) {
    ttt_tensor *flat = ttt_reshape(ctx, t, TTT_DIMS(-1));
    ttt_tensor *one = ttt_slice(ctx, flat, 0, 0, 1, 1);
    double v;
    if (!one || ttt_copy_to_host(ctx, one, &v, TTT_F64) != TTT_OK) return TTT_ERR;
    return isfinite(v) ? TTT_OK : TTT_ERR;
}

static ttt_ctx *make_ctx(ttt_device device, uint64_t seed) {
    ttt_ctx_config cfg = {.device = device, .arena_bytes = (size_t)256 << 20, .seed = seed};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    if (!ctx) {
        const char *why = ttt_runtime_error();
        fprintf(stderr, "attn_double_backward: no %s context: %s\n", device == TTT_CUDA ? "cuda" : "cpu",
                why && *why ? why : "(no message)");
    }
    return ctx;
}

/* ---- timing ------------------------------------------------------------------------------------------------ */

static ttt_tensor *persistent_randn(ttt_ctx *ctx, ttt_dtype dt, const int64_t *shape, const char *name) {
    ttt_tensor *p = ttt_persistent(ctx, dt, 4, shape, name);
    ttt_tensor *r = ttt_randn(ctx, TTT_F32, 4, shape, 1.0);
    if (!p || !r || ttt_assign(ctx, p, r) != TTT_OK) return NULL;
    return p;
}

static int bench(const opts *o) {
    ttt_ctx *ctx = make_ctx(o->device, o->seed);
    if (!ctx) return 2;
    const int64_t shape[4] = {o->b, o->h, o->t, o->d};
    inputs in;
    ttt_tensor **all[7] = {&in.q, &in.k, &in.v, &in.w, &in.u[0], &in.u[1], &in.u[2]};
    static const char *const names[7] = {"q", "k", "v", "w", "u1", "u2", "u3"};
    for (int i = 0; i < 7; i++)
        if (!(*all[i] = persistent_randn(ctx, o->dtype, shape, names[i]))) {
            fprintf(stderr, "attn_double_backward: inputs: %s\n", ttt_error(ctx));
            ttt_ctx_free(ctx);
            return 2;
        }
    ttt_step_reset(ctx);
    for (int i = 0; i < 3; i++) ttt_set_requires_grad(*all[i], 1);

    /* the whole counted in gflop: 7 x the forward, or 3 x (forward + first backward) with --first-order */
    const double products = o->first_order ? 6.0 : 14.0;
    double *ms = calloc((size_t)o->reps, sizeof *ms);
    int rc = 0;
    for (int r = 0; r < o->warmup + o->reps && ms; r++) {
        ttt_step_reset(ctx);
        const double t0 = now();
        ttt_tensor *g2[3];
        const int rc_run = o->first_order ? first_order(ctx, &in, o->window, o->scale, g2, 0)
                                          : double_backward(ctx, &in, o->window, o->scale, NULL, g2);
        if (rc_run != TTT_OK || sync_on(ctx, g2[2]) != TTT_OK) {
            const char *e = ttt_error(ctx);
            fprintf(stderr, "attn_double_backward: T %lld: %s\n", (long long)o->t,
                    *e ? e : "a non-finite second-order gradient");
            rc = 1;
            break;
        }
        const double dt = 1e3 * (now() - t0);
        if (r >= o->warmup) ms[r - o->warmup] = dt;
    }
    if (rc == 0 && ms) {
        qsort(ms, (size_t)o->reps, sizeof *ms, cmp_double);
        const double med = ms[o->reps / 2];
        const double gflop = 2.0 * products * (double)(o->b * o->h * o->d) * pairs(o->t, o->window) * 1e-9;
        if (o->header) printf("csv,impl,dtype,device,B,H,T,d,window,ms,gflop,tflops,mem_gb\n");
        printf("csv,%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%.3f,%.2f,%.2f,%.2f\n", o->label, ttt_dtype_name(o->dtype),
               o->device == TTT_CUDA ? "cuda" : "cpu", (long long)o->b, (long long)o->h, (long long)o->t,
               (long long)o->d, (long long)o->window, med, gflop, gflop / med, ttt_arena_bytes_reserved(ctx) / 1e9);
        fflush(stdout);
    }
    free(ms);
    ttt_ctx_free(ctx);
    return rc;
}

/* ---- checks ------------------------------------------------------------------------------------------------ */

typedef struct {
    int64_t shape[4];
    int64_t n; /* elements of one tensor */
    double *x[7]; /* host float64: q, k, v, w, u1, u2, u3 */
} host_inputs;

static ttt_tensor *upload(ttt_ctx *ctx, ttt_dtype dt, const int64_t *shape, const double *x) {
    ttt_tensor *t = ttt_from_host(ctx, TTT_F64, 4, shape, x);
    return dt == TTT_F64 ? t : ttt_cast(ctx, t, dt);
}

/* Leaves of dtype dt on ctx's device from the host values. */
static int make_inputs(ttt_ctx *ctx, ttt_dtype dt, const host_inputs *h, inputs *in) {
    ttt_tensor **all[7] = {&in->q, &in->k, &in->v, &in->w, &in->u[0], &in->u[1], &in->u[2]};
    for (int i = 0; i < 7; i++)
        if (!(*all[i] = upload(ctx, dt, h->shape, h->x[i]))) return TTT_ERR;
    for (int i = 0; i < 3; i++) ttt_set_requires_grad(*all[i], 1);
    return TTT_OK;
}

/* First-order (g1) and second-order (g2) gradients at dtype dt, to the host as float64 (3 * n each). */
static int analytic(ttt_ctx *ctx, ttt_dtype dt, const host_inputs *h, int64_t window, double scale, double *g1,
                    double *g2) {
    const ttt_mark_t m = ttt_mark(ctx);
    inputs in;
    ttt_tensor *a[3], *b[3];
    int rc = make_inputs(ctx, dt, h, &in) == TTT_OK && double_backward(ctx, &in, window, scale, a, b) == TTT_OK
                 ? TTT_OK
                 : TTT_ERR;
    for (int i = 0; i < 3 && rc == TTT_OK; i++)
        if (ttt_copy_to_host(ctx, a[i], g1 + i * h->n, TTT_F64) != TTT_OK ||
            ttt_copy_to_host(ctx, b[i], g2 + i * h->n, TTT_F64) != TTT_OK)
            rc = TTT_ERR;
    ttt_release(ctx, m);
    return rc;
}

/* S from first-order gradients only (no create_graph), float64. */
static double s_value(ttt_ctx *ctx, const host_inputs *h, int64_t window, double scale) {
    const ttt_mark_t m = ttt_mark(ctx);
    inputs in;
    ttt_tensor *g1[3];
    double s = NAN;
    if (make_inputs(ctx, TTT_F64, h, &in) == TTT_OK && first_order(ctx, &in, window, scale, g1, 0) == TTT_OK)
        s = ttt_item(ctx, contract(ctx, g1, in.u));
    ttt_release(ctx, m);
    return s;
}

static const double TWO_PI = 6.283185307179586476925286766559;

static void fill_normal(double *x, int64_t n, uint64_t *state) {
    for (int64_t i = 0; i < n; i += 2) { /* splitmix64 + Box-Muller */
        double u[2];
        for (int j = 0; j < 2; j++) {
            uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            z ^= z >> 31;
            u[j] = ((double)(z >> 11) + 0.5) / 9007199254740992.0;
        }
        const double r = sqrt(-2.0 * log(u[0]));
        x[i] = r * cos(TWO_PI * u[1]);
        if (i + 1 < n) x[i + 1] = r * sin(TWO_PI * u[1]);
    }
}

static int host_alloc(host_inputs *h, const int64_t *shape) {
    memset(h, 0, sizeof *h);
    h->n = 1;
    for (int i = 0; i < 4; i++) h->shape[i] = shape[i], h->n *= shape[i];
    for (int i = 0; i < 7; i++)
        if (!(h->x[i] = calloc((size_t)h->n, sizeof(double)))) return TTT_ERR;
    return TTT_OK;
}

static void host_free(host_inputs *h) {
    for (int i = 0; i < 7; i++) free(h->x[i]);
}

/* max |a - b| over n values (b NULL: max |a|; a NaN gives NaN) */
static double max_abs_diff(const double *a, const double *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e = fabs(a[i] - (b ? b[i] : 0));
        m = e > m || isnan(e) ? e : m;
    }
    return m;
}

/* max |a - b| / max |b| over n values */
static double rel_max(const double *a, const double *b, int64_t n) {
    const double den = max_abs_diff(b, NULL, n);
    return max_abs_diff(a, b, n) / (den > 0 ? den : 1);
}

static const char *const GNAME[3] = {"q", "k", "v"};

/* The timed dtype (if not f64) against float64 values ref1, ref2. */
static int compare_dtype(ttt_ctx *ctx, ttt_dtype dt, const host_inputs *h, int64_t window, double scale,
                         const double *ref1, const double *ref2, const char *what) {
    if (dt == TTT_F64) return 0;
    const double tol = dt == TTT_BF16 ? 5e-2 : 1e-4;
    double *g1 = malloc(sizeof(double) * 3 * (size_t)h->n), *g2 = malloc(sizeof(double) * 3 * (size_t)h->n);
    int fails = 0;
    if (!g1 || !g2 || analytic(ctx, dt, h, window, scale, g1, g2) != TTT_OK) {
        fprintf(stderr, "  %s: %s\n", ttt_dtype_name(dt), ttt_error(ctx));
        fails = 1;
    } else {
        for (int i = 0; i < 3; i++) {
            const double e1 = rel_max(g1 + i * h->n, ref1 + i * h->n, h->n);
            const double e2 = rel_max(g2 + i * h->n, ref2 + i * h->n, h->n);
            /* at window 1 each query sees only itself: P = 1, dS = 0, and the second-order gradients of q, k and v
         * are zero in exact arithmetic, so both sides are rounding noise there and only the first order compares */
        const int ok = e1 <= tol && (window == 1 || e2 <= tol);
            fails += !ok;
            printf("  %s vs %s, d%s: first order %.2e, second order %.2e (max |diff| / max |ref|, tol %.0e) %s\n",
                   ttt_dtype_name(dt), what, GNAME[i], e1, e2, tol, ok ? "ok" : "FAIL");
        }
    }
    free(g1);
    free(g2);
    return fails;
}

/* Finite differences: dS/dx_j = (S(x + eps e_j) - S(x - eps e_j)) / (2 eps), S from first-order gradients. */
static int check_window(ttt_ctx *ctx, const opts *o, int64_t window, const int64_t *shape) {
    host_inputs h;
    int fails = 0;
    const double scale = o->scale > 0 ? o->scale : 1.0 / sqrt((double)shape[3]);
    double *g1 = NULL, *g2 = NULL;
    if (host_alloc(&h, shape) != TTT_OK) return 1;
    uint64_t state = o->seed * 7919 + (uint64_t)window;
    for (int i = 0; i < 7; i++) fill_normal(h.x[i], h.n, &state);
    g1 = malloc(sizeof(double) * 3 * (size_t)h.n), g2 = malloc(sizeof(double) * 3 * (size_t)h.n);
    if (!g1 || !g2 || analytic(ctx, TTT_F64, &h, window, scale, g1, g2) != TTT_OK) {
        fprintf(stderr, "check: %s\n", ttt_error(ctx));
        fails = 1;
        goto done;
    }
    printf("check B %lld H %lld T %lld d %lld window %lld on %s:\n", (long long)shape[0], (long long)shape[1],
           (long long)shape[2], (long long)shape[3], (long long)window, o->device == TTT_CUDA ? "cuda" : "cpu");
    const double eps = 1e-5, atol = 1e-6, rtol = 1e-5;
    for (int i = 0; i < 3; i++) {
        double worst = 0, at_a = 0, at_n = 0, gmax = 0;
        for (int64_t j = 0; j < h.n; j++) {
            const double x0 = h.x[i][j];
            h.x[i][j] = x0 + eps;
            const double sp = s_value(ctx, &h, window, scale);
            h.x[i][j] = x0 - eps;
            const double sm = s_value(ctx, &h, window, scale);
            h.x[i][j] = x0;
            const double num = (sp - sm) / (2 * eps), ana = g2[i * h.n + j];
            const double err = fabs(ana - num) / (atol + rtol * fabs(num));
            if (!(err <= worst)) worst = err, at_a = ana, at_n = num;
            if (fabs(num) > gmax) gmax = fabs(num);
        }
        const int ok = worst <= 1;
        fails += !ok;
        printf("  f64 dS/d%s vs finite differences: worst |ana - num| / (%.0e + %.0e |num|) = %.2e "
               "(ana %.9f, num %.9f; max |num| %.3f) %s\n",
               GNAME[i], atol, rtol, worst, at_a, at_n, gmax, ok ? "ok" : "FAIL");
    }
    fails += compare_dtype(ctx, o->dtype, &h, window, scale, g1, g2, "f64");
done:
    free(g1);
    free(g2);
    host_free(&h);
    return fails;
}

static int check(const opts *o) {
    ttt_ctx *ctx = make_ctx(o->device, o->seed);
    if (!ctx) return 2;
    const int64_t shape[4] = {o->b > 0 ? o->b : 2, o->h > 0 ? o->h : 2, o->t > 0 ? o->t : 7, o->d > 0 ? o->d : 4};
    int fails = 0;
    if (o->window >= 0) fails += check_window(ctx, o, o->window, shape);
    else
        for (int64_t w = 0; w <= 3; w += 3) fails += check_window(ctx, o, w, shape);
    ttt_ctx_free(ctx);
    printf("%s\n", fails ? "check FAILED" : "check passed");
    return fails ? 1 : 0;
}

/* ---- bf16 against f32 ------------------------------------------------------------------------------------- */

/* x rounded to the nearest bf16 value (ties to even), so casts to bf16 and back to f32 are exact */
static double round_bf16(double x) {
    float f = (float)x;
    uint32_t b;
    memcpy(&b, &f, 4);
    if (f != f) return x;
    b = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &b, 4);
    return f;
}

/* One shape: the first- and second-order gradients in bf16 and in f32 from the same bf16 values. */
static int vs_f32_case(ttt_ctx *ctx, const opts *o, const int64_t *shape, int64_t window) {
    host_inputs h;
    int fails = 0;
    const double scale = o->scale > 0 ? o->scale : 1.0 / sqrt((double)shape[3]), tol = 3e-2;
    double *g[4] = {NULL, NULL, NULL, NULL}; /* bf16 first, second order; f32 first, second order */
    if (host_alloc(&h, shape) != TTT_OK) return 1;
    uint64_t state = o->seed * 104729 + (uint64_t)shape[2] * 31 + (uint64_t)window;
    for (int i = 0; i < 7; i++) {
        fill_normal(h.x[i], h.n, &state);
        for (int64_t j = 0; j < h.n; j++) h.x[i][j] = round_bf16(h.x[i][j]);
    }
    for (int i = 0; i < 4; i++)
        if (!(g[i] = malloc(sizeof(double) * 3 * (size_t)h.n))) fails = 1;
    if (!fails && (analytic(ctx, TTT_BF16, &h, window, scale, g[0], g[1]) != TTT_OK ||
                   analytic(ctx, TTT_F32, &h, window, scale, g[2], g[3]) != TTT_OK)) {
        fprintf(stderr, "vs-f32: %s\n", ttt_error(ctx));
        fails = 1;
    }
    /* Errors relative to the largest f32 gradient of the same order over q, k and v: a gradient that is zero
     * in exact arithmetic (dq at window 1, where each query sees only itself) is f32 rounding noise, and its own
     * maximum is no scale for bf16's. */
    double den1 = 0, den2 = 0;
    for (int i = 0; i < 3 && !fails; i++) {
        den1 = fmax(den1, max_abs_diff(g[2] + i * h.n, NULL, h.n));
        den2 = fmax(den2, max_abs_diff(g[3] + i * h.n, NULL, h.n));
    }
    for (int i = 0; i < 3 && !fails; i++) {
        const double e1 = max_abs_diff(g[0] + i * h.n, g[2] + i * h.n, h.n) / (den1 > 0 ? den1 : 1);
        const double e2 = max_abs_diff(g[1] + i * h.n, g[3] + i * h.n, h.n) / (den2 > 0 ? den2 : 1);
        /* at window 1 each query sees only itself: P = 1, dS = 0, and the second-order gradients of q, k and v
         * are zero in exact arithmetic, so both sides are rounding noise there and only the first order compares */
        const int ok = e1 <= tol && (window == 1 || e2 <= tol);
        fails += !ok;
        printf("  B %lld H %lld T %lld d %lld window %lld, d%s: bf16 vs f32 first order %.2e, second order %.2e "
               "(max |diff| / max |f32| over dq, dk, dv, tol %.0e)%s %s\n",
               (long long)shape[0], (long long)shape[1], (long long)shape[2], (long long)shape[3], (long long)window,
               GNAME[i], e1, e2, tol, window == 1 ? " (second order not compared: zero in exact arithmetic)" : "", ok ? "ok" : "FAIL");
    }
    fflush(stdout);
    for (int i = 0; i < 4; i++) free(g[i]);
    host_free(&h);
    return fails;
}

static int vs_f32(const opts *o) {
    ttt_ctx *ctx = make_ctx(o->device, o->seed);
    if (!ctx) return 2;
    const char *env = getenv("TTT_ATTN_BWD2_BF16");
    printf("bf16 double backward vs f32 on %s (TTT_ATTN_BWD2_BF16=%s: %s)\n", o->device == TTT_CUDA ? "cuda" : "cpu",
           env ? env : "unset", env && !strcmp(env, "0") ? "bf16 composed in f32" : "bf16 kernels where they apply");
    /* B, H, T, d, window: lengths off the tiles, windows, both head sizes, one longer sequence */
    static const int64_t cases[][5] = {{1, 2, 300, 64, 0},  {1, 2, 300, 64, 40},  {2, 1, 257, 128, 0},
                                       {1, 2, 130, 128, 67}, {1, 1, 1000, 64, 0}, {1, 1, 70, 64, 1}};
    int fails = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fails += vs_f32_case(ctx, o, cases[i], cases[i][4]);
        ttt_step_reset(ctx);
    }
    if (o->t > 0 || o->d > 0 || o->window >= 0) {
        const int64_t shape[4] = {o->b > 0 ? o->b : 1, o->h > 0 ? o->h : 2, o->t > 0 ? o->t : 512, o->d > 0 ? o->d : 64};
        fails += vs_f32_case(ctx, o, shape, o->window > 0 ? o->window : 0);
    }
    ttt_ctx_free(ctx);
    printf("%s\n", fails ? "vs-f32 FAILED" : "vs-f32 passed");
    return fails ? 1 : 0;
}

/* ---- the PyTorch fixture ----------------------------------------------------------------------------------- */

static int meta_int(const char *meta, const char *key, int64_t *out) {
    char buf[64], *end;
    if (ttt_metadata_get(meta, key, buf, sizeof buf) != TTT_OK) return TTT_ERR;
    *out = strtoll(buf, &end, 10);
    return *end == 0 && end != buf ? TTT_OK : TTT_ERR;
}

/* One case of the fixture: prefix.{q,k,v,w,u1,u2,u3} in, prefix.{dq,dk,dv} and prefix.{hq,hk,hv} expected. */
static int fixture_case(ttt_ctx *ctx, const opts *o, const char *path, const char *meta, const char *prefix) {
    int64_t shape[4], window;
    char key[64], sbuf[64];
    static const char *const dims[4] = {"B", "H", "T", "d"};
    for (int i = 0; i < 4; i++)
        if (meta_int(meta, dims[i], &shape[i]) != TTT_OK) return fprintf(stderr, "fixture: no %s\n", dims[i]), 1;
    snprintf(key, sizeof key, "%s.window", prefix);
    if (meta_int(meta, key, &window) != TTT_OK) return fprintf(stderr, "fixture: no %s\n", key), 1;
    snprintf(key, sizeof key, "%s.scale", prefix);
    if (ttt_metadata_get(meta, key, sbuf, sizeof sbuf) != TTT_OK) return fprintf(stderr, "fixture: no %s\n", key), 1;
    const double scale = strtod(sbuf, NULL);

    static const char *const in_names[7] = {"q", "k", "v", "w", "u1", "u2", "u3"};
    static const char *const out_names[6] = {"dq", "dk", "dv", "hq", "hk", "hv"};
    host_inputs h;
    double *want = NULL, *g1 = NULL, *g2 = NULL;
    int fails = 0;
    char names[13][48];
    ttt_named_tensor list[13];
    const ttt_mark_t m = ttt_mark(ctx);
    if (host_alloc(&h, shape) != TTT_OK) return 1;
    /* ttt_load_safetensors fills existing tensors: load on the host side of the context, then download */
    for (int i = 0; i < 13; i++) {
        snprintf(names[i], sizeof names[i], "%s.%s", prefix, i < 7 ? in_names[i] : out_names[i - 7]);
        list[i] = (ttt_named_tensor){names[i], ttt_new(ctx, TTT_F64, 4, shape)};
    }
    want = malloc(sizeof(double) * 6 * (size_t)h.n);
    g1 = malloc(sizeof(double) * 3 * (size_t)h.n), g2 = malloc(sizeof(double) * 3 * (size_t)h.n);
    if (!want || !g1 || !g2 || ttt_load_safetensors(ctx, path, 13, list, NULL) != TTT_OK) {
        fprintf(stderr, "fixture: %s\n", ttt_error(ctx));
        fails = 1;
        goto done;
    }
    for (int i = 0; i < 13; i++)
        if (ttt_copy_to_host(ctx, list[i].tensor, i < 7 ? h.x[i] : want + (i - 7) * h.n, TTT_F64) != TTT_OK) {
            fails = 1;
            goto done;
        }
    ttt_release(ctx, m);
    printf("fixture %s: case %s: B %lld H %lld T %lld d %lld window %lld scale %g on %s\n", path, prefix,
           (long long)shape[0], (long long)shape[1], (long long)shape[2], (long long)shape[3], (long long)window, scale,
           o->device == TTT_CUDA ? "cuda" : "cpu");
    if (analytic(ctx, TTT_F64, &h, window, scale, g1, g2) != TTT_OK) {
        fprintf(stderr, "fixture: %s\n", ttt_error(ctx));
        fails = 1;
        goto done;
    }
    for (int i = 0; i < 3; i++) {
        const double e1 = rel_max(g1 + i * h.n, want + i * h.n, h.n);
        const double e2 = rel_max(g2 + i * h.n, want + (3 + i) * h.n, h.n);
        const int ok = e1 <= 1e-10 && e2 <= 1e-10;
        fails += !ok;
        printf("  f64 vs torch f64, d%s: first order %.2e, second order %.2e (max |diff| / max |ref|, tol 1e-10) %s\n",
               GNAME[i], e1, e2, ok ? "ok" : "FAIL");
    }
    fails += compare_dtype(ctx, o->dtype, &h, window, scale, want, want + 3 * h.n, "torch f64");
done:
    ttt_release(ctx, m);
    free(want);
    free(g1);
    free(g2);
    host_free(&h);
    return fails;
}

static int fixture(const opts *o) {
    ttt_ctx *ctx = make_ctx(o->device, o->seed);
    if (!ctx) return 2;
    char *meta = NULL, cases[256];
    int fails = 0;
    if (ttt_load_safetensors(ctx, o->fixture, 0, NULL, &meta) != TTT_OK || !meta ||
        ttt_metadata_get(meta, "cases", cases, sizeof cases) != TTT_OK) {
        fprintf(stderr, "fixture: %s\n", meta ? "no \"cases\" in the metadata" : ttt_error(ctx));
        fails = 1;
    } else {
        char *save = NULL;
        for (char *c = strtok_r(cases, ",", &save); c; c = strtok_r(NULL, ",", &save))
            fails += fixture_case(ctx, o, o->fixture, meta, c);
    }
    free(meta);
    ttt_ctx_free(ctx);
    printf("%s\n", fails ? "fixture FAILED" : "fixture passed");
    return fails ? 1 : 0;
}

/* ---- flags ------------------------------------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
            "usage: attn_double_backward [--device cpu|cuda] [--dtype f32|f64|bf16] [--T n] [--heads n] [--dim n]\n"
            "         [--batch n] [--window n] [--scale x] [--reps n] [--warmup n] [--seed n] [--no-header]\n"
            "         [--check] [--fixture PATH] [--first-order] [--label NAME] [--vs-f32]\n"
            "Times forward + first backward (create_graph) + double backward of causal ttt_attention\n"
            "(--first-order: forward + first backward only); --check compares with float64 finite\n"
            "differences at a tiny size, --fixture with PyTorch, --vs-f32 bf16 with f32.\n");
}

static int parse_int(const char *s, int64_t lo, int64_t *out) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == 0 || *end != 0 || v < lo) return TTT_ERR;
    *out = v;
    return TTT_OK;
}

int main(int argc, char **argv) {
    opts o = {.device = TTT_CPU, .dtype = TTT_F32, .b = -1, .h = -1, .t = -1, .d = -1, .window = -1, .scale = 0,
              .reps = 10, .warmup = 2, .header = 1, .seed = 1, .label = "ttt"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t n;
        int used = 1, bad = 0;
        if (!strcmp(a, "--check")) o.check = 1, used = 0;
        else if (!strcmp(a, "--first-order")) o.first_order = 1, used = 0;
        else if (!strcmp(a, "--vs-f32")) o.vs_f32 = 1, used = 0;
        else if (!strcmp(a, "--no-header")) o.header = 0, used = 0;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(), 0;
        else if (!v) bad = 1;
        else if (!strcmp(a, "--device")) {
            if (!strcmp(v, "cpu")) o.device = TTT_CPU;
            else if (!strcmp(v, "cuda")) o.device = TTT_CUDA;
            else bad = 1;
        } else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "f32")) o.dtype = TTT_F32;
            else if (!strcmp(v, "f64")) o.dtype = TTT_F64;
            else if (!strcmp(v, "bf16")) o.dtype = TTT_BF16;
            else bad = 1;
        } else if (!strcmp(a, "--fixture")) o.fixture = v;
        else if (!strcmp(a, "--label")) {
            o.label = v;
            bad = !*v || strchr(v, ',') != NULL;
        }
        else if (!strcmp(a, "--scale")) {
            char *end;
            o.scale = strtod(v, &end);
            bad = *end != 0 || !(o.scale >= 0);
        } else if (parse_int(v, 0, &n) != TTT_OK) bad = 1;
        else if (!strcmp(a, "--T") && n > 0) o.t = n;
        else if (!strcmp(a, "--heads") && n > 0) o.h = n;
        else if (!strcmp(a, "--dim") && n > 0) o.d = n;
        else if (!strcmp(a, "--batch") && n > 0) o.b = n;
        else if (!strcmp(a, "--window")) o.window = n;
        else if (!strcmp(a, "--reps") && n > 0 && n < 100000) o.reps = (int)n;
        else if (!strcmp(a, "--warmup") && n < 100000) o.warmup = (int)n;
        else if (!strcmp(a, "--seed")) o.seed = (uint64_t)n;
        else bad = 1;
        if (bad) {
            fprintf(stderr, "attn_double_backward: bad argument %s%s%s\n", a, v && used ? " " : "", v && used ? v : "");
            usage();
            return 2;
        }
        i += used;
    }
    if (o.check || o.fixture || o.vs_f32) {
        int rc = 0;
        if (o.check) rc |= check(&o);
        if (o.fixture) rc |= fixture(&o);
        if (o.vs_f32) rc |= vs_f32(&o);
        return rc;
    }
    if (o.b < 0) o.b = 1;
    if (o.h < 0) o.h = 12;
    if (o.t < 0) o.t = 1024;
    if (o.d < 0) o.d = 64;
    if (o.window < 0) o.window = 0;
    if (o.scale <= 0) o.scale = 1.0 / sqrt((double)o.d);
    return bench(&o);
}
