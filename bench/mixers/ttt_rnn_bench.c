/* TTT-Linear / TTT-MLP layer on a device: parity with the CPU, and the time of forward + backward.
 *
 *   ttt_rnn_bench --check [--device cuda] [--dim 32 --heads 2] [--mini-batch 4]
 *       a small layer (D 32, 2 heads unless given, b 4, T 23: a partial mini-batch; with --mini-batch b,
 *       T 3 b + 7) of each learner and backbone
 *       in f64 on the device and on the CPU: max relative difference of the output and of every
 *       gradient of sum(y * r) (exit 1 above 1e-10); then the same in f32 (tolerance 1e-3).
 *       --dim 256 --heads 4 --mini-batch 16 is the shape of TTT_SCAN_V2's kernels (d 64, b 16; with
 *       TTT_SCAN_MMA=2 they also take f32 data).
 *   ttt_rnn_bench [--device cuda] [--kind linear|mlp] [--backbone transformer|mamba] [--dim 768]
 *                 [--heads 12] [--batch 1] [--T 2048,8192] [--reps 3] [--dtype f32|f64]
 *       the time of the layer's forward pass, and of forward + backward (gradients of every
 *       parameter and x), after one warm-up, median of --reps; and of the forward without a graph
 *       (inference, prefill: where TTT-MLP's forward-only scan kernel runs).
 *   ttt_rnn_bench ... --decode N
 *       instead: N tokens decoded one by one from a fresh state (ttt_rnn_decode), the median time of a
 *       token (TTT-Linear's fused decode step; TTT_FUSED=0 in the environment for the composed step). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "ttt/ttt.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double *host(ttt_ctx *ctx, const ttt_tensor *t) {
    double *h = malloc(sizeof(double) * (size_t)ttt_numel(t));
    if (h && ttt_copy_to_host(ctx, t, h, TTT_F64) != TTT_OK) free(h), h = NULL;
    return h;
}

static double rel(const double *a, const double *b, int64_t n) {
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fabs(a[i] - b[i]) > d ? fabs(a[i] - b[i]) : d;
        s = fabs(b[i]) > s ? fabs(b[i]) : s;
    }
    return d / (s > 1 ? s : 1);
}

/* A deterministic value in [-1, 1) for element i of tensor k (the same on every device). */
static double val(int k, int64_t i) {
    uint64_t h = (uint64_t)(k + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)i * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31, h *= 0x94D049BB133111EBull, h ^= h >> 29;
    return (double)(h >> 11) / (double)(1ull << 52) - 1.0;
}

static ttt_tensor *filled(ttt_ctx *ctx, ttt_tensor *t, int k, double scale, double offset) {
    const int64_t n = ttt_numel(t);
    double *h = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) h[i] = offset + scale * val(k, i);
    ttt_tensor *src = ttt_from_host(ctx, TTT_F64, t->ndim, t->shape, h);
    free(h);
    ttt_assign(ctx, t, src);
    return t;
}

/* y, the gradients of sum(y * r), and y again decoded token by token, for one context (parameters and
 * inputs from val()); results on the host (n_params + 3 arrays) with their sizes. */
