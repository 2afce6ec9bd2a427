/* The bf16 tensor-core attention kernels of src/backends/cuda/attention_bf16.cuh
 * on the GPU, outside the engine, in the style of llm.c's dev/cuda: checks of
 * every configuration in attention_bf16_variants.h against a float64 reference
 * (forward out and lse, backward dq, dk, dv) at sizes the emulator cannot
 * reach, then timings of each kernel in each configuration, so attnbf::Cfg
 * (the launchers' choice) can be picked.
 * (Version 1 of this file was a forward-only prototype; the emulator test is
 * attention_bf16_emu_test.cpp.)
 *
 *   nvcc -O3 -arch=sm_90 -std=c++17 -I src/backends/cuda -I dev/cuda dev/cuda/attention_bf16.cu -o attention_bf16
 *   ./attention_bf16            checks
 *   ./attention_bf16 --bench    checks, then csv lines: csv,bf16dev:KERNEL:CONFIG,kernel,B,H,T,d,window,ms
 *                               (CONFIG: warps x row groups per warp / tile, bN: N blocks per SM asked,
 *                               h: fragments held; forward r: Q reloaded at each k-step, v: V waited for
 *                               late; * marks the launchers' choices)
 *   ./attention_bf16 --small    one small check (for compute-sanitizer)
 * --bench also times the stored-dS backward (bwd_dkdv_ds + bwd_dq_ds, TTT_ATTN_DS) with dQ in two shapes and
 * each of its kernels alone, and counts the elements where its dQ differs from the two-kernel path's.
 * The one-kernel backward (bwd1) is checked like the others and must give the same bits on 5 more runs; --bench
 * times it beside dkdv+dq*, the launchers' two backward kernels run back to back (their large- or small-grid
 * configurations as attention.cu picks them, dQ's keys unsplit). */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include <random>

extern __shared__ float4 attn_smem_raw[];
#define ATTN_SMEM() reinterpret_cast<float *>(attn_smem_raw)
#include "attention_bf16.cuh"
#include "attention_bf16_variants.h"
#include "attention_ref.h"

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

using attnbf::Params;

/* ---- launches of one configuration --------------------------------------------------------------------------- */

