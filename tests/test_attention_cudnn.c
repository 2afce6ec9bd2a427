/* The cuDNN path of the fused bf16 attention (src/backends/cuda/attention_cudnn.cu, docs/cudnn.md).
 *
 * Needs a GPU and a libcudnn that loads (TTT_CUDNN_LIB names its folder where the loader does not find it);
 * without either it says why and exits 77, which ctest counts as skipped. It turns the path on itself
 * (ttt__cudnn_set_enabled), so TTT_CUDNN need not be set.
 *
 * For each shape (head sizes 64 and 128, causal and not, lengths that are not multiples of 64 or 128,
 * Tq < Tk with and without the mask (causal: the diagonal aligned bottom-right), B * H > 1):
 *   - the backend entries called directly, cuDNN on and off on the same bf16 inputs: out, lse, then dq, dk,
 *     dv and delta, also crossed (cuDNN's backward on our forward's out and lse, ours on cuDNN's), so either
 *     backward may follow either forward;
 *   - lse against log-sum-exp computed in float64 on the host;
 *   - ttt_attention and ttt_grad with cuDNN on against the float64 composed attention on the CPU (the same
 *     bf16 values), and the counters say cuDNN ran what our rules ask of it (ttt__cudnn_takes);
 * then shapes it must leave to our kernels (a sliding window, a decode step), a second-order gradient
 * (create_graph) with cuDNN on against cuDNN off, and the modes that keep a run's bits (check_repeat):
 * TTT_CUDNN=fwd (cuDNN's forward repeats its bits, the backward is ours bit for bit) and TTT_CUDNN=det (cuDNN's
 * deterministic backward repeats its bits and agrees with ours), each with ttt_attention + ttt_grad giving the
 * same bits twice; whether the default backward (TTT_CUDNN=1) repeats its bits is printed. Last, a training step
 * with cuDNN recorded as a CUDA graph (check_graph): cuDNN is captured and the replay gives the eager bits; and a
 * backward over the workspace cap, cut into groups of heads or blocks of queries (check_cut), against the same call
 * run whole.
 *
 * `--bench` prints CSV lines (the format of test_attention_fused --bench) of causal bf16 attention, B = 1,
 * H = 12, d 64 and 128, T 2K to 32K, forward and forward + backward, cuDNN on ("cudnn_bf16"), its forward with
 * our backward (TTT_CUDNN=fwd, "cudnnfwd_bf16") and its deterministic backward (TTT_CUDNN=det, "cudnndet_bf16"),
 * those two forward + backward only, and off ("own_bf16"), for
 * bench/gpu/cudnn_attention_bench.py. */
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

enum { SKIP = 77 };

#ifdef TTT_HAVE_CUDA

/* a dense copy of t in double, or NULL */
static double *host(ttt_ctx *ctx, const ttt_tensor *t) {
    double *h = malloc(sizeof(double) * (size_t)ttt_numel(t));
    if (h && ttt_copy_to_host(ctx, t, h, TTT_F64) != TTT_OK) {
        fprintf(stderr, "copy to host: %s\n", ttt_error(ctx));
        free(h);
        return NULL;
    }
    return h;
}

/* max |a - b| / max(1, max |b|) over n; NaN (or a missing array) gives NaN */
static double rel_err(const double *a, const double *b, int64_t n) {
    if (!a || !b) return NAN;
    double worst = 0, scale = 1;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) {
        const double e = fabs(a[i] - b[i]) / scale;
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

static double err_t(ttt_ctx *ctx, const ttt_tensor *a, const ttt_tensor *b) {
    double *ha = host(ctx, a), *hb = host(ctx, b);
    const double e = rel_err(ha, hb, ttt_numel(b));
    free(ha), free(hb);
    return e;
}

typedef struct {
    int64_t b, h, tq, tk, d;
    int causal;
} shape;

static void info(ttt_cudnn_info *i) { ttt__cudnn_info(i); }

/* lse of every query row in float64 from the host copies of q [BH, tq, d] and k [BH, tk, d] */
static double *lse_f64(const double *q, const double *k, const shape *s, double scale) {
    const int64_t bh = s->b * s->h;
    double *l = malloc(sizeof(double) * (size_t)(bh * s->tq)), *row = malloc(sizeof(double) * (size_t)s->tk);
    for (int64_t z = 0; z < bh; z++)
        for (int64_t i = 0; i < s->tq; i++) {
            const int64_t last = s->causal ? s->tk - s->tq + i : s->tk - 1;
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j <= last; j++) {
                double dot = 0;
                for (int64_t c = 0; c < s->d; c++) dot += q[(z * s->tq + i) * s->d + c] * k[(z * s->tk + j) * s->d + c];
                row[j] = scale * dot;
                mx = fmax(mx, row[j]);
            }
            for (int64_t j = 0; j <= last; j++) sum += exp(row[j] - mx);
            l[z * s->tq + i] = mx + log(sum);
        }
    free(row);
    return l;
}

/* The backend's fused entries on these tensors, cuDNN on or off: out and lse, then the gradients from dout
 * and the given out / lse (so a backward can be fed the other path's forward). */
static int direct_fwd(ttt_ctx *ctx, int cudnn, const shape *s, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, double scale,
                      ttt_tensor **out, ttt_tensor **lse) {
    ttt__cudnn_set_enabled(cudnn);
    *out = ttt_new(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tq, s->d));
    *lse = ttt_new(ctx, TTT_F32, TTT_DIMS(s->b, s->h, s->tq));
    if (!*out || !*lse) return TTT_ERR;
    return ctx->be->attention_fwd(ctx->bs, *out, *lse, q, k, v, s->causal, 0, scale);
}

