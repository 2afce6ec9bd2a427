/* The fused attention path of ttt_attention (backend entries attention_fwd /
 * attention_bwd) against the composed path.
 *
 * Always (CPU, no GPU needed): a stand-in backend, the CPU table plus the
 * plain-C fused kernels below, drives the op layer's fused path: the node it
 * records, the first-order VJP through the backward kernel, the create_graph
 * VJP that differentiates the composed attention instead (second derivatives),
 * non-dense inputs, and declining.
 *
 * With a CUDA device: the CUDA kernels in f32 against the composed path in f64
 * (inputs cast) over odd lengths, Tq != Tk, causal or not, windows 1, 7 and
 * longer than T, head sizes 64 and 128 and odd ones; outputs are poisoned with
 * NaN first, so an unwritten element fails. Then the bf16 tensor-core kernels:
 * inputs cast to bf16 (ttt_cast), out and the gradients of the bf16 leaves
 * against the composed path in f64 on the same rounded values, within 2e-2 of
 * the largest reference element; shapes the bf16 kernels decline (head sizes
 * other than 64 and 128, dv != d) must still come out right through the cast
 * f32 path. `--quick` runs fewer shapes (for compute-sanitizer). `--bench`
 * instead times the fused and the composed path (f32, and the fused bf16
 * path; forward and forward + backward) and prints CSV lines for
 * bench/gpu/attention_bench.py; `--bench-bf16` times the bf16 path only; `--bench-chunks` times TTT-E2E's
 * chunk shapes (1K queries over up to 9K keys). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "core/internal.h"
#include "ttt/ttt.h"
#ifdef TTT_HAVE_CUDA
#include "backends/cuda/attention_cudnn.h"
#endif

/* ---- a stand-in fused backend on the CPU ---------------------------------------------------------------- */

static double get(const ttt_tensor *t, int64_t i) {
    return t->dtype == TTT_F64 ? ((const double *)t->data)[i] : (double)((const float *)t->data)[i];
}
static void set(ttt_tensor *t, int64_t i, double x) {
    if (t->dtype == TTT_F64) ((double *)t->data)[i] = x;
    else ((float *)t->data)[i] = (float)x;
}

typedef struct {
    int64_t bh, tq, tk, d, dv, off;
} dims;

static dims dims_of(const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, int causal) {
    const int r = q->ndim;
    dims s = {1, q->shape[r - 2], k->shape[r - 2], q->shape[r - 1], v->shape[r - 1], 0};
    for (int i = 0; i < r - 2; i++) s.bh *= q->shape[i];
    s.off = causal ? s.tk - s.tq : 0;
    return s;
}

static int seen(const dims *s, int causal, int64_t window, int64_t i, int64_t j) {
    const int64_t pos = s->off + i;
    return !causal || (j <= pos && (window <= 0 || pos - j < window));
}

/* probabilities of row i of batch b into p[tk] (0 where hidden); returns the log-sum-exp */
static double row_probs(const dims *s, const ttt_tensor *q, const ttt_tensor *k, int causal, int64_t window,
                        double scale, int64_t b, int64_t i, double *p) {
    double mx = -INFINITY, z = 0;
    for (int64_t j = 0; j < s->tk; j++) {
        double dot = 0;
        for (int64_t c = 0; c < s->d; c++)
            dot += get(q, (b * s->tq + i) * s->d + c) * get(k, (b * s->tk + j) * s->d + c);
        p[j] = seen(s, causal, window, i, j) ? dot * scale : -INFINITY;
        mx = fmax(mx, p[j]);
    }
    for (int64_t j = 0; j < s->tk; j++) z += (p[j] = exp(p[j] - mx));
    for (int64_t j = 0; j < s->tk; j++) p[j] /= z;
    return mx + log(z);
}

static int g_fake_calls; /* forward kernels run by the stand-in */

/* Declines head sizes above 16, so the declining path is exercised too. */
static int fake_fwd(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *lse, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                    int causal, int64_t window, double scale) {
    (void)self;
    dims s = dims_of(q, k, v, causal);
    if (s.d > 16) return TTT_BACKEND_DECLINED;
    g_fake_calls++;
    double *p = malloc(sizeof(double) * (size_t)s.tk);
    for (int64_t b = 0; b < s.bh; b++)
        for (int64_t i = 0; i < s.tq; i++) {
            double l = row_probs(&s, q, k, causal, window, scale, b, i, p);
            if (lse) ((float *)lse->data)[b * s.tq + i] = (float)l;
            for (int64_t c = 0; c < s.dv; c++) {
                double acc = 0;
                for (int64_t j = 0; j < s.tk; j++) acc += p[j] * get(v, (b * s.tk + j) * s.dv + c);
                set(out, (b * s.tq + i) * s.dv + c, acc);
            }
        }
    free(p);
    return TTT_OK;
}

