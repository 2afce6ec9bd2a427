/* CPU benchmarks for the engine core:
 *   matmul GFLOP/s of ttt_matmul vs calling cblas_sgemm directly;
 *   elementwise / reduction bandwidth vs memcpy of the same bytes;
 *   per-op dispatch overhead (tiny tensors), with and without graph recording.
 * Medians over repetitions; printed as a table. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ttt/ttt.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

#define REPS 9

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    ttt_ctx_config cfg = {.arena_bytes = (size_t)512 << 20, .seed = 1};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    if (!ctx) return 1;
    ttt_no_grad_begin(ctx);

    printf("== matmul (f32, row-major, square) ==\n%-34s %18s %18s %9s\n", "size", "ttt_matmul", "cblas_sgemm",
           "ratio");
    int sizes[3] = {256, 1024, 2048};
    for (int i = 0; i < 3; i++) {
        printf("%-34d", sizes[i]);
        fflush(stdout);
        ttt_mark_t m = ttt_mark(ctx);
        double te[REPS], tb[REPS];
        int n = sizes[i], reps = n >= 2048 ? 5 : REPS;
        ttt_tensor *a = ttt_randn(ctx, TTT_F32, TTT_DIMS(n, n), 1.0), *b = ttt_randn(ctx, TTT_F32, TTT_DIMS(n, n), 1.0);
        float *c = malloc(sizeof(float) * (size_t)n * (size_t)n);
        for (int r = 0; r < reps; r++) {
            ttt_mark_t m2 = ttt_mark(ctx);
            double t0 = now();
            ttt_tensor *y = ttt_matmul(ctx, a, b, 0, 0);
            te[r] = now() - t0;
            if (!y) fprintf(stderr, "%s\n", ttt_error(ctx));
            ttt_release(ctx, m2);
            t0 = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a->data, n, b->data, n, 0.0f, c, n);
            tb[r] = now() - t0;
        }
        double flops = 2.0 * n * n * (double)n, e = median(te, reps), bl = median(tb, reps);
        printf(" %10.1f GFLOP/s %10.1f GFLOP/s %8.1f%%\n", flops / e * 1e-9, flops / bl * 1e-9, 100.0 * bl / e);
        free(c);
        ttt_release(ctx, m);
    }

    /* bandwidth: bytes read + written per second */
    const int64_t n = (int64_t)1 << 24; /* 16M floats = 64 MiB per tensor */
    printf("\n== bandwidth (f32, %lld elements, bytes read+written per second) ==\n%-34s %12s %12s %9s\n",
           (long long)n, "op", "ttt GB/s", "memcpy GB/s", "ratio");
    ttt_tensor *x = ttt_randn(ctx, TTT_F32, TTT_DIMS(n), 1.0), *y = ttt_randn(ctx, TTT_F32, TTT_DIMS(n), 1.0);
    ttt_tensor *rows = ttt_reshape(ctx, x, TTT_DIMS(n / 1024, 1024));
    char *src = malloc((size_t)n * 8), *dst = malloc((size_t)n * 8);
    memset(src, 1, (size_t)n * 8);
    memset(dst, 0, (size_t)n * 8);
    struct {
        const char *name;
        int kind;
        double bytes;
    } ops[] = {
        {"add (a + b)", 0, 12.0 * (double)n},
        {"mul by broadcast row", 1, 8.0 * (double)n},
        {"exp", 2, 8.0 * (double)n},
        {"gelu", 3, 8.0 * (double)n},
        {"sum over last axis (1024)", 4, 4.0 * (double)n},
        {"softmax over last axis (1024)", 5, 8.0 * (double)n},
        {"layer_norm over last axis (1024)", 6, 8.0 * (double)n},
    };
    ttt_tensor *bias = ttt_randn(ctx, TTT_F32, TTT_DIMS(1024), 1.0);
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        double te[REPS], tm[REPS];
        for (int r = 0; r < REPS; r++) {
            ttt_mark_t m = ttt_mark(ctx);
            double t0 = now();
            ttt_tensor *out = NULL;
            switch (ops[k].kind) {
            case 0: out = ttt_add(ctx, x, y); break;
            case 1: out = ttt_mul(ctx, rows, bias); break;
            case 2: out = ttt_exp(ctx, x); break;
            case 3: out = ttt_gelu(ctx, x); break;
            case 4: out = ttt_sum(ctx, rows, 1, (int[]){-1}, 0); break;
            case 5: out = ttt_softmax(ctx, rows); break;
            case 6: out = ttt_layer_norm(ctx, rows, NULL, NULL, 1e-5); break;
            }
            te[r] = now() - t0;
            if (!out) fprintf(stderr, "%s\n", ttt_error(ctx));
            ttt_release(ctx, m);
            size_t half = (size_t)(ops[k].bytes / 2);
            t0 = now();
            memcpy(dst, src, half);
            tm[r] = now() - t0;
        }
        double e = median(te, REPS), mc = median(tm, REPS);
        printf("%-34s %12.1f %12.1f %8.1f%%\n", ops[k].name, ops[k].bytes / e * 1e-9, ops[k].bytes / mc * 1e-9,
               100.0 * mc / e);
    }
    free(src);
    free(dst);

    /* dispatch overhead: ops on 1-element tensors */
    printf("\n== dispatch overhead (1-element f32 tensors) ==\n");
    ttt_no_grad_end(ctx);
    for (int rec = 0; rec < 2; rec++) {
        if (!rec) ttt_no_grad_begin(ctx);
        ttt_tensor *p = ttt_param(ctx, TTT_F32, TTT_DIMS(1), "p");
        const int iters = 200000;
        double t[REPS];
        for (int r = 0; r < 5; r++) {
            ttt_step_reset(ctx);
            ttt_tensor *acc = p;
            double t0 = now();
            for (int i = 0; i < iters; i++) {
                acc = ttt_add(ctx, acc, p);
                if ((i & 1023) == 1023) {
                    ttt_step_reset(ctx);
                    acc = p;
                }
            }
            t[r] = (now() - t0) / iters;
        }
        printf("%-34s %10.0f ns/op\n", rec ? "add, recording the graph" : "add, no-grad", median(t, 5) * 1e9);
        ttt_persistent_free(ctx, p);
        if (!rec) ttt_no_grad_end(ctx);
    }
    ttt_ctx_free(ctx);
    return 0;
}
