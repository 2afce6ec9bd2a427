/* mixer_speed: time the linear-time mixers (include/ttt/mixers.h) against causal attention.
 *
 * For each T and each implementation, on [B, H, T, d] inputs:
 *   attention       ttt_attention(q, k, v, causal)                    (the quadratic reference)
 *   linear_attn     ttt_linear_attention_chunked(elu1(q), elu1(k), v)
 *   gated_delta     ttt_gated_delta_chunked(q, l2norm(k), v, sigmoid(b), log sigmoid(a))
 *   linattn_block   ttt_linattn_forward on x [B, T, H d]  (projections included)
 *   gdn_block       ttt_gdn_forward on x [B, T, H d]      (projections, convs, gates, norm)
 *   ssd             ttt_ssd_chunked(q, k, v, log sigmoid(a))  (Mamba 2's core, N = P = d)
 *   mamba2_block    ttt_mamba2_forward on x [B, T, H d]   (defaults: expand 2, N 64, P 64)
 *   ttt_linear_core TTT-Linear's inner loop alone (the fused scan, ttt__ttt_linear_scan) on the inputs
 *                   flash-linear-attention's chunk_ttt_linear takes (bench/mixers/peer_speed.py's
 *                   fla_ttt_linear): q, k, v [B, H, T, d], eta = sigmoid(.) / d per token, LayerNorm
 *                   gain / bias [H, d], mini-batch 16 (the chunk column says 16 whatever --chunk is),
 *                   plus ttt's token weights 1/i and an initial state W0 [H, d, d], b0 [H, 1, d]; the
 *                   backward differentiates q, k, v, eta, the LayerNorm gain / bias, W0 and b0 (bf16:
 *                   q, k, v, eta in bf16, the parameters in f32)
 * prints the median time of a forward pass under no-grad, and of forward + backward
 * (ttt_grad of sum(out * w) with respect to every input, and the block parameters),
 * each synchronized by reading one element back:
 *
 *   csv,impl,dtype,device,B,H,T,d,chunk,fwd_ms,fwd_bwd_ms,mem_gb,fused
 *
 * --fused on|off|both: the engine's fused paths (the default, fused = 1), a context made with
 * TTT_FUSED=0 (fused = 0: the chunkwise cores composed of generic ops), or both in one run,
 * alternating per implementation and T (the before/after comparison of the fused chunkwise cores:
 * gated_delta's (composed/gated_delta.c), linear_attn's and ssd's (composed/ssd.c), and the blocks'
 * through them).
 *
 * --check: first, at a small size on the chosen device in f64, chunkwise == recurrent
 * for the three cores (and for T not a multiple of the chunk), and the timed dtype against
 * f64; exit 1 on a mismatch.
 *
 * Usage: mixer_speed [--device cpu|cuda] [--dtype f32|f64|bf16] [--T 2048,8192] [--heads 12]
 *          [--dim 64] [--batch 1] [--chunk 64] [--reps 5] [--impl NAME] [--fused on|off|both] [--threads N]
 *          [--tf32] [--check]
 * --tf32: contexts that allow f32 matmuls on the tensor cores (ttt_ctx_config.tf32; the TTT-Linear scan's
 * CUDA kernels then run its f32 products with W on them too, as they do for bf16 inputs).
 * --threads: the CPU contexts' thread count (default 0: fit the machine, leaving out busy cores). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ttt/runtime.h"
#include "ttt/ttt.h"
#include "../../src/core/engine_private.h" /* ttt__ttt_linear_scan: the op inside the TTT-Linear layer */

typedef struct {
    ttt_device device;
    ttt_dtype dtype;
    int64_t T[16];
    int nT;
    int64_t B, H, d, chunk;
    int reps, check;
    int fused; /* 1 on, 0 off, 2 both */
    int threads; /* CPU threads of the contexts; 0: fit the machine */
    int tf32;    /* ttt_ctx_config.tf32 */
    const char *impl;
} opts;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static ttt_tensor *l2n(ttt_ctx *ctx, ttt_tensor *x) {
    const int last = -1;
    return ttt_mul(ctx, x, ttt_rsqrt(ctx, ttt_add_scalar(ctx, ttt_sum(ctx, ttt_mul(ctx, x, x), 1, &last, 1), 1e-6)));
}