/* Recomputes the probabilities instead of reading lse (f32), so f64 checks stay exact. */
static int fake_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *delta, const ttt_tensor *dout,
                    const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *out,
                    const ttt_tensor *lse, int causal, int64_t window, double scale) {
    (void)self, (void)lse;
    dims s = dims_of(q, k, v, causal);
    if (s.d > 16) return TTT_BACKEND_DECLINED;
    for (int64_t i = 0; i < ttt_numel(dq); i++) set(dq, i, 0);
    for (int64_t i = 0; i < ttt_numel(dk); i++) set(dk, i, 0);
    for (int64_t i = 0; i < ttt_numel(dv); i++) set(dv, i, 0);
    double *p = malloc(sizeof(double) * (size_t)s.tk);
    for (int64_t b = 0; b < s.bh; b++)
        for (int64_t i = 0; i < s.tq; i++) {
            row_probs(&s, q, k, causal, window, scale, b, i, p);
            double dl = 0;
            for (int64_t c = 0; c < s.dv; c++)
                dl += get(dout, (b * s.tq + i) * s.dv + c) * get(out, (b * s.tq + i) * s.dv + c);
            ((float *)delta->data)[b * s.tq + i] = (float)dl;
            for (int64_t j = 0; j < s.tk; j++) {
                double dp = 0;
                for (int64_t c = 0; c < s.dv; c++) {
                    const double g = get(dout, (b * s.tq + i) * s.dv + c);
                    dp += g * get(v, (b * s.tk + j) * s.dv + c);
                    set(dv, (b * s.tk + j) * s.dv + c, get(dv, (b * s.tk + j) * s.dv + c) + p[j] * g);
                }
                const double ds = p[j] * (dp - dl) * scale;
                for (int64_t c = 0; c < s.d; c++) {
                    const int64_t qi = (b * s.tq + i) * s.d + c, kj = (b * s.tk + j) * s.d + c;
                    set(dq, qi, get(dq, qi) + ds * get(k, kj));
                    set(dk, kj, get(dk, kj) + ds * get(q, qi));
                }
            }
        }
    free(p);
    return TTT_OK;
}

/* ---- comparisons ------------------------------------------------------------------------------------------ */

/* max |a - b| / max(1, max |b|); NaN anywhere gives NaN */
static double max_err(ttt_ctx *ctx, const ttt_tensor *a, const ttt_tensor *b) {
    const int64_t n = ttt_numel(b);
    double *ha = malloc(sizeof(double) * (size_t)n), *hb = malloc(sizeof(double) * (size_t)n);
    double worst = 0, scale = 1;
    if (ttt_copy_to_host(ctx, a, ha, TTT_F64) != TTT_OK || ttt_copy_to_host(ctx, b, hb, TTT_F64) != TTT_OK) worst = NAN;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(hb[i]));
    for (int64_t i = 0; i < n && worst == worst; i++) {
        const double e = fabs(ha[i] - hb[i]) / scale;
        if (!(e <= worst)) worst = e;
    }
    free(ha), free(hb);
    return worst;
}

static ttt_backend g_plain; /* the context's table without the fused entries */

static void use_fused(ttt_ctx *ctx, const ttt_backend *fused, int on) { ctx->be = on ? fused : &g_plain; }

/* out and first-order (and, with order2, second-order) gradients of the fused and
 * the composed path on the same f64 inputs; returns the worst difference. */