static int run_case(ttt_ctx *ctx, const ttt_rnn_config *c, ttt_dtype dt, int64_t B, int64_t T, double **out,
                    int64_t *sizes, int *n_out) {
    ttt_rnn l;
    if (ttt_rnn_init(ctx, &l, c, dt, 0.3, 0.3) != TTT_OK) return fprintf(stderr, "%s\n", ttt_error(ctx)), 1;
    for (int i = 0; i < l.n_params; i++) {
        const int gain = strstr(l.names[i], "norm.weight") != NULL, off = !strcmp(l.names[i], "token_idx_offset");
        filled(ctx, l.params[i], i, off ? 0.05 : 0.4, gain ? 1.0 : 0.0);
    }
    ttt_tensor *x = filled(ctx, ttt_param(ctx, dt, TTT_DIMS(B, T, c->dim), "x"), 100, 1.0, 0.0);
    ttt_tensor *r = filled(ctx, ttt_new(ctx, dt, TTT_DIMS(B, T, c->dim)), 101, 1.0, 0.0);
    ttt_tensor *y = ttt_rnn_forward(ctx, &l, x, 0);
    ttt_tensor *ins[TTT_RNN_MAX_PARAMS + 1], *g[TTT_RNN_MAX_PARAMS + 1];
    for (int i = 0; i < l.n_params; i++) ins[i] = l.params[i];
    ins[l.n_params] = x;
    ttt_tensor *L = ttt_sum(ctx, ttt_mul(ctx, y, r), 0, NULL, 0);
    if (!L || ttt_grad(ctx, 1, &L, NULL, l.n_params + 1, ins, g, 0) != TTT_OK) return fprintf(stderr, "%s\n", ttt_error(ctx)), 1;
    out[0] = host(ctx, y);
    sizes[0] = ttt_numel(y);
    for (int i = 0; i <= l.n_params; i++) out[i + 1] = host(ctx, g[i]), sizes[i + 1] = ttt_numel(g[i]);
    /* then x decoded token by token from a fresh state (TTT-Linear: the fused decode step where the
     * device has it), the outputs one after another */
    ttt_rnn_state st;
    if (ttt_rnn_state_init(ctx, &l, &st, B) != TTT_OK) return fprintf(stderr, "%s\n", ttt_error(ctx)), 1;
    ttt_no_grad_begin(ctx);
    double *dec = malloc(sizeof(double) * (size_t)(B * T * c->dim));
    for (int64_t t = 0; t < T; t++) {
        ttt_tensor *yt = ttt_rnn_decode(ctx, &l, &st, ttt_contiguous(ctx, ttt_slice(ctx, x, 1, t, t + 1, 1)));
        if (!yt) return fprintf(stderr, "%s\n", ttt_error(ctx)), 1;
        double *h = host(ctx, yt);
        for (int64_t b = 0; b < B; b++)
            memcpy(dec + (b * T + t) * c->dim, h + b * c->dim, sizeof(double) * (size_t)c->dim);
        free(h);
    }
    ttt_no_grad_end(ctx);
    ttt_rnn_state_free(ctx, &st);
    out[l.n_params + 2] = dec, sizes[l.n_params + 2] = B * T * c->dim;
    *n_out = l.n_params + 3;
    ttt_step_reset(ctx);
    ttt_persistent_free(ctx, x);
    ttt_rnn_free(ctx, &l);
    return 0;
}

/* mb: the mini-batch (4 unless --mini-batch; T 23 then, else 3 mb + 7: three whole mini-batches through the
 * fused scan and a partial tail) */
static int check(ttt_device dev, int64_t dim, int64_t heads, int64_t mb) {
    int bad = 0;
    for (int dti = 0; dti < 2; dti++) {
        const ttt_dtype dt = dti ? TTT_F32 : TTT_F64;
        const double tol = dti ? 1e-3 : 1e-10;
        for (int kind = 0; kind < 2; kind++)
            for (int bb = 0; bb < 2; bb++) {
                ttt_rnn_config c = {.kind = kind, .backbone = bb, .dim = dim, .heads = heads, .mini_batch = mb, .rope_theta = 1e4};
                const int64_t B = 2, T = mb == 4 ? 23 : 3 * mb + 7;
                ttt_ctx *cpu = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CPU, .seed = 1});
                ttt_ctx *d = ttt_ctx_new(&(ttt_ctx_config){.device = dev, .seed = 1});
                if (!cpu || !d) return fprintf(stderr, "no context: %s\n", ttt_runtime_error()), 2;
                double *a[TTT_RNN_MAX_PARAMS + 3] = {0}, *b[TTT_RNN_MAX_PARAMS + 3] = {0};
                int64_t sa[TTT_RNN_MAX_PARAMS + 3], sb[TTT_RNN_MAX_PARAMS + 3];
                int na = 0, nb = 0;
                if (run_case(cpu, &c, TTT_F64, B, T, a, sa, &na) || run_case(d, &c, dt, B, T, b, sb, &nb) || na != nb) return 2;
                double worst = 0;
                for (int i = 0; i < na; i++) {
                    const double e = a[i] && b[i] && sa[i] == sb[i] ? rel(b[i], a[i], sa[i]) : 1e30;
                    worst = e > worst ? e : worst;
                }
                printf("%s %s %s on %s vs cpu f64: output, gradients and decode, max relative difference %.2e %s\n",
                       kind ? "TTT-MLP" : "TTT-Linear", bb ? "mamba" : "transformer", ttt_dtype_name(dt),
                       dev == TTT_CUDA ? "cuda" : "cpu", worst, worst <= tol ? "ok" : "FAILED");
                bad |= !(worst <= tol);
                for (int i = 0; i < na; i++) free(a[i]), free(b[i]);
                ttt_ctx_free(cpu);
                ttt_ctx_free(d);
            }
    }
    return bad;
}