enum { ATTN, LINATTN, GDN, LINATTN_BLOCK, GDN_BLOCK, SSD, MAMBA2_BLOCK, TTT_CORE, N_IMPL };
static const char *const IMPL[N_IMPL] = {"attention", "linear_attn", "gated_delta",  "linattn_block",
                                         "gdn_block", "ssd",         "mamba2_block", "ttt_linear_core"};
enum { TTT_CORE_MINI_BATCH = 16 }; /* fla's chunk_ttt_linear as peer_speed.py calls it (chunk_size=16) */

typedef struct {
    ttt_tensor *in[5]; /* q, k, v, b, a (cores) or x (blocks) */
    int n_in;
    ttt_linattn la;
    ttt_gdn gdn;
    ttt_mamba2 m2;
    ttt_tensor *params[TTT_GDN_PARAMS];
    int n_params;
    ttt_tensor *tok; /* ttt_linear_core: the token weights [16] (not differentiated) */
} problem;

static ttt_tensor *forward(ttt_ctx *ctx, int impl, problem *p, int64_t chunk) {
    ttt_tensor **x = p->in;
    switch (impl) {
    case ATTN: return ttt_attention(ctx, x[0], x[1], x[2], 1, 0, 0.0);
    case LINATTN:
        return ttt_linear_attention_chunked(ctx, ttt_elu1(ctx, x[0]), ttt_elu1(ctx, x[1]), x[2], chunk, 1e-6, NULL, NULL,
                                            NULL, NULL);
    case GDN:
        return ttt_gated_delta_chunked(ctx, l2n(ctx, x[0]), l2n(ctx, x[1]), x[2], ttt_sigmoid(ctx, x[3]),
                                       ttt_log(ctx, ttt_sigmoid(ctx, x[4])), chunk, NULL, NULL);
    case SSD: return ttt_ssd_chunked(ctx, x[0], x[1], x[2], ttt_log(ctx, ttt_sigmoid(ctx, x[4])), chunk, NULL, NULL);
    case LINATTN_BLOCK: return ttt_linattn_forward(ctx, &p->la, x[0], NULL);
    case MAMBA2_BLOCK: return ttt_mamba2_forward(ctx, &p->m2, x[0], NULL);
    case TTT_CORE: {
        /* params: ln_w, ln_b, w0, b0; eta's gate inside the timed region, as peer_speed.py's */
        ttt_tensor *out, *w, *b, **pr = p->params;
        ttt_tensor *eta = ttt_scale(ctx, ttt_sigmoid(ctx, x[3]), 1.0 / (double)x[0]->shape[3]);
        if (!eta || ttt__ttt_linear_scan(ctx, x[0], x[1], x[2], eta, p->tok, pr[0], pr[1], pr[2], pr[3], 1e-6, &out, &w, &b))
            return NULL;
        return out;
    }
    default: return ttt_gdn_forward(ctx, &p->gdn, x[0], NULL);
    }
}