static int direct_bwd(ttt_ctx *ctx, int cudnn, const shape *s, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v,
                      ttt_tensor *out, ttt_tensor *lse, ttt_tensor *dout, double scale, ttt_tensor **g) {
    ttt__cudnn_set_enabled(cudnn);
    g[0] = ttt_new(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tq, s->d));
    g[1] = ttt_new(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tk, s->d));
    g[2] = ttt_new(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tk, s->d));
    g[3] = ttt_new(ctx, TTT_F32, TTT_DIMS(s->b, s->h, s->tq)); /* delta */
    if (!g[0] || !g[1] || !g[2] || !g[3]) return TTT_ERR;
    return ctx->be->attention_bwd(ctx->bs, g[0], g[1], g[2], g[3], dout, q, k, v, out, lse, s->causal, 0, scale);
}

/* The same bf16 values as f64 tensors on the CPU context, attention and its gradients there. */
static int cpu_reference(ttt_ctx *cctx, const shape *s, double *const *hin, const double *hgout, double **ref) {
    ttt_step_reset(cctx);
    const int64_t t[3] = {s->tq, s->tk, s->tk};
    ttt_tensor *in[3], *g[3];
    for (int i = 0; i < 3; i++) {
        in[i] = ttt_from_host(cctx, TTT_F64, TTT_DIMS(s->b, s->h, t[i], s->d), hin[i]);
        if (!in[i]) return TTT_ERR;
        ttt_set_requires_grad(in[i], 1);
    }
    ttt_tensor *gout = ttt_from_host(cctx, TTT_F64, TTT_DIMS(s->b, s->h, s->tq, s->d), hgout);
    ttt_tensor *o = ttt_attention(cctx, in[0], in[1], in[2], s->causal, 0, 0.0);
    if (!gout || !o || ttt_grad(cctx, 1, &o, &gout, 3, in, g, 0) != TTT_OK) {
        fprintf(stderr, "cpu reference: %s\n", ttt_error(cctx));
        return TTT_ERR;
    }
    ref[0] = host(cctx, o);
    for (int i = 0; i < 3; i++) ref[1 + i] = host(cctx, g[i]);
    return ref[0] && ref[1] && ref[2] && ref[3] ? TTT_OK : TTT_ERR;
}

static const double TOL = 2e-2;   /* bf16 results against float64, relative to the largest reference element */
static const double TOL_LSE = 1e-3; /* f32 statistics of the same bf16 inputs */

