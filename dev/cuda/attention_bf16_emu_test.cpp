/* Runs the bf16 tensor-core attention kernels of
 * src/backends/cuda/attention_bf16.cuh on the host emulator (emu.h: mma,
 * ldmatrix and cp.async included) against a float64 reference computed from
 * the same bf16 inputs: forward out and lse, backward dq, dk, dv, over small
 * shapes with odd lengths (not multiples of any tile), Tq != Tk, causal,
 * windows (1, 7, longer than T, ones that hide whole key tiles from some
 * queries), bidirectional, head sizes 64 and 128, unaligned inputs (the plain
 * load path). The launchers' configuration (attnbf::Cfg) runs on every shape,
 * including a sweep near tile edges; every other configuration in
 * attention_bf16_variants.h (the ones dev/cuda/attention_bf16.cu times) runs on
 * the fixed shapes, and the forward and dQ with the keys split into shares (n_split) with their combining
 * kernels. A forward configuration with options (Q reloaded, V waited for late) must also give the bits of the
 * same one without them. The one-kernel backward (bwd1) runs in the launcher's configuration on every shape,
 * twice (the same bits both times, its f32 sums poisoned differently), the others on the variant shapes.
 * The stored-dS backward (bwd_dkdv_ds + bwd_dq_ds, TTT_ATTN_DS) runs in the launchers' configuration on every shape.
 * Also checks the tile-level masking decisions exactly.
 * No GPU needed:
 *   g++ -std=c++17 -O1 -fsanitize=address -I src/backends/cuda -I dev/cuda \
 *       dev/cuda/attention_bf16_emu_test.cpp -o /tmp/attn_bf16_emu && /tmp/attn_bf16_emu --size full
 * --size ci (the default; or TTT_EMU_SIZE=ci|full) keeps every check but runs the other
 * configurations on 4 of the fixed shapes and sweeps 24 shapes, so the CPU suite stays quick;
 * --size full is the whole list (ctest emu_attention_bf16_full, label "slow"). */
#include "emu.h"

inline float *ATTN_SMEM() { return emu::g_smem.data(); }
#include "attention_bf16.cuh"
#include "attention_bf16_variants.h"
#include "attention_ref.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>

using attnbf::Params;

/* ---- the kernels, one configuration each, on the emulator -------------------------------------------------- */

/* shared memory sized exactly as the launcher asks, so ASan sees overruns */
static void smem(int bytes) { emu::g_smem = std::vector<float>((size_t)bytes / sizeof(float), NAN); }

template <int D, int NW, int MW, int BK, int MINB, int OPT>
static void run_fwd(const Params &p, int bh) {
    using F = attnbf::Fwd<D, NW, MW, BK>;
    static_assert(F::SMEM <= 227 * 1024, "more shared memory than a block of an H100 may have");
    smem(F::SMEM);
    emu::launch(dim3((p.tq + F::BR - 1) / F::BR, bh), dim3(F::THREADS),
                [&] { attnbf::fwd<D, NW, MW, BK, MINB, OPT>(p); });
}
template <int D>
static void run_delta(const Params &p, int bh) {
    const int64_t rows = (int64_t)bh * p.tq;
    emu::launch(dim3((unsigned)((rows + 7) / 8)), dim3(256), [&] { attnbf::delta<D>(p, rows); });
}
template <int D, int NW, int MW, int BQ, int MINB, bool HOLD>
static void run_dkdv(const Params &p, int bh) {
    using K = attnbf::Dkdv<D, NW, MW, BQ>;
    static_assert(K::SMEM <= 227 * 1024, "more shared memory than a block of an H100 may have");
    smem(K::SMEM);
    emu::launch(dim3((p.tk + K::BC - 1) / K::BC, bh), dim3(K::THREADS),
                [&] { attnbf::bwd_dkdv<D, NW, MW, BQ, MINB, HOLD>(p); });
}
template <int D, int NW, int MW, int BK, int MINB, bool HOLD>
static void run_dq(const Params &p, int bh) {
    using Q = attnbf::Dq<D, NW, MW, BK>;
    static_assert(Q::SMEM <= 227 * 1024, "more shared memory than a block of an H100 may have");
    smem(Q::SMEM);
    emu::launch(dim3((p.tq + Q::BR - 1) / Q::BR, bh), dim3(Q::THREADS),
                [&] { attnbf::bwd_dq<D, NW, MW, BK, MINB, HOLD>(p); });
}

/* The one-kernel backward (attnbf::bwd1): its scratch sized exactly, the semaphores and ticket zeroed, dQ's f32
 * sums poisoned with acc_poison (a share added to a sum nobody wrote shows: NaN, or other bits on a second run). */
