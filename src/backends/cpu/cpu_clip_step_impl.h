/* TTT-E2E's clipped inner step (backend.h: clip_step, clip_step_bwd; the math in src/ops/nn.c) on raw arrays
 * for one real type R (float or double): included by cpu_optim.c once per type with R and SFX defined, and by
 * dev/cuda/clip_step_emu_test.cpp as the reference of the CUDA kernels (multi_tensor.cuh).
 *
 * Tensor t holds B sequences of per[t] elements each. Every sequence's run of a tensor is cut into chunks of
 * CLIP_CHUNK elements; the work items of a pass are (sequence b, chunk j of the sequence's P), j counting the
 * chunks of tensor 0, then tensor 1, ... A chunk's sum is eight lanes in double (the products in double: f32
 * squares exactly), and a sequence's total adds its P chunk sums in order, so no result depends on the threads.
 * A pass is one OpenMP loop over the items (team threads; an emulator build without OpenMP runs it serially). */

#ifndef TTT_CPU_CLIP_STEP_COMMON
#define TTT_CPU_CLIP_STEP_COMMON
#include <math.h>
#include <stdint.h>

enum { CLIP_CHUNK = 16384 };

static inline int64_t clip_chunks(int64_t per) { return (per + CLIP_CHUNK - 1) / CLIP_CHUNK; }

/* P: the chunks of one sequence over every tensor */
static inline int64_t clip_chunks_total(int n, const int64_t *per) {
    int64_t p = 0;
    for (int t = 0; t < n; t++) p += clip_chunks(per[t]);
    return p;
}

/* doubles of scratch the passes need: the items' sums, then two coefficients per sequence */
static inline int64_t clip_scratch_len(int n, int64_t B, const int64_t *per) {
    return B * clip_chunks_total(n, per) + 2 * B;
}

/* chunk j of a sequence: its tensor and the chunk's first element within the tensor's run */
static inline int clip_item(int n, const int64_t *per, int64_t j, int64_t *start) {
    int t = 0;
    for (int64_t c; t < n - 1 && j >= (c = clip_chunks(per[t])); t++) j -= c;
    *start = j * CLIP_CHUNK;
    return t;
}

/* The coefficients on a sequence of norm N: the step is out = w + a g; the gradient dg = a dout + k g with
 * r = sum_i <dout_i, g_i> over the sequence. N >= clip binds (a tie too, as ttt_maximum's gradient has it). */
static inline int clip_binds(double norm, double clip) { return clip > 0 && norm >= clip; }
static inline double clip_fwd_coef(double norm, double eta, double clip) {
    return clip_binds(norm, clip) ? -eta * (clip / norm) : -eta;
}
static inline void clip_bwd_coefs(double norm, double r, double eta, double clip, double *a, double *k) {
    *a = clip_binds(norm, clip) ? -eta * (clip / norm) : -eta;
    *k = clip_binds(norm, clip) ? eta * clip * r / (norm * norm * norm) : 0.0;
}
#endif

#define CLIP_CAT_(a, b) a##b
#define CLIP_CAT(a, b) CLIP_CAT_(a, b)
#define CLIP_FN(name) CLIP_CAT(name, SFX)

/* sum_j a[j] b[j] in double, eight lanes (a == b: the sum of squares); 0 when a is NULL (a zero cotangent) */
static double CLIP_FN(clip_dot)(const R *a, const R *b, int64_t k) {
    if (!a) return 0.0;
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= k; j += 8)
        for (int e = 0; e < 8; e++) l[e] += (double)a[j + e] * (double)b[j + e];
    for (; j < k; j++) l[j % 8] += (double)a[j] * (double)b[j];
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* dst = p x + q g in double, rounded once (x NULL: zero) */
static void CLIP_FN(clip_combine)(R *dst, const R *x, double p, const R *g, double q, int64_t k) {
    if (x)
        for (int64_t j = 0; j < k; j++) dst[j] = (R)(p * (double)x[j] + q * (double)g[j]);
    else
        for (int64_t j = 0; j < k; j++) dst[j] = (R)(q * (double)g[j]);
}