static int check_shape(ttt_ctx *ctx, ttt_ctx *cctx, const shape *s) {
    ttt_step_reset(ctx);
    const double scale = 1.0 / sqrt((double)s->d);
    ttt_tensor *q = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tq, s->d), 1.0);
    ttt_tensor *k = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tk, s->d), 1.0);
    ttt_tensor *v = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tk, s->d), 1.0);
    ttt_tensor *dout = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tq, s->d), 1.0);
    if (!q || !k || !v || !dout) return 0;
    int ok = 1;
    ttt_cudnn_info i0, i1;
    info(&i0);

    /* 1. the entries directly: forwards, then all four backward pairings */
    ttt_tensor *oc, *lc, *oo, *lo, *gcc[4], *goo[4], *gco[4], *goc[4];
    int rc_fc = direct_fwd(ctx, 1, s, q, k, v, scale, &oc, &lc);
    int rc_fo = direct_fwd(ctx, 0, s, q, k, v, scale, &oo, &lo);
    int rc_bcc = rc_fc == TTT_OK ? direct_bwd(ctx, 1, s, q, k, v, oc, lc, dout, scale, gcc) : TTT_ERR;
    int rc_boo = rc_fo == TTT_OK ? direct_bwd(ctx, 0, s, q, k, v, oo, lo, dout, scale, goo) : TTT_ERR;
    int rc_bco = rc_fo == TTT_OK ? direct_bwd(ctx, 1, s, q, k, v, oo, lo, dout, scale, gco) : TTT_ERR; /* cuDNN bwd, our fwd */
    int rc_boc = rc_fc == TTT_OK ? direct_bwd(ctx, 0, s, q, k, v, oc, lc, dout, scale, goc) : TTT_ERR; /* ours bwd, cuDNN fwd */
    info(&i1);
    const int64_t fwd_ran = i1.fwd_runs - i0.fwd_runs, bwd_ran = i1.bwd_runs - i0.bwd_runs;
    if (rc_fc || rc_fo || rc_bcc || rc_boo || rc_bco || rc_boc) {
        printf("FAIL B%lld H%lld Tq%lld Tk%lld d%lld causal%d: an entry failed: %s\n", (long long)s->b, (long long)s->h,
               (long long)s->tq, (long long)s->tk, (long long)s->d, s->causal, ttt_error(ctx));
        return 0;
    }
    /* what cuDNN is asked to do by our rules (attention_cudnn.h); a backward it is not asked runs in our kernels on
     * cuDNN's forward */
    const int want_f = ttt__cudnn_takes(0, s->tq, s->tk, s->causal, 0), want_b = ttt__cudnn_takes(1, s->tq, s->tk, s->causal, 0);
    const int ran = fwd_ran == want_f && bwd_ran == 2 * want_b;
    ok = ok && ran;
    double *hq = host(ctx, q), *hk = host(ctx, k);
    double *lref = hq && hk ? lse_f64(hq, hk, s, scale) : NULL;
    double *hlc = host(ctx, lc), *hlo = host(ctx, lo);
    const int64_t rows = s->b * s->h * s->tq;
    const double e_lse_ref = rel_err(hlc, lref, rows), e_lse_own = rel_err(hlc, hlo, rows);
    const double e_out = err_t(ctx, oc, oo);
    double e_cc[4], e_co[4], e_oc[4];
    for (int j = 0; j < 4; j++) {
        e_cc[j] = err_t(ctx, gcc[j], goo[j]);
        e_co[j] = err_t(ctx, gco[j], goo[j]);
        e_oc[j] = err_t(ctx, goc[j], goo[j]);
    }
    ok = ok && e_lse_ref <= TOL_LSE && e_lse_own <= TOL_LSE && e_out <= TOL;
    for (int j = 0; j < 4; j++) ok = ok && e_cc[j] <= TOL && e_co[j] <= TOL && e_oc[j] <= TOL;
    printf("%s B%lld H%lld Tq%lld Tk%lld d%lld causal%d: cuDNN ran fwd %lld bwd %lld; vs ours: out %.1e lse %.1e "
           "dq %.1e dk %.1e dv %.1e delta %.1e; lse vs f64 %.1e; crossed (cuDNN bwd on our fwd / ours on cuDNN's): "
           "dq %.1e/%.1e dk %.1e/%.1e dv %.1e/%.1e\n",
           ok ? "ok  " : "FAIL", (long long)s->b, (long long)s->h, (long long)s->tq, (long long)s->tk, (long long)s->d,
           s->causal, (long long)fwd_ran, (long long)bwd_ran, e_out, e_lse_own, e_cc[0], e_cc[1], e_cc[2], e_cc[3],
           e_lse_ref, e_co[0], e_oc[0], e_co[1], e_oc[1], e_co[2], e_oc[2]);
    if (!ran) printf("     cuDNN did not run every call it was asked: %s\n", i1.why);
    else if (!want_b) printf("     (cuDNN is not asked for this backward: %s)\n", i1.why);

    /* 2. the op with cuDNN on against float64 on the CPU */
    double *hv = host(ctx, v), *hd = host(ctx, dout), *ref[4] = {NULL, NULL, NULL, NULL};
    double *hin[3] = {hq, hk, hv};
    int ok2 = hv && hd && cpu_reference(cctx, s, hin, hd, ref) == TTT_OK;
    ttt__cudnn_set_enabled(1);
    info(&i0);
    ttt_tensor *in[3] = {q, k, v}, *g[3];
    for (int j = 0; j < 3; j++) ttt_set_requires_grad(in[j], 1);
    ttt_tensor *o = ttt_attention(ctx, q, k, v, s->causal, 0, 0.0);
    ok2 = ok2 && o && ttt_grad(ctx, 1, &o, &dout, 3, in, g, 0) == TTT_OK;
    for (int j = 0; j < 3; j++) ttt_set_requires_grad(in[j], 0);
    info(&i1);
    double e_ref[4] = {NAN, NAN, NAN, NAN}, e_own_ref[4] = {NAN, NAN, NAN, NAN};
    if (ok2) {
        ttt_tensor *res[4] = {o, g[0], g[1], g[2]}, *own[4] = {oo, goo[0], goo[1], goo[2]};
        for (int j = 0; j < 4; j++) {
            double *h = host(ctx, res[j]), *ho = host(ctx, own[j]);
            const int64_t n = ttt_numel(res[j]);
            e_ref[j] = rel_err(h, ref[j], n);
            e_own_ref[j] = rel_err(ho, ref[j], n);
            free(h), free(ho);
        }
    } else {
        printf("     the op failed: %s\n", ttt_error(ctx));
    }
    const int ran2 = i1.fwd_runs - i0.fwd_runs == want_f && i1.bwd_runs - i0.bwd_runs == want_b;
    ok2 = ok2 && ran2;
    for (int j = 0; j < 4; j++) ok2 = ok2 && e_ref[j] <= TOL;
    printf("%s   ttt_attention + ttt_grad, cuDNN vs float64 CPU: out %.1e dq %.1e dk %.1e dv %.1e (our kernels: %.1e %.1e "
           "%.1e %.1e)%s\n",
           ok2 ? "ok  " : "FAIL", e_ref[0], e_ref[1], e_ref[2], e_ref[3], e_own_ref[0], e_own_ref[1], e_own_ref[2],
           e_own_ref[3], ran2 ? "" : " (cuDNN did not run what it was asked)");
    free(hq), free(hk), free(hv), free(hd), free(lref), free(hlc), free(hlo);
    for (int j = 0; j < 4; j++) free(ref[j]);
    return ok && ok2;
}

/* Shapes the path must leave to our kernels: the result is still right and cuDNN's counters do not move. */
static int check_declined(ttt_ctx *ctx, const shape *s, int64_t window, const char *what) {
    ttt_step_reset(ctx);
    ttt__cudnn_set_enabled(1);
    ttt_tensor *q = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tq, s->d), 1.0);
    ttt_tensor *k = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tk, s->d), 1.0);
    ttt_tensor *v = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tk, s->d), 1.0);
    ttt_tensor *dout = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tq, s->d), 1.0);
    ttt_tensor *in[3] = {q, k, v}, *g[3], *in64[3], *g64[3];
    for (int j = 0; j < 3; j++) {
        in64[j] = in[j] ? ttt_cast(ctx, in[j], TTT_F64) : NULL;
        ttt_set_requires_grad(in[j], 1);
        ttt_set_requires_grad(in64[j], 1);
    }
    ttt_tensor *d64 = dout ? ttt_cast(ctx, dout, TTT_F64) : NULL;
    ttt_cudnn_info i0, i1;
    info(&i0);
    ttt_tensor *o = ttt_attention(ctx, q, k, v, s->causal, window, 0.0);
    int ok = o && ttt_grad(ctx, 1, &o, &dout, 3, in, g, 0) == TTT_OK;
    info(&i1);
    ttt_tensor *o64 = ttt_attention(ctx, in64[0], in64[1], in64[2], s->causal, window, 0.0);
    ok = ok && o64 && ttt_grad(ctx, 1, &o64, &d64, 3, in64, g64, 0) == TTT_OK;
    double e = ok ? err_t(ctx, o, o64) : NAN;
    for (int j = 0; j < 3 && ok; j++) e = fmax(e, err_t(ctx, g[j], g64[j]));
    const int untouched = i1.fwd_runs == i0.fwd_runs && i1.bwd_runs == i0.bwd_runs;
    ok = ok && untouched && e <= TOL;
    printf("%s declined (%s) B%lld H%lld Tq%lld Tk%lld d%lld: worst vs composed f64 %.1e%s\n", ok ? "ok  " : "FAIL", what,
           (long long)s->b, (long long)s->h, (long long)s->tq, (long long)s->tk, (long long)s->d, e,
           untouched ? "" : " (cuDNN ran it)");
    return ok;
}