template <int D, int NW, int MW, int BQ, int MINB, int OPT>
static void run_bwd1(const Params &p0, int bh, float acc_poison) {
    using B = attnbf::Bwd1<D, NW, MW, BQ, OPT>;
    static_assert(B::SMEM <= 227 * 1024, "more shared memory than a block of an H100 may have");
    const int n_qt = (p0.tq + BQ - 1) / BQ, n_kt = (p0.tk + B::BC - 1) / B::BC;
    std::vector<float> acc((size_t)bh * p0.tq * D, acc_poison);
    std::vector<unsigned> sem((size_t)bh * n_qt + 1, 0u);
    Params p = p0;
    p.dq_acc = acc.data(), p.sem = sem.data();
    smem(B::SMEM);
    emu::launch(dim3(n_kt, bh), dim3(B::THREADS), [&] { attnbf::bwd1<D, NW, MW, BQ, MINB, OPT>(p); });
    if (sem.back() != (unsigned)(n_kt * bh)) {
        fprintf(stderr, "bwd1: %u tickets taken, %d blocks\n", sem.back(), n_kt * bh);
        abort();
    }
}

/* Stored dS (TTT_ATTN_DS): the launchers' dK/dV configuration with its stores (bwd_dkdv_ds), then dQ from them
 * (bwd_dq_ds in Cfg::DqDs); the workspace sized exactly as the launcher sizes it (ds_first over all key tiles) and
 * poisoned with bf16 NaNs, so a stored tile the dK/dV kernel did not write, or a read past one, shows. */
template <int D, typename K>
static void run_ds_cfg(const Params &p0, int bh, int n_split) {
    using Kt = attnbf::Dkdv<D, K::NW, K::MW, K::T>;
    using Q = typename attnbf::Cfg<D>::DqDs;
    using Qt = attnbf::DqDs<D, Q::NW, Q::MW, Kt::BC, K::T>;
    static_assert(Kt::SMEM <= 227 * 1024 && Qt::SMEM <= 227 * 1024, "more shared memory than a block of an H100 may have");
    const int64_t n_kt = (p0.tk + Kt::BC - 1) / Kt::BC, per_head = attnbf::ds_first<Kt::BC, K::T>(p0, n_kt);
    std::vector<uint16_t> ws((size_t)(per_head * bh * Kt::BC * K::T), 0x7fc0);
    Params p = p0;
    p.ds = ws.data(), p.ds_head = per_head;
    smem(Kt::SMEM);
    emu::launch(dim3((unsigned)n_kt, bh), dim3(Kt::THREADS),
                [&] { attnbf::bwd_dkdv_ds<D, K::NW, K::MW, K::T, K::MINB, (bool)K::HOLD>(p); });
    /* split keys (n_split > 1): dQ's shares as f32 partials, poisoned with NaN first, then dq_combine */
    const int64_t rows = (int64_t)bh * p.tq;
    std::vector<float> part(n_split > 1 ? (size_t)(rows * D * n_split) : 0, NAN);
    p.n_split = n_split, p.part = n_split > 1 ? part.data() : nullptr;
    smem(Qt::SMEM);
    emu::launch(dim3((p.tq + Qt::BR - 1) / Qt::BR, bh, n_split), dim3(Qt::THREADS),
                [&] { attnbf::bwd_dq_ds<D, Q::NW, Q::MW, Kt::BC, K::T, Q::MINB>(p); });
    if (n_split > 1) emu::launch(dim3((unsigned)((rows + 7) / 8)), dim3(256), [&] { attnbf::dq_combine<D>(p, rows); });
}
template <int D>
static void run_ds(const Params &p, int bh, int small, int n_split = 1) {
    using C = attnbf::Cfg<D>;
    if (small) run_ds_cfg<D, typename C::KvSmall>(p, bh, n_split);
    else run_ds_cfg<D, typename C::Kv>(p, bh, n_split);
}

/* Split keys (Params::n_split, blockIdx.z): the launchers' small-grid forward and dQ with n shares, then their
 * combining kernels; the partials are poisoned with NaN first so an unwritten slot shows. */
template <int D>
static void run_split(Params p, int bh, int n, std::vector<uint16_t> &out, std::vector<float> &lse, std::vector<uint16_t> &dq) {
    using C = attnbf::Cfg<D>;
    using F = typename C::FwdSmall;
    using Q = typename C::DqSmall;
    const int64_t rows = (int64_t)bh * p.tq;
    std::vector<float> part((size_t)(rows * D * n), NAN), part_lse((size_t)(rows * n), NAN);
    p.n_split = n, p.part = part.data(), p.part_lse = part_lse.data();
    p.out = out.data(), p.lse_out = lse.data();
    using Fk = attnbf::Fwd<D, F::NW, F::MW, F::T>;
    smem(Fk::SMEM);
    emu::launch(dim3((p.tq + Fk::BR - 1) / Fk::BR, bh, n), dim3(Fk::THREADS),
                [&] { attnbf::fwd<D, F::NW, F::MW, F::T, F::MINB, F::HOLD>(p); });
    emu::launch(dim3((unsigned)((rows + 7) / 8)), dim3(256), [&] { attnbf::fwd_combine<D>(p, rows); });
    std::fill(part.begin(), part.end(), NAN);
    p.dq = dq.data();
    using Qk = attnbf::Dq<D, Q::NW, Q::MW, Q::T>;
    smem(Qk::SMEM);
    emu::launch(dim3((p.tq + Qk::BR - 1) / Qk::BR, bh, n), dim3(Qk::THREADS),
                [&] { attnbf::bwd_dq<D, Q::NW, Q::MW, Q::T, Q::MINB, (bool)Q::HOLD>(p); });
    emu::launch(dim3((unsigned)((rows + 7) / 8)), dim3(256), [&] { attnbf::dq_combine<D>(p, rows); });
}