int main(int argc, char **argv) {
    ttt_device dev = TTT_CPU;
    int do_check = 0, reps = 3, dims_given = 0, mb_given = 0;
    ttt_rnn_config c = {.kind = TTT_RNN_LINEAR, .backbone = TTT_RNN_TRANSFORMER, .dim = 768, .heads = 12,
                        .mini_batch = 16, .rope_theta = 1e4};
    int64_t B = 1, Ts[8] = {2048, 8192}, decode = 0;
    int nT = 2;
    ttt_dtype dt = TTT_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--check")) do_check = 1;
        else if (!strcmp(a, "--device")) dev = !strcmp(v, "cuda") ? TTT_CUDA : TTT_CPU, i++;
        else if (!strcmp(a, "--kind")) c.kind = !strcmp(v, "mlp") ? TTT_RNN_MLP : TTT_RNN_LINEAR, i++;
        else if (!strcmp(a, "--backbone")) c.backbone = !strcmp(v, "mamba") ? TTT_RNN_MAMBA : TTT_RNN_TRANSFORMER, i++;
        else if (!strcmp(a, "--dim")) c.dim = atoll(v), i++, dims_given = 1;
        else if (!strcmp(a, "--heads")) c.heads = atoll(v), i++, dims_given = 1;
        else if (!strcmp(a, "--batch")) B = atoll(v), i++;
        else if (!strcmp(a, "--mini-batch")) c.mini_batch = atoll(v), i++, mb_given = 1;
        else if (!strcmp(a, "--reps")) reps = atoi(v), i++;
        else if (!strcmp(a, "--decode")) decode = atoll(v), i++;
        else if (!strcmp(a, "--dtype")) dt = !strcmp(v, "f64") ? TTT_F64 : TTT_F32, i++;
        else if (!strcmp(a, "--T")) {
            nT = 0;
            for (char *s = argv[++i]; s && *s && nT < 8;) {
                Ts[nT++] = strtoll(s, &s, 10);
                if (*s == ',') s++;
            }
        } else {
            fprintf(stderr, "ttt_rnn_bench: unknown flag %s (see the comment at the top of the source)\n", a);
            return 2;
        }
    }
    if (do_check) {
        const int64_t mb = mb_given ? c.mini_batch : 4;
        return dims_given ? check(dev, c.dim, c.heads, mb) : check(dev, 32, 2, mb);
    }
    if (reps < 1 || reps > 50) reps = 3;
    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.device = dev, .seed = 1});
    if (!ctx) return fprintf(stderr, "no context: %s\n", ttt_runtime_error()), 2;
    ttt_rnn l;
    if (ttt_rnn_init(ctx, &l, &c, dt, 0.02, 0.02) != TTT_OK) return fprintf(stderr, "%s\n", ttt_error(ctx)), 2;
    ttt_tensor *ins[TTT_RNN_MAX_PARAMS + 1], *g[TTT_RNN_MAX_PARAMS + 1];
    if (decode > 0) { /* decode tokens one by one from a fresh state: each token's time, synchronized */
        if (decode > 100000) decode = 100000;
        ttt_rnn_state st;
        ttt_tensor *x = ttt_param(ctx, dt, TTT_DIMS(B, decode, c.dim), "x");
        double *tt = malloc(sizeof(double) * (size_t)decode);
        if (!x || !tt || ttt_assign(ctx, x, ttt_randn(ctx, dt, TTT_DIMS(B, decode, c.dim), 1.0)) ||
            ttt_rnn_state_init(ctx, &l, &st, B))
            return fprintf(stderr, "%s\n", ttt_error(ctx)), 1;
        ttt_no_grad_begin(ctx);
        for (int64_t t = 0; t < decode; t++) {
            ttt_step_reset(ctx);
            ttt_tensor *xt = ttt_contiguous(ctx, ttt_slice(ctx, x, 1, t, t + 1, 1));
            ttt_synchronize(ctx);
            const double t0 = now();
            if (!ttt_rnn_decode(ctx, &l, &st, xt)) return fprintf(stderr, "%s\n", ttt_error(ctx)), 1;
            ttt_synchronize(ctx);
            tt[t] = now() - t0;
        }
        ttt_no_grad_end(ctx);
        qsort(tt, (size_t)decode, sizeof *tt, cmp_d);
        const char *fz = getenv("TTT_FUSED");
        printf("%s %s D %lld H %lld b %lld B %lld %s on %s, decode (TTT_FUSED=%s): %lld tokens one by one, median %.3f ms "
               "per token (%.0f tokens/s), min %.3f\n", c.kind ? "TTT-MLP" : "TTT-Linear", c.backbone ? "mamba" : "transformer",
               (long long)c.dim, (long long)c.heads, (long long)c.mini_batch, (long long)B, ttt_dtype_name(dt),
               dev == TTT_CUDA ? "cuda" : "cpu", fz && *fz ? fz : "1", (long long)decode, 1e3 * tt[decode / 2],
               (double)B / tt[decode / 2], 1e3 * tt[0]);
        free(tt);
        ttt_rnn_state_free(ctx, &st);
        ttt_rnn_free(ctx, &l);
        ttt_ctx_free(ctx);
        return 0;
    }
    for (int ti = 0; ti < nT; ti++) {
        const int64_t T = Ts[ti];
        ttt_tensor *x = ttt_param(ctx, dt, TTT_DIMS(B, T, c.dim), "x");
        ttt_assign(ctx, x, ttt_randn(ctx, dt, TTT_DIMS(B, T, c.dim), 1.0));
        for (int i = 0; i < l.n_params; i++) ins[i] = l.params[i];
        ins[l.n_params] = x;
        double tf[50], tb[50], ti[50];
        for (int rep = -1; rep < reps; rep++) {
            ttt_step_reset(ctx);
            ttt_synchronize(ctx);
            double t0 = now();
            ttt_tensor *y = ttt_rnn_forward(ctx, &l, x, 0);
            ttt_tensor *L = ttt_sum(ctx, y, 0, NULL, 0);
            if (!L) return fprintf(stderr, "%s\n", ttt_error(ctx)), 1;
            ttt_synchronize(ctx);
            double t1 = now();
            if (ttt_grad(ctx, 1, &L, NULL, l.n_params + 1, ins, g, 0) != TTT_OK) return fprintf(stderr, "%s\n", ttt_error(ctx)), 1;
            ttt_synchronize(ctx);
            double t2 = now();
            ttt_step_reset(ctx);
            ttt_no_grad_begin(ctx);
            const double t3 = now();
            if (!ttt_rnn_forward(ctx, &l, x, 0)) return fprintf(stderr, "%s\n", ttt_error(ctx)), 1;
            ttt_synchronize(ctx);
            const double t4 = now();
            ttt_no_grad_end(ctx);
            if (rep >= 0) tf[rep] = t1 - t0, tb[rep] = t2 - t0, ti[rep] = t4 - t3;
        }
        qsort(ti, (size_t)reps, sizeof *ti, cmp_d);
        qsort(tf, (size_t)reps, sizeof *tf, cmp_d);
        qsort(tb, (size_t)reps, sizeof *tb, cmp_d);
        printf("%s %s D %lld H %lld b %lld B %lld T %lld %s on %s: forward %.1f ms, forward + backward %.1f ms, "
               "forward without a graph %.1f ms (median of %d)\n", c.kind ? "TTT-MLP" : "TTT-Linear", c.backbone ? "mamba" : "transformer",
               (long long)c.dim, (long long)c.heads, (long long)c.mini_batch, (long long)B, (long long)T,
               ttt_dtype_name(dt), dev == TTT_CUDA ? "cuda" : "cpu", 1e3 * tf[reps / 2], 1e3 * tb[reps / 2], 1e3 * ti[reps / 2], reps);
        /* the same row as mixer_speed's and bench/mixers/peer_speed.py's csv (run_peer_gpu.sh pairs them) */
        printf("csv,%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%.3f,%.3f,0\n", c.kind ? "ttt_mlp_layer" : "ttt_linear_layer",
               ttt_dtype_name(dt), dev == TTT_CUDA ? "cuda" : "cpu", (long long)B, (long long)c.heads, (long long)T,
               (long long)(c.dim / c.heads), (long long)c.mini_batch, 1e3 * tf[reps / 2], 1e3 * tb[reps / 2]);
        ttt_step_reset(ctx);
        ttt_persistent_free(ctx, x);
    }
    ttt_rnn_free(ctx, &l);
    ttt_ctx_free(ctx);
    return 0;
}