static int same_bits(ttt_ctx *ctx, const ttt_tensor *a, const ttt_tensor *b) {
    double *ha = host(ctx, a), *hb = host(ctx, b);
    const int same = ha && hb && ttt_numel(a) == ttt_numel(b) && !memcmp(ha, hb, sizeof(double) * (size_t)ttt_numel(a));
    free(ha), free(hb);
    return same;
}

/* The modes that keep a run's bits. TTT_CUDNN_FWD (TTT_CUDNN=fwd): cuDNN runs the forward, our kernels every
 * backward; its forward repeats its bits (no atomics) and the backward is ours bit for bit. TTT_CUDNN_DET
 * (TTT_CUDNN=det): cuDNN runs both, the backward in its deterministic form, which must repeat its bits and agree
 * with ours within TOL. In both, ttt_attention + ttt_grad give the same bits twice. TTT_CUDNN_ALL is run too,
 * for the record only: whether cuDNN's default backward repeats its bits is printed, not checked. */
static int check_repeat(ttt_ctx *ctx, const shape *s, int mode) {
    ttt_step_reset(ctx);
    const double scale = 1.0 / sqrt((double)s->d);
    ttt_tensor *in[3], *dout = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tq, s->d), 1.0);
    const int64_t t[3] = {s->tq, s->tk, s->tk};
    for (int i = 0; i < 3; i++) in[i] = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, t[i], s->d), 1.0);
    if (!in[0] || !in[1] || !in[2] || !dout) return 0;
    const char *name = mode == TTT_CUDNN_FWD ? "forward-only (fwd)" : mode == TTT_CUDNN_DET ? "deterministic (det)" : "default (1)";
    ttt_cudnn_info i0, i1, i2;
    info(&i0);
    ttt_tensor *o1, *l1, *o2, *l2, *g1[4], *g2[4], *go[4];
    int rc = direct_fwd(ctx, mode, s, in[0], in[1], in[2], scale, &o1, &l1);
    rc = rc ? rc : direct_fwd(ctx, mode, s, in[0], in[1], in[2], scale, &o2, &l2);
    rc = rc ? rc : direct_bwd(ctx, mode, s, in[0], in[1], in[2], o1, l1, dout, scale, g1);
    rc = rc ? rc : direct_bwd(ctx, mode, s, in[0], in[1], in[2], o1, l1, dout, scale, g2);
    rc = rc ? rc : direct_bwd(ctx, TTT_CUDNN_OFF, s, in[0], in[1], in[2], o1, l1, dout, scale, go);
    info(&i1);
    /* the op, twice */
    ttt__cudnn_set_enabled(mode);
    ttt_tensor *o[2] = {NULL, NULL}, *g[2][3];
    for (int r = 0; r < 2 && !rc; r++) {
        for (int i = 0; i < 3; i++) ttt_set_requires_grad(in[i], 1);
        o[r] = ttt_attention(ctx, in[0], in[1], in[2], s->causal, 0, 0.0);
        rc = o[r] && ttt_grad(ctx, 1, &o[r], &dout, 3, in, g[r], 0) == TTT_OK ? TTT_OK : TTT_ERR;
        for (int i = 0; i < 3; i++) ttt_set_requires_grad(in[i], 0);
    }
    info(&i2);
    if (rc) {
        printf("FAIL %s B%lld H%lld Tq%lld Tk%lld d%lld: %s\n", name, (long long)s->b, (long long)s->h,
               (long long)s->tq, (long long)s->tk, (long long)s->d, ttt_error(ctx));
        return 0;
    }
    const int want_b = mode == TTT_CUDNN_FWD ? 0 : 2; /* cuDNN backwards per pair of calls */
    const int64_t fwd_ran = (i1.fwd_runs - i0.fwd_runs) + (i2.fwd_runs - i1.fwd_runs);
    const int64_t bwd_ran = (i1.bwd_runs - i0.bwd_runs) + (i2.bwd_runs - i1.bwd_runs);
    const int ran = fwd_ran == 4 && bwd_ran == 2 * want_b && i2.enabled == mode;
    const int fwd_repeats = same_bits(ctx, o1, o2) && same_bits(ctx, l1, l2);
    int bwd_repeats = 1, op_repeats = same_bits(ctx, o[0], o[1]) && same_bits(ctx, o[0], o1), bwd_vs_ours = 1;
    double e = 0;
    for (int j = 0; j < 4; j++) {
        bwd_repeats = bwd_repeats && same_bits(ctx, g1[j], g2[j]);
        if (mode == TTT_CUDNN_FWD) bwd_vs_ours = bwd_vs_ours && same_bits(ctx, g1[j], go[j]);
        else e = fmax(e, err_t(ctx, g1[j], go[j]));
    }
    if (mode != TTT_CUDNN_FWD) bwd_vs_ours = e <= TOL;
    for (int j = 0; j < 3; j++) op_repeats = op_repeats && same_bits(ctx, g[0][j], g[1][j]) && same_bits(ctx, g[0][j], g1[j]);
    const int ok = mode == TTT_CUDNN_ALL ? ran && bwd_vs_ours : ran && fwd_repeats && bwd_repeats && bwd_vs_ours && op_repeats;
    char vs[64];
    if (mode == TTT_CUDNN_FWD) snprintf(vs, sizeof vs, "%s", bwd_vs_ours ? "ours bit for bit" : "NOT ours bit for bit");
    else snprintf(vs, sizeof vs, "against ours %.1e", e);
    printf("%s %s B%lld H%lld Tq%lld Tk%lld d%lld causal%d: cuDNN ran %lld forwards, %lld backwards%s; forward "
           "repeats its bits %s; backward repeats its bits %s, %s; ttt_attention + ttt_grad twice, same bits %s%s\n",
           ok ? "ok  " : "FAIL", name, (long long)s->b, (long long)s->h, (long long)s->tq, (long long)s->tk,
           (long long)s->d, s->causal, (long long)fwd_ran, (long long)bwd_ran, ran ? "" : " (NOT what the mode asks)",
           fwd_repeats ? "yes" : "NO", bwd_repeats ? "yes" : "NO", vs, op_repeats ? "yes" : "NO",
           mode == TTT_CUDNN_ALL ? " (recorded, not checked)" : "");
    if (!ran) printf("     %s\n", i2.why);
    return ok;
}