static double cpu_case(ttt_ctx *ctx, const ttt_backend *fused, int64_t b, int64_t h, int64_t tq, int64_t tk, int64_t d,
                       int64_t dv, int causal, int64_t window, int permuted, int order2) {
    ttt_tensor *q, *k, *v;
    if (permuted) { /* [B, T, H, d] storage seen as [B, H, T, d], as the language model makes them */
        q = ttt_permute(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(b, tq, h, d), 1.0), (const int[]){0, 2, 1, 3});
        k = ttt_permute(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(b, tk, h, d), 1.0), (const int[]){0, 2, 1, 3});
        v = ttt_permute(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(b, tk, h, dv), 1.0), (const int[]){0, 2, 1, 3});
    } else {
        q = ttt_randn(ctx, TTT_F64, TTT_DIMS(b, h, tq, d), 1.0);
        k = ttt_randn(ctx, TTT_F64, TTT_DIMS(b, h, tk, d), 1.0);
        v = ttt_randn(ctx, TTT_F64, TTT_DIMS(b, h, tk, dv), 1.0);
    }
    ttt_tensor *w = ttt_randn(ctx, TTT_F64, TTT_DIMS(b, h, tq, dv), 1.0);
    ttt_tensor *in[3] = {q, k, v};
    for (int i = 0; i < 3; i++) ttt_set_requires_grad(in[i], 1);
    ttt_tensor *o[2], *g[2][3], *gg[2][3];
    for (int f = 0; f < 2; f++) {
        use_fused(ctx, fused, f);
        const int calls = g_fake_calls;
        o[f] = ttt_attention(ctx, q, k, v, causal, window, 0.0);
        if (!o[f]) {
            fprintf(stderr, "attention failed: %s\n", ttt_error(ctx));
            return INFINITY;
        }
        CHECK_MSG((g_fake_calls > calls) == (f && d <= 16), "fused kernel ran %d times for d %lld (fused %d)",
                  g_fake_calls - calls, (long long)d, f);
        ttt_tensor *loss = ttt_sum(ctx, ttt_mul(ctx, o[f], w), 0, NULL, 0);
        if (ttt_grad(ctx, 1, &loss, NULL, 3, in, g[f], order2) != TTT_OK) {
            fprintf(stderr, "grad failed: %s\n", ttt_error(ctx));
            return INFINITY;
        }
        if (order2) { /* d/d(q,k,v) of sum(g_q^2 + g_k^2 + g_v^2) */
            ttt_tensor *l2 = NULL;
            for (int i = 0; i < 3; i++) {
                ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, g[f][i], g[f][i]), 0, NULL, 0);
                l2 = l2 ? ttt_add(ctx, l2, t) : t;
            }
            if (ttt_grad(ctx, 1, &l2, NULL, 3, in, gg[f], 0) != TTT_OK) {
                fprintf(stderr, "second-order grad failed: %s\n", ttt_error(ctx));
                return INFINITY;
            }
        }
    }
    use_fused(ctx, fused, 1);
    double worst = max_err(ctx, o[1], o[0]);
    for (int i = 0; i < 3; i++) {
        worst = fmax(worst, max_err(ctx, g[1][i], g[0][i]));
        if (order2) worst = fmax(worst, max_err(ctx, gg[1][i], gg[0][i]));
    }
    ttt_step_reset(ctx);
    return worst;
}

static void cpu_checks(void) {
    ttt_ctx_config cfg = {.device = TTT_CPU, .seed = 11};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);
    if (!ctx) return;
    static ttt_backend stand_in;
    stand_in = *ctx->be;
    stand_in.attention_fwd = fake_fwd;
    stand_in.attention_bwd = fake_bwd;
    g_plain = *ctx->be;
    CHECK(g_plain.attention_fwd == NULL); /* the CPU composes */
    CHECK(cpu_case(ctx, &stand_in, 2, 2, 9, 9, 4, 3, 1, 0, 0, 0) < 1e-12);   /* causal */
    CHECK(cpu_case(ctx, &stand_in, 1, 2, 5, 12, 4, 4, 1, 3, 0, 0) < 1e-12);  /* KV offset, window */
    CHECK(cpu_case(ctx, &stand_in, 1, 2, 6, 7, 3, 5, 0, 0, 1, 0) < 1e-12);   /* bidirectional, non-dense inputs */
    CHECK(cpu_case(ctx, &stand_in, 1, 1, 7, 7, 3, 2, 1, 0, 0, 1) < 1e-10);   /* create_graph: second order */
    CHECK(cpu_case(ctx, &stand_in, 1, 2, 6, 9, 4, 4, 1, 4, 1, 1) < 1e-10);   /* second order, window, views */
    CHECK(cpu_case(ctx, &stand_in, 1, 2, 5, 5, 20, 4, 1, 0, 0, 0) < 1e-12);  /* declined: composed */
    ttt_ctx_free(ctx);
}

/* ---- the CUDA kernels ------------------------------------------------------------------------------------- */

typedef struct {
    int64_t b, h, tq, tk, d, dv;
    int causal;
    int64_t window;
    int permuted;
} gpu_case;