enum Kind { FWD, DKDV, DQ };
static const char *kind_name(Kind k) { return k == FWD ? "fwd" : k == DKDV ? "dkdv" : "dq"; }
struct Variant {
    Kind kind;
    int d, nw, mw, tile, minb, hold; /* hold: the forward's options (OPT) */
    void (*run)(const Params &, int);
    void (*plain)(const Params &, int); /* forward: the same without options, whose bits the options must give */
    double worst[2]; /* over the fixed shapes: out, lse | dk, dv | dq, - */
};
#define FWD_V(d, nw, mw, t, mb, h) \
    {FWD, d, nw, mw, t, mb, h, run_fwd<d, nw, mw, t, mb, h>, run_fwd<d, nw, mw, t, mb, 0>, {0, 0}},
#define DKDV_V(d, nw, mw, t, mb, h) {DKDV, d, nw, mw, t, mb, h, run_dkdv<d, nw, mw, t, mb, h>, nullptr, {0, 0}},
#define DQ_V(d, nw, mw, t, mb, h) {DQ, d, nw, mw, t, mb, h, run_dq<d, nw, mw, t, mb, h>, nullptr, {0, 0}},
static Variant g_variants[] = {ATTNBF_FWD_VARIANTS(FWD_V) ATTNBF_DKDV_VARIANTS(DKDV_V) ATTNBF_DQ_VARIANTS(DQ_V)};

struct Bwd1Variant {
    int d, nw, mw, tile, minb, hold;
    void (*run)(const Params &, int, float);
    double worst[3]; /* dq, dk, dv over its shapes */
    int shapes;
};
#define BWD1_V(d, nw, mw, t, mb, h) {d, nw, mw, t, mb, h, run_bwd1<d, nw, mw, t, mb, h>, {0, 0, 0}, 0},
static Bwd1Variant g_bwd1[] = {ATTNBF_BWD1_VARIANTS(BWD1_V)};

/* The launchers' configurations (attnbf::Cfg: one for large grids, one for small ones): forward, delta,
 * dK/dV, dQ, all large (small = 0) or all small. */
template <int D, typename F, typename K, typename Q>
static void run_set(Params p, int bh) {
    run_fwd<D, F::NW, F::MW, F::T, F::MINB, F::HOLD>(p, bh);
    p.o = p.out;
    p.lse = p.lse_out;
    run_delta<D>(p, bh);
    p.delta = p.delta_out;
    run_dkdv<D, K::NW, K::MW, K::T, K::MINB, (bool)K::HOLD>(p, bh);
    run_dq<D, Q::NW, Q::MW, Q::T, Q::MINB, (bool)Q::HOLD>(p, bh);
}
template <int D>
static void run_engine(const Params &p, int bh, int small) {
    using C = attnbf::Cfg<D>;
    if (small) run_set<D, typename C::FwdSmall, typename C::KvSmall, typename C::DqSmall>(p, bh);
    else run_set<D, typename C::Fwd, typename C::Kv, typename C::Dq>(p, bh);
}
template <typename C> static bool same(const Variant &v) {
    return v.nw == C::NW && v.mw == C::MW && v.tile == C::T && v.minb == C::MINB && v.hold == C::HOLD;
}
template <int D>
static bool is_engine_d(const Variant &v) {
    using C = attnbf::Cfg<D>;
    if (v.kind == FWD) return same<typename C::Fwd>(v) || same<typename C::FwdSmall>(v);
    if (v.kind == DKDV) return same<typename C::Kv>(v) || same<typename C::KvSmall>(v);
    return same<typename C::Dq>(v) || same<typename C::DqSmall>(v);
}
static bool is_engine(const Variant &v) { return v.d == 64 ? is_engine_d<64>(v) : is_engine_d<128>(v); }
static bool is_engine(const Bwd1Variant &v) {
    const Variant w{DKDV, v.d, v.nw, v.mw, v.tile, v.minb, v.hold, nullptr, nullptr, {0, 0}};
    return v.d == 64 ? same<attnbf::Cfg<64>::Bwd1>(w) : same<attnbf::Cfg<128>::Bwd1>(w);
}

struct Case {
    ref::Shape s;
    int unaligned;
};