/* One pass over every (sequence, chunk): sums (dst NULL) part[b P + j] = <a, g> of the chunk, or writes
 * dst = coef[2b] a + coef[2b + 1] g over it (skipping tensors whose dst is NULL). */
static void CLIP_FN(clip_pass)(int n, int64_t B, const int64_t *per, R *const *dst, const R *const *a,
                               const R *const *g, const double *coef, double *part, int team) {
    const int64_t P = clip_chunks_total(n, per), items = B * P;
    (void)team;
    _Pragma("omp parallel for if (team > 1) num_threads(team) schedule(static)")
    for (int64_t q = 0; q < items; q++) {
        const int64_t b = q / P;
        int64_t start;
        const int t = clip_item(n, per, q % P, &start);
        const int64_t len = per[t] - start < CLIP_CHUNK ? per[t] - start : CLIP_CHUNK, off = b * per[t] + start;
        if (!dst) part[q] = CLIP_FN(clip_dot)(a[t] ? a[t] + off : NULL, g[t] + off, len);
        else if (dst[t])
            CLIP_FN(clip_combine)(dst[t] + off, a[t] ? a[t] + off : NULL, coef[2 * b], g[t] + off, coef[2 * b + 1], len);
    }
}

/* sequence b's total of the chunk sums, in order */
static double CLIP_FN(clip_total)(const double *part, int64_t P, int64_t b) {
    double s = 0.0;
    for (int64_t j = 0; j < P; j++) s += part[b * P + j];
    return s;
}

/* The forward: out[t] = w[t] - eta s_b g[t]; norm[b] = N_b when clip > 0 (else norm is not touched). */
static void CLIP_FN(clip_step_run)(int n, int64_t B, const int64_t *per, R *const *out, const R *const *w,
                                   const R *const *g, double *norm, double eta, double clip, double *scratch,
                                   int team) {
    const int64_t P = clip_chunks_total(n, per);
    double *coef = scratch + B * P;
    if (clip > 0) CLIP_FN(clip_pass)(n, B, per, NULL, g, g, NULL, scratch, team);
    for (int64_t b = 0; b < B; b++) {
        const double nb = clip > 0 ? sqrt(CLIP_FN(clip_total)(scratch, P, b)) : 0.0;
        if (clip > 0) norm[b] = nb;
        coef[2 * b] = 1.0;
        coef[2 * b + 1] = clip_fwd_coef(nb, eta, clip);
    }
    CLIP_FN(clip_pass)(n, B, per, out, w, g, coef, NULL, team);
}

/* The backward: dg[t] (NULL: not wanted) from dout[t] (NULL: zero), the forward's norm (read when clip > 0). */
static void CLIP_FN(clip_step_bwd_run)(int n, int64_t B, const int64_t *per, R *const *dg, const R *const *dout,
                                       const R *const *g, const double *norm, double eta, double clip,
                                       double *scratch, int team) {
    const int64_t P = clip_chunks_total(n, per);
    double *coef = scratch + B * P;
    if (clip > 0) CLIP_FN(clip_pass)(n, B, per, NULL, dout, g, NULL, scratch, team);
    for (int64_t b = 0; b < B; b++) {
        const double nb = clip > 0 ? norm[b] : 0.0, r = clip_binds(nb, clip) ? CLIP_FN(clip_total)(scratch, P, b) : 0.0;
        clip_bwd_coefs(nb, r, eta, clip, &coef[2 * b], &coef[2 * b + 1]);
    }
    CLIP_FN(clip_pass)(n, B, per, dg, dout, g, coef, NULL, team);
}

#undef CLIP_FN
#undef CLIP_CAT
#undef CLIP_CAT_
