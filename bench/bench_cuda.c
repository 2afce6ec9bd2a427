/* CUDA backend benchmarks: matmul TFLOP/s of ttt_matmul against calling
 * cuBLAS directly (the ceiling it is chasing), elementwise / row-kernel
 * bandwidth against a device-to-device copy of the same bytes, and the cost of
 * one small op (launch-bound). Times with CUDA events, medians of repeats. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "ttt/runtime.h"
#include "ttt/ttt.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define REPS 20

typedef struct {
    cudaEvent_t a, b;
} timer;

static double elapsed(timer *t) {
    float ms = 0;
    cudaEventSynchronize(t->b);
    cudaEventElapsedTime(&ms, t->a, t->b);
    return ms * 1e-3;
}

/* ttt_matmul of n x n operands against the same cuBLAS call made directly. */
static void bench_matmul(ttt_ctx *ctx, cublasHandle_t h, timer *t, ttt_dtype dt, int tf32, const char *label) {
    printf("\n== matmul %s, C = A B ==\n%-8s %16s %16s %8s\n", label, "n", "ttt TFLOP/s", "cuBLAS TFLOP/s", "ratio");
    const int sizes[3] = {1024, 4096, 8192};
    const cudaDataType_t ct = dt == TTT_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t comp = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    for (int s = 0; s < 3; s++) {
        int n = sizes[s];
        ttt_mark_t m = ttt_mark(ctx);
        ttt_tensor *a = ttt_cast(ctx, ttt_randn(ctx, TTT_F32, TTT_DIMS(n, n), 1.0), dt);
        ttt_tensor *b = ttt_cast(ctx, ttt_randn(ctx, TTT_F32, TTT_DIMS(n, n), 1.0), dt);
        ttt_tensor *c = ttt_new(ctx, dt, TTT_DIMS(n, n));
        double te[REPS], tc[REPS];
        const float one = 1, zero = 0;
        for (int r = 0; r < REPS; r++) {
            ttt_mark_t m2 = ttt_mark(ctx);
            cudaEventRecord(t->a, 0);
            ttt_tensor *y = ttt_matmul(ctx, a, b, 0, 0);
            cudaEventRecord(t->b, 0);
            te[r] = elapsed(t);
            if (!y) fprintf(stderr, "%s\n", ttt_error(ctx));
            ttt_release(ctx, m2);
            cudaEventRecord(t->a, 0);
            cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, b->data, ct, n, a->data, ct, n, &zero, c->data, ct, n,
                         comp, CUBLAS_GEMM_DEFAULT);
            cudaEventRecord(t->b, 0);
            tc[r] = elapsed(t);
        }
        qsort(te, REPS, sizeof(double), cmp_double);
        qsort(tc, REPS, sizeof(double), cmp_double);
        double fl = 2.0 * n * (double)n * n;
        printf("%-8d %16.1f %16.1f %7.1f%%\n", n, fl / te[REPS / 2] * 1e-12, fl / tc[REPS / 2] * 1e-12,
               100.0 * tc[REPS / 2] / te[REPS / 2]);
        ttt_release(ctx, m);
    }
}

/* The 125M language model's projection shapes in bf16 ([rows, in] x [out, in]^T and its two
 * gradients), ttt_matmul against the same cublasGemmEx call made directly. */