/* A deterministic sweep of shapes near tile edges: lengths, KV offsets and windows around multiples of 64. */
static std::vector<Case> sweep(int n) {
    std::mt19937 rng(2024);
    auto pick = [&](std::initializer_list<int> xs) { return xs.begin()[rng() % xs.size()]; };
    std::vector<Case> out;
    for (int i = 0; i < n; i++) {
        Case c{};
        c.s.bh = 1;
        c.s.d = c.s.dv = i % 4 == 3 ? 128 : 64;
        c.s.tq = pick({1, 2, 15, 16, 17, 63, 64, 65, 127, 128, 129, 191, 193}) + (int)(rng() % 3);
        c.s.causal = rng() % 5 != 0;
        const int extra = pick({0, 0, 1, 31, 62, 63, 64, 65, 126, 127, 129});
        c.s.tk = c.s.causal ? c.s.tq + extra : pick({1, 5, 64, 65, 130});
        c.s.window = c.s.causal ? pick({0, 0, 1, 2, 3, 63, 64, 65, 66, 67, 127, 128, 129, 200}) : 0;
        c.unaligned = rng() % 8 == 0;
        out.push_back(c);
    }
    return out;
}

/* The tile-level masking decisions, exactly, over many shapes and every tile size the kernels use:
 * key_range / query_range cover every visible pair, and needs_mask is set on every tile (rows
 * padded to the tile) that holds a hidden or out-of-range pair; row_window gives visible() for every
 * row and tile start. Returns the number of violations. */
static int check_masks() {
    int bad = 0, shapes = 0;
    const int sizes[] = {16, 32, 64, 128};
    for (int tq = 1; tq <= 140; tq += (tq < 20 ? 1 : 7))
        for (int extra : {0, 1, 30, 62, 63, 64, 65, 127, 200})
            for (int causal = 0; causal < 2; causal++)
                for (int window : {0, 1, 2, 3, 7, 31, 63, 64, 65, 67, 126, 127, 128, 129, 190, 300}) {
                    if (!causal && (window || extra > 1)) continue;
                    const int tk = tq + extra;
                    Params p{};
                    p.tq = tq, p.tk = tk, p.causal = causal, p.window = window, p.off = causal ? tk - tq : 0;
                    shapes++;
                    /* the forward's per-row test: row_window's offsets from any tile start give visible() */
                    for (int i = 0; i < tq; i++)
                        for (int j0 = 0; j0 < tk; j0 += 5) {
                            int lo, hi;
                            attnbf::row_window(p, i, j0, &lo, &hi);
                            for (int j = 0; j < tk; j++)
                                if (attnbf::visible(p, i, j) != (j - j0 >= lo && j - j0 <= hi)) bad++;
                        }
                    for (int nq : sizes)
                        for (int nk : sizes) {
                            /* query tiles: the keys they see, and the mask of each key tile they visit */
                            for (int q0 = 0; q0 < tq; q0 += nq) {
                                int64_t lo, hi;
                                attnbf::key_range(p, q0, std::min(q0 + nq, tq), &lo, &hi);
                                for (int i = q0; i < std::min(q0 + nq, tq); i++)
                                    for (int j = 0; j < tk; j++)
                                        if (attnbf::visible(p, i, j) && (j < lo || j >= hi)) bad++;
                                for (int64_t k0 = lo / nk * nk; k0 < hi; k0 += nk) {
                                    bool hidden = false;
                                    for (int i = q0; i < q0 + nq && !hidden; i++)
                                        for (int64_t j = k0; j < k0 + nk && !hidden; j++)
                                            hidden = i >= tq || !attnbf::visible(p, i, j);
                                    if (hidden && !attnbf::needs_mask(p, q0, nq, k0, nk)) bad++;
                                }
                            }
                            /* key tiles: the queries that see them, and the mask of each query tile they visit */
                            for (int k0 = 0; k0 < tk; k0 += nk) {
                                int64_t lo, hi;
                                attnbf::query_range(p, k0, std::min(k0 + nk, tk), &lo, &hi);
                                for (int i = 0; i < tq; i++)
                                    for (int j = k0; j < std::min(k0 + nk, tk); j++)
                                        if (attnbf::visible(p, i, j) && (i < lo || i >= hi)) bad++;
                                if (hi <= lo) continue;
                                for (int64_t q0 = lo / nq * nq; q0 < hi; q0 += nq) {
                                    bool hidden = false;
                                    for (int64_t i = q0; i < q0 + nq && !hidden; i++)
                                        for (int j = k0; j < k0 + nk && !hidden; j++)
                                            hidden = i >= tq || !attnbf::visible(p, i, j);
                                    if (hidden && !attnbf::needs_mask(p, q0, nq, k0, nk)) bad++;
                                }
                            }
                        }
                }
    printf("%s tile masking decisions over %d shapes x 16 tile sizes: %d violations\n", bad ? "FAIL" : "ok  ", shapes,
           bad);
    return bad;
}