/* Fused f32 against composed f64 on the same (rounded) inputs. */
static int gpu_parity(ttt_ctx *ctx, const gpu_case *c, double tol) {
    /* fill the arena with NaN, so outputs the kernels fail to write show up */
    ttt_step_reset(ctx);
    if (!ttt_full(ctx, TTT_F32, TTT_DIMS((int64_t)64 << 20), NAN)) return 0;
    ttt_step_reset(ctx);
    const int perm[4] = {0, 2, 1, 3};
    ttt_tensor *q, *k, *v;
    if (c->permuted) {
        q = ttt_permute(ctx, ttt_randn(ctx, TTT_F32, TTT_DIMS(c->b, c->tq, c->h, c->d), 1.0), perm);
        k = ttt_permute(ctx, ttt_randn(ctx, TTT_F32, TTT_DIMS(c->b, c->tk, c->h, c->d), 1.0), perm);
        v = ttt_permute(ctx, ttt_randn(ctx, TTT_F32, TTT_DIMS(c->b, c->tk, c->h, c->dv), 1.0), perm);
    } else {
        q = ttt_randn(ctx, TTT_F32, TTT_DIMS(c->b, c->h, c->tq, c->d), 1.0);
        k = ttt_randn(ctx, TTT_F32, TTT_DIMS(c->b, c->h, c->tk, c->d), 1.0);
        v = ttt_randn(ctx, TTT_F32, TTT_DIMS(c->b, c->h, c->tk, c->dv), 1.0);
    }
    ttt_tensor *gout = ttt_randn(ctx, TTT_F32, TTT_DIMS(c->b, c->h, c->tq, c->dv), 1.0);
    ttt_tensor *in32[3] = {q, k, v}, *in64[3], *g32[3], *g64[3];
    for (int i = 0; i < 3; i++) {
        in64[i] = ttt_cast(ctx, in32[i], TTT_F64);
        ttt_set_requires_grad(in32[i], 1);
        ttt_set_requires_grad(in64[i], 1);
    }
    ttt_tensor *gout64 = ttt_cast(ctx, gout, TTT_F64);
    ttt_tensor *o32 = ttt_attention(ctx, q, k, v, c->causal, c->window, 0.0);
    ttt_tensor *o64 = ttt_attention(ctx, in64[0], in64[1], in64[2], c->causal, c->window, 0.0);
    const int fused = o32 && o32->node && strcmp(o32->node->op, "attention") == 0;
    if (!o32 || !o64 || ttt_grad(ctx, 1, &o32, &gout, 3, in32, g32, 0) != TTT_OK ||
        ttt_grad(ctx, 1, &o64, &gout64, 3, in64, g64, 0) != TTT_OK) {
        fprintf(stderr, "gpu case failed: %s\n", ttt_error(ctx));
        return 0;
    }
    double e[4] = {max_err(ctx, o32, o64), max_err(ctx, g32[0], g64[0]), max_err(ctx, g32[1], g64[1]),
                   max_err(ctx, g32[2], g64[2])};
    int ok = fused;
    for (int i = 0; i < 4; i++) ok = ok && e[i] <= tol;
    printf("%s B%lld H%lld Tq%lld Tk%lld d%lld dv%lld causal%d window%lld%s: out %.2e dq %.2e dk %.2e dv %.2e\n",
           ok ? "ok  " : "FAIL", (long long)c->b, (long long)c->h, (long long)c->tq, (long long)c->tk,
           (long long)c->d, (long long)c->dv, c->causal, (long long)c->window, c->permuted ? " permuted" : "", e[0],
           e[1], e[2], e[3]);
    if (!fused) printf("     (the fused kernel did not run)\n");
    return ok;
}

/* Fused bf16 against composed f64 on the same bf16 values: inputs made in f32
 * and cast with ttt_cast (the cast is recorded, so the gradients are of the
 * bf16 leaves). expect_fused: the bf16 kernels must run (else: the declined
 * shape must go the cast f32 way and still match). */
static int gpu_parity_bf16(ttt_ctx *ctx, const gpu_case *c, int expect_fused, double tol) {
    ttt_step_reset(ctx);
    if (!ttt_full(ctx, TTT_F32, TTT_DIMS((int64_t)64 << 20), NAN)) return 0;
    ttt_step_reset(ctx);
    const int perm[4] = {0, 2, 1, 3};
    ttt_tensor *in16[3], *in64[3], *g16[3], *g64[3];
    const int64_t d[3] = {c->d, c->d, c->dv}, t[3] = {c->tq, c->tk, c->tk};
    for (int i = 0; i < 3; i++) {
        ttt_tensor *x;
        if (c->permuted) /* [B, T, H, d] storage seen as [B, H, T, d]: not dense */
            x = ttt_permute(ctx, ttt_cast(ctx, ttt_randn(ctx, TTT_F32, TTT_DIMS(c->b, t[i], c->h, d[i]), 1.0), TTT_BF16),
                            perm);
        else
            x = ttt_cast(ctx, ttt_randn(ctx, TTT_F32, TTT_DIMS(c->b, c->h, t[i], d[i]), 1.0), TTT_BF16);
        in16[i] = x;
        in64[i] = x ? ttt_cast(ctx, x, TTT_F64) : NULL;
        ttt_set_requires_grad(in16[i], 1);
        ttt_set_requires_grad(in64[i], 1);
    }
    ttt_tensor *gout16 = ttt_cast(ctx, ttt_randn(ctx, TTT_F32, TTT_DIMS(c->b, c->h, c->tq, c->dv), 1.0), TTT_BF16);
    ttt_tensor *gout64 = gout16 ? ttt_cast(ctx, gout16, TTT_F64) : NULL;
    ttt_tensor *o16 = ttt_attention(ctx, in16[0], in16[1], in16[2], c->causal, c->window, 0.0);
    ttt_tensor *o64 = ttt_attention(ctx, in64[0], in64[1], in64[2], c->causal, c->window, 0.0);
    const int fused = o16 && o16->node && strcmp(o16->node->op, "attention") == 0;
    if (!o16 || !o64 || o16->dtype != TTT_BF16 || ttt_grad(ctx, 1, &o16, &gout16, 3, in16, g16, 0) != TTT_OK ||
        ttt_grad(ctx, 1, &o64, &gout64, 3, in64, g64, 0) != TTT_OK) {
        fprintf(stderr, "gpu bf16 case failed: %s\n", ttt_error(ctx));
        return 0;
    }
    double e[4] = {max_err(ctx, o16, o64), max_err(ctx, g16[0], g64[0]), max_err(ctx, g16[1], g64[1]),
                   max_err(ctx, g16[2], g64[2])};
    int ok = fused == expect_fused && g16[0]->dtype == TTT_BF16;
    for (int i = 0; i < 4; i++) ok = ok && e[i] <= tol;
    printf("%s bf16 B%lld H%lld Tq%lld Tk%lld d%lld dv%lld causal%d window%lld%s%s: out %.2e dq %.2e dk %.2e dv %.2e\n",
           ok ? "ok  " : "FAIL", (long long)c->b, (long long)c->h, (long long)c->tq, (long long)c->tk,
           (long long)c->d, (long long)c->dv, c->causal, (long long)c->window, c->permuted ? " permuted" : "",
           expect_fused ? "" : " (declined: cast to f32)", e[0], e[1], e[2], e[3]);
    if (fused != expect_fused) printf("     (the fused bf16 kernel %s)\n", fused ? "ran" : "did not run");
    return ok;
}