/* A backward whose workspace is over the cap (attention_cudnn.cu bwd_cut) runs in groups of (batch, head) pairs, or,
 * where one pair's share is over it, per head in blocks of queries whose partial dK, dV are added up in f32. The cap
 * is set to the whole call's workspace / div; the cut call must give the whole call's gradients (within TOL;
 * whether the bits are the same is printed) and repeat its own bits. */
static int check_cut(ttt_ctx *ctx, int mode, const shape *s, double div, int blocks) {
    ttt_step_reset(ctx);
    const double scale = 1.0 / sqrt((double)s->d);
    ttt_tensor *in[3], *dout = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tq, s->d), 1.0);
    for (int i = 0; i < 3; i++) in[i] = ttt_randn(ctx, TTT_BF16, TTT_DIMS(s->b, s->h, s->tq, s->d), 1.0);
    if (!in[0] || !in[1] || !in[2] || !dout) return 0;
    ttt_tensor *o, *l, *whole[4], *cut[4], *again[4];
    ttt_cudnn_info i0, i1, i2;
    info(&i0);
    int rc = direct_fwd(ctx, mode, s, in[0], in[1], in[2], scale, &o, &l);
    rc = rc ? rc : direct_bwd(ctx, mode, s, in[0], in[1], in[2], o, l, dout, scale, whole);
    info(&i1);
    const int64_t ws = i1.bwd_ws, cap = (int64_t)((double)ws / div);
    ttt__cudnn_set_ws_max(cap);
    ttt__cudnn_set_cut(1);
    rc = rc ? rc : direct_bwd(ctx, mode, s, in[0], in[1], in[2], o, l, dout, scale, cut);
    rc = rc ? rc : direct_bwd(ctx, mode, s, in[0], in[1], in[2], o, l, dout, scale, again);
    ttt__cudnn_set_cut(-1);
    ttt__cudnn_set_ws_max(0);
    info(&i2);
    const char *name = mode == TTT_CUDNN_DET ? "deterministic (det)" : "default (1)";
    const char *how = blocks ? "blocks of queries" : "groups of heads";
    if (rc) {
        printf("FAIL cut into %s, %s: %s\n", how, name, ttt_error(ctx));
        return 0;
    }
    const int64_t split = i2.bwd_split_runs - i1.bwd_split_runs, block = i2.bwd_block_runs - i1.bwd_block_runs;
    const int ran = i1.bwd_runs - i0.bwd_runs == 1 && i1.bwd_split_runs == i0.bwd_split_runs &&
                    i2.bwd_runs - i1.bwd_runs == 2 && split == 2 && block == (blocks ? 2 : 0);
    double e = 0;
    int bits = 1, repeats = 1;
    for (int j = 0; j < 4; j++) {
        e = fmax(e, err_t(ctx, cut[j], whole[j]));
        bits = bits && same_bits(ctx, cut[j], whole[j]);
        repeats = repeats && same_bits(ctx, cut[j], again[j]);
    }
    const int ok = ran && e <= TOL && (mode != TTT_CUDNN_DET || repeats);
    printf("%s cut into %s, %s B%lld H%lld T%lld d%lld causal%d: whole call's workspace %lld bytes, cap %lld: %s "
           "(an execution's %lld); against the whole call %.1e, same bits %s; twice, same bits %s\n",
           ok ? "ok  " : "FAIL", how, name, (long long)s->b, (long long)s->h, (long long)s->tq, (long long)s->d, s->causal,
           (long long)ws, (long long)cap, ran ? "ran cut" : "did NOT run as asked", (long long)i2.bwd_ws, e,
           bits ? "yes" : "no", repeats ? "yes" : "NO");
    if (!ran) printf("     %s\n", i2.why);
    return ok;
}

