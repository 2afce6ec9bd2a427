/* Backend instances (include/ttt/backend.h): each context opens its own
 * instance, so contexts with different settings work side by side in one
 * process. On the CPU: two contexts with different thread counts interleave
 * their work (and run at once on two host threads) and both give the right
 * answers, without touching the process-wide OpenMP setting. On CUDA, where a
 * GPU is present: two contexts on one GPU (TF32 on in one only), and two GPUs
 * where there are two. Bad device indices and thread counts fail with a
 * message. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backends/cpu/cpu_internal.h"
#include "check.h"
#include "core/internal.h"
#include "ttt/runtime.h"
#include "ttt/ttt.h"

enum { N = 96, BIG = 200000 };

/* Host references, in double. */
static void host_matmul(const float *a, const float *b, double *c, int n) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++) s += (double)a[i * n + k] * b[k * n + j];
            c[i * n + j] = s;
        }
}

typedef struct {
    float *a, *b, *big;
    double *ab, big_sum, big_tanh_sum;
} refs;

static void make_refs(refs *r) {
    r->a = malloc(sizeof(float) * N * N);
    r->b = malloc(sizeof(float) * N * N);
    r->big = malloc(sizeof(float) * BIG);
    r->ab = malloc(sizeof(double) * N * N);
    for (int i = 0; i < N * N; i++) {
        r->a[i] = (float)sin(0.37 * i);
        r->b[i] = (float)cos(0.11 * i);
    }
    r->big_sum = r->big_tanh_sum = 0;
    for (int i = 0; i < BIG; i++) {
        r->big[i] = (float)(0.001 * (i % 2000) - 1.0);
        r->big_sum += r->big[i];
        r->big_tanh_sum += tanh((double)r->big[i] * 2.0);
    }
    host_matmul(r->a, r->b, r->ab, N);
}

static void free_refs(refs *r) { free(r->a), free(r->b), free(r->big), free(r->ab); }

/* One round of work on ctx: a matmul, a large elementwise op and reductions
 * (large enough that a multi-thread instance runs them in parallel); returns
 * the worst relative error against the references, or INFINITY on failure. */
static double round_of_work(ttt_ctx *ctx, const refs *r, int with_matmul) {
    double worst = 0;
    ttt_mark_t mk = ttt_mark(ctx);
    if (with_matmul) {
        ttt_tensor *a = ttt_from_host(ctx, TTT_F32, TTT_DIMS(N, N), r->a);
        ttt_tensor *b = ttt_from_host(ctx, TTT_F32, TTT_DIMS(N, N), r->b);
        ttt_tensor *c = ttt_matmul(ctx, a, b, 0, 0);
        if (!c) return INFINITY;
        float *h = malloc(sizeof(float) * N * N);
        if (ttt_copy_to_host(ctx, c, h, TTT_F32) != TTT_OK) worst = INFINITY;
        for (int i = 0; i < N * N && worst < INFINITY; i++)
            worst = fmax(worst, fabs(h[i] - r->ab[i]) / (1.0 + fabs(r->ab[i])));
        free(h);
    }
    ttt_tensor *x = ttt_from_host(ctx, TTT_F32, TTT_DIMS(BIG), r->big);
    ttt_tensor *s = ttt_sum(ctx, x, 0, NULL, 0);
    ttt_tensor *t = ttt_sum(ctx, ttt_tanh(ctx, ttt_scale(ctx, x, 2.0)), 0, NULL, 0);
    if (!s || !t) return INFINITY;
    worst = fmax(worst, fabs(ttt_item(ctx, s) - r->big_sum) / (1.0 + fabs(r->big_sum)));
    worst = fmax(worst, fabs(ttt_item(ctx, t) - r->big_tanh_sum) / (1.0 + fabs(r->big_tanh_sum)));
    ttt_release(ctx, mk);
    return worst;
}

typedef struct {
    ttt_ctx *ctx;
    const refs *r;
    double worst;
} job;

static void *run_job(void *p) {
    job *j = p;
    for (int i = 0; i < 20; i++) j->worst = fmax(j->worst, round_of_work(j->ctx, j->r, 0));
    return NULL;
}