static void bench_lm_shapes(ttt_ctx *ctx, cublasHandle_t h, timer *t) {
    printf("\n== matmul bf16, LM shapes (M x N x K, transposes of A and B) ==\n%-22s %12s %14s %8s\n", "shape", "ttt TFLOP/s",
           "cuBLAS TFLOP/s", "ratio");
    const struct { int m, n, k, ta, tb; } shapes[] = {
        {8192, 768, 768, 0, 1}, {8192, 768, 768, 0, 0}, {768, 768, 8192, 1, 0}, {8192, 2048, 768, 0, 1},
        {8192, 768, 2048, 0, 1}, {1024, 50304, 768, 0, 1}, {1024, 768, 50304, 0, 0}, {50304, 768, 1024, 1, 0}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int m = shapes[s].m, n = shapes[s].n, k = shapes[s].k, ta = shapes[s].ta, tb = shapes[s].tb;
        ttt_mark_t mk = ttt_mark(ctx);
        ttt_tensor *a = ta ? ttt_randn(ctx, TTT_F32, TTT_DIMS(k, m), 1.0) : ttt_randn(ctx, TTT_F32, TTT_DIMS(m, k), 1.0);
        ttt_tensor *b = tb ? ttt_randn(ctx, TTT_F32, TTT_DIMS(n, k), 1.0) : ttt_randn(ctx, TTT_F32, TTT_DIMS(k, n), 1.0);
        a = ttt_cast(ctx, a, TTT_BF16), b = ttt_cast(ctx, b, TTT_BF16);
        ttt_tensor *c = ttt_new(ctx, TTT_BF16, TTT_DIMS(m, n));
        double te[REPS], tc[REPS];
        const float one = 1, zero = 0;
        for (int r = 0; r < REPS; r++) {
            ttt_mark_t m2 = ttt_mark(ctx);
            cudaEventRecord(t->a, 0);
            ttt_tensor *y = ttt_matmul(ctx, a, b, ta, tb);
            cudaEventRecord(t->b, 0);
            te[r] = elapsed(t);
            if (!y) fprintf(stderr, "%s\n", ttt_error(ctx));
            ttt_release(ctx, m2);
            cudaEventRecord(t->a, 0);
            cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &one, b->data,
                         CUDA_R_16BF, tb ? k : n, a->data, CUDA_R_16BF, ta ? m : k, &zero, c->data, CUDA_R_16BF, n,
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
            cudaEventRecord(t->b, 0);
            tc[r] = elapsed(t);
        }
        qsort(te, REPS, sizeof(double), cmp_double);
        qsort(tc, REPS, sizeof(double), cmp_double);
        const double fl = 2.0 * m * (double)n * k;
        char name[48];
        snprintf(name, sizeof name, "%dx%dx%d %c%c", m, n, k, ta ? 'T' : 'N', tb ? 'T' : 'N');
        printf("%-22s %12.1f %14.1f %7.1f%%\n", name, fl / te[REPS / 2] * 1e-12, fl / tc[REPS / 2] * 1e-12,
               100.0 * tc[REPS / 2] / te[REPS / 2]);
        ttt_release(ctx, mk);
    }
}