static int setup(ttt_ctx *ctx, int impl, const opts *o, int64_t T, ttt_dtype dt, problem *p) {
    memset(p, 0, sizeof *p);
    const int64_t B = o->B, H = o->H, d = o->d;
    const ttt_dtype pdt = dt == TTT_BF16 ? TTT_F32 : dt;
    if (impl == LINATTN_BLOCK || impl == GDN_BLOCK || impl == MAMBA2_BLOCK) {
        p->in[0] = ttt_cast(ctx, ttt_randn(ctx, TTT_F32, TTT_DIMS(B, T, H * d), 1.0), dt);
        p->n_in = 1;
        if (impl == LINATTN_BLOCK) {
            ttt_linattn_config c = ttt_linattn_config_default(H * d, H);
            c.chunk = o->chunk;
            if (ttt_linattn_init(ctx, &p->la, &c, pdt) != TTT_OK) return TTT_ERR;
            p->n_params = ttt_linattn_params(&p->la, p->params, NULL, NULL);
        } else if (impl == MAMBA2_BLOCK) {
            ttt_mamba2_config c = ttt_mamba2_config_default(H * d);
            c.chunk = o->chunk;
            if (ttt_mamba2_init(ctx, &p->m2, &c, pdt) != TTT_OK) return TTT_ERR;
            p->n_params = ttt_mamba2_params(&p->m2, p->params, NULL, NULL);
        } else {
            ttt_gdn_config c = ttt_gdn_config_default(H * d, H);
            c.chunk = o->chunk;
            if (ttt_gdn_init(ctx, &p->gdn, &c, pdt) != TTT_OK) return TTT_ERR;
            p->n_params = ttt_gdn_params(&p->gdn, p->params, NULL, NULL);
        }
    } else if (impl == TTT_CORE) {
        const int64_t bs = TTT_CORE_MINI_BATCH; /* T is a multiple of it (main skips other T) */
        p->n_in = 4;
        for (int i = 0; i < 4; i++) {
            const int64_t s[4] = {B, H, T, d};
            p->in[i] = ttt_cast(ctx, ttt_randn(ctx, TTT_F32, i < 3 ? 4 : 3, s, 1.0), dt);
        }
        double inv[TTT_CORE_MINI_BATCH];
        for (int64_t i = 0; i < bs; i++) inv[i] = 1.0 / (double)(i + 1);
        p->tok = ttt_cast(ctx, ttt_from_host(ctx, TTT_F64, TTT_DIMS(bs), inv), pdt);
        p->params[0] = ttt_add_scalar(ctx, ttt_zeros(ctx, pdt, TTT_DIMS(H, d)), 1.0);
        p->params[1] = ttt_zeros(ctx, pdt, TTT_DIMS(H, d));
        p->params[2] = ttt_randn(ctx, pdt, TTT_DIMS(H, d, d), 0.02);
        p->params[3] = ttt_zeros(ctx, pdt, TTT_DIMS(H, 1, d));
        p->n_params = 4;
        if (!p->tok) return TTT_ERR;
        for (int i = 0; i < 4; i++) {
            if (!p->params[i]) return TTT_ERR;
            ttt_set_requires_grad(p->params[i], 1);
        }
    } else {
        p->n_in = impl == GDN || impl == SSD ? 5 : 3;
        for (int i = 0; i < p->n_in; i++) {
            const int64_t s[4] = {B, H, T, d};
            p->in[i] = ttt_cast(ctx, ttt_randn(ctx, TTT_F32, i < 3 ? 4 : 3, s, 1.0), dt);
        }
    }
    for (int i = 0; i < p->n_in; i++) {
        if (!p->in[i]) return TTT_ERR;
        ttt_set_requires_grad(p->in[i], 1);
    }
    return TTT_OK;
}

static void teardown(ttt_ctx *ctx, problem *p) {
    ttt_linattn_free(ctx, &p->la);
    ttt_gdn_free(ctx, &p->gdn);
    ttt_mamba2_free(ctx, &p->m2);
}

/* one timed run: forward only (bwd = 0) or forward + backward; ms, or < 0 on error */
static double run_once(ttt_ctx *ctx, int impl, problem *p, int64_t chunk, int bwd) {
    ttt_mark_t m = ttt_mark(ctx);
    double t0 = now_ms();
    if (!bwd) ttt_no_grad_begin(ctx);
    ttt_tensor *y = forward(ctx, impl, p, chunk);
    ttt_tensor *probe = y;
    if (y && bwd) {
        ttt_tensor *loss = ttt_sum(ctx, ttt_mul(ctx, y, y), 0, NULL, 0);
        ttt_tensor *wrt[5 + TTT_GDN_PARAMS], *g[5 + TTT_GDN_PARAMS];
        int n = 0;
        for (int i = 0; i < p->n_in; i++) wrt[n++] = p->in[i];
        for (int i = 0; i < p->n_params; i++) wrt[n++] = p->params[i];
        probe = loss && ttt_grad(ctx, 1, &loss, NULL, n, wrt, g, 0) == TTT_OK ? g[0] : NULL;
    }
    if (!bwd) ttt_no_grad_end(ctx);
    double v = 0;
    int ok = probe && ttt_copy_to_host(ctx, ttt_slice(ctx, ttt_reshape(ctx, probe, TTT_DIMS(-1)), 0, 0, 1, 1), &v,
                                       TTT_F64) == TTT_OK;
    double ms = now_ms() - t0;
    ttt_release(ctx, m);
    return ok ? ms : -1;
}