/* Two runs of the bf16 forward and backward give the same bits (no atomics). */
static int gpu_bf16_deterministic(ttt_ctx *ctx) {
    ttt_step_reset(ctx);
    ttt_tensor *in[3], *g[2][3], *o[2];
    for (int i = 0; i < 3; i++) {
        in[i] = ttt_randn(ctx, TTT_BF16, TTT_DIMS(1, 4, 1000, 64), 1.0);
        ttt_set_requires_grad(in[i], 1);
    }
    ttt_tensor *gout = ttt_randn(ctx, TTT_BF16, TTT_DIMS(1, 4, 1000, 64), 1.0);
    for (int r = 0; r < 2; r++) {
        o[r] = ttt_attention(ctx, in[0], in[1], in[2], 1, 300, 0.0);
        if (!o[r] || ttt_grad(ctx, 1, &o[r], &gout, 3, in, g[r], 0) != TTT_OK) return 0;
    }
    int same = 1;
    for (int i = 0; i < 4; i++) {
        const ttt_tensor *a = i < 3 ? g[0][i] : o[0], *b = i < 3 ? g[1][i] : o[1];
        const int64_t n = ttt_numel(a);
        uint16_t *ha = malloc(2 * (size_t)n), *hb = malloc(2 * (size_t)n);
        if (ttt_copy_to_host(ctx, a, ha, TTT_BF16) != TTT_OK || ttt_copy_to_host(ctx, b, hb, TTT_BF16) != TTT_OK ||
            memcmp(ha, hb, 2 * (size_t)n) != 0)
            same = 0;
        free(ha), free(hb);
    }
    printf("%s bf16 forward and backward, two runs: %s\n", same ? "ok  " : "FAIL", same ? "same bits" : "differ");
    return same;
}

/* Second order on the GPU: the create_graph VJP equals the composed one. */
static double gpu_second_order(ttt_ctx *ctx, const ttt_backend *fused) {
    ttt_step_reset(ctx);
    ttt_tensor *in[3], *w = ttt_randn(ctx, TTT_F32, TTT_DIMS(1, 2, 40, 8), 1.0), *g[2][3], *gg[2][3];
    for (int i = 0; i < 3; i++) {
        in[i] = ttt_randn(ctx, TTT_F32, TTT_DIMS(1, 2, 40, 8), 1.0);
        ttt_set_requires_grad(in[i], 1);
    }
    for (int f = 0; f < 2; f++) {
        use_fused(ctx, fused, f);
        ttt_tensor *o = ttt_attention(ctx, in[0], in[1], in[2], 1, 9, 0.0);
        ttt_tensor *loss = o ? ttt_sum(ctx, ttt_mul(ctx, o, w), 0, NULL, 0) : NULL;
        if (!loss || ttt_grad(ctx, 1, &loss, NULL, 3, in, g[f], 1) != TTT_OK) return INFINITY;
        ttt_tensor *l2 = ttt_sum(ctx, ttt_mul(ctx, g[f][0], g[f][1]), 0, NULL, 0);
        if (!l2 || ttt_grad(ctx, 1, &l2, NULL, 3, in, gg[f], 0) != TTT_OK) return INFINITY;
    }
    use_fused(ctx, fused, 1);
    double worst = 0;
    for (int i = 0; i < 3; i++)
        worst = fmax(worst, fmax(max_err(ctx, g[1][i], g[0][i]), max_err(ctx, gg[1][i], gg[0][i])));
    return worst;
}