/* A training step with cuDNN inside a recorded CUDA graph (TTT_CUDNN_GRAPHS=1, which main sets): cuDNN is captured
 * (its counters move while recording, it did not decline), and the replay gives the eager step's gradients bit for
 * bit in the modes that keep a run's bits. */
static int attn_step(ttt_ctx *ctx, ttt_tensor *const *p, ttt_tensor *dout) {
    ttt_tensor *o = ttt_attention(ctx, p[0], p[1], p[2], 1, 0, 0.0);
    ttt_tensor *loss = o ? ttt_sum(ctx, ttt_mul(ctx, ttt_cast(ctx, o, TTT_F32), ttt_cast(ctx, dout, TTT_F32)), 0, NULL, 0) : NULL;
    if (!loss || ttt_zero_grad(ctx, 3, p) != TTT_OK) return TTT_ERR;
    return ttt_backward(ctx, loss);
}

static int check_graph(ttt_ctx *ctx, int mode) {
    const int64_t b = 1, h = 4, t = 1024, d = 64;
    ttt_tensor *p[3], *dout = ttt_persistent(ctx, TTT_BF16, TTT_DIMS(b, h, t, d), "dout");
    const char *names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) p[i] = ttt_param(ctx, TTT_BF16, TTT_DIMS(b, h, t, d), names[i]);
    ttt_step_reset(ctx);
    int ok = dout && p[0] && p[1] && p[2] && ttt_assign(ctx, dout, ttt_randn(ctx, TTT_BF16, TTT_DIMS(b, h, t, d), 1.0)) == TTT_OK;
    for (int i = 0; i < 3 && ok; i++) ok = ttt_assign(ctx, p[i], ttt_randn(ctx, TTT_BF16, TTT_DIMS(b, h, t, d), 1.0)) == TTT_OK;
    ttt__cudnn_set_enabled(mode);
    double *want[3] = {NULL, NULL, NULL}, *got[3] = {NULL, NULL, NULL};
    for (int r = 0; r < 2 && ok; r++) { /* twice: sizes the arena, builds the plans, grows the workspace */
        ttt_step_reset(ctx);
        ok = attn_step(ctx, p, dout) == TTT_OK;
    }
    for (int i = 0; i < 3 && ok; i++) ok = (want[i] = host(ctx, p[i]->grad)) != NULL;
    ttt_cudnn_info i0, i1;
    info(&i0);
    ttt_graph *g = NULL;
    ttt_step_reset(ctx);
    ok = ok && ttt_graph_begin(ctx) == TTT_OK;
    if (ok) {
        const int rc = attn_step(ctx, p, dout);
        ok = ttt_graph_end(ctx, &g) == TTT_OK && rc == TTT_OK;
    }
    info(&i1);
    const int captured = i1.fwd_runs > i0.fwd_runs && (mode == TTT_CUDNN_FWD || i1.bwd_runs > i0.bwd_runs);
    for (int i = 0; i < 3 && ok; i++) ok = ttt_zero_grad(ctx, 1, &p[i]) == TTT_OK; /* the replay must rewrite them */
    ok = ok && ttt_graph_replay(ctx, g) == TTT_OK;
    for (int i = 0; i < 3 && ok; i++) ok = (got[i] = host(ctx, p[i]->grad)) != NULL;
    int same = ok;
    for (int i = 0; i < 3 && same; i++) same = !memcmp(want[i], got[i], sizeof(double) * (size_t)ttt_numel(p[i]));
    const int pass = ok && captured && (same || mode == TTT_CUDNN_ALL);
    printf("%s CUDA graph, mode %d: cuDNN captured %s; the replay's gradients are the eager step's bits %s%s%s\n",
           pass ? "ok  " : "FAIL", mode, captured ? "yes" : "NO", same ? "yes" : "NO",
           mode == TTT_CUDNN_ALL ? " (recorded, not checked: this mode's backward uses atomics)" : "",
           ok ? "" : ttt_error(ctx));
    ttt_graph_free(ctx, g);
    for (int i = 0; i < 3; i++) free(want[i]), free(got[i]), ttt_persistent_free(ctx, p[i]);
    ttt_persistent_free(ctx, dout);
    return pass;
}

/* create_graph with cuDNN's first-order kernels under the recorded backward node: the second-order gradient
 * equals the one with our kernels. */
static int check_second_order(ttt_ctx *ctx) {
    ttt_step_reset(ctx);
    ttt_tensor *in[3], *w = ttt_randn(ctx, TTT_BF16, TTT_DIMS(1, 2, 128, 64), 1.0), *gg[2][3];
    for (int i = 0; i < 3; i++) {
        in[i] = ttt_randn(ctx, TTT_BF16, TTT_DIMS(1, 2, 128, 64), 1.0);
        ttt_set_requires_grad(in[i], 1);
    }
    ttt_cudnn_info i0, i1;
    info(&i0);
    for (int c = 0; c < 2; c++) {
        ttt__cudnn_set_enabled(!c);
        ttt_tensor *g[3];
        ttt_tensor *o = ttt_attention(ctx, in[0], in[1], in[2], 1, 0, 0.0);
        ttt_tensor *loss = o ? ttt_sum(ctx, ttt_mul(ctx, ttt_cast(ctx, o, TTT_F32), ttt_cast(ctx, w, TTT_F32)), 0, NULL, 0) : NULL;
        if (!loss || ttt_grad(ctx, 1, &loss, NULL, 3, in, g, 1) != TTT_OK) {
            printf("FAIL second order: %s\n", ttt_error(ctx));
            return 0;
        }
        ttt_tensor *l2 = ttt_sum(ctx, ttt_mul(ctx, ttt_cast(ctx, g[0], TTT_F32), ttt_cast(ctx, g[1], TTT_F32)), 0, NULL, 0);
        if (!l2 || ttt_grad(ctx, 1, &l2, NULL, 3, in, gg[c], 0) != TTT_OK) {
            printf("FAIL second order: %s\n", ttt_error(ctx));
            return 0;
        }
        if (c == 0) info(&i1);
    }
    double e = 0;
    for (int i = 0; i < 3; i++) e = fmax(e, err_t(ctx, gg[0][i], gg[1][i]));
    const int ran = i1.fwd_runs > i0.fwd_runs && i1.bwd_runs > i0.bwd_runs;
    const int ok = ran && e <= TOL;
    printf("%s second order (create_graph), cuDNN first order vs ours: %.1e%s\n", ok ? "ok  " : "FAIL", e,
           ran ? "" : " (cuDNN did not run)");
    return ok;
}