static double median_ms(ttt_ctx *ctx, int impl, problem *p, int64_t chunk, int bwd, int reps) {
    double t[64];
    if (run_once(ctx, impl, p, chunk, bwd) < 0) return -1; /* warmup */
    for (int r = 0; r < reps; r++)
        if ((t[r] = run_once(ctx, impl, p, chunk, bwd)) < 0) return -1;
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    return t[reps / 2];
}

static double rel(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) {
    const int64_t n = ttt_numel(a);
    double *x = malloc(sizeof(double) * (size_t)n), *y = malloc(sizeof(double) * (size_t)n), d = 0, s = 0;
    if (ttt_copy_to_host(ctx, a, x, TTT_F64) || ttt_copy_to_host(ctx, b, y, TTT_F64)) d = INFINITY;
    for (int64_t i = 0; i < n && isfinite(d); i++) d = fmax(d, fabs(x[i] - y[i])), s = fmax(s, fabs(y[i]));
    free(x), free(y);
    return isnan(d) ? INFINITY : d / fmax(s, 1e-300);
}

/* ttt_linear_core: the op in dt against f64 on the device (f64: the composed ops) on the same values, the
 * output and the gradients of sum(out * r) for q and k; max relative difference, or INFINITY on an error.
 * T 96 (six mini-batches of 16), d 16 or 64 (the shape of TTT_SCAN_V2's kernels): on CUDA the fused kernels,
 * their tensor-core products for bf16 and --tf32. */
static double check_ttt_core(ttt_ctx *ctx, ttt_dtype dt, int64_t d) {
    const int64_t B = 1, H = 2, T = 96, bs = 16;
    double inv[16];
    for (int64_t i = 0; i < bs; i++) inv[i] = 1.0 / (double)(i + 1);
    ttt_tensor *x[9] = {ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, d), 1.0), ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, d), 1.0),
                        ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, d), 1.0),
                        ttt_scale(ctx, ttt_sigmoid(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T), 1.0)), 1.0 / (double)d),
                        ttt_from_host(ctx, TTT_F64, TTT_DIMS(bs), inv),
                        ttt_add_scalar(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(H, d), 0.3), 1.0),
                        ttt_randn(ctx, TTT_F64, TTT_DIMS(H, d), 0.3), ttt_randn(ctx, TTT_F64, TTT_DIMS(H, d, d), 0.3),
                        ttt_randn(ctx, TTT_F64, TTT_DIMS(H, 1, d), 0.3)};
    ttt_tensor *r = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, d), 1.0), *res[2][3];
    const ttt_dtype pdt = dt == TTT_BF16 ? TTT_F32 : dt; /* bf16: the parameters in f32 */
    for (int i = 0; i < 9; i++) /* the values dt can hold, so only the arithmetic differs */
        if (!x[i] || !(x[i] = ttt_cast(ctx, ttt_cast(ctx, x[i], i < 4 ? dt : pdt), TTT_F64))) return INFINITY;
    for (int pass = 0; pass < 2; pass++) {
        const ttt_dtype t = pass ? dt : TTT_F64, pt = pass ? pdt : TTT_F64;
        ttt_tensor *in[9], *out, *w, *b;
        for (int i = 0; i < 9; i++) {
            if (!(in[i] = ttt_cast(ctx, x[i], i < 4 ? t : pt))) return INFINITY;
            if (i < 2) ttt_set_requires_grad(in[i], 1);
        }
        if (ttt__ttt_linear_scan(ctx, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8], 1e-6, &out, &w, &b))
            return INFINITY;
        ttt_tensor *loss = ttt_sum(ctx, ttt_mul(ctx, ttt_cast(ctx, out, TTT_F64), r), 0, NULL, 0), *g[2];
        if (!loss || ttt_grad(ctx, 1, &loss, NULL, 2, in, g, 0) != TTT_OK) return INFINITY;
        res[pass][0] = out, res[pass][1] = g[0], res[pass][2] = g[1];
    }
    double e = 0;
    for (int i = 0; i < 3; i++) e = fmax(e, rel(ctx, res[1][i], res[0][i]));
    return e;
}