static void gpu_checks(ttt_ctx *ctx, int quick) {
    const ttt_backend *fused = ctx->be;
    g_plain = *fused;
    g_plain.attention_fwd = NULL;
    g_plain.attention_bwd = NULL;
    const gpu_case all[] = {
        {2, 3, 100, 100, 64, 64, 1, 0, 0},       {1, 2, 257, 257, 64, 64, 0, 0, 0},  /* causal; bidirectional */
        {1, 3, 77, 300, 64, 64, 1, 0, 0},        {2, 2, 300, 300, 64, 64, 1, 1, 0},  /* KV offset; window 1 */
        {2, 2, 300, 300, 64, 64, 1, 7, 0},       {1, 2, 200, 200, 64, 64, 1, 1000, 0}, /* window 7; window > T */
        {1, 2, 190, 250, 128, 128, 1, 33, 0},    {1, 2, 100, 100, 33, 17, 1, 5, 0},  /* D = 128; odd heads */
        {1, 2, 513, 513, 128, 128, 1, 0, 0},     {1, 3, 65, 129, 20, 20, 0, 0, 0},
        {1, 1, 1, 50, 64, 64, 1, 0, 0},          {2, 3, 150, 150, 64, 64, 1, 0, 1},  /* decode step; views */
        {1, 2, 130, 140, 96, 128, 0, 0, 1},      {1, 4, 2048, 2048, 64, 64, 1, 0, 0},
        {1, 2, 1500, 1500, 128, 128, 1, 256, 0}, {1, 2, 3000, 3000, 64, 64, 0, 0, 0},
    };
    const int n = quick ? 8 : (int)(sizeof all / sizeof all[0]); /* quick: both head builds, the scalar path */
    for (int i = 0; i < n; i++) CHECK(gpu_parity(ctx, &all[i], 2e-4));
    const double e2 = gpu_second_order(ctx, fused);
    printf("second order (create_graph), fused vs composed f32: %.2e\n", e2);
    CHECK(e2 < 1e-4);

    /* bf16: the tensor-core kernels (d = dv = 64 or 128), then shapes they decline */
    const gpu_case bf[] = {
        {2, 3, 100, 100, 64, 64, 1, 0, 0},     {1, 2, 257, 257, 64, 64, 0, 0, 0},   /* causal; bidirectional */
        {1, 3, 77, 300, 64, 64, 1, 0, 0},      {2, 2, 300, 300, 64, 64, 1, 1, 0},   /* KV offset; window 1 */
        {2, 2, 300, 300, 64, 64, 1, 7, 0},     {1, 2, 200, 200, 64, 64, 1, 1000, 0}, /* window 7; window > T */
        {1, 2, 190, 250, 128, 128, 1, 33, 0},  {1, 2, 513, 513, 128, 128, 1, 0, 0},  /* D = 128 */
        {1, 1, 1, 50, 64, 64, 1, 0, 0},        {2, 3, 150, 150, 64, 64, 1, 0, 1},    /* decode step; views */
        {1, 2, 130, 140, 128, 128, 0, 0, 1},   {1, 4, 2048, 2048, 64, 64, 1, 0, 0},
        {1, 2, 1500, 1500, 128, 128, 1, 256, 0}, {1, 2, 3000, 3000, 64, 64, 0, 0, 0},
        {1, 2, 1000, 1200, 64, 64, 1, 129, 0},
        /* a TTT-E2E chunk: few query tiles over many keys, where the launchers split the keys (attention.cu) */
        {1, 3, 256, 2500, 64, 64, 1, 2000, 0}, {1, 2, 200, 3000, 128, 128, 1, 0, 0},
        /* grids large enough for the launchers' large-grid configurations (attnbf::Cfg) */
        {2, 16, 4096, 4096, 64, 64, 1, 0, 0},  {1, 48, 2048, 2048, 64, 64, 1, 300, 0},
        {1, 16, 2048, 2048, 128, 128, 0, 0, 0},
    };
    const int nb = quick ? 6 : (int)(sizeof bf / sizeof bf[0]);
    for (int i = 0; i < nb; i++) CHECK(gpu_parity_bf16(ctx, &bf[i], 1, 2e-2));
    const gpu_case declined[] = {{1, 2, 100, 100, 32, 32, 1, 0, 0}, {1, 2, 90, 120, 64, 32, 1, 17, 0}};
    for (int i = 0; i < 2; i++) CHECK(gpu_parity_bf16(ctx, &declined[i], 0, 2e-2));
    if (!quick) CHECK(gpu_bf16_deterministic(ctx));
}

/* ---- timings (--bench) ------------------------------------------------------------------------------------ */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A dense [B, H, T, d] input: one head's random values repeated over batch and heads (the kernels' time
 * does not depend on the values, and drawing B H T d normals on the host takes seconds at T = 128K). */