static void checks(ttt_ctx *ctx) {
    ttt_ctx_config ccfg = {.device = TTT_CPU, .arena_bytes = (size_t)1 << 30, .seed = 1};
    ttt_ctx *cctx = ttt_ctx_new(&ccfg);
    CHECK_MSG(cctx != NULL, "no CPU context");
    if (!cctx) return;
    const shape all[] = {
        {2, 3, 64, 64, 64, 1},     {1, 2, 100, 100, 64, 1},   {2, 2, 257, 257, 64, 0},  {1, 4, 1000, 1000, 64, 1},
        {1, 2, 200, 300, 64, 0},   {2, 2, 333, 333, 128, 0},  {1, 3, 513, 513, 128, 1}, {1, 2, 1000, 1000, 128, 1},
        {1, 2, 2048, 2048, 64, 1}, {1, 2, 1100, 1100, 128, 0}, {4, 8, 256, 256, 128, 1}, {1, 2, 1537, 1537, 64, 1},
        /* causal with Tq < Tk: the diagonal aligned bottom-right (cuDNN 9.6 and later) */
        {1, 2, 100, 300, 128, 1},  {2, 2, 192, 512, 64, 1},   {1, 3, 77, 1000, 64, 1},
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) CHECK(check_shape(ctx, cctx, &all[i]));
    const shape win = {1, 2, 500, 500, 64, 1}, decode = {2, 2, 1, 300, 128, 1};
    CHECK(check_declined(ctx, &win, 64, "window 64"));
    CHECK(check_declined(ctx, &decode, 0, "decode step, Tq = 1"));
    CHECK(check_second_order(ctx));
    const shape rep[] = {{1, 4, 1024, 1024, 64, 1}, {1, 2, 2048, 2048, 128, 1}, {2, 2, 256, 512, 64, 1}, {1, 3, 1024, 1024, 128, 0}};
    const int modes[] = {TTT_CUDNN_FWD, TTT_CUDNN_DET, TTT_CUDNN_ALL};
    for (size_t i = 0; i < sizeof rep / sizeof rep[0]; i++)
        for (int m = 0; m < 3; m++)
            if (ttt__cudnn_takes(0, rep[i].tq, rep[i].tk, rep[i].causal, 0) &&
                (modes[m] == TTT_CUDNN_FWD || ttt__cudnn_takes(1, rep[i].tq, rep[i].tk, rep[i].causal, 0)))
                CHECK(check_repeat(ctx, &rep[i], modes[m]));
    for (int m = 0; m < 3; m++)
        if (modes[m] == TTT_CUDNN_FWD || ttt__cudnn_takes(1, 1024, 1024, 1, 0)) CHECK(check_graph(ctx, modes[m]));
    const shape grp = {2, 3, 1024, 1024, 64, 1}, blk = {1, 2, 2048, 2048, 64, 1}, blk_nc = {1, 2, 1536, 1536, 128, 0};
    const int cut_modes[] = {TTT_CUDNN_DET, TTT_CUDNN_ALL};
    for (int m = 0; m < 2; m++)
        if (ttt__cudnn_takes(1, 1024, 1024, 1, 0)) {
            CHECK(check_cut(ctx, cut_modes[m], &grp, 2.5, 0)); /* groups of two pairs */
            CHECK(check_cut(ctx, cut_modes[m], &blk, 5, 1)); /* blocks of 768 queries: 768, 768, 512 */
            CHECK(check_cut(ctx, cut_modes[m], &blk_nc, 5, 1));
        }
    /* back to TTT_CUDNN: where it is set, the mode it names */
    ttt__cudnn_set_enabled(-1);
    ttt_cudnn_info reread;
    info(&reread);
    const char *env = getenv("TTT_CUDNN");
    if (env && *env) {
        const int want = !strcmp(env, "1") || !strcmp(env, "all") ? TTT_CUDNN_ALL
                         : !strcmp(env, "fwd")                    ? TTT_CUDNN_FWD
                         : !strcmp(env, "det")                    ? TTT_CUDNN_DET
                                                                  : TTT_CUDNN_OFF;
        CHECK_MSG(reread.enabled == want, "TTT_CUDNN=%s read as mode %d", env, reread.enabled);
    }
    ttt_ctx_free(cctx);
}

