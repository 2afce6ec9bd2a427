/* Shared helpers of the CPU kernels: a strided N-d iterator that collapses
 * dense axes and splits the work into (row, chunk) items for OpenMP. */
#ifndef TTT_CPU_INTERNAL_H
#define TTT_CPU_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "ttt/backend.h"

enum { CPU_MAX_OPS = 4, CPU_CHUNK = 16384, CPU_PAR_MIN = 32768 };

/* Operand 0 is usually the destination. Strides in elements. */
typedef struct {
    int ndim, nops;
    int64_t shape[TTT_MAX_DIMS];
    int64_t stride[CPU_MAX_OPS][TTT_MAX_DIMS];
    int64_t rows, inner, chunks; /* work items = rows * chunks */
} cpu_iter;

static inline void cpu_iter_init(cpu_iter *it, int nops, const ttt_tensor *const *ops) {
    const ttt_tensor *ref = ops[0];
    it->nops = nops;
    /* copy, dropping size-1 axes */
    int nd = 0;
    for (int d = 0; d < ref->ndim; d++) {
        if (ref->shape[d] == 1) continue;
        it->shape[nd] = ref->shape[d];
        for (int k = 0; k < nops; k++) it->stride[k][nd] = ops[k]->stride[d];
        nd++;
    }
    /* merge axis d into d+1 where every operand is dense across them */
    int out = 0;
    for (int d = 0; d < nd; d++) {
        if (out > 0) {
            int merge = 1;
            for (int k = 0; k < nops && merge; k++)
                merge = it->stride[k][out - 1] == it->stride[k][d] * it->shape[d];
            if (merge) {
                it->shape[out - 1] *= it->shape[d];
                for (int k = 0; k < nops; k++) it->stride[k][out - 1] = it->stride[k][d];
                continue;
            }
        }
        it->shape[out] = it->shape[d];
        for (int k = 0; k < nops; k++) it->stride[k][out] = it->stride[k][d];
        out++;
    }
    if (out == 0) { /* scalar */
        it->shape[0] = 1;
        for (int k = 0; k < nops; k++) it->stride[k][0] = 1;
        out = 1;
    }
    it->ndim = out;
    it->inner = it->shape[out - 1];
    it->rows = 1;
    for (int d = 0; d < out - 1; d++) it->rows *= it->shape[d];
    it->chunks = (it->inner + CPU_CHUNK - 1) / CPU_CHUNK;
    if (it->chunks < 1) it->chunks = 1;
}

/* A CPU instance's state (ttt_backend_state): the most threads its parallel
 * regions use. Each region passes its own num_threads clause, so two contexts
 * with different thread counts interleave without touching the process-wide
 * OpenMP setting. An instance opened with threads 0 (fit the machine) also
 * leaves out the cores that other processes keep busy (cpu_free_cores). */
typedef struct {
    int threads;
    int fit_machine; /* threads was 0: shrink to the free cores */
} cpu_state;

/* cpu_backend.c: cores not kept busy by other processes, at least 1 (sampled
 * from the kernel's count of runnable tasks at most every 100 ms). */
int cpu_free_cores(void);

static inline int cpu_threads(const ttt_backend_state *self) { return ((const cpu_state *)self)->threads; }

/* The most threads this instance uses now. */
static inline int cpu_threads_now(const ttt_backend_state *self) {
    const cpu_state *st = (const cpu_state *)self;
    if (!st->fit_machine || st->threads <= 1) return st->threads;
    const int free_cores = cpu_free_cores();
    return free_cores < st->threads ? free_cores : st->threads;
}

/* Threads for work elements: one per CPU_PAR_MIN elements, at most the
 * instance's. Below that a region's fork and barrier cost more than they save,
 * and on a shared machine each extra thread is one more that the barrier waits
 * for when the scheduler has put it aside. */
static inline int cpu_team(const ttt_backend_state *self, int64_t work) {
    if (cpu_threads(self) <= 1 || work <= CPU_PAR_MIN) return 1;
    const int most = cpu_threads_now(self);
    const int64_t fit = (work + CPU_PAR_MIN - 1) / CPU_PAR_MIN;
    return fit < most ? (int)fit : most;
}

/* CPU_PARALLEL(self, work, _Pragma("omp for ...") for (...) {...}): the loop
 * runs on a team of cpu_team(self, work) threads, or inline on the calling
 * thread when that is one. Merely entering the OpenMP runtime costs ~0.5 us,
 * ten times a small op's own work. */
#define CPU_PARALLEL(self, work, ...)                                  \
    do {                                                               \
        const int team_ = cpu_team(self, work);                        \
        if (team_ > 1) {                                               \
            _Pragma("omp parallel num_threads(team_)") { __VA_ARGS__ } \
        } else {                                                       \
            __VA_ARGS__                                                \
        }                                                              \
    } while (0)

static inline int64_t cpu_iter_items(const cpu_iter *it) { return it->rows * it->chunks; }

/* Element offsets of each operand at the start of work item w; *n = its length. */
static inline void cpu_iter_item(const cpu_iter *it, int64_t w, int64_t *off, int64_t *n) {
    int64_t row = w / it->chunks, chunk = w % it->chunks;
    for (int k = 0; k < it->nops; k++) off[k] = 0;
    for (int d = it->ndim - 2; d >= 0; d--) {
        int64_t i = row % it->shape[d];
        row /= it->shape[d];
        for (int k = 0; k < it->nops; k++) off[k] += i * it->stride[k][d];
    }
    int64_t start = chunk * CPU_CHUNK;
    for (int k = 0; k < it->nops; k++) off[k] += start * it->stride[k][it->ndim - 1];
    *n = it->inner - start < CPU_CHUNK ? it->inner - start : CPU_CHUNK;
}