/* chunkwise == recurrent in f64 on the device, and the timed dtype against f64 */
static int check(ttt_ctx *ctx, const opts *o) {
    int bad = 0;
    const int64_t B = 1, H = 2, T = 100, d = 16;
    ttt_tensor *q = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, d), 1.0), *k = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, d), 1.0);
    ttt_tensor *v = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, d), 1.0);
    ttt_tensor *b = ttt_sigmoid(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T), 1.0));
    ttt_tensor *g = ttt_log(ctx, ttt_sigmoid(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T), 2.0)));
    ttt_tensor *fq = ttt_elu1(ctx, q), *fk = ttt_elu1(ctx, k), *nq = l2n(ctx, q), *nk = l2n(ctx, k);
    ttt_tensor *la = ttt_linear_attention_recurrent(ctx, fq, fk, v, 1e-6, NULL, NULL, NULL, NULL);
    ttt_tensor *gd = ttt_gated_delta_recurrent(ctx, nq, nk, v, b, g, NULL, NULL);
    ttt_tensor *sd = ttt_ssd_recurrent(ctx, q, k, v, g, NULL, NULL);
    const int64_t chunks[2] = {16, 64};
    for (int c = 0; c < 2; c++) {
        double e1 = rel(ctx, ttt_linear_attention_chunked(ctx, fq, fk, v, chunks[c], 1e-6, NULL, NULL, NULL, NULL), la);
        double e2 = rel(ctx, ttt_gated_delta_chunked(ctx, nq, nk, v, b, g, chunks[c], NULL, NULL), gd);
        double e3 = rel(ctx, ttt_ssd_chunked(ctx, q, k, v, g, chunks[c], NULL, NULL), sd);
        printf("check f64 chunk %lld vs recurrent (T %lld): linear attention %.2e, gated delta %.2e, ssd %.2e\n",
               (long long)chunks[c], (long long)T, e1, e2, e3);
        bad |= !(e1 < 1e-10) || !(e2 < 1e-10) || !(e3 < 1e-10);
    }
    if (o->dtype != TTT_F64) {
        const ttt_dtype dt = o->dtype;
#define AS(x) ttt_cast(ctx, x, dt)
        double e1 = rel(ctx, ttt_linear_attention_chunked(ctx, AS(fq), AS(fk), AS(v), 64, 1e-6, NULL, NULL, NULL, NULL), la);
        double e2 = rel(ctx, ttt_gated_delta_chunked(ctx, AS(nq), AS(nk), AS(v), AS(b), AS(g), 64, NULL, NULL), gd);
        double e3 = rel(ctx, ttt_ssd_chunked(ctx, AS(q), AS(k), AS(v), AS(g), 64, NULL, NULL), sd);
#undef AS
        const double tol = dt == TTT_BF16 ? 5e-2 : 1e-4;
        const double e4 = fmax(check_ttt_core(ctx, dt, 16), check_ttt_core(ctx, dt, 64));
        printf("check %s vs f64: linear attention %.2e, gated delta %.2e, ssd %.2e, ttt_linear_core (out, dq, dk) %.2e "
               "(tolerance %.0e)\n", ttt_dtype_name(dt), e1, e2, e3, e4, tol);
        bad |= !(e1 < tol) || !(e2 < tol) || !(e3 < tol) || !(e4 < tol);
    }
    ttt_step_reset(ctx);
    return bad;
}