/* ---- timings ------------------------------------------------------------------------------------------------ */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* median ms of causal attention (and its backward when grad) on [1, h, t, d] bf16 */
static double time_attention(ttt_ctx *ctx, int64_t h, int64_t t, int64_t d, int grad, int reps) {
    ttt_step_reset(ctx);
    ttt_tensor *in[3], *g[3];
    /* one head's values repeated over the heads: drawing them all on the host is slow, and time does not
     * depend on them */
    for (int i = 0; i < 3; i++)
        in[i] = ttt_contiguous(ctx, ttt_expand(ctx, ttt_randn(ctx, TTT_BF16, TTT_DIMS(1, 1, t, d), 1.0), TTT_DIMS(1, h, t, d)));
    ttt_tensor *gout = ttt_contiguous(ctx, ttt_expand(ctx, ttt_randn(ctx, TTT_BF16, TTT_DIMS(1, 1, t, d), 1.0), TTT_DIMS(1, h, t, d)));
    double ms[32];
    if (reps > 32) reps = 32;
    for (int r = 0; r <= reps; r++) { /* the first run warms up (and builds cuDNN's plan) */
        const ttt_mark_t m = ttt_mark(ctx);
        ctx->be->synchronize(ctx->bs);
        const double t0 = now();
        int ok;
        if (grad) {
            for (int i = 0; i < 3; i++) ttt_set_requires_grad(in[i], 1);
            ttt_tensor *o = ttt_attention(ctx, in[0], in[1], in[2], 1, 0, 0.0);
            ok = o && ttt_grad(ctx, 1, &o, &gout, 3, in, g, 0) == TTT_OK;
            for (int i = 0; i < 3; i++) ttt_set_requires_grad(in[i], 0);
        } else {
            ttt_no_grad_begin(ctx);
            ok = ttt_attention(ctx, in[0], in[1], in[2], 1, 0, 0.0) != NULL;
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

static void bench(ttt_ctx *ctx) {
    const int64_t h = 12, ts[] = {2048, 4096, 8192, 16384, 32768}, dims[] = {64, 128};
    printf("csv,path,pass,B,H,T,d,window,ms\n");
    for (int di = 0; di < 2; di++)
        for (int i = 0; i < 5; i++)
            for (int grad = 0; grad < 2; grad++)
                for (int ci = 0; ci < 4; ci++) {
                    const int c = ci == 0 ? TTT_CUDNN_ALL : ci == 1 ? TTT_CUDNN_FWD : ci == 2 ? TTT_CUDNN_DET : TTT_CUDNN_OFF;
                    const int64_t t = ts[i], d = dims[di];
                    if ((c == TTT_CUDNN_FWD || c == TTT_CUDNN_DET) && !grad) continue; /* their forward is cudnn_bf16's */
                    ttt__cudnn_set_enabled(c);
                    ttt_cudnn_info i0, i1;
                    info(&i0);
                    const double ms = time_attention(ctx, h, t, d, grad, t >= 16384 ? 10 : 20);
                    info(&i1);
                    /* a cuDNN line only where cuDNN ran every call (else it would time our kernels) */
                    const int64_t want = t >= 16384 ? 11 : 21;
                    if (c && (i1.fwd_runs - i0.fwd_runs < want || (grad && c != TTT_CUDNN_FWD && i1.bwd_runs - i0.bwd_runs < want))) {
                        printf("# cudnn declined T=%lld d=%lld %s: %s\n", (long long)t, (long long)d, grad ? "fwd+bwd" : "fwd",
                               i1.why);
                        continue;
                    }
                    printf("csv,%s,%s,1,%lld,%lld,%lld,0,%.3f\n",
                           c == TTT_CUDNN_ALL   ? "cudnn_bf16"
                           : c == TTT_CUDNN_FWD ? "cudnnfwd_bf16"
                           : c == TTT_CUDNN_DET ? "cudnndet_bf16"
                                                : "own_bf16",
                           grad ? "fwd+bwd" : "fwd",
                           (long long)h, (long long)t, (long long)d, ms);
                    fflush(stdout);
                }
    ttt__cudnn_set_enabled(-1);
}

#endif /* TTT_HAVE_CUDA */

int main(int argc, char **argv) {
    const int bench_mode = argc > 1 && strcmp(argv[1], "--bench") == 0;
#ifndef TTT_HAVE_CUDA
    (void)bench_mode, (void)check_passed, (void)check_failed;
    printf("SKIP: built without CUDA (the cuDNN attention path is part of the CUDA backend)\n");
    return SKIP;
#else
    ttt_ctx_config gcfg = {.device = TTT_CUDA, .arena_bytes = (size_t)2 << 30, .seed = 11};
    ttt_ctx *ctx = ttt_ctx_new(&gcfg);
    if (!ctx) {
        printf("SKIP: no CUDA device\n");
        return SKIP;
    }
    setenv("TTT_CUDNN_GRAPHS", "1", 1); /* check_graph captures cuDNN; read once, at the path's first call */
    ttt__cudnn_set_enabled(1);
    ttt_cudnn_info i;
    const int loaded = ttt__cudnn_load();
    info(&i);
    if (!i.compiled || !loaded) {
        printf("SKIP: the cuDNN path is not usable here: %s\n", i.why);
        ttt_ctx_free(ctx);
        return SKIP;
    }
    printf("# cuDNN %ld from %s\n", i.version, i.lib);
    if (!ttt__cudnn_takes(0, 128, 128, 1, 0)) {
        printf("SKIP: our rules ask this cuDNN release for nothing (see attention_cudnn.cu's policy)\n");
        ttt_ctx_free(ctx);
        return SKIP;
    }
    if (bench_mode) bench(ctx);
    else checks(ctx);
    ttt_cudnn_info e;
    info(&e);
    printf("# cuDNN served %lld forward and %lld backward calls, declined %lld; plans built %lld, refused %lld%s%s\n",
           (long long)e.fwd_runs, (long long)e.bwd_runs, (long long)e.declined, (long long)e.plans_built,
           (long long)e.plans_failed, e.why[0] ? "; last reason: " : "", e.why);
    ttt_ctx_free(ctx);
    if (bench_mode) return 0;
    TEST_MAIN_END();
#endif
}