int main(void) {
    ttt_ctx_config cfg = {.device = TTT_CUDA, .arena_bytes = (size_t)4 << 30, .seed = 1};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    if (!ctx) {
        fprintf(stderr, "bench_cuda: %s\n", ttt_runtime_error());
        return 1;
    }
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    ttt_no_grad_begin(ctx);
    timer t;
    cudaEventCreate(&t.a);
    cudaEventCreate(&t.b);
    cublasHandle_t h;
    cublasCreate(&h);

    bench_matmul(ctx, h, &t, TTT_F32, 0, "f32 (FP32 math, no TF32)");
    bench_matmul(ctx, h, &t, TTT_BF16, 0, "bf16 in and out, f32 accumulation");
    bench_lm_shapes(ctx, h, &t);
    {
        /* TF32 is a setting of the context (ttt_ctx_config.tf32): a second context with it on */
        ttt_ctx_config c32 = cfg;
        c32.arena_bytes = (size_t)1 << 30;
        c32.tf32 = 1;
        ttt_ctx *ctx32 = ttt_ctx_new(&c32);
        if (ctx32) {
            ttt_no_grad_begin(ctx32);
            bench_matmul(ctx32, h, &t, TTT_F32, 1, "f32 on TF32 tensor cores (ttt_ctx_config.tf32)");
            ttt_no_grad_end(ctx32);
            ttt_ctx_free(ctx32);
        }
    }

    const int64_t N = (int64_t)1 << 27; /* 128M floats = 512 MiB per tensor */
    ttt_tensor *x = ttt_randn(ctx, TTT_F32, TTT_DIMS(N), 1.0), *y = ttt_randn(ctx, TTT_F32, TTT_DIMS(N), 1.0);
    ttt_tensor *rows = ttt_reshape(ctx, x, TTT_DIMS(N / 1024, 1024));
    ttt_tensor *dst = ttt_new(ctx, TTT_F32, TTT_DIMS(N));
    ttt_tensor *xb = ttt_cast(ctx, x, TTT_BF16), *yb = ttt_cast(ctx, y, TTT_BF16);
    ttt_tensor *rows_b = ttt_reshape(ctx, xb, TTT_DIMS(N / 1024, 1024));
    printf("\n== bandwidth, %lld elements (f32 unless named) (bytes read + written per second) ==\n%-32s %10s %12s %8s\n",
           (long long)N, "op", "ttt GB/s", "D2D copy GB/s", "ratio");
    struct {
        const char *name;
        int kind;
        double bytes;
    } ops[] = {{"add", 0, 12.0 * N}, {"exp", 1, 8.0 * N}, {"gelu", 2, 8.0 * N},
               {"sum over last axis (1024)", 3, 4.0 * N}, {"sum over first axis (bias grad)", 7, 4.0 * N}, {"softmax (rows of 1024)", 4, 8.0 * N},
               {"layer_norm (rows of 1024)", 5, 8.0 * N}, {"transpose copy (contiguous)", 6, 8.0 * N},
               {"add bf16", 8, 6.0 * N}, {"rms_norm bf16 (rows of 1024)", 9, 4.0 * N}};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        double te[REPS], tc[REPS];
        for (int r = 0; r < REPS; r++) {
            ttt_mark_t m = ttt_mark(ctx);
            cudaEventRecord(t.a, 0);
            ttt_tensor *o = NULL;
            switch (ops[k].kind) {
            case 0: o = ttt_add(ctx, x, y); break;
            case 1: o = ttt_exp(ctx, x); break;
            case 2: o = ttt_gelu(ctx, x); break;
            case 3: o = ttt_sum(ctx, rows, 1, (int[]){-1}, 0); break;
            case 4: o = ttt_softmax(ctx, rows); break;
            case 5: o = ttt_layer_norm(ctx, rows, NULL, NULL, 1e-5); break;
            case 6: o = ttt_contiguous(ctx, ttt_transpose(ctx, rows, 0, 1)); break;
            case 7: o = ttt_sum(ctx, rows, 1, (int[]){0}, 0); break;
            case 8: o = ttt_add(ctx, xb, yb); break;
            case 9: o = ttt_rms_norm(ctx, rows_b, NULL, 1e-6); break;
            }
            cudaEventRecord(t.b, 0);
            te[r] = elapsed(&t);
            if (!o) fprintf(stderr, "%s\n", ttt_error(ctx));
            ttt_release(ctx, m);
            cudaEventRecord(t.a, 0);
            /* the reference: one tensor's worth of device-to-device copy (4N bytes read + 4N written);
             * copying more would run past x's allocation */
            cudaMemcpyAsync(dst->data, x->data, (size_t)(4 * N), cudaMemcpyDeviceToDevice, 0);
            cudaEventRecord(t.b, 0);
            tc[r] = elapsed(&t);
        }
        qsort(te, REPS, sizeof(double), cmp_double);
        qsort(tc, REPS, sizeof(double), cmp_double);
        const double gbs = ops[k].bytes / te[REPS / 2] * 1e-9, copy_gbs = 8.0 * (double)N / tc[REPS / 2] * 1e-9;
        printf("%-32s %10.0f %12.0f %7.1f%%\n", ops[k].name, gbs, copy_gbs, 100.0 * gbs / copy_gbs);
    }

    printf("\n== one small op (1-element add), host-side cost per op incl. launch ==\n");
    ttt_tensor *p = ttt_scalar(ctx, TTT_F32, 1.0);
    for (int pass = 0; pass < 2; pass++) {
        const int iters = 20000;
        cudaDeviceSynchronize();
        cudaEventRecord(t.a, 0);
        ttt_mark_t m = ttt_mark(ctx);
        ttt_tensor *acc = p;
        for (int i = 0; i < iters; i++) acc = ttt_add(ctx, acc, p);
        cudaEventRecord(t.b, 0);
        double s = elapsed(&t);
        ttt_release(ctx, m);
        if (pass) printf("%-32s %10.2f us/op\n", "add (no-grad)", s / iters * 1e6);
    }
    cublasDestroy(h);
    ttt_no_grad_end(ctx);
    ttt_ctx_free(ctx);
    return 0;
}