int main(int argc, char **argv) {
    opts o = {.device = TTT_CPU, .dtype = TTT_F32, .T = {2048, 8192}, .nT = 2, .B = 1, .H = 12, .d = 64, .chunk = 64,
              .reps = 5, .fused = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--check")) o.check = 1;
        else if (!strcmp(a, "--tf32")) o.tf32 = 1;
        else if (!v) {
            fprintf(stderr, "mixer_speed: %s needs a value (see the comment at the top of mixer_speed.c)\n", a);
            return 2;
        } else if (!strcmp(a, "--device")) o.device = !strcmp(v, "cuda") ? TTT_CUDA : TTT_CPU, i++;
        else if (!strcmp(a, "--dtype"))
            o.dtype = !strcmp(v, "f64") ? TTT_F64 : !strcmp(v, "bf16") ? TTT_BF16 : TTT_F32, i++;
        else if (!strcmp(a, "--T")) {
            o.nT = 0;
            for (char *s = argv[++i]; *s && o.nT < 16;) {
                o.T[o.nT++] = strtoll(s, &s, 10);
                if (*s == ',') s++;
            }
        } else if (!strcmp(a, "--heads")) o.H = atoll(argv[++i]);
        else if (!strcmp(a, "--dim")) o.d = atoll(argv[++i]);
        else if (!strcmp(a, "--batch")) o.B = atoll(argv[++i]);
        else if (!strcmp(a, "--chunk")) o.chunk = atoll(argv[++i]);
        else if (!strcmp(a, "--reps")) o.reps = atoi(argv[++i]);
        else if (!strcmp(a, "--impl")) o.impl = argv[++i];
        else if (!strcmp(a, "--threads")) o.threads = atoi(argv[++i]);
        else if (!strcmp(a, "--fused")) o.fused = !strcmp(v, "both") ? 2 : strcmp(v, "off") != 0, i++;
        else {
            fprintf(stderr, "mixer_speed: unknown flag %s\n", a);
            return 2;
        }
    }
    if (o.reps < 1 || o.reps > 64) o.reps = 5;
    ttt_ctx_config cfg = {.device = o.device, .seed = 1, .arena_bytes = (size_t)256 << 20, .threads = o.threads, .tf32 = o.tf32};
    /* ctxs[0]: fused paths on; ctxs[1]: made with TTT_FUSED=0 (read when a context is made) */
    ttt_ctx *ctxs[2] = {NULL, NULL};
    for (int f = 0; f < 2; f++) {
        if (o.fused != 2 && f != !o.fused) continue;
        if (f) setenv("TTT_FUSED", "0", 1);
        ctxs[f] = ttt_ctx_new(&cfg);
        if (f) unsetenv("TTT_FUSED");
        if (!ctxs[f]) {
            fprintf(stderr, "mixer_speed: no context: %s\n", ttt_runtime_error());
            ttt_ctx_free(ctxs[0]);
            return 3;
        }
    }
    for (int f = 0; f < 2; f++)
        if (ctxs[f] && o.check && check(ctxs[f], &o)) {
            fprintf(stderr, "mixer_speed: check FAILED%s\n", f ? " (TTT_FUSED=0)" : "");
            ttt_ctx_free(ctxs[0]);
            ttt_ctx_free(ctxs[1]);
            return 1;
        }
    char devname[128] = "cpu";
    if (o.device == TTT_CUDA) ttt_device_name(TTT_CUDA, 0, devname, sizeof devname);
    printf("# device %s\ncsv,impl,dtype,device,B,H,T,d,chunk,fwd_ms,fwd_bwd_ms,mem_gb,fused\n", devname);
    int failed = 0;
    for (int ti = 0; ti < o.nT; ti++)
        for (int impl = 0; impl < N_IMPL; impl++)
            for (int f = 0; f < 2; f++) {
                ttt_ctx *ctx = ctxs[f];
                if (!ctx || (o.impl && strcmp(o.impl, IMPL[impl]))) continue;
                if (impl == TTT_CORE && o.T[ti] % TTT_CORE_MINI_BATCH) {
                    printf("# ttt_linear_core skipped at T %lld: not a multiple of its mini-batch, %d\n", (long long)o.T[ti],
                           TTT_CORE_MINI_BATCH);
                    continue;
                }
                problem p;
                double t = -1, tb = -1;
                if (setup(ctx, impl, &o, o.T[ti], o.dtype, &p) == TTT_OK) {
                    t = median_ms(ctx, impl, &p, o.chunk, 0, o.reps);
                    if (t >= 0) tb = median_ms(ctx, impl, &p, o.chunk, 1, o.reps);
                }
                if (t < 0 || tb < 0) {
                    fprintf(stderr, "mixer_speed: %s at T %lld failed: %s\n", IMPL[impl], (long long)o.T[ti],
                            ttt_error(ctx));
                    ttt_clear_error(ctx);
                    failed = 1;
                }
                printf("csv,%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%.3f,%.3f,%.3f,%d\n", IMPL[impl], ttt_dtype_name(o.dtype),
                       o.device == TTT_CUDA ? "cuda" : "cpu", (long long)o.B, (long long)o.H, (long long)o.T[ti],
                       (long long)o.d, (long long)(impl == TTT_CORE ? TTT_CORE_MINI_BATCH : o.chunk), t, tb,
                       (double)ttt_arena_bytes_reserved(ctx) / 1e9, !f);
                fflush(stdout);
                teardown(ctx, &p);
                ttt_step_reset(ctx);
            }
    ttt_ctx_free(ctxs[0]);
    ttt_ctx_free(ctxs[1]);
    return failed;
}
