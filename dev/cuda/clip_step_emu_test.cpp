/* Runs TTT-E2E's clipped inner step, the CUDA kernels of src/backends/cuda/multi_tensor.cuh (k_clip_sums,
 * k_clip_apply, grouped into launches by clip_table as cuda_optim.cu groups them), on the host emulator against
 * the CPU backend's kernels (src/backends/cpu/cpu_clip_step_impl.h, which tests/test_fused.c checks against the
 * composed ops), forward (out and the norms) and backward (dg), in f64 (within 1e-13 of the largest value) and f32
 * (within 3e-7: one rounding of values the two sum in other orders). Cases: 1, 3 and 90 tensors (two launches of at
 * most 64), 1 to 3 sequences, runs of 0, 1, odd and 40,000 elements (three chunks), clipping on some sequences
 * and not others, off, a tie at the clip (|g| = 5 = clip: clipped), an all-zero sequence, some cotangents NULL
 * (zero) and some gradients not wanted (NULL). Outputs start as NaN, so a value not written fails. No GPU needed:
 *   g++ -std=c++17 -O1 -I src/backends/cuda -I dev/cuda dev/cuda/clip_step_emu_test.cpp -o /tmp/clip_emu && /tmp/clip_emu */
#include "emu.h"

#include "emu_host.h"

#include "reduce_kernels.cuh"
#include "multi_tensor.cuh"

#define R float
#define SFX _f32
#include "../../src/backends/cpu/cpu_clip_step_impl.h"
#undef R
#undef SFX
#define R double
#define SFX _f64
#include "../../src/backends/cpu/cpu_clip_step_impl.h"
#undef R
#undef SFX

#include <random>
#include <vector>

static int failed = 0, passed = 0;

/* the CPU passes for T */
static void cpu_fwd(int n, int64_t B, const int64_t *per, float *const *o, const float *const *w, const float *const *g,
                    double *norm, double eta, double clip, double *s) {
    clip_step_run_f32(n, B, per, o, w, g, norm, eta, clip, s, 1);
}
static void cpu_fwd(int n, int64_t B, const int64_t *per, double *const *o, const double *const *w,
                    const double *const *g, double *norm, double eta, double clip, double *s) {
    clip_step_run_f64(n, B, per, o, w, g, norm, eta, clip, s, 1);
}
static void cpu_bwd(int n, int64_t B, const int64_t *per, float *const *dg, const float *const *d, const float *const *g,
                    const double *norm, double eta, double clip, double *s) {
    clip_step_bwd_run_f32(n, B, per, dg, d, g, norm, eta, clip, s, 1);
}
static void cpu_bwd(int n, int64_t B, const int64_t *per, double *const *dg, const double *const *d,
                    const double *const *g, const double *norm, double eta, double clip, double *s) {
    clip_step_bwd_run_f64(n, B, per, dg, d, g, norm, eta, clip, s, 1);
}

/* cuda_optim.cu's clip_pass / clip_run on the emulator */
template <typename T>
static int gpu_pass(int sums, int n, const int64_t *per, int64_t B, int64_t P, void *const *dst, const void *const *a,
                    const void *const *g, double *part, double *norm, int bwd, double eta, double clip) {
    int64_t p0 = 0;
    int norm_due = !sums && !bwd && norm != nullptr, launches = 0;
    for (int i = 0; i < n;) {
        mt::ClipArgs c;
        const int64_t blocks = mt::clip_table(&c, n, &i, &p0, &norm_due, B, P, per, dst, a, g, sums);
        if (blocks == 0) continue;
        if (sums) emu::launch(dim3((unsigned)blocks), dim3(THREADS), [&] { mt::k_clip_sums<T>(c, part); });
        else emu::launch(dim3((unsigned)blocks), dim3(THREADS), [&] { mt::k_clip_apply<T>(c, part, norm, bwd, eta, clip); });
        launches++;
    }
    return launches;
}

template <typename T>
static int gpu_run(int bwd, int n, const int64_t *per, int64_t B, void *const *dst, const void *const *a,
                   const void *const *g, double *norm, double eta, double clip) {
    int64_t P = 0;
    for (int i = 0; i < n; i++)
        if (!bwd || a[i]) P += mt::clip_chunks(per[i]);
    std::vector<double> part((size_t)(B * P) + 1, NAN);
    int launches = 0;
    if (clip > 0) {
        if (!bwd && B > 0 && P == 0)
            for (int64_t b = 0; b < B; b++) norm[b] = 0.0;
        launches += gpu_pass<T>(1, n, per, B, P, dst, bwd ? a : g, g, part.data(), norm, bwd, eta, clip);
    }
    return launches + gpu_pass<T>(0, n, per, B, P, dst, a, g, part.data(), norm, bwd, eta, clip);
}

/* max |x - y| / max(1e-3, max |y|) over tensors; a NaN is infinitely far */
template <typename T>
static double rel(const std::vector<std::vector<T>> &x, const std::vector<std::vector<T>> &y) {
    double d = 0, s = 1e-3;
    for (size_t t = 0; t < y.size(); t++)
        for (size_t i = 0; i < y[t].size(); i++) {
            const double e = std::fabs((double)x[t][i] - (double)y[t][i]);
            d = std::max(d, e == e ? e : INFINITY);
            s = std::max(s, std::fabs((double)y[t][i]));
        }
    return d / s;
}

static void check(bool ok, const char *what, double e) {
    if (ok) passed++;
    else {
        failed++;
        fprintf(stderr, "FAIL %s: %.3g\n", what, e);
    }
}