static void cpu_instances(const refs *r) {
#ifdef _OPENMP
    const int omp_before = omp_get_max_threads();
#endif
    ttt_ctx *one = ttt_ctx_new(&(ttt_ctx_config){.threads = 1, .seed = 1});
    ttt_ctx *two = ttt_ctx_new(&(ttt_ctx_config){.threads = 2, .seed = 2});
    ttt_ctx *fit = ttt_ctx_new(&(ttt_ctx_config){.threads = 0, .seed = 3});
    CHECK(one && two && fit);
    if (!one || !two || !fit) return;
    /* each context has its own instance, holding its own thread count */
    CHECK(one->bs != two->bs && two->bs != fit->bs);
    if (!one->profiled && !two->profiled) {
        CHECK(cpu_threads(one->bs) == 1);
        CHECK(cpu_threads(two->bs) == 2);
        CHECK(cpu_team(two->bs, 10) == 1);          /* small work: no parallel region */
        CHECK(cpu_team(two->bs, BIG) == 2);
        CHECK(cpu_team(one->bs, BIG) == 1);
        CHECK(cpu_threads(fit->bs) >= 1);
    }
#ifdef _OPENMP
    CHECK_MSG(omp_get_max_threads() == omp_before, "the process-wide OpenMP thread count changed: %d -> %d",
              omp_before, omp_get_max_threads());
#endif
    /* interleaved on one host thread */
    double worst = 0;
    for (int i = 0; i < 6; i++) {
        worst = fmax(worst, round_of_work(one, r, 1));
        worst = fmax(worst, round_of_work(two, r, 1));
        worst = fmax(worst, round_of_work(fit, r, i % 2));
    }
    CHECK_MSG(worst < 1e-5, "interleaved CPU contexts: worst relative error %g", worst);
    /* at once, on two host threads (no matmul: OpenBLAS's thread count is process-wide) */
    job a = {one, r, 0}, b = {two, r, 0};
    pthread_t ta, tb;
    CHECK(pthread_create(&ta, NULL, run_job, &a) == 0);
    CHECK(pthread_create(&tb, NULL, run_job, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK_MSG(a.worst < 1e-5 && b.worst < 1e-5, "concurrent CPU contexts: worst errors %g and %g", a.worst, b.worst);
#ifdef _OPENMP
    CHECK(omp_get_max_threads() == omp_before);
#endif
    ttt_ctx_free(one);
    ttt_ctx_free(two);
    ttt_ctx_free(fit);
}

static void bad_configs(void) {
    CHECK(ttt_ctx_new(&(ttt_ctx_config){.threads = -2}) == NULL);
    CHECK_MSG(strstr(ttt_runtime_error(), "threads") != NULL, "message: %s", ttt_runtime_error());
    CHECK(ttt_ctx_new(&(ttt_ctx_config){.device_index = 1}) == NULL);
    CHECK_MSG(strstr(ttt_runtime_error(), "cpu device 1") != NULL, "message: %s", ttt_runtime_error());
    CHECK(ttt_ctx_new(&(ttt_ctx_config){.device_index = -1}) == NULL);
    CHECK_MSG(strstr(ttt_runtime_error(), "device_index -1") != NULL, "message: %s", ttt_runtime_error());
    CHECK(ttt_ctx_new(&(ttt_ctx_config){.device = (ttt_device)7}) == NULL);
    CHECK_MSG(strstr(ttt_runtime_error(), "unknown device 7") != NULL, "message: %s", ttt_runtime_error());
    const int gpus = ttt_device_count(TTT_CUDA);
    CHECK(ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CUDA, .device_index = gpus + 3}) == NULL);
    const char *m = ttt_runtime_error();
    CHECK_MSG(strstr(m, "does not exist") || strstr(m, "no CUDA device") || strstr(m, "no backend"), "message: %s", m);
}

/* Two contexts on one GPU, one with TF32 matmuls: interleaved, each right to
 * its precision; each context's pool is its own. Two GPUs where present. */
static void cuda_instances(const refs *r) {
    const int gpus = ttt_device_count(TTT_CUDA);
    if (gpus < 1) {
        printf("no CUDA device: the two-context GPU checks are skipped\n");
        return;
    }
    ttt_ctx *full = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CUDA, .arena_bytes = 1 << 24, .seed = 4});
    ttt_ctx *tf32 = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CUDA, .arena_bytes = 1 << 24, .seed = 5, .tf32 = 1});
    CHECK_MSG(full && tf32, "CUDA contexts: %s", ttt_runtime_error());
    if (!full || !tf32) return;
    double wf = 0, wt = 0;
    for (int i = 0; i < 5; i++) {
        wf = fmax(wf, round_of_work(full, r, 1));
        wt = fmax(wt, round_of_work(tf32, r, 1));
    }
    CHECK_MSG(wf < 1e-5, "full-f32 GPU context: worst relative error %g", wf);
    CHECK_MSG(wt < 2e-2, "TF32 GPU context: worst relative error %g", wt);
    ttt_memory_stats mf, mt;
    CHECK(ttt_ctx_memory_stats(full, &mf) == TTT_OK && ttt_ctx_memory_stats(tf32, &mt) == TTT_OK);
    CHECK(mf.driver_allocs >= 1 && mt.driver_allocs >= 1); /* each instance reserved its own memory */
    CHECK(ttt_synchronize(full) == TTT_OK && ttt_synchronize(tf32) == TTT_OK);
    ttt_ctx_free(tf32);
    /* the other context keeps working after its neighbour is gone */
    CHECK(round_of_work(full, r, 1) < 1e-5);
    ttt_ctx_free(full);
    if (gpus < 2) {
        printf("one GPU: the two-GPU check is skipped\n");
        return;
    }
    ttt_ctx *g0 = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CUDA, .device_index = 0, .arena_bytes = 1 << 24});
    ttt_ctx *g1 = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CUDA, .device_index = 1, .arena_bytes = 1 << 24});
    CHECK_MSG(g0 && g1, "contexts on GPUs 0 and 1: %s", ttt_runtime_error());
    if (g0 && g1) {
        double w = 0;
        for (int i = 0; i < 4; i++) w = fmax(w, fmax(round_of_work(g0, r, 1), round_of_work(g1, r, 1)));
        CHECK_MSG(w < 1e-5, "two GPUs: worst relative error %g", w);
    }
    ttt_ctx_free(g0);
    ttt_ctx_free(g1);
}

int main(void) {
    refs r;
    make_refs(&r);
    cpu_instances(&r);
    bad_configs();
    cuda_instances(&r);
    free_refs(&r);
    TEST_MAIN_END();
}