/* A kernel's dynamic shared memory above 48 KiB is allowed once per kernel (not inside the timed launches). */
template <auto KERNEL>
static void allow_smem(int bytes) {
    static bool ready;
    if (!ready) CK(cudaFuncSetAttribute(KERNEL, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    ready = true;
}

template <int D, int NW, int MW, int BK, int MINB, int OPT>
static void fwd(const Params &p, int bh) {
    using F = attnbf::Fwd<D, NW, MW, BK>;
    static_assert(F::SMEM <= 227 * 1024, "more shared memory than a block of an H100 may have");
    allow_smem<attnbf::fwd<D, NW, MW, BK, MINB, OPT>>(F::SMEM);
    attnbf::fwd<D, NW, MW, BK, MINB, OPT><<<dim3((p.tq + F::BR - 1) / F::BR, bh), F::THREADS, F::SMEM>>>(p);
    CK(cudaGetLastError());
}
template <int D>
static void delta(const Params &p, int bh) {
    const int64_t rows = (int64_t)bh * p.tq;
    attnbf::delta<D><<<(unsigned)((rows + 7) / 8), 256>>>(p, rows);
    CK(cudaGetLastError());
}
template <int D, int NW, int MW, int BQ, int MINB, bool HOLD>
static void dkdv(const Params &p, int bh) {
    using K = attnbf::Dkdv<D, NW, MW, BQ>;
    static_assert(K::SMEM <= 227 * 1024, "more shared memory than a block of an H100 may have");
    allow_smem<attnbf::bwd_dkdv<D, NW, MW, BQ, MINB, HOLD>>(K::SMEM);
    attnbf::bwd_dkdv<D, NW, MW, BQ, MINB, HOLD><<<dim3((p.tk + K::BC - 1) / K::BC, bh), K::THREADS, K::SMEM>>>(p);
    CK(cudaGetLastError());
}
template <int D, int NW, int MW, int BK, int MINB, bool HOLD>
static void dq(const Params &p, int bh) {
    using Q = attnbf::Dq<D, NW, MW, BK>;
    static_assert(Q::SMEM <= 227 * 1024, "more shared memory than a block of an H100 may have");
    allow_smem<attnbf::bwd_dq<D, NW, MW, BK, MINB, HOLD>>(Q::SMEM);
    attnbf::bwd_dq<D, NW, MW, BK, MINB, HOLD><<<dim3((p.tq + Q::BR - 1) / Q::BR, bh), Q::THREADS, Q::SMEM>>>(p);
    CK(cudaGetLastError());
}

/* The one-kernel backward: its semaphores and ticket zeroed on the stream first (part of what is timed), then
 * the kernel; p.dq_acc and p.sem point at the problem's scratch. */
template <int D, int NW, int MW, int BQ, int MINB, int OPT>
static void bwd1(const Params &p, int bh) {
    using B = attnbf::Bwd1<D, NW, MW, BQ, OPT>;
    static_assert(B::SMEM <= 227 * 1024, "more shared memory than a block of an H100 may have");
    allow_smem<attnbf::bwd1<D, NW, MW, BQ, MINB, OPT>>(B::SMEM);
    const int n_qt = (p.tq + BQ - 1) / BQ;
    CK(cudaMemsetAsync(p.sem, 0, ((size_t)bh * n_qt + 1) * sizeof(unsigned)));
    attnbf::bwd1<D, NW, MW, BQ, MINB, OPT><<<dim3((p.tk + B::BC - 1) / B::BC, bh), B::THREADS, B::SMEM>>>(p);
    CK(cudaGetLastError());
}

typedef void (*Launch)(const Params &, int);
struct Kernel {
    const char *kind;
    int d, nw, mw, tile, minb, hold; /* hold: the forward's options (OPT) */
    Launch run;
    const void *fn;  /* the __global__ function, for its attributes */
    int threads, smem;
    bool engine() const { return d == 64 ? engine_d<attnbf::Cfg<64>>() : engine_d<attnbf::Cfg<128>>(); }
    template <typename K> bool same() const {
        return nw == K::NW && mw == K::MW && tile == K::T && minb == K::MINB && hold == K::HOLD;
    }
    template <typename C> bool engine_d() const { /* one of the launchers' (large- or small-grid) configurations */
        if (kind[0] == 'f') return same<typename C::Fwd>() || same<typename C::FwdSmall>();
        if (kind[0] == 'b') return same<typename C::Bwd1>();
        if (kind[1] == 'k') return same<typename C::Kv>() || same<typename C::KvSmall>();
        return same<typename C::Dq>() || same<typename C::DqSmall>();
    }
    void name(char *buf, size_t n) const {
        snprintf(buf, n, "%s:%dx%d/%d b%d%s%s", kind, nw, mw, tile, minb, attnbf_opt_mark(kind[0] == 'f', hold),
                 engine() ? "*" : "");
    }
};
#define FWD_K(d, nw, mw, t, mb, h)                                                                            \
    {"fwd", d, nw, mw, t, mb, h, fwd<d, nw, mw, t, mb, h>, (const void *)attnbf::fwd<d, nw, mw, t, mb, h>,         \
     32 * nw, attnbf::Fwd<d, nw, mw, t>::SMEM},
#define DKDV_K(d, nw, mw, t, mb, h)                                                                           \
    {"dkdv", d, nw, mw, t, mb, h, dkdv<d, nw, mw, t, mb, h>, (const void *)attnbf::bwd_dkdv<d, nw, mw, t, mb, h>,  \
     32 * nw, attnbf::Dkdv<d, nw, mw, t>::SMEM},
#define DQ_K(d, nw, mw, t, mb, h)                                                                             \
    {"dq", d, nw, mw, t, mb, h, dq<d, nw, mw, t, mb, h>, (const void *)attnbf::bwd_dq<d, nw, mw, t, mb, h>,        \
     32 * nw, attnbf::Dq<d, nw, mw, t>::SMEM},
#define BWD1_K(d, nw, mw, t, mb, h)                                                                           \
    {"bwd1", d, nw, mw, t, mb, h, bwd1<d, nw, mw, t, mb, h>, (const void *)attnbf::bwd1<d, nw, mw, t, mb, h>,      \
     32 * nw, attnbf::Bwd1<d, nw, mw, t, h>::SMEM},
static const Kernel g_fwd[] = {ATTNBF_FWD_VARIANTS(FWD_K)};
static const Kernel g_dkdv[] = {ATTNBF_DKDV_VARIANTS(DKDV_K)};
static const Kernel g_dq[] = {ATTNBF_DQ_VARIANTS(DQ_K)};
static const Kernel g_bwd1[] = {ATTNBF_BWD1_VARIANTS(BWD1_K)};
template <int D> static void fwd_engine(const Params &p, int bh) {
    using F = typename attnbf::Cfg<D>::Fwd;
    fwd<D, F::NW, F::MW, F::T, F::MINB, F::HOLD>(p, bh);
}
/* The launchers' two-kernel backward after delta: dK/dV then dQ, each in the configuration attention.cu picks for
 * this grid (large or small; dQ's keys never split here) */
static int g_sm_count;
template <int D> static void pair_engine(const Params &p, int bh) {
    using C = attnbf::Cfg<D>;
    auto big = [&](int n, int rows, int waves) { return (int64_t)(n + rows - 1) / rows * bh >= (int64_t)waves * g_sm_count; };
    using Kv = typename C::Kv;
    using Ks = typename C::KvSmall;
    using Q = typename C::Dq;
    using Qs = typename C::DqSmall;
    if (big(p.tk, 16 * Kv::NW * Kv::MW, C::KV_WAVES)) dkdv<D, Kv::NW, Kv::MW, Kv::T, Kv::MINB, (bool)Kv::HOLD>(p, bh);
    else dkdv<D, Ks::NW, Ks::MW, Ks::T, Ks::MINB, (bool)Ks::HOLD>(p, bh);
    if (big(p.tq, 16 * Q::NW * Q::MW, C::DQ_WAVES)) dq<D, Q::NW, Q::MW, Q::T, Q::MINB, (bool)Q::HOLD>(p, bh);
    else dq<D, Qs::NW, Qs::MW, Qs::T, Qs::MINB, (bool)Qs::HOLD>(p, bh);
}

/* The stored-dS backward (TTT_ATTN_DS=1) after delta, in the launchers' large-grid dK/dV configuration: bwd_dkdv_ds,
 * then bwd_dq_ds with QMW row groups a warp (the launchers' Cfg::DqDs is one of them); p.ds sized by ds_bytes.
 * ds_part: 1 the dK/dV kernel alone, 2 the dQ kernel alone (reading what the last dK/dV run stored), 3 both. */
template <int D> static int64_t ds_bytes(const Params &p, int bh) {
    using Kv = typename attnbf::Cfg<D>::Kv;
    constexpr int BC = 16 * Kv::NW * Kv::MW;
    return attnbf::ds_first<BC, Kv::T>(p, (p.tk + BC - 1) / BC) * bh * BC * Kv::T * 2;
}
template <int D, int QMW, int PART> static void ds_pair(const Params &p0, int bh) {
    using Kv = typename attnbf::Cfg<D>::Kv;
    using Kt = attnbf::Dkdv<D, Kv::NW, Kv::MW, Kv::T>;
    using Qt = attnbf::DqDs<D, 4, QMW, Kt::BC, Kv::T>;
    Params p = p0;
    p.ds_head = ds_bytes<D>(p, 1) / (Kt::BC * Kv::T * 2);
    if (PART & 1) {
        allow_smem<attnbf::bwd_dkdv_ds<D, Kv::NW, Kv::MW, Kv::T, Kv::MINB, (bool)Kv::HOLD>>(Kt::SMEM);
        attnbf::bwd_dkdv_ds<D, Kv::NW, Kv::MW, Kv::T, Kv::MINB, (bool)Kv::HOLD>
            <<<dim3((p.tk + Kt::BC - 1) / Kt::BC, bh), Kt::THREADS, Kt::SMEM>>>(p);
        CK(cudaGetLastError());
    }
    if (PART & 2) {
        allow_smem<attnbf::bwd_dq_ds<D, 4, QMW, Kt::BC, Kv::T, 2>>(Qt::SMEM);
        attnbf::bwd_dq_ds<D, 4, QMW, Kt::BC, Kv::T, 2><<<dim3((p.tq + Qt::BR - 1) / Qt::BR, bh), Qt::THREADS, Qt::SMEM>>>(p);
        CK(cudaGetLastError());
    }
}

/* ---- problems -------------------------------------------------------------------------------------------------- */

struct Problem {
    ref::Shape s;
    std::vector<uint16_t> hq, hk, hv, hdo;
    uint16_t *q, *k, *v, *dout, *out, *dq, *dk, *dv;
    float *lse, *delta;
    float *dq_acc;  /* bwd1's dQ sums */
    unsigned *sem;  /* bwd1's semaphores (for the smallest query tile, 16) and ticket */
    Params p;
};

template <typename T> static T *dev(size_t n) {
    T *p;
    CK(cudaMalloc(&p, n * sizeof(T)));
    return p;
}

static void make(Problem &pr, const ref::Shape &s, unsigned seed) {
    pr.s = s;
    const size_t nq = (size_t)s.bh * s.tq * s.d, nk = (size_t)s.bh * s.tk * s.d;
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    pr.hq.resize(nq), pr.hk.resize(nk), pr.hv.resize(nk), pr.hdo.resize(nq);
    for (auto *x : {&pr.hq, &pr.hk, &pr.hv, &pr.hdo})
        for (auto &h : *x) h = ref::to_bf16(nd(rng));
    pr.q = dev<uint16_t>(nq), pr.k = dev<uint16_t>(nk), pr.v = dev<uint16_t>(nk), pr.dout = dev<uint16_t>(nq);
    pr.out = dev<uint16_t>(nq), pr.dq = dev<uint16_t>(nq), pr.dk = dev<uint16_t>(nk), pr.dv = dev<uint16_t>(nk);
    pr.lse = dev<float>((size_t)s.bh * s.tq), pr.delta = dev<float>((size_t)s.bh * s.tq);
    pr.dq_acc = dev<float>(nq), pr.sem = dev<unsigned>((size_t)s.bh * ((s.tq + 15) / 16) + 1);
    CK(cudaMemcpy(pr.q, pr.hq.data(), nq * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(pr.k, pr.hk.data(), nk * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(pr.v, pr.hv.data(), nk * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(pr.dout, pr.hdo.data(), nq * 2, cudaMemcpyHostToDevice));
    Params &p = pr.p;
    p = Params{};
    p.q = pr.q, p.k = pr.k, p.v = pr.v, p.dout = pr.dout, p.o = pr.out, p.lse = pr.lse, p.delta = pr.delta;
    p.out = pr.out, p.lse_out = pr.lse, p.delta_out = pr.delta, p.dq = pr.dq, p.dk = pr.dk, p.dv = pr.dv;
    p.dq_acc = pr.dq_acc, p.sem = pr.sem;
    p.tq = s.tq, p.tk = s.tk, p.causal = s.causal, p.window = s.causal ? s.window : 0;
    p.off = s.causal ? s.tk - s.tq : 0;
    p.scale = (float)(1.0 / sqrt((double)s.d));
    p.aligned = 1;
}

static void release(Problem &pr) {
    for (void *x : {(void *)pr.q, (void *)pr.k, (void *)pr.v, (void *)pr.dout, (void *)pr.out, (void *)pr.dq,
                    (void *)pr.dk, (void *)pr.dv, (void *)pr.lse, (void *)pr.delta, (void *)pr.dq_acc, (void *)pr.sem})
        CK(cudaFree(x));
}

static void poison(Problem &pr) {
    const size_t nq = (size_t)pr.s.bh * pr.s.tq * pr.s.d, nk = (size_t)pr.s.bh * pr.s.tk * pr.s.d;
    CK(cudaMemset(pr.out, 0xff, nq * 2)); CK(cudaMemset(pr.dq, 0xff, nq * 2));
    CK(cudaMemset(pr.dk, 0xff, nk * 2)); CK(cudaMemset(pr.dv, 0xff, nk * 2));
    CK(cudaMemset(pr.lse, 0xff, (size_t)pr.s.bh * pr.s.tq * 4));
}

template <typename T> static std::vector<T> host(const T *d, size_t n) {
    std::vector<T> h(n);
    CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}

/* Every configuration of head size d on one shape: forward by each fwd config (checked), backward by each
 * dkdv and dq config (checked) after the first fwd config. Returns failures. */
static int check(const ref::Shape &s) {
    Problem pr;
    make(pr, s, 1234 + s.tq + 7 * s.tk);
    std::vector<double> q(pr.hq.size()), k(pr.hk.size()), v(pr.hv.size()), g(pr.hdo.size());
    for (size_t i = 0; i < q.size(); i++) q[i] = ref::from_bf16(pr.hq[i]), g[i] = ref::from_bf16(pr.hdo[i]);
    for (size_t i = 0; i < k.size(); i++) k[i] = ref::from_bf16(pr.hk[i]), v[i] = ref::from_bf16(pr.hv[i]);
    std::vector<double> ro, rl, rdq, rdk, rdv;
    ref::attention(s, q, k, v, g, pr.p.scale, ro, rl, rdq, rdk, rdv);
    const size_t nq = q.size(), nk = k.size(), nr = (size_t)s.bh * s.tq;
    int fails = 0;
    auto report = [&](const Kernel &kr, double e, double tol) {
        char what[64];
        kr.name(what, sizeof what);
        const bool ok = e <= tol;
        fails += !ok;
        printf("%s bf16 %s BH%d Tq%d Tk%d d%d causal%d window%lld: max err %.2e (of the largest)\n", ok ? "ok  " : "FAIL",
               what, s.bh, s.tq, s.tk, s.d, s.causal, (long long)s.window, e);
    };
    for (const Kernel &f : g_fwd) {
        if (f.d != s.d) continue;
        poison(pr);
        f.run(pr.p, s.bh);
        CK(cudaDeviceSynchronize());
        const double eo = ref::max_rel(host(pr.out, nq), ro, ref::val_bf16);
        const double el = ref::max_rel(host(pr.lse, nr), rl, ref::val_f32);
        report(f, std::max(eo, el * 10), 1e-2); /* lse: 1e-3 */
    }
    /* the backward ones from the launchers' forward */
    {
        poison(pr);
        (s.d == 64 ? fwd_engine<64> : fwd_engine<128>)(pr.p, s.bh);
        (s.d == 64 ? delta<64> : delta<128>)(pr.p, s.bh);
        for (const Kernel &kv : g_dkdv) {
            if (kv.d != s.d) continue;
            CK(cudaMemset(pr.dk, 0xff, nk * 2)); CK(cudaMemset(pr.dv, 0xff, nk * 2));
            kv.run(pr.p, s.bh);
            CK(cudaDeviceSynchronize());
            report(kv, std::max(ref::max_rel(host(pr.dk, nk), rdk, ref::val_bf16),
                                     ref::max_rel(host(pr.dv, nk), rdv, ref::val_bf16)), 2e-2);
        }
        for (const Kernel &kq : g_dq) {
            if (kq.d != s.d) continue;
            CK(cudaMemset(pr.dq, 0xff, nq * 2));
            kq.run(pr.p, s.bh);
            CK(cudaDeviceSynchronize());
            report(kq, ref::max_rel(host(pr.dq, nq), rdq, ref::val_bf16), 2e-2);
        }
        /* the one-kernel backward: dq, dk, dv against float64, then a second run (the f32 sums poisoned
         * differently first: NaN, then 3.0) that must give the same bits */
        for (const Kernel &kb : g_bwd1) {
            if (kb.d != s.d) continue;
            CK(cudaMemset(pr.dq, 0xff, nq * 2)); CK(cudaMemset(pr.dk, 0xff, nk * 2)); CK(cudaMemset(pr.dv, 0xff, nk * 2));
            CK(cudaMemset(pr.dq_acc, 0xff, nq * 4));
            kb.run(pr.p, s.bh);
            CK(cudaDeviceSynchronize());
            const std::vector<uint16_t> a = host(pr.dq, nq), b = host(pr.dk, nk), c = host(pr.dv, nk);
            report(kb, std::max(ref::max_rel(a, rdq, ref::val_bf16), std::max(ref::max_rel(b, rdk, ref::val_bf16),
                                                                                ref::max_rel(c, rdv, ref::val_bf16))), 2e-2);
            const std::vector<float> three(nq, 3.0f);
            CK(cudaMemcpy(pr.dq_acc, three.data(), nq * 4, cudaMemcpyHostToDevice));
            CK(cudaMemset(pr.dq, 0xff, nq * 2)); CK(cudaMemset(pr.dk, 0xff, nk * 2)); CK(cudaMemset(pr.dv, 0xff, nk * 2));
            int same_runs = 0;
            for (int r = 0; r < 5; r++) { /* five more runs, each the first one's bits */
                kb.run(pr.p, s.bh);
                CK(cudaDeviceSynchronize());
                same_runs += host(pr.dq, nq) == a && host(pr.dk, nk) == b && host(pr.dv, nk) == c;
            }
            char what[64];
            kb.name(what, sizeof what);
            fails += same_runs != 5;
            printf("%s bf16 %s BH%d Tq%d Tk%d d%d causal%d window%lld: %d of 5 more runs gave the same bits\n",
                   same_runs == 5 ? "ok  " : "FAIL", what, s.bh, s.tq, s.tk, s.d, s.causal, (long long)s.window, same_runs);
        }
    }
    release(pr);
    return fails;
}

/* median ms of run over reps */
static double time_ms(const Kernel &kr, const Params &p, int bh, int reps) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    kr.run(p, bh);
    std::vector<float> ms(reps);
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(e0));
        kr.run(p, bh);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms[r], e0, e1));
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    std::sort(ms.begin(), ms.end());
    return ms[reps / 2];
}

/* registers and blocks per SM of each configuration (the run before made sure the smem attribute is set) */
static void occupancy() {
    for (const Kernel *set : {g_fwd, g_dkdv, g_dq, g_bwd1}) {
        const size_t n = set == g_fwd    ? sizeof g_fwd / sizeof *g_fwd
                         : set == g_dkdv ? sizeof g_dkdv / sizeof *g_dkdv
                         : set == g_dq   ? sizeof g_dq / sizeof *g_dq
                                         : sizeof g_bwd1 / sizeof *g_bwd1;
        for (size_t i = 0; i < n; i++) {
            cudaFuncAttributes a;
            int blocks = 0;
            CK(cudaFuncGetAttributes(&a, set[i].fn));
            CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, set[i].fn, set[i].threads, set[i].smem));
            char name[64];
            set[i].name(name, sizeof name);
            printf("# d=%d %-22s regs %3d local %4zu B  smem %6d B  blocks/SM %d (%d warps)\n", set[i].d, name,
                   a.numRegs, a.localSizeBytes, set[i].smem, blocks, blocks * set[i].threads / 32);
        }
    }
}