static inline int64_t cpu_iter_inner_stride(const cpu_iter *it, int k) { return it->stride[k][it->ndim - 1]; }

static inline int64_t cpu_numel(const ttt_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Rows of the last axis for last-axis kernels: [rows, cols]. */
static inline void cpu_rows_cols(const ttt_tensor *t, int64_t *rows, int64_t *cols) {
    *cols = t->ndim ? t->shape[t->ndim - 1] : 1;
    *rows = *cols ? cpu_numel(t) / *cols : 0;
}

/* Element i of an f32 (f32 = 1) or f64 buffer, as double, and back. */
static inline double ld(const void *p, int f32, int64_t i) {
    return f32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}
static inline void st(void *p, int f32, int64_t i, double v) {
    if (f32) ((float *)p)[i] = (float)v;
    else ((double *)p)[i] = v;
}

int cpu_unsupported(const char *kernel, ttt_dtype dt);

#include <math.h>
#include <stdint.h>
#include <string.h>

/* f32 exp, tanh and sigmoid without calls into libm, so the dense loops vectorize: glibc's expf and tanhf are
 * scalar calls, and with them gelu ran at ~4% of memcpy speed (docs/benchmarks.md). exp: x = k ln2 + r with
 * |r| <= ln2/2 (Cody-Waite, ln2 in two parts), a degree-7 Taylor polynomial for e^r (truncation < 6e-9
 * relative), and 2^k applied as two exact power-of-two factors so k from -150 to 128 needs no branch; within
 * 2 ulp of expf over the f32 range, inf above ln(FLT_MAX), 0 below the subnormals, NaN kept. */
static inline float exp_f32(float x) {
    const float hi = 88.7228394f, lo = -104.0f;
    const float xc = x > hi ? hi : (x < lo ? lo : x); /* NaN falls through both and is restored below */
    const float round = 12582912.0f;                   /* 1.5 * 2^23: adding it rounds to an integer */
    float k = (xc * 1.44269504f + round) - round;
    k = k == k ? k : 0.0f; /* NaN: any k will do, the result is replaced below */
    const float r = (xc - k * 0.693145752f) - k * 1.42860677e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t ki = (int32_t)k, k1 = ki / 2, k2 = ki - k1;
    int32_t b1 = (k1 + 127) << 23, b2 = (k2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    const float y = p * s1 * s2;
    return x > hi ? INFINITY : (x < lo ? 0.0f : (x == x ? y : x));
}

/* tanh: an odd Taylor polynomial to x^11 below |x| = 0.3 (truncation < 2e-9 relative), else
 * 1 - 2 / (e^{2|x|} + 1) with the sign (within ~3 ulp: the subtraction loses at most 2 bits above 0.3). */
static inline float tanh_f32(float x) {
    const float a = x < 0 ? -x : x, x2 = x * x;
    float p = -1382.0f / 155925.0f;
    p = p * x2 + 62.0f / 2835.0f;
    p = p * x2 - 17.0f / 315.0f;
    p = p * x2 + 2.0f / 15.0f;
    p = p * x2 - 1.0f / 3.0f;
    const float small = x + x * x2 * p;
    const float t = 1.0f - 2.0f / (exp_f32(2.0f * a) + 1.0f);
    return a < 0.3f ? small : (x < 0 ? -t : t);
}

/* max over n floats (NaNs skipped, like fmax), in eight lanes so it vectorizes; -inf for n = 0 */
static inline float max_f32(const float *x, int64_t n) {
    float lane[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int e = 0; e < 8; e++) lane[e] = x[j + e] > lane[e] ? x[j + e] : lane[e];
    float m = -INFINITY;
    for (int e = 0; e < 8; e++) m = lane[e] > m ? lane[e] : m;
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* sum of n floats in f64, by eight f32 lanes flushed every 128 terms (vectorizes; for values of one sign
 * and like size, as probabilities are) */
static inline double sum_f32(const float *x, int64_t n) {
    float lane[8] = {0};
    double s = 0;
    int64_t j = 0;
    while (j + 8 <= n) {
        const int64_t end = j + 1024 <= n ? j + 1024 : n - (n - j) % 8;
        for (; j < end; j += 8)
            for (int e = 0; e < 8; e++) lane[e] += x[j + e];
        for (int e = 0; e < 8; e++) s += (double)lane[e], lane[e] = 0;
    }
    for (; j < n; j++) s += (double)x[j];
    return s;
}

/* sum_j e^(x_j - m) over n floats, in f64: eight f32 lanes (so the exp loop vectorizes; an f64 accumulator
 * in order would not), each flushed into the f64 sum every 128 terms, so a lane adds at most 128 values <= 1. */
static inline double sum_exp_f32(const float *x, int64_t n, float m) {
    float lane[8] = {0};
    double s = 0;
    int64_t j = 0;
    while (j + 8 <= n) {
        const int64_t end = j + 1024 <= n ? j + 1024 : n - (n - j) % 8;
        for (; j < end; j += 8)
            for (int e = 0; e < 8; e++) lane[e] += exp_f32(x[j + e] - m);
        for (int e = 0; e < 8; e++) s += (double)lane[e], lane[e] = 0;
    }
    for (; j < n; j++) s += (double)exp_f32(x[j] - m);
    return s;
}

#endif