static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int main(int argc, char **argv) {
    const char *size = getenv("TTT_EMU_SIZE");
    if (!size || !*size) size = "ci";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc) size = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--size ci|full]   (default ci, or TTT_EMU_SIZE)\n", argv[0]);
            return 2;
        }
    }
    const bool full = !strcmp(size, "full");
    if (!full && strcmp(size, "ci")) {
        fprintf(stderr, "%s: --size must be ci or full, not '%s'\n", argv[0], size);
        return 2;
    }
    const auto t_start = std::chrono::steady_clock::now();
    printf("size %s: %s\n", size,
           full ? "every configuration on every fixed shape, 150 sweep shapes"
                : "the launchers' configuration on every fixed shape, the others on 4 of them, 24 sweep shapes "
                  "(--size full: all)");
    int failures = check_masks() != 0;
    printf("     masks checked in %.1f s\n", seconds_since(t_start));
    fflush(stdout);
    for (int d : {64, 128})
        for (Kind kd : {FWD, DKDV, DQ}) {
            int n = 0;
            for (const Variant &v : g_variants) n += v.d == d && v.kind == kd && is_engine(v);
            if (n < 1 || n > 2) {
                printf("FAIL the launchers' d=%d %s configurations are not in attention_bf16_variants.h\n", d, kind_name(kd));
                failures++;
            }
        }
    for (int d : {64, 128}) {
        int n = 0;
        for (const Bwd1Variant &v : g_bwd1) n += v.d == d && is_engine(v);
        if (n != 1) {
            printf("FAIL the launchers' d=%d bwd1 configuration is not in attention_bf16_variants.h\n", d);
            failures++;
        }
    }
    const Case fixed[] = {
        {{2, 70, 70, 64, 64, 1, 0}, 0},     {{1, 70, 70, 64, 64, 0, 0}, 0},    {{1, 37, 100, 64, 64, 1, 0}, 0},
        {{1, 130, 130, 64, 64, 1, 1}, 0},   {{1, 130, 130, 64, 64, 1, 7}, 0},  {{1, 100, 150, 64, 64, 1, 40}, 0},
        {{1, 65, 65, 64, 64, 1, 200}, 0},   {{1, 3, 200, 64, 64, 1, 50}, 0},   {{1, 1, 50, 64, 64, 1, 0}, 0},
        {{1, 77, 77, 64, 64, 1, 0}, 1},     {{1, 80, 80, 128, 128, 1, 0}, 0},  {{1, 70, 110, 128, 128, 1, 9}, 0},
        {{1, 45, 130, 128, 128, 0, 0}, 0},  {{1, 150, 150, 128, 128, 1, 70}, 0}, {{1, 33, 33, 128, 128, 1, 0}, 1},
        {{1, 200, 300, 64, 64, 1, 100}, 0},
        /* tile-edge alignments: windows 63, 127 (k0 == last query - window), 67 (a key tile's last
         * query starts a query tile), KV offset 62 (k0 + 63 == the tile's first query + 1) */
        {{1, 200, 200, 64, 64, 1, 63}, 0},  {{1, 260, 260, 64, 64, 1, 127}, 0}, {{1, 200, 200, 64, 64, 1, 67}, 0},
        {{1, 100, 162, 64, 64, 1, 0}, 0},   {{1, 140, 266, 64, 64, 1, 65}, 0}, {{1, 270, 270, 128, 128, 1, 127}, 0},
    };
    std::vector<Case> cases(std::begin(fixed), std::end(fixed));
    const size_t n_fixed = cases.size();
    /* --size ci: the fixed shapes on which every other configuration still runs: both head sizes,
     * causal with and without a window, Tq != Tk, bidirectional, two heads */
    const size_t ci_variant_shapes[] = {0, 5, 11, 12};
    auto variants_here = [&](size_t ci) {
        if (full) return true;
        for (size_t k : ci_variant_shapes)
            if (k == ci) return true;
        return false;
    };
    const int n_sweep = full ? 150 : 24;
    for (const Case &c : sweep(n_sweep)) cases.push_back(c);
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 1.f);
    int runs = 0;
    double split_worst = 0; /* split keys, worst relative error of out, lse, dq over the fixed shapes */
    double pair_worst[3] = {0, 0, 0}; /* the launchers' two-kernel backward: dq, dk, dv over every shape */
    int bwd1_runs = 0, bwd1_bits = 0;  /* one-kernel backward runs; of them, run twice and compared bit for bit */
    int ds_runs = 0, ds_same_dq = 0;   /* stored-dS backward runs; of them, dQ the two-kernel path's bits */
    double ds_worst = 0;
    for (size_t ci = 0; ci < cases.size(); ci++) {
        const Case &cs = cases[ci];
        const bool swept = ci >= n_fixed; /* the sweep runs the launchers' configuration only, quietly */
        if (swept && ((ci - n_fixed) % 8 == 0 || ci + 1 == cases.size())) { /* progress: the sweep prints no lines */
            printf("     sweep shape %zu/%d, %.0f s so far\n", ci - n_fixed + 1, n_sweep, seconds_since(t_start));
            fflush(stdout);
        }
        const ref::Shape &c = cs.s;
        const size_t nq = (size_t)c.bh * c.tq * c.d, nk = (size_t)c.bh * c.tk * c.d, nr = (size_t)c.bh * c.tq;
        /* inputs rounded to bf16; with unaligned, every input starts 1 element (2 bytes) in */
        const int u = cs.unaligned ? 1 : 0;
        std::vector<uint16_t> q(nq + u), k(nk + u), v(nk + u), dout(nq + u);
        for (auto *x : {&q, &k, &v, &dout})
            for (auto &h : *x) h = ref::to_bf16(nd(rng));
        auto widen = [&](const std::vector<uint16_t> &x, std::vector<double> &xd) {
            xd.resize(x.size() - u);
            for (size_t i = 0; i < xd.size(); i++) xd[i] = ref::from_bf16(x[i + u]);
        };
        std::vector<double> rq, rk, rv, rdo;
        widen(q, rq), widen(k, rk), widen(v, rv), widen(dout, rdo);
        const double scale = 1.0 / sqrt((double)c.d);
        std::vector<double> ro, rl, rdq, rdk, rdv;
        ref::attention(c, rq, rk, rv, rdo, scale, ro, rl, rdq, rdk, rdv);

        /* the launchers' configuration: everything */
        std::vector<uint16_t> out(nq, 0xffff), dq(nq, 0xffff), dk(nk, 0xffff), dv(nk, 0xffff);
        std::vector<float> lse(nr, NAN), delta(nr, NAN);
        Params p{};
        p.q = q.data() + u, p.k = k.data() + u, p.v = v.data() + u, p.dout = dout.data() + u;
        p.out = out.data(), p.lse_out = lse.data(), p.delta_out = delta.data();
        p.dq = dq.data(), p.dk = dk.data(), p.dv = dv.data();
        p.tq = c.tq, p.tk = c.tk, p.causal = c.causal, p.window = c.window;
        p.off = c.causal ? c.tk - c.tq : 0;
        p.scale = (float)scale;
        p.aligned = !cs.unaligned;
        const int small = (int)(ci & 1); /* the launchers' large-grid and small-grid choices, in turn */
        if (c.d == 64) run_engine<64>(p, c.bh, small);
        else run_engine<128>(p, c.bh, small);
        runs++;
        const double tol[5] = {1e-2, 1e-3, 2e-2, 2e-2, 2e-2}; /* bf16 outputs (half an ulp: 2e-3 of the largest) */
        const double e[5] = {ref::max_rel(out, ro, ref::val_bf16), ref::max_rel(lse, rl, ref::val_f32),
                             ref::max_rel(dq, rdq, ref::val_bf16), ref::max_rel(dk, rdk, ref::val_bf16),
                             ref::max_rel(dv, rdv, ref::val_bf16)};
        bool ok = true;
        for (int i = 0; i < 5; i++) ok = ok && e[i] <= tol[i];
        failures += !ok;
        if (!swept || !ok)
            printf("%s bh=%d tq=%d tk=%d d=%d causal=%d window=%lld%s (%s): out %.1e lse %.1e dq %.1e dk %.1e dv %.1e"
                   " [%.0f s]\n",
                   ok ? "ok  " : "FAIL", c.bh, c.tq, c.tk, c.d, c.causal, (long long)c.window,
                   cs.unaligned ? " unaligned" : "", small ? "small-grid set" : "large-grid set", e[0], e[1], e[2], e[3],
                   e[4], seconds_since(t_start));
        fflush(stdout);
        for (int i = 0; i < 3; i++) pair_worst[i] = e[2 + i] != e[2 + i] ? e[2 + i] : std::max(pair_worst[i], e[2 + i]);
        /* the one-kernel backward from the same out, lse and delta: the launcher's configuration on every shape,
         * twice with the f32 sums poisoned differently (NaN, then 3.0), the bits of dq, dk, dv the same both times;
         * the other configurations once, on the shapes the other configurations run on */
        for (Bwd1Variant &bv : g_bwd1) {
            const bool eng = is_engine(bv);
            if (bv.d != c.d || (!eng && (swept || !variants_here(ci)))) continue;
            Params pb = p;
            pb.o = out.data(), pb.lse = lse.data(), pb.delta = delta.data();
            std::vector<uint16_t> bq(nq, 0xffff), bk(nk, 0xffff), bv2(nk, 0xffff);
            pb.dq = bq.data(), pb.dk = bk.data(), pb.dv = bv2.data();
            bv.run(pb, c.bh, NAN);
            runs++, bwd1_runs++;
            const double eb[3] = {ref::max_rel(bq, rdq, ref::val_bf16), ref::max_rel(bk, rdk, ref::val_bf16),
                                  ref::max_rel(bv2, rdv, ref::val_bf16)};
            bool bits = true;
            if (eng) {
                std::vector<uint16_t> cq(nq, 0xffff), ck(nk, 0xffff), cv(nk, 0xffff);
                pb.dq = cq.data(), pb.dk = ck.data(), pb.dv = cv.data();
                bv.run(pb, c.bh, 3.0f);
                runs++, bwd1_bits++;
                bits = cq == bq && ck == bk && cv == bv2;
            }
            const bool bok = eb[0] <= tol[2] && eb[1] <= tol[3] && eb[2] <= tol[4] && bits;
            failures += !bok;
            bv.shapes++;
            for (int i = 0; i < 3; i++) bv.worst[i] = eb[i] != eb[i] ? eb[i] : std::max(bv.worst[i], eb[i]);
            if (!bok || (!swept && eng))
                printf("%s bh=%d tq=%d tk=%d d=%d causal=%d window=%lld%s bwd1 %dx%d/%d b%d%s%s: dq %.1e dk %.1e dv %.1e%s\n",
                       bok ? "ok  " : "FAIL", c.bh, c.tq, c.tk, c.d, c.causal, (long long)c.window,
                       cs.unaligned ? " unaligned" : "", bv.nw, bv.mw, bv.tile, bv.minb, attnbf_opt_mark(false, bv.hold),
                       eng ? " (launcher's, twice)" : "", eb[0], eb[1], eb[2],
                       bits ? "" : " NOT THE SAME BITS ON THE SECOND RUN");
        }
        { /* stored dS, every shape, from the same out, lse and delta: dK and dV the bits of the two-kernel path's
           * (the same kernel plus the stores), dQ within the tolerance (its bits compared too, and counted) */
            Params pd = p;
            pd.o = out.data(), pd.lse = lse.data(), pd.delta = delta.data();
            std::vector<uint16_t> sq(nq, 0xffff), sk(nk, 0xffff), sv(nk, 0xffff);
            pd.dq = sq.data(), pd.dk = sk.data(), pd.dv = sv.data();
            if (c.d == 64) run_ds<64>(pd, c.bh, small);
            else run_ds<128>(pd, c.bh, small);
            runs++, ds_runs++;
            const double ed = ref::max_rel(sq, rdq, ref::val_bf16);
            const bool kv_bits = sk == dk && sv == dv, dok = ed <= tol[2] && kv_bits;
            ds_same_dq += sq == dq;
            ds_worst = ed != ed ? ed : std::max(ds_worst, ed);
            failures += !dok;
            if (!dok || !swept)
                printf("%s bh=%d tq=%d tk=%d d=%d causal=%d window=%lld%s stored dS (%s): dq %.1e%s%s\n",
                       dok ? "ok  " : "FAIL", c.bh, c.tq, c.tk, c.d, c.causal, (long long)c.window,
                       cs.unaligned ? " unaligned" : "", small ? "small-grid" : "large-grid", ed,
                       sq == dq ? ", the two-kernel path's bits" : "", kv_bits ? "" : " (dK / dV NOT the two-kernel path's bits)");
            /* with dQ's keys split into 2, 3 and 7 shares (more than some shapes' key tiles: empty shares), on the
             * shapes the other configurations run on */
            for (int n : {2, 3, 7}) {
                if (swept || !variants_here(ci)) break;
                std::vector<uint16_t> xq(nq, 0xffff);
                pd.dq = xq.data();
                if (c.d == 64) run_ds<64>(pd, c.bh, small, n);
                else run_ds<128>(pd, c.bh, small, n);
                runs++;
                const double es = ref::max_rel(xq, rdq, ref::val_bf16);
                const bool sok = es <= tol[2];
                failures += !sok;
                ds_worst = es != es ? es : std::max(ds_worst, es);
                if (!sok)
                    printf("FAIL bh=%d tq=%d tk=%d d=%d causal=%d window=%lld stored dS, dQ keys split x%d: dq %.1e\n", c.bh,
                           c.tq, c.tk, c.d, c.causal, (long long)c.window, n, es);
            }
        }
        if (!swept) { /* split keys, 2 and 3 shares and more shares than key tiles (empty ones) */
            Params ps = p;
            ps.o = out.data(), ps.lse = lse.data(), ps.delta = delta.data();
            for (int n : {2, 3, 7}) {
                std::vector<uint16_t> so(nq, 0xffff), sdq(nq, 0xffff);
                std::vector<float> sl(nr, NAN);
                if (c.d == 64) run_split<64>(ps, c.bh, n, so, sl, sdq);
                else run_split<128>(ps, c.bh, n, so, sl, sdq);
                runs++;
                const double es[3] = {ref::max_rel(so, ro, ref::val_bf16), ref::max_rel(sl, rl, ref::val_f32),
                                      ref::max_rel(sdq, rdq, ref::val_bf16)};
                const bool sok = es[0] <= tol[0] && es[1] <= tol[1] && es[2] <= tol[2];
                failures += !sok;
                if (!sok)
                    printf("FAIL bh=%d tq=%d tk=%d d=%d causal=%d window=%lld%s split keys x%d: out %.1e lse %.1e dq %.1e\n",
                           c.bh, c.tq, c.tk, c.d, c.causal, (long long)c.window, cs.unaligned ? " unaligned" : "", n,
                           es[0], es[1], es[2]);
                split_worst = std::max(split_worst, std::max(es[0], std::max(es[1], es[2])));
                if (es[0] != es[0] || es[1] != es[1] || es[2] != es[2]) split_worst = NAN;
            }
        }
        if (swept || !variants_here(ci)) continue;
        /* every other configuration of this head size; the backward ones from the launchers' out, lse, delta */
        p.o = out.data(), p.lse = lse.data(), p.delta = delta.data();
        for (Variant &vr : g_variants) {
            if (vr.d != c.d || is_engine(vr)) continue;
            std::vector<uint16_t> a(vr.kind == DKDV ? nk : nq, 0xffff), b(vr.kind == DKDV ? nk : 0, 0xffff);
            std::vector<float> l2(nr, NAN);
            Params pv = p;
            if (vr.kind == FWD) pv.out = a.data(), pv.lse_out = l2.data();
            if (vr.kind == DKDV) pv.dk = a.data(), pv.dv = b.data();
            if (vr.kind == DQ) pv.dq = a.data();
            vr.run(pv, c.bh);
            runs++;
            double ev[2] = {0, 0}, tv[2] = {tol[2], 1};
            if (vr.kind == FWD) {
                ev[0] = ref::max_rel(a, ro, ref::val_bf16), ev[1] = ref::max_rel(l2, rl, ref::val_f32);
                tv[0] = tol[0], tv[1] = tol[1];
            } else if (vr.kind == DKDV) {
                ev[0] = ref::max_rel(a, rdk, ref::val_bf16), ev[1] = ref::max_rel(b, rdv, ref::val_bf16);
                tv[0] = tol[3], tv[1] = tol[4];
            } else {
                ev[0] = ref::max_rel(a, rdq, ref::val_bf16);
            }
            bool same_bits = true;
            if (vr.kind == FWD && vr.hold) { /* the forward's options change no bit of out or lse */
                std::vector<uint16_t> a0(nq, 0xffff);
                std::vector<float> l0(nr, NAN);
                pv.out = a0.data(), pv.lse_out = l0.data();
                vr.plain(pv, c.bh);
                same_bits = a0 == a && memcmp(l0.data(), l2.data(), nr * sizeof(float)) == 0;
            }
            const bool vok = ev[0] <= tv[0] && ev[1] <= tv[1] && same_bits;
            failures += !vok;
            for (int i = 0; i < 2; i++) vr.worst[i] = ev[i] != ev[i] ? ev[i] : std::max(vr.worst[i], ev[i]);
            if (!vok)
                printf("FAIL bh=%d tq=%d tk=%d d=%d causal=%d window=%lld%s %s %dx%d/%d b%d%s: %.1e %.1e%s\n", c.bh,
                       c.tq, c.tk, c.d, c.causal, (long long)c.window, cs.unaligned ? " unaligned" : "",
                       kind_name(vr.kind), vr.nw, vr.mw, vr.tile, vr.minb, attnbf_opt_mark(vr.kind == FWD, vr.hold),
                       ev[0], ev[1], same_bits ? "" : " (not the bits of the same configuration without options)");
        }
    }
    for (const Variant &vr : g_variants) {
        if (is_engine(vr)) {
            printf("     d=%-3d %-4s %dx%d/%-3d b%d%-2s the launchers' (the lines above)\n", vr.d, kind_name(vr.kind), vr.nw,
                   vr.mw, vr.tile, vr.minb, attnbf_opt_mark(vr.kind == FWD, vr.hold));
            continue;
        }
        printf("     d=%-3d %-4s %dx%d/%-3d b%d%-2s worst over its shapes: %s %.1e%s", vr.d, kind_name(vr.kind),
               vr.nw, vr.mw, vr.tile, vr.minb, attnbf_opt_mark(vr.kind == FWD, vr.hold),
               vr.kind == FWD ? "out" : vr.kind == DKDV ? "dk" : "dq", vr.worst[0],
               vr.kind == DQ ? "\n" : "");
        if (vr.kind != DQ) printf(", %s %.1e\n", vr.kind == FWD ? "lse" : "dv", vr.worst[1]);
    }
    printf("     split keys (forward and dQ, 2, 3 and 7 shares, small-grid configurations) on the fixed shapes: worst %.1e\n",
           split_worst);
    for (const Bwd1Variant &bv : g_bwd1)
        printf("     d=%-3d bwd1 %dx%d/%-3d b%d%-2s%s worst over %d shapes: dq %.1e dk %.1e dv %.1e\n", bv.d, bv.nw,
               bv.mw, bv.tile, bv.minb, attnbf_opt_mark(false, bv.hold), is_engine(bv) ? "*" : " ", bv.shapes, bv.worst[0],
               bv.worst[1], bv.worst[2]);
    printf("     two-kernel backward (launchers' dkdv + dq) worst over the same shapes: dq %.1e dk %.1e dv %.1e\n",
           pair_worst[0], pair_worst[1], pair_worst[2]);
    printf("     stored dS (TTT_ATTN_DS): %d runs (and dQ's keys split 2, 3 and 7 ways on the variant shapes), dq worst %.1e; "
           "dK / dV the two-kernel path's bits in all, dQ in %d\n",
           ds_runs, ds_worst, ds_same_dq);
    printf("     bwd1: %d runs, %d of them repeated bit for bit; %ld turns waited for, %ld released\n", bwd1_runs,
           bwd1_bits, emu::g_waits, emu::g_releases);
    printf("%s (size %s: %d kernel sets run; %d sweep shapes near tile edges) in %.1f s\n",
           failures ? "FAILED" : "all passed", size, runs, n_sweep, seconds_since(t_start));
    return failures != 0;
}