/* mode: 0 sequence 0 clips and the others not, 1 no clip, 2 a tie on sequence 0, 3 sequence 1 all zero */
template <typename T>
static void run_case(int n, int64_t B, int mode, int seed) {
    std::mt19937_64 rng((uint64_t)seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    std::vector<int64_t> per(n);
    for (int t = 0; t < n; t++) per[t] = t == 1 ? 40000 : t % 5 == 3 ? 0 : t % 7 == 2 ? 1 : 1 + (t * 37 + seed) % 300;
    std::vector<std::vector<T>> w(n), g(n), dout(n), out(n), out_c(n), dg(n), dg_c(n);
    for (int t = 0; t < n; t++) {
        const size_t k = (size_t)(B * per[t]);
        for (auto *v : {&w[t], &g[t], &dout[t]}) v->resize(k);
        for (size_t i = 0; i < k; i++) {
            const int64_t b = (int64_t)i / per[t];
            w[t][i] = (T)nd(rng), dout[t][i] = (T)nd(rng);
            g[t][i] = (T)(nd(rng) * (b == 0 ? 1.0 : mode == 3 && b == 1 ? 0.0 : 0.05));
        }
        for (auto *v : {&out[t], &out_c[t], &dg[t], &dg_c[t]}) v->assign(k, (T)NAN);
    }
    if (mode == 2) { /* sequence 0: g = (3, 4, 0, ...) over tensors 0 and 2 (n >= 3), |g| = 5 */
        for (int t = 0; t < n; t++)
            for (int64_t i = 0; i < per[t]; i++) g[t][(size_t)i] = 0;
        g[0][0] = 3, g[2][0] = 4;
    }
    double sq0 = 0, sq1 = 0;
    for (int t = 0; t < n; t++)
        for (int64_t i = 0; i < per[t]; i++) {
            sq0 += (double)g[t][(size_t)i] * (double)g[t][(size_t)i];
            if (B > 1) sq1 += (double)g[t][(size_t)(per[t] + i)] * (double)g[t][(size_t)(per[t] + i)];
        }
    const double clip = mode == 1 ? 0.0 : mode == 2 ? 5.0 : 0.5 * std::sqrt(sq0) + 0.5 * std::sqrt(sq1), eta = 0.7;
    /* pointer tables; dout of tensor 0 NULL (a zero cotangent) when n > 2, dg of tensor 1 not wanted */
    std::vector<T *> po(n), pc(n), pdg(n), pdgc(n);
    std::vector<const T *> pw(n), pg(n), pd(n);
    std::vector<void *> vo(n), vdg(n);
    std::vector<const void *> vw(n), vg(n), vd(n);
    for (int t = 0; t < n; t++) {
        po[t] = out[t].data(), pc[t] = out_c[t].data(), pw[t] = w[t].data(), pg[t] = g[t].data();
        pd[t] = n > 2 && t == 0 ? nullptr : dout[t].data();
        pdg[t] = n > 1 && t == 1 ? nullptr : dg[t].data(), pdgc[t] = n > 1 && t == 1 ? nullptr : dg_c[t].data();
        vo[t] = po[t], vw[t] = pw[t], vg[t] = pg[t], vd[t] = pd[t], vdg[t] = pdg[t];
    }
    std::vector<double> norm((size_t)B, NAN), norm_c((size_t)B, NAN);
    std::vector<double> scratch((size_t)clip_scratch_len(n, B, per.data()) + 1);
    cpu_fwd(n, B, per.data(), pc.data(), pw.data(), pg.data(), norm_c.data(), eta, clip, scratch.data());
    const int lf = gpu_run<T>(0, n, per.data(), B, vo.data(), vw.data(), vg.data(), clip > 0 ? norm.data() : nullptr, eta, clip);
    cpu_bwd(n, B, per.data(), pdgc.data(), pd.data(), pg.data(), norm_c.data(), eta, clip, scratch.data());
    const int lb = gpu_run<T>(1, n, per.data(), B, vdg.data(), vd.data(), vg.data(), clip > 0 ? norm.data() : nullptr, eta, clip);
    const double tol = sizeof(T) == 8 ? 1e-13 : 3e-7;
    if (n > 1) dg[1].clear(), dg_c[1].clear(); /* not wanted: not written */
    const double eo = rel(out, out_c), eg = rel(dg, dg_c);
    double en = 0;
    for (int64_t b = 0; b < B && clip > 0; b++) {
        const double e = std::fabs(norm[(size_t)b] - norm_c[(size_t)b]) / std::max(1e-3, norm_c[(size_t)b]);
        en = std::max(en, e == e ? e : INFINITY);
    }
    char what[160];
    snprintf(what, sizeof what, "%s n %d B %lld mode %d: out", sizeof(T) == 8 ? "f64" : "f32", n, (long long)B, mode);
    check(eo <= tol, what, eo);
    check(en <= 1e-14, "norms", en);
    check(eg <= tol, "dg", eg);
    if (mode == 2) check(norm[0] == 5.0, "the tie's norm", norm[0]);
    printf("%s n %2d B %lld mode %d (clip %.3g, N %.3g %.3g): %d + %d launches; out %.2g, norm %.2g, dg %.2g\n",
           sizeof(T) == 8 ? "f64" : "f32", n, (long long)B, mode, clip, std::sqrt(sq0), std::sqrt(sq1), lf, lb, eo, en, eg);
}

int main() {
    for (int mode = 0; mode < 4; mode++) {
        if (mode != 2) run_case<double>(1, 2, mode, 1);
        run_case<double>(3, mode == 3 ? 2 : 3, mode, 2);
        run_case<float>(3, 2, mode, 3);
    }
    run_case<double>(90, 2, 0, 4); /* 72 tensors with elements: two launches of each kind */
    run_case<float>(90, 1, 1, 5);
    run_case<double>(3, 1, 0, 6);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