static ttt_tensor *bench_input(ttt_ctx *ctx, ttt_dtype dt, int64_t b, int64_t h, int64_t t, int64_t d) {
    return ttt_contiguous(ctx, ttt_expand(ctx, ttt_randn(ctx, dt, TTT_DIMS(1, 1, t, d), 1.0), TTT_DIMS(b, h, t, d)));
}

/* median milliseconds of causal attention (backward too when grad), queries [B, H, tq, d], keys and values
 * [B, H, tk, d] of dtype dt (the queries the last tq positions) */
static double time_attention_qk(ttt_ctx *ctx, ttt_dtype dt, int64_t b, int64_t h, int64_t tq, int64_t tk, int64_t d,
                                int64_t window, int grad, int reps) {
    ttt_step_reset(ctx);
    ttt_tensor *in[3], *gout = bench_input(ctx, dt, b, h, tq, d), *g[3];
    for (int i = 0; i < 3; i++) in[i] = bench_input(ctx, dt, b, h, i ? tk : tq, d);
    double ms[32];
    if (reps > 32) reps = 32;
    for (int r = 0; r <= reps; r++) { /* the first run warms up */
        const ttt_mark_t m = ttt_mark(ctx);
        ctx->be->synchronize(ctx->bs);
        const double t0 = now();
        int ok;
        if (grad) {
            for (int i = 0; i < 3; i++) ttt_set_requires_grad(in[i], 1);
            ttt_tensor *o = ttt_attention(ctx, in[0], in[1], in[2], 1, window, 0.0);
            ok = o && ttt_grad(ctx, 1, &o, &gout, 3, in, g, 0) == TTT_OK;
        } else {
            ttt_no_grad_begin(ctx);
            ok = ttt_attention(ctx, in[0], in[1], in[2], 1, window, 0.0) != NULL;
            ttt_no_grad_end(ctx);
        }
        ctx->be->synchronize(ctx->bs);
        if (!ok) {
            fprintf(stderr, "bench failed: %s\n", ttt_error(ctx));
            return NAN;
        }
        if (r > 0) ms[r - 1] = 1e3 * (now() - t0);
        ttt_release(ctx, m);
    }
    qsort(ms, (size_t)reps, sizeof ms[0], cmp_double);
    return ms[reps / 2];
}
static double time_attention(ttt_ctx *ctx, ttt_dtype dt, int64_t b, int64_t h, int64_t t, int64_t d, int64_t window,
                             int grad, int reps) {
    return time_attention_qk(ctx, dt, b, h, t, t, d, window, grad, reps);
}

/* --bench-chunks: TTT-E2E's inner-loop attention (bf16, B 1, H 12, d 64): a chunk of 1K queries over the keys
 * before it, window 8K; the shapes of the 125M preset's chunks at T 8K and past it (run it with
 * TTT_ATTN_SPLIT=0 for the kernels without split keys) */
static void bench_chunks(ttt_ctx *ctx) {
    printf("csv,path,pass,B,H,Tq,Tk,d,window,ms\n");
    const int64_t tks[] = {1024, 2048, 4096, 8192, 9215};
    for (int i = 0; i < 5; i++)
        for (int grad = 0; grad < 2; grad++) {
            printf("csv,chunk_bf16,%s,1,12,1024,%lld,64,8192,%.3f\n", grad ? "fwd+bwd" : "fwd", (long long)tks[i],
                   time_attention_qk(ctx, TTT_BF16, 1, 12, 1024, tks[i], 64, 8192, grad, 20));
            fflush(stdout);
        }
}