static void bench() {
    occupancy();
    printf("csv,path,pass,B,H,T,d,window,ms\n");
    const int h = 12;
    for (int d : {64, 128})
        for (int t : {2048, 4096, 8192, 16384, 32768}) {
            if (d == 128 && t != 8192 && t != 32768) continue;
            Problem pr;
            make(pr, ref::Shape{h, t, t, d, d, 1, 0}, 99);
            /* forward once for lse, delta once: the backward kernels read them */
            (d == 64 ? fwd_engine<64> : fwd_engine<128>)(pr.p, h);
            (d == 64 ? delta<64> : delta<128>)(pr.p, h);
            const int reps = t >= 16384 ? 10 : 20;
            for (const Kernel *set : {g_fwd, g_dkdv, g_dq, g_bwd1}) {
                const size_t n = set == g_fwd    ? sizeof g_fwd / sizeof *g_fwd
                                 : set == g_dkdv ? sizeof g_dkdv / sizeof *g_dkdv
                                 : set == g_dq   ? sizeof g_dq / sizeof *g_dq
                                                 : sizeof g_bwd1 / sizeof *g_bwd1;
                for (size_t i = 0; i < n; i++)
                    if (set[i].d == d) {
                        char name[64];
                        set[i].name(name, sizeof name);
                        printf("csv,bf16dev:%s,kernel,1,%d,%d,%d,0,%.3f\n", name, h, t, d, time_ms(set[i], pr.p, h, reps));
                    }
            }
            /* the launchers' two kernels together, to set beside bwd1 (both after the same delta) */
            const Kernel pair = {"dkdv+dq", d, 0, 0, 0, 0, 0, d == 64 ? pair_engine<64> : pair_engine<128>, nullptr, 0, 0};
            printf("csv,bf16dev:dkdv+dq*,kernel,1,%d,%d,%d,0,%.3f\n", h, t, d, time_ms(pair, pr.p, h, reps));
            /* stored dS: both kernels with dQ in 1 and 2 row groups a warp, then each kernel alone; then its dQ
             * against the two-kernel path's (the pair just ran last): elements that differ, and the largest gap */
            const size_t ds_n = (size_t)(d == 64 ? ds_bytes<64>(pr.p, h) : ds_bytes<128>(pr.p, h));
            uint16_t *dq_pair = dev<uint16_t>((size_t)h * t * d);
            CK(cudaMemcpy(dq_pair, pr.dq, (size_t)h * t * d * 2, cudaMemcpyDeviceToDevice));
            Params pds = pr.p;
            pds.ds = dev<uint16_t>(ds_n / 2 + 8);
            const Kernel ds_runs[] = {
                {"ds dkdv+dq 4x1", d, 0, 0, 0, 0, 0, d == 64 ? ds_pair<64, 1, 3> : ds_pair<128, 1, 3>, nullptr, 0, 0},
                {"ds dkdv+dq 4x2*", d, 0, 0, 0, 0, 0, d == 64 ? ds_pair<64, 2, 3> : ds_pair<128, 2, 3>, nullptr, 0, 0},
                {"ds dkdv", d, 0, 0, 0, 0, 0, d == 64 ? ds_pair<64, 2, 1> : ds_pair<128, 2, 1>, nullptr, 0, 0},
                {"ds dq 4x1", d, 0, 0, 0, 0, 0, d == 64 ? ds_pair<64, 1, 2> : ds_pair<128, 1, 2>, nullptr, 0, 0},
                {"ds dq 4x2*", d, 0, 0, 0, 0, 0, d == 64 ? ds_pair<64, 2, 2> : ds_pair<128, 2, 2>, nullptr, 0, 0}};
            for (const Kernel &kr : ds_runs)
                printf("csv,bf16dev:%s,kernel,1,%d,%d,%d,0,%.3f\n", kr.kind, h, t, d, time_ms(kr, pds, h, reps));
            {
                const std::vector<uint16_t> a = host(dq_pair, (size_t)h * t * d), b = host(pr.dq, (size_t)h * t * d);
                size_t diff = 0;
                double gap = 0;
                for (size_t i = 0; i < a.size(); i++)
                    if (a[i] != b[i]) diff++, gap = std::max(gap, fabs((double)ref::from_bf16(a[i]) - ref::from_bf16(b[i])));
                printf("# d=%d T=%d stored dS (%.1f MB): dq differs from the two-kernel path's in %zu of %zu elements, "
                       "largest gap %.3g\n", d, t, ds_n / 1048576.0, diff, a.size(), gap);
            }
            CK(cudaFree(pds.ds));
            CK(cudaFree(dq_pair));
            const Kernel dl = {"delta", d, 0, 0, 0, 0, 0, d == 64 ? delta<64> : delta<128>, nullptr, 256, 0};
            printf("csv,bf16dev:delta,kernel,1,%d,%d,%d,0,%.3f\n", h, t, d, time_ms(dl, pr.p, h, reps));
            fflush(stdout);
            release(pr);
        }
}

int main(int argc, char **argv) {
    CK(cudaDeviceGetAttribute(&g_sm_count, cudaDevAttrMultiProcessorCount, 0));
    const bool small = argc > 1 && strcmp(argv[1], "--small") == 0;
    const bool do_bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    std::vector<ref::Shape> shapes = {{1, 100, 100, 64, 64, 1, 0}, {1, 70, 130, 128, 128, 1, 33}};
    if (!small) {
        const std::vector<ref::Shape> more = {
            {2, 1000, 1000, 64, 64, 1, 0},   {1, 777, 1111, 64, 64, 0, 0},   {1, 1500, 1500, 64, 64, 1, 256},
            {1, 600, 1000, 64, 64, 1, 129},  {1, 1000, 1000, 128, 128, 1, 0}, {1, 900, 900, 128, 128, 0, 0},
            {1, 1100, 1300, 128, 128, 1, 300},
        };
        shapes.insert(shapes.end(), more.begin(), more.end());
    }
    int fails = 0;
    for (const ref::Shape &s : shapes) fails += check(s);
    printf("%s\n", fails ? "bf16 checks FAILED" : "bf16 checks passed");
    if (do_bench) bench();
    return fails != 0;
}