/* f32: 0 times the bf16 path only (--bench-bf16) */
static void bench(ttt_ctx *ctx, int f32) {
    const ttt_backend *fused = ctx->be;
    g_plain = *fused;
    g_plain.attention_fwd = NULL;
    g_plain.attention_bwd = NULL;
    const int64_t h = 12, d = 64;
    printf("csv,path,pass,B,H,T,d,window,ms\n");
    /* causal, B * T = 16K tokens */
    const int64_t ts[] = {2048, 4096, 8192, 16384, 32768};
    for (int i = 0; i < 5 && f32; i++) {
        const int64_t t = ts[i], b = t >= 16384 ? 1 : 16384 / t;
        for (int f = 1; f >= 0; f--) {
            if (!f && t > 16384) continue; /* the composed path takes seconds there */
            use_fused(ctx, fused, f);
            const int reps = f ? 10 : 3;
            for (int grad = 0; grad < 2; grad++)
                printf("csv,%s,%s,%lld,%lld,%lld,%lld,0,%.3f\n", f ? "fused" : "composed", grad ? "fwd+bwd" : "fwd",
                       (long long)b, (long long)h, (long long)t, (long long)d,
                       time_attention(ctx, TTT_F32, b, h, t, d, 0, grad, reps));
            fflush(stdout);
        }
    }
    /* bf16 fused, causal: at B * T = 16K (the table above) and at B = 1 up to 128K, for d = 64 and 128 */
    use_fused(ctx, fused, 1);
    const int64_t bf16_ts[] = {2048, 4096, 8192, 16384, 32768, 65536, 131072}, dims[] = {64, 128};
    for (int di = 0; di < 2; di++)
        for (int i = 0; i < 7; i++) {
            const int64_t t = bf16_ts[i], dd = dims[di], bs[2] = {t >= 16384 ? 1 : 16384 / t, 1};
            for (int j = 0; j < (bs[0] == 1 ? 1 : 2); j++)
                for (int grad = 0; grad < 2; grad++) {
                    printf("csv,fused_bf16,%s,%lld,%lld,%lld,%lld,0,%.3f\n", grad ? "fwd+bwd" : "fwd",
                           (long long)bs[j], (long long)h, (long long)t, (long long)dd,
                           time_attention(ctx, TTT_BF16, bs[j], h, t, dd, 0, grad, t >= 65536 ? 5 : 20));
                    fflush(stdout);
                }
        }
    /* sliding window 8K, forward: time per token should stay flat */
    const int64_t long_ts[] = {32768, 65536, 131072};
    for (int i = 0; i < 3 && f32; i++)
        for (int f = 1; f >= 0; f--) {
            use_fused(ctx, fused, f);
            printf("csv,%s,fwd,1,%lld,%lld,%lld,8192,%.3f\n", f ? "fused" : "composed", (long long)h,
                   (long long)long_ts[i], (long long)d,
                   time_attention(ctx, TTT_F32, 1, h, long_ts[i], d, 8192, 0, f ? 5 : 2));
            fflush(stdout);
        }
    for (int i = 0; i < 3; i++) {
        use_fused(ctx, fused, 1);
        printf("csv,fused_bf16,fwd,1,%lld,%lld,%lld,8192,%.3f\n", (long long)h, (long long)long_ts[i], (long long)d,
               time_attention(ctx, TTT_BF16, 1, h, long_ts[i], d, 8192, 0, 10));
        fflush(stdout);
    }
    use_fused(ctx, fused, 1);
}

/* --bench-one T D: one bf16 causal forward + backward (B 1, H 12), a warm-up and 3 timed runs, for a profiler
 * (bench/gpu/ncu_attention.sh) to pick its kernels from */
static int bench_one(ttt_ctx *ctx, int argc, char **argv) {
    const long t = argc > 2 ? strtol(argv[2], NULL, 10) : 0, d = argc > 3 ? strtol(argv[3], NULL, 10) : 0;
    if (t < 1 || t > (1 << 20) || (d != 64 && d != 128)) {
        fprintf(stderr, "usage: test_attention_fused --bench-one T D   (T in 1..1048576, D 64 or 128)\n");
        return 1;
    }
    const double ms = time_attention(ctx, TTT_BF16, 1, 12, t, d, 0, 1, 3);
    printf("csv,fused_bf16,fwd+bwd,1,12,%ld,%ld,0,%.3f\n", t, d, ms);
    return isnan(ms) ? 1 : 0;
}

int main(int argc, char **argv) {
    const int bench_bf16 = argc > 1 && strcmp(argv[1], "--bench-bf16") == 0;
    const int bench_chunks_mode = argc > 1 && strcmp(argv[1], "--bench-chunks") == 0;
    const int bench_one_mode = argc > 1 && strcmp(argv[1], "--bench-one") == 0;
    const int bench_mode =
        bench_bf16 || bench_chunks_mode || bench_one_mode || (argc > 1 && strcmp(argv[1], "--bench") == 0);
    const int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
#ifdef TTT_HAVE_CUDA
    /* our kernels are what this test checks and times: cuDNN (the default for bf16 where it loads) only when
     * TTT_CUDNN names a mode; test_attention_cudnn checks it */
    const char *cudnn = getenv("TTT_CUDNN");
    if (!cudnn || !*cudnn) ttt__cudnn_set_enabled(TTT_CUDNN_OFF);
#endif
    if (!bench_mode) cpu_checks();
    ttt_ctx_config gcfg = {.device = TTT_CUDA, .arena_bytes = (size_t)1 << 30, .seed = 5};
    ttt_ctx *gctx = ttt_ctx_new(&gcfg);
    if (!gctx) {
        printf("no CUDA device: the GPU checks are skipped\n");
        if (bench_mode) return 1;
    } else if (!gctx->be->attention_fwd) {
        CHECK_MSG(0, "the CUDA backend has no fused attention");
    } else if (bench_one_mode) {
        const int rc = bench_one(gctx, argc, argv);
        ttt_ctx_free(gctx);
        return rc;
    } else if (bench_chunks_mode) {
        bench_chunks(gctx);
    } else if (bench_mode) {
        bench(gctx, !bench_bf16);
    } else {
        gpu_checks(gctx, quick);
    }
    if (gctx) ttt_ctx_free(gctx);
    TEST_MAIN_END();
}
