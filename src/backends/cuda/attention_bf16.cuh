/* Fused attention kernels, bf16 on the tensor cores (mma.sync m16n8k16: bf16
 * operands, f32 accumulation): the forward pass and a deterministic
 * flash-attention-2 style backward (delta, then one kernel per key tile for dK
 * and dV and one per query tile for dQ; no atomics), and a one-kernel
 * deterministic backward (bwd1: dQ's shares added in a fixed order behind
 * semaphores; TTT_ATTN_BWD1=1), and the stored-dS pair (bwd_dkdv_ds writes
 * dS, bwd_dq_ds reads it for dQ; TTT_ATTN_DS=1). Device code only, so
 * dev/cuda/emu.h can run it on a host without a GPU (it defines TTT_EMU and
 * emulates mma, ldmatrix and cp.async); the launchers are in attention.cu. The
 * includer defines ATTN_SMEM(), a 16-byte aligned float pointer to the block's
 * dynamic shared memory.
 *
 * Layout: q, k, v, out, dout, dq, dk, dv [BH, T, D] bf16, dense, D = 64 or 128
 * (v's head size equals q's); lse and delta [BH, Tq] f32. Softmax statistics,
 * scores and every accumulator are f32; P and dS are rounded to bf16 as the
 * A operand of their products (as in FlashAttention-2).
 *
 * Masking (ttt_attention's convention, as in attention_kernels.cuh): query i
 * sits at absolute position off + i (off = Tk - Tq when causal, else 0) and
 * sees key j iff j < Tk and, when causal, j <= off + i and (window <= 0 or
 * off + i - j < window). Tiles no query of a tile can see are skipped; the
 * element test runs only on tiles that straddle a mask edge or a sequence end.
 *
 * Fragments (PTX ISA, mma.m16n8k16 with .row.col): lane = 4 g + t; the
 * accumulator of a 16 x 8 tile holds (g, 2t..2t+1) in c0, c1 and (g + 8, ..)
 * in c2, c3; an A fragment (16 x 16) holds rows g, g + 8 by columns 2t.., 2t + 8..
 * The accumulators of two adjacent 8-column tiles are, packed to bf16 pairs,
 * the A fragment of those 16 columns: P and dS never leave the registers.
 * Shared tiles are row-major with rows padded by 8 elements (16 bytes), so the
 * 8 rows an ldmatrix phase reads fall in distinct banks. Operands that are a
 * tile's rows (K in Q K^T) load with ldmatrix; those that are its columns (V in
 * P V) with ldmatrix.trans. Global tiles come in with cp.async, double
 * buffered: the next tile's copy runs under the current tile's products.
 *
 * Each warp owns MW groups of 16 rows (query rows in the forward and dQ
 * kernels, key rows in the dK/dV kernel), so no product needs another warp's
 * registers; MW = 2 reuses each B fragment for two mma. The kernels are
 * templates over the configuration (warps, MW, the other side's tile, blocks
 * per SM for the register allocator, A fragments held in registers or
 * reloaded from shared memory at each k-step; the forward can also wait for V
 * apart from K, FWD_V_LATE); Cfg at the end is the launchers' choice,
 * dev/cuda/attention_bf16.cu times the others,
 * dev/cuda/attention_bf16_emu_test.cpp checks them all on the emulator. */
#ifndef TTT_ATTENTION_BF16_CUH
#define TTT_ATTENTION_BF16_CUH

#ifndef TTT_EMU
#include <cuda_bf16.h>
#endif

#include "attention_mask.cuh"

namespace attnbf {

constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

struct Params {
    const uint16_t *q, *k, *v, *o, *dout; /* bf16 */
    const float *lse, *delta;
    uint16_t *out, *dq, *dk, *dv;
    float *lse_out, *delta_out;
    int tq, tk;
    int causal;
    int64_t window; /* > 0: sliding window (causal only) */
    int64_t off;    /* absolute position of query 0 (Tk - Tq when causal) */
    float scale;    /* softmax scale */
    int aligned;    /* q, k, v, dout 16-byte aligned: cp.async loads (else plain loads) */
    /* Split keys (forward and dQ, n_split > 1): blockIdx.z takes its share of the tile's key tiles and writes f32
     * partials, which fwd_combine / dq_combine add up in split order (deterministic). For grids of few query tiles
     * (a chunk of 1K queries over 8K keys fills a third of an H100's block slots otherwise). */
    int n_split;
    float *part;     /* [n_split, BH, Tq, D]: forward, the split's normalized output; dQ, its share of dQ */
    float *part_lse; /* [n_split, BH, Tq]: forward, the split's log-sum-exp (-inf where it saw no key) */
    /* One-kernel backward (bwd1): dQ's f32 running sums [BH, Tq, D] and the semaphores [BH * n_qt + 1], zero at
     * launch: one per (head, query tile of the kernel's BQ) counting the key tiles that have added their share,
     * then the ticket counter that hands out the blocks' tiles in the order they start. */
    float *dq_acc;
    unsigned *sem;
    /* Stored dS (bwd_dkdv_ds, then bwd_dq_ds; TTT_ATTN_DS): the dK/dV kernel writes each visible (key tile, query
     * tile) pair's dS, BC x BQ bf16, and the dQ kernel reads it back instead of recomputing S, P and dP. Per head
     * ds_head tiles, in key-tile order, each key tile's query tiles in order (ds_first). A tile is (BQ / 16) x
     * (BC / 16) blocks of 16 queries x 16 keys, query block major; a block is the mma A fragment of its dS, 16
     * bytes a lane in lane order (512 bytes), so both kernels move it with 16-byte accesses and no transposing. */
    uint16_t *ds;
    int64_t ds_head;
};

/* ---- the instructions (emulated on the host by dev/cuda/emu.h) ---------------------------------------------- */

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
#ifdef TTT_EMU
    auto one = [](float x) -> uint32_t {
        uint32_t b;
        memcpy(&b, &x, 4);
        if (x != x) return 0x7fc0u;
        return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16; /* round to nearest even */
    };
    return one(lo) | (one(hi) << 16);
#else
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
#endif
}

__device__ __forceinline__ float bf16_to_f32(uint16_t h) {
#ifdef TTT_EMU
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
#else
    return __uint_as_float((uint32_t)h << 16);
#endif
}

/* d += a b: a 16 x 16 (row), b 16 x 8 (col) bf16, d f32 */
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef TTT_EMU
    const uint32_t b[2] = {b0, b1};
    emu::mma_bf16_16816(d, a, b);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* Four 8 x 8 matrices of shared memory; lane 8 i + j names row j of matrix i. */
__device__ __forceinline__ void ldsm4(uint32_t (&r)[4], const uint16_t *row) {
#ifdef TTT_EMU
    emu::ldmatrix_x4(r, row, false);
#else
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#endif
}
__device__ __forceinline__ void ldsm4t(uint32_t (&r)[4], const uint16_t *row) {
#ifdef TTT_EMU
    emu::ldmatrix_x4(r, row, true);
#else
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#endif
}

/* The transpose of an 8 x 8 bf16 matrix held one register a lane in the fragment layout (lane 4 g + t: row g,
 * columns 2t, 2t + 1), in the same layout. */
__device__ __forceinline__ uint32_t movt(uint32_t a) {
#ifdef TTT_EMU
    return emu::movmatrix_trans(a);
#else
    uint32_t d;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(d) : "r"(a));
    return d;
#endif
}

/* 16 bytes global -> shared, asynchronously; zeros where !valid. */
__device__ __forceinline__ void cp16(void *dst, const void *src, bool valid) {
#ifdef TTT_EMU
    emu::cp_async(dst, src, 16, valid ? 16 : 0);
#else
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
#endif
}
__device__ __forceinline__ void cp_commit() {
#ifdef TTT_EMU
    emu::cp_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void cp_wait() {
#ifdef TTT_EMU
    emu::cp_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/* Inter-block signalling for the one-kernel backward (bwd1). The emulator runs blocks one after another in
 * grid order, so a block that waits finds the value there already or never will: emu::wait_value aborts then
 * (on a GPU it would hang). */
__device__ __forceinline__ void wait_value(const unsigned *c, unsigned want) { /* ld.acquire.gpu until *c == want */
#ifdef TTT_EMU
    emu::wait_value(c, want);
#else
    unsigned v;
    do {
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(c) : "memory");
    } while (v != want);
#endif
}
__device__ __forceinline__ void store_release(unsigned *c, unsigned v) {
#ifdef TTT_EMU
    emu::store_release(c, v);
#else
    asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(c), "r"(v) : "memory");
#endif
}
__device__ __forceinline__ unsigned take_ticket(unsigned *c) {
#ifdef TTT_EMU
    return emu::atomic_add(c, 1u);
#else
    return atomicAdd(c, 1u);
#endif
}
/* f32 pairs in global memory another block wrote or will read: L2 only (.cg), never a stale L1 line */
__device__ __forceinline__ float2 load_cg(const float *a) {
#ifdef TTT_EMU
    return make_float2(a[0], a[1]);
#else
    return __ldcg(reinterpret_cast<const float2 *>(a));
#endif
}
__device__ __forceinline__ void store_cg(float *a, float2 v) {
#ifdef TTT_EMU
    a[0] = v.x, a[1] = v.y;
#else
    __stcg(reinterpret_cast<float2 *>(a), v);
#endif
}

/* 2^x (flushing subnormal results to zero; 2^-inf = 0) */
__device__ __forceinline__ float ex2(float x) {
#ifdef TTT_EMU
    return exp2f(x);
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
#endif
}

/* ---- helpers ------------------------------------------------------------------------------------------------ */

__device__ __forceinline__ uint16_t *smem16() { return reinterpret_cast<uint16_t *>(ATTN_SMEM()); }

using attn_mask::key_range; /* attention_mask.cuh: the masking convention of every fused kernel */
using attn_mask::query_range;
using attn_mask::row_window;
using attn_mask::visible;

/* Whether some pair of queries [q0, q0 + nq) and keys [k0, k0 + nk) is hidden or
 * out of range: only then do the kernels test each element. */
__device__ __forceinline__ bool needs_mask(const Params &p, int64_t q0, int nq, int64_t k0, int nk) {
    if (q0 + nq > p.tq || k0 + nk > p.tk) return true;
    if (!p.causal) return false;
    const int64_t first = p.off + q0, last = p.off + q0 + nq - 1;
    return k0 + nk - 1 > first || (p.window > 0 && k0 <= last - p.window);
}

/* The mask on one warp's scores, for the tiles needs_mask flags (the caller's one uniform branch, so that the
 * other tiles run none of this): an invisible or out-of-range pair's score becomes -inf, so its P, and every
 * product with P, is exactly 0 (the same bits as zeroing P after the exponential).
 * mask_q: queries [qw, qw + 16) (rows g, g + 8) x keys kc + 8 j + 2 t4 + e (the mma accumulator layout);
 * mask_k: the transposed scores, keys [kw, kw + 16) (rows) x queries qc + 8 j + 2 t4 + e. */
template <int NT>
__device__ __forceinline__ void mask_q(const Params &p, float (&s)[NT][4], int64_t qw, int64_t kc, int g, int t4) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int64_t qi = qw + g + 8 * h;
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 2; e++)
                if (!(qi < p.tq && visible(p, qi, kc + j * 8 + 2 * t4 + e))) s[j][2 * h + e] = -INFINITY;
    }
}
template <int NT>
__device__ __forceinline__ void mask_k(const Params &p, float (&s)[NT][4], int64_t kw, int64_t qc, int g, int t4) {
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int64_t qi = qc + j * 8 + 2 * t4 + e;
#pragma unroll
            for (int h = 0; h < 2; h++)
                if (!(qi < p.tq && visible(p, qi, kw + g + 8 * h))) s[j][2 * h + e] = -INFINITY;
        }
}

/* Stored dS: the query tiles [*qt0, *qt1) (tiles of BQ) that key tile kt (tiles of BC) sees, the stored tiles of
 * that key tile (empty: none); and ds_first, the index among a head's stored tiles of key tile kt's first one (the
 * counts of the key tiles before it; host and device, so the launcher sizes the workspace with the same sum). */
template <int BC, int BQ, typename P>
__host__ __device__ __forceinline__ void ds_query_tiles(const P &p, int64_t kt, int64_t *qt0, int64_t *qt1) {
    const int64_t k0 = kt * BC;
    int64_t lo, hi;
    query_range(p, k0, k0 + BC < p.tk ? k0 + BC : (int64_t)p.tk, &lo, &hi);
    *qt0 = lo / BQ, *qt1 = hi > lo ? (hi + BQ - 1) / BQ : lo / BQ;
}
template <int BC, int BQ, typename P> __host__ __device__ __forceinline__ int64_t ds_first(const P &p, int64_t kt) {
    int64_t n = 0;
    for (int64_t j = 0; j < kt; j++) {
        int64_t a, b;
        ds_query_tiles<BC, BQ>(p, j, &a, &b);
        n += b - a;
    }
    return n;
}

/* This block's share [*kt0, *kt1) of the key tiles [kt0, kt1) when the keys are split (blockIdx.z of
 * p.n_split; equal shares of whole tiles, the last ones possibly empty). */
__device__ __forceinline__ void split_tiles(const Params &p, int64_t *kt0, int64_t *kt1) {
    if (p.n_split <= 1) return;
    const int64_t per = (*kt1 - *kt0 + p.n_split - 1) / p.n_split, lo = *kt0 + (int64_t)blockIdx.z * per;
    *kt0 = lo < *kt1 ? lo : *kt1;
    if (*kt0 + per < *kt1) *kt1 = *kt0 + per;
}

/* dst[r * (D + 8) + c] = src[(row0 + r) * D + c] for r < ROWS, c < D; zero rows at
 * or past n_rows. Asynchronous (cp.async, the caller commits and waits) when
 * aligned, else plain loads. */
template <int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_rows(uint16_t *dst, const uint16_t *src, int64_t row0, int64_t n_rows,
                                          int aligned) {
    constexpr int LD = D + 8, CH = D / 8; /* 16-byte chunks per row */
    for (int e = threadIdx.x; e < ROWS * CH; e += THREADS) {
        const int r = e / CH, c = (e % CH) * 8;
        const bool in = row0 + r < n_rows;
        uint16_t *d = dst + r * LD + c;
        if (aligned) {
            cp16(d, in ? src + (row0 + r) * D + c : src, in);
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++) d[i] = in ? src[(row0 + r) * D + c + i] : (uint16_t)0;
        }
    }
}

__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

/* Lane offsets of ldmatrix.x4 row addresses (element units, row stride ld):
 * a_off: the A fragment of a 16 x 16 tile (also the B fragments of two
 *        8-column tiles of a [k][n] tile, loaded with .trans);
 * b_off: the B fragments of two 8-row tiles of an [n][k] tile (k-steps lo, hi). */
__device__ __forceinline__ int a_off(int lane, int ld) { return ((lane & 7) + 8 * ((lane >> 3) & 1)) * ld + 8 * (lane >> 4); }
__device__ __forceinline__ int b_off(int lane, int ld) { return ((lane & 7) + 8 * (lane >> 4)) * ld + 8 * ((lane >> 3) & 1); }

/* The A fragment of 16 columns from two adjacent accumulator tiles. */
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = pack2(c0[0], c0[1]);
    a[1] = pack2(c0[2], c0[3]);
    a[2] = pack2(c1[0], c1[1]);
    a[3] = pack2(c1[2], c1[3]);
}

/* The A fragments (16 rows of a warp's row group m, k-step ks) of a [rows, D] shared tile, from
 * registers when they were loaded once (HOLD), else from shared memory. */
template <int D, int MW, bool HOLD> struct AFrags {
    uint32_t f[HOLD ? MW : 1][HOLD ? D / 16 : 1][4];
    __device__ __forceinline__ void load(const uint16_t *rows, int warp, int lane) {
        if (HOLD) {
#pragma unroll
            for (int m = 0; m < MW; m++)
#pragma unroll
                for (int ks = 0; ks < D / 16; ks++)
                    ldsm4(f[HOLD ? m : 0][HOLD ? ks : 0], rows + (warp * MW + m) * 16 * (D + 8) + ks * 16 + a_off(lane, D + 8));
        }
    }
    __device__ __forceinline__ void get(uint32_t (&a)[4], const uint16_t *rows, int warp, int lane, int m, int ks) {
        if (HOLD) {
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = f[HOLD ? m : 0][HOLD ? ks : 0][i];
        } else {
            ldsm4(a, rows + (warp * MW + m) * 16 * (D + 8) + ks * 16 + a_off(lane, D + 8));
        }
    }
    /* The fragment to use: the held registers themselves, else a (from get). Not copying the held ones keeps
     * the forward's held path compiling as before the reload option (a copy reorders ptxas's registers). */
    __device__ __forceinline__ const uint32_t (&pick(const uint32_t (&a)[4], int m, int ks) const)[4] {
        return HOLD ? f[HOLD ? m : 0][HOLD ? ks : 0] : a;
    }
};

/* ---- forward ------------------------------------------------------------------------------------------------ */

/* NW warps of MW x 16 query rows each; key tiles of BK. The options (OPT) change neither SMEM nor the results. */
template <int D, int NW, int MW, int BK> struct Fwd {
    static constexpr int BR = 16 * NW * MW, THREADS = 32 * NW, LD = D + 8;
    static constexpr int SMEM = (BR + 4 * BK) * LD * 2; /* Q; K and V, two buffers each */
};

/* Forward options (bits of OPT; 0: Q held, K and V of a tile waited for together, the launchers' choice today).
 * FWD_RELOAD_Q: Q's A fragments are read from sQ at each k-step of S = Q K^T instead of held in registers (D / 4
 *   registers per row group), so a warp can own more rows without the register cliff that held MW = 2 hits
 *   (FlashAttention-2's 4 warps x 32 rows).
 * FWD_V_LATE: K and V are separate cp.async groups and V is waited for only before P V, so its copy runs under
 *   S = Q K^T and the softmax too (FlashAttention-2's order); one more barrier per tile. */
enum { FWD_RELOAD_Q = 1, FWD_V_LATE = 2 };

template <int D, int NW, int MW, int BK, int MINB, int OPT = 0>
__global__ void __launch_bounds__(32 * NW, MINB) fwd(Params p) {
    using C = Fwd<D, NW, MW, BK>;
    constexpr int BR = C::BR, T = C::THREADS, LD = C::LD, ND = D / 8, NC = BK / 8;
    constexpr bool HOLD = !(OPT & FWD_RELOAD_Q), VL = (OPT & FWD_V_LATE) != 0;
    uint16_t *sQ = smem16(), *sK = sQ + BR * LD, *sV = sK + 2 * BK * LD;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int n_qt = (p.tq + BR - 1) / BR;
    const int64_t q0 = (int64_t)(n_qt - 1 - (int)blockIdx.x) * BR; /* latest (heaviest under causal) tiles first */
    const int64_t bh = blockIdx.y;
    const uint16_t *q = p.q + bh * p.tq * D, *k = p.k + bh * p.tk * D, *v = p.v + bh * p.tk * D;
    const float sl2 = p.scale * LOG2E;
    int64_t k_lo, k_hi;
    key_range(p, q0, q0 + BR < p.tq ? q0 + BR : p.tq, &k_lo, &k_hi);
    int64_t kt0 = k_lo / BK, kt1 = (k_hi + BK - 1) / BK; /* never empty: each query sees a key */
    split_tiles(p, &kt0, &kt1);
    if (kt0 >= kt1) { /* an empty share of split keys: its rows saw nothing */
        for (int i = threadIdx.x; i < BR; i += T)
            if (q0 + i < p.tq) p.part_lse[((int64_t)blockIdx.z * gridDim.y + bh) * p.tq + q0 + i] = -INFINITY;
        return;
    }

    load_rows<D, BR, T>(sQ, q, q0, p.tq, p.aligned);
    cp_commit();
    load_rows<D, BK, T>(sK, k, kt0 * BK, p.tk, p.aligned);
    if (VL) cp_commit();
    load_rows<D, BK, T>(sV, v, kt0 * BK, p.tk, p.aligned);
    cp_commit();
    AFrags<D, MW, HOLD> qf;
    if (HOLD) { /* once Q has landed (reloaded, Q is first read after the loop's wait) */
        cp_wait<VL ? 2 : 1>();
        __syncthreads();
        qf.load(sQ, warp, lane);
    }

    float o[MW][ND][4], mx[MW][2], l[MW][2];
#pragma unroll
    for (int m = 0; m < MW; m++) {
#pragma unroll
        for (int h = 0; h < 2; h++) mx[m][h] = -INFINITY, l[m][h] = 0.f;
#pragma unroll
        for (int n = 0; n < ND; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) o[m][n][i] = 0.f;
    }

    for (int kt = (int)kt0; kt < (int)kt1; kt++) { /* 32-bit key indices (lengths are ints): fewer registers */
        const int buf = (int)((kt - kt0) & 1);
        if (kt + 1 < kt1) {
            load_rows<D, BK, T>(sK + (buf ^ 1) * BK * LD, k, (kt + 1) * BK, p.tk, p.aligned);
            if (VL) cp_commit();
            load_rows<D, BK, T>(sV + (buf ^ 1) * BK * LD, v, (kt + 1) * BK, p.tk, p.aligned);
            cp_commit();
            cp_wait<VL ? 3 : 1>(); /* this tile's K (and V unless VL) */
        } else {
            cp_wait<VL ? 1 : 0>();
        }
        __syncthreads();
        const uint16_t *cK = sK + buf * BK * LD, *cV = sV + buf * BK * LD;
        const int k0 = kt * BK;

        /* S = Q K^T */
        float s[MW][NC][4];
#pragma unroll
        for (int m = 0; m < MW; m++)
#pragma unroll
            for (int n = 0; n < NC; n++)
#pragma unroll
                for (int i = 0; i < 4; i++) s[m][n][i] = 0.f;
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            uint32_t aq[MW][4]; /* this k-step's reloaded fragments (unused where held) */
#pragma unroll
            for (int m = 0; m < MW; m++)
                if (!HOLD) qf.get(aq[m], sQ, warp, lane, m, ks);
#pragma unroll
            for (int np = 0; np < NC / 2; np++) {
                uint32_t b[4];
                ldsm4(b, cK + np * 16 * LD + ks * 16 + b_off(lane, LD));
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma(s[m][2 * np], qf.pick(aq[m], m, ks), b[0], b[1]);
                    mma(s[m][2 * np + 1], qf.pick(aq[m], m, ks), b[2], b[3]);
                }
            }
        }

        /* the mask, on the tiles that need one: one uniform branch around all of it, so that the other tiles
         * run none of its instructions (inside the row loop below, the compiler predicated it on every tile) */
        if (needs_mask(p, q0, BR, k0, BK)) {
#pragma unroll
            for (int m = 0; m < MW; m++)
#pragma unroll
                for (int h = 0; h < 2; h++) { /* this row's visible keys, as offsets from this thread's first column */
                    int lo, hi;
                    row_window(p, (int)q0 + (warp * MW + m) * 16 + g + 8 * h, k0 + 2 * t4, &lo, &hi);
#pragma unroll
                    for (int n = 0; n < NC; n++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            if (n * 8 + e < lo || n * 8 + e > hi) s[m][n][2 * h + e] = -INFINITY;
                }
        }

        /* online softmax, in log2 units of the scaled scores */
#pragma unroll
        for (int m = 0; m < MW; m++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float row_max = -INFINITY;
#pragma unroll
                for (int n = 0; n < NC; n++)
#pragma unroll
                    for (int e = 0; e < 2; e++) row_max = fmaxf(row_max, s[m][n][2 * h + e]);
                const float m_new = fmaxf(mx[m][h], quad_max(row_max));
                const float m_use = m_new == -INFINITY ? 0.f : m_new * sl2; /* a row that has seen nothing yet */
                const float alpha = ex2(fmaf(mx[m][h], sl2, -m_use));
                float sum = 0.f;
#pragma unroll
                for (int n = 0; n < NC; n++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float &x = s[m][n][2 * h + e];
                        x = ex2(fmaf(x, sl2, -m_use));
                        sum += x;
                    }
                l[m][h] = l[m][h] * alpha + sum; /* this thread's columns; the quad sums at the end */
                mx[m][h] = m_new;
#pragma unroll
                for (int n = 0; n < ND; n++) o[m][n][2 * h] *= alpha, o[m][n][2 * h + 1] *= alpha;
            }

        if (VL) { /* this tile's V */
            if (kt + 1 < kt1) cp_wait<2>();
            else cp_wait<0>();
            __syncthreads();
        }

        /* O += P V */
#pragma unroll
        for (int ks = 0; ks < BK / 16; ks++) {
            uint32_t pa[MW][4];
#pragma unroll
            for (int m = 0; m < MW; m++) acc_to_a(pa[m], s[m][2 * ks], s[m][2 * ks + 1]);
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                uint32_t b[4];
                ldsm4t(b, cV + ks * 16 * LD + dp * 16 + a_off(lane, LD));
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma(o[m][2 * dp], pa[m], b[0], b[1]);
                    mma(o[m][2 * dp + 1], pa[m], b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* every read of this buffer is done before it is refilled */
    }

    /* split keys: the share's normalized output and log-sum-exp in f32, which fwd_combine adds up; else out in bf16 */
    const bool split = p.n_split > 1;
    const int64_t row0 = (split ? (int64_t)blockIdx.z * gridDim.y + bh : bh) * p.tq;
#pragma unroll
    for (int m = 0; m < MW; m++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t qi = q0 + (warp * MW + m) * 16 + g + 8 * h;
            const float lsum = quad_sum(l[m][h]);
            if (qi >= p.tq) continue;
            /* a row may see no key of a share (never of the whole range) */
            const float inv = lsum > 0.f ? 1.f / lsum : 0.f;
            const float lse = lsum > 0.f ? (mx[m][h] * sl2 + log2f(lsum)) * LN2 : -INFINITY;
#pragma unroll
            for (int n = 0; n < ND; n++) {
                const float lo = o[m][n][2 * h] * inv, hi = o[m][n][2 * h + 1] * inv;
                if (split) *reinterpret_cast<float2 *>(p.part + (row0 + qi) * D + n * 8 + 2 * t4) = make_float2(lo, hi);
                else *reinterpret_cast<uint32_t *>(p.out + (row0 + qi) * D + n * 8 + 2 * t4) = pack2(lo, hi);
            }
            float *lse_dst = split ? p.part_lse : p.lse_out;
            if (lse_dst && t4 == 0) lse_dst[row0 + qi] = lse;
        }
}

/* Split keys, forward: out[row] = sum_s exp(lse_s - lse) o_s with lse = log sum_s exp(lse_s), shares in order;
 * one warp per row, 8 rows a block. Shares that saw no key of the row (lse_s = -inf) are not read. */
template <int D>
__global__ void __launch_bounds__(256) fwd_combine(Params p, int64_t rows) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (row >= rows) return;
    float mx = -INFINITY;
    for (int s = 0; s < p.n_split; s++) mx = fmaxf(mx, p.part_lse[s * rows + row]);
    float sum = 0.f, acc[D / 32];
#pragma unroll
    for (int i = 0; i < D / 32; i++) acc[i] = 0.f;
    for (int s = 0; s < p.n_split; s++) {
        const float ls = p.part_lse[s * rows + row];
        if (ls == -INFINITY) continue;
        const float w = expf(ls - mx);
        sum += w;
#pragma unroll
        for (int i = 0; i < D / 32; i++) acc[i] += w * p.part[(s * rows + row) * D + lane + 32 * i];
    }
    const float inv = 1.f / sum;
#pragma unroll
    for (int i = 0; i < D / 32; i++) p.out[row * D + lane + 32 * i] = (uint16_t)(pack2(acc[i] * inv, 0.f) & 0xffffu);
    if (p.lse_out && lane == 0) p.lse_out[row] = mx + logf(sum);
}

/* Split keys, dQ: dq[row] = sum_s part_s[row] in share order, rounded to bf16 once. */
template <int D>
__global__ void __launch_bounds__(256) dq_combine(Params p, int64_t rows) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (row >= rows) return;
#pragma unroll
    for (int i = 0; i < D / 32; i++) {
        float a = 0.f;
        for (int s = 0; s < p.n_split; s++) a += p.part[(s * rows + row) * D + lane + 32 * i];
        p.dq[row * D + lane + 32 * i] = (uint16_t)(pack2(a, 0.f) & 0xffffu);
    }
}

/* ---- backward ----------------------------------------------------------------------------------------------- */

/* delta[row] = sum_c dout[row][c] out[row][c] (f32): one warp per row, 8 rows a block. */
template <int D>
__global__ void __launch_bounds__(256) delta(Params p, int64_t rows) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    float s = 0.f;
    if (row < rows) {
#pragma unroll
        for (int c = lane; c < D; c += 32) s += bf16_to_f32(p.dout[row * D + c]) * bf16_to_f32(p.o[row * D + c]);
    }
#pragma unroll
    for (int m = 16; m >= 1; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
    if (row < rows && lane == 0) p.delta_out[row] = s;
}

/* dK and dV of one tile of 16 NW MW keys (MW groups of 16 per warp), over the tiles of BQ queries that see it:
 *   S^T = K Q^T, P^T = exp(scale S^T - lse), dP^T = V dO^T, dS^T = P^T (dP^T - delta),
 *   dV += P^T dO, dK += dS^T Q (times scale at the end). */
template <int D, int NW, int MW, int BQ> struct Dkdv {
    static constexpr int BC = 16 * NW * MW, THREADS = 32 * NW, LD = D + 8;
    static constexpr int SMEM = (2 * BC + 4 * BQ) * LD * 2 + 4 * BQ * 4; /* K, V; Q, dO x2; lse, delta x2 */
};

template <int D, int NW, int BQ>
__device__ __forceinline__ void load_q_tile(const Params &p, uint16_t *sQ, uint16_t *sdO, float *sL, float *sDl,
                                            const uint16_t *q, const uint16_t *dout, int64_t bh, int64_t qs0) {
    constexpr int T = 32 * NW;
    load_rows<D, BQ, T>(sQ, q, qs0, p.tq, p.aligned);
    load_rows<D, BQ, T>(sdO, dout, qs0, p.tq, p.aligned);
    for (int i = threadIdx.x; i < BQ; i += T) {
        const int64_t qi = qs0 + i;
        sL[i] = qi < p.tq ? p.lse[bh * p.tq + qi] * LOG2E : 0.f;
        sDl[i] = qi < p.tq ? p.delta[bh * p.tq + qi] : 0.f;
    }
}

/* bwd1: the key tiles [*first, *last] (tiles of BC) that query tile qt (tiles of BQ) sees. A key tile and a query
 * tile see each other iff some pair of theirs is visible (key_range and query_range give exact ranges), so these
 * are exactly the key tiles whose blocks visit query tile qt, and every one of them adds a share of dQ. */
template <int BC, int BQ>
__device__ __forceinline__ void dq_turns(const Params &p, int64_t qt, int64_t *first, int64_t *last) {
    const int64_t q0 = qt * BQ;
    int64_t lo, hi;
    key_range(p, q0, q0 + BQ < p.tq ? q0 + BQ : p.tq, &lo, &hi);
    *first = lo / BC, *last = (hi + BC - 1) / BC - 1;
}

/* bwd1: key tile kt's share of query tile qt's dQ, dS K, from dS^T (sdS, [BC][BQ + 8]) and K in shared memory,
 * added to the f32 sums in its turn. The warps split the BQ x D share into 16 x 16 tiles, each summed over all BC
 * keys by one warp's mma chain (no reduction across warps), before the wait: only the read, add and write of the
 * sums is in the serialized part. The block's turn comes after key tiles last, last - 1, ..., kt + 1 have added
 * theirs: the semaphore of (bh, qt) then reads last - kt. */
template <int D, int NW, int BC, int BQ, bool PF>
__device__ __forceinline__ void dq_share(const Params &p, const uint16_t *sK, const uint16_t *sdS, const float *sAcc,
                                         int64_t kt, int64_t qt, int64_t bh, int64_t first, int64_t last) {
    constexpr int LD = D + 8, LDS = BQ + 8, UW = (BQ / 16) * (D / 16) / NW;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int64_t n_qt = (p.tq + BQ - 1) / BQ, q0 = qt * BQ;
    __syncthreads(); /* every warp's dS^T is in sdS */
    float c[UW][2][4];
#pragma unroll
    for (int w = 0; w < UW; w++) {
        const int u = warp * UW + w, rg = u / (D / 16), cp = u % (D / 16); /* query rows 16 rg.., columns 16 cp.. */
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) c[w][n][i] = 0.f;
#pragma unroll
        for (int ks = 0; ks < BC / 16; ks++) {
            uint32_t a[4], b[4];
            ldsm4t(a, sdS + ks * 16 * LDS + rg * 16 + b_off(lane, LDS)); /* dS (queries x keys) from dS^T */
            ldsm4t(b, sK + ks * 16 * LD + cp * 16 + a_off(lane, LD));
            mma(c[w][0], a, b[0], b[1]);
            mma(c[w][1], a, b[2], b[3]);
        }
    }
    if (PF) {
        cp_wait<0>(); /* the sums, fetched at the step's start once the turn had come (bwd1_turn_fetch) */
    } else if (threadIdx.x == 0 && kt != last) {
        wait_value(p.sem + bh * n_qt + qt, (unsigned)(last - kt));
    }
    __syncthreads(); /* this block's turn has come (thread 0 saw it); PF: every thread's copy has landed */
    float *acc = p.dq_acc + (bh * p.tq + q0) * D;
    uint16_t *dq = p.dq + (bh * p.tq + q0) * D;
#pragma unroll
    for (int w = 0; w < UW; w++) {
        const int u = warp * UW + w, rg = u / (D / 16), cp = u % (D / 16);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int row = rg * 16 + g + 8 * h;
            if (q0 + row >= p.tq) continue;
#pragma unroll
            for (int n = 0; n < 2; n++) {
                const int col = cp * 16 + n * 8 + 2 * t4;
                float2 v = make_float2(c[w][n][2 * h], c[w][n][2 * h + 1]);
                if (kt != last) { /* the sum so far, then this share */
                    const float2 o = PF ? *reinterpret_cast<const float2 *>(sAcc + row * D + col)
                                        : load_cg(acc + row * D + col);
                    v = make_float2(o.x + v.x, o.y + v.y);
                }
                if (kt == first) *reinterpret_cast<uint32_t *>(dq + row * D + col) = pack2(v.x * p.scale, v.y * p.scale);
                else store_cg(acc + row * D + col, v);
            }
        }
    }
}

/* bwd1: after dq_share and a barrier (every thread's writes of the sums are done), the next key tile's turn.
 * The query tile's last turn (kt == first) leaves the semaphore as it is: the launcher zeroes them all. */
template <int BQ, bool FENCE>
__device__ __forceinline__ void dq_release(const Params &p, int64_t kt, int64_t qt, int64_t bh, int64_t first,
                                           int64_t last) {
    if (threadIdx.x == 0 && kt != first) {
        if (FENCE) __threadfence();
        store_release(p.sem + bh * ((p.tq + BQ - 1) / BQ) + qt, (unsigned)(last - kt + 1));
    }
}

/* bwd1's option bits (the last template field; the dev harness times them side by side):
 * BWD1_HOLD: the warp's K and V fragments stay in registers (as bwd_dkdv's HOLD).
 * BWD1_PREFETCH: a step waits for its turn at its start (normally already come: the key tile before it in the
 *   order passed this query tile steps ago) and fetches the running sums into shared memory with cp.async, so
 *   their load overlaps the step's products instead of stalling the block after them (Nsight Compute: bwd1's
 *   largest stall beyond dK/dV's was that load).
 * BWD1_NO_FENCE: the turn is handed on by the barrier and a release store alone (as CUTLASS's semaphore), without
 *   __threadfence() before it: the barrier orders every thread's writes of the sums before thread 0's release. */
enum { BWD1_HOLD = 1, BWD1_PREFETCH = 2, BWD1_NO_FENCE = 4 };
/* dkdv_tile's bit for bwd_dkdv_ds (not bwd1's): also store each pair's dS^T (Params::ds) */
enum { DKDV_STORE_DS = 8 };

/* The one-kernel backward (bwd1, below): dK/dV's kernel that also adds each (key tile, query tile) pair's
 * share of dQ, dS K, into f32 sums in global memory, the key tiles of a query tile one after another in a fixed
 * order. Shared memory: dK/dV's, then dS^T of the current pair [BC][BQ + 8] bf16, (BWD1_PREFETCH) the running
 * sums of the current query tile [BQ][D] f32, then the block's ticket. */
template <int D, int NW, int MW, int BQ, int OPT = 0> struct Bwd1 {
    using Kv = Dkdv<D, NW, MW, BQ>;
    static constexpr int BC = Kv::BC, THREADS = Kv::THREADS, LDS = BQ + 8;
    static constexpr int ACC = (OPT & BWD1_PREFETCH) ? BQ * D * 4 : 0;
    static constexpr int SMEM = Kv::SMEM + BC * LDS * 2 + ACC + 16;
    static_assert((Kv::SMEM + BC * LDS * 2) % 16 == 0, "bwd1: the running sums' copies need 16-byte alignment");
    static constexpr int UNITS = (BQ / 16) * (D / 16); /* 16 x 16 tiles of the pair's dQ share, split over the warps */
    static_assert(UNITS % NW == 0, "bwd1: the warps must split dQ's 16 x 16 tiles evenly");
};

/* The body of bwd_dkdv (DQ false: key tile blockIdx.x of head blockIdx.y) and bwd1 (DQ true: key tile kt of head
 * bh_dq). HOLD: the warp's K and V fragments stay in registers (else they are reloaded from shared memory).
 * bwd_dkdv reads blockIdx here, in the order it always did: ptxas's register allocation for it (255 registers
 * in the d 64 launchers' shape) is sensitive even to the order of those two reads. */
template <int D, int NW, int MW, int BQ, bool HOLD, bool DQ, int DQO = 0>
__device__ __forceinline__ void dkdv_tile(Params p, int64_t kt, int64_t bh_dq) {
    using C = Dkdv<D, NW, MW, BQ>;
    constexpr int BC = C::BC, LD = C::LD, ND = D / 8, NQ = BQ / 8, LDS = BQ + 8;
    constexpr bool PF = DQ && (DQO & BWD1_PREFETCH) != 0, FENCE = !(DQO & BWD1_NO_FENCE);
    constexpr bool DS = !DQ && (DQO & DKDV_STORE_DS) != 0;
    uint16_t *sK = smem16(), *sV = sK + BC * LD, *sQ = sV + BC * LD, *sdO = sQ + 2 * BQ * LD;
    float *sL = reinterpret_cast<float *>(sdO + 2 * BQ * LD), *sDl = sL + 2 * BQ;
    uint16_t *sdS = reinterpret_cast<uint16_t *>(sDl + 2 * BQ); /* DQ: dS^T [BC][LDS] */
    float *sAcc = reinterpret_cast<float *>(sdS + BC * LDS);     /* PF: the running sums [BQ][D] */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int64_t k0 = DQ ? kt * BC : (int64_t)blockIdx.x * BC, bh = DQ ? bh_dq : blockIdx.y;
    const uint16_t *q = p.q + bh * p.tq * D, *k = p.k + bh * p.tk * D, *v = p.v + bh * p.tk * D;
    const uint16_t *dout = p.dout + bh * p.tq * D;
    const float sl2 = p.scale * LOG2E;
    int64_t i_lo, i_hi;
    query_range(p, k0, k0 + BC < p.tk ? k0 + BC : p.tk, &i_lo, &i_hi);
    const int64_t qt0 = i_lo / BQ, qt1 = i_hi > i_lo ? (i_hi + BQ - 1) / BQ : qt0; /* may be empty: zeros */
    /* DS: this key tile's stored tiles, one per query tile from qt0 (ds_query_tiles gives the same qt0, qt1) */
    uint16_t *ds = DS ? p.ds + (bh * p.ds_head + ds_first<BC, BQ>(p, k0 / BC) - qt0) * (int64_t)(BC * BQ) : nullptr;

    float adk[MW][ND][4], adv[MW][ND][4];
#pragma unroll
    for (int m = 0; m < MW; m++)
#pragma unroll
        for (int n = 0; n < ND; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) adk[m][n][i] = adv[m][n][i] = 0.f;

    AFrags<D, MW, HOLD> kf, vf;
    if (qt0 < qt1) {
        load_rows<D, BC, 32 * NW>(sK, k, k0, p.tk, p.aligned);
        load_rows<D, BC, 32 * NW>(sV, v, k0, p.tk, p.aligned);
        load_q_tile<D, NW, BQ>(p, sQ, sdO, sL, sDl, q, dout, bh, qt0 * BQ);
        cp_commit();
    }
    for (int64_t qt = qt0; qt < qt1; qt++) {
        const int buf = (int)((qt - qt0) & 1);
        if (qt + 1 < qt1) {
            load_q_tile<D, NW, BQ>(p, sQ + (buf ^ 1) * BQ * LD, sdO + (buf ^ 1) * BQ * LD, sL + (buf ^ 1) * BQ,
                                   sDl + (buf ^ 1) * BQ, q, dout, bh, (qt + 1) * BQ);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        int64_t first = 0, last = 0; /* DQ: the key tiles that add to this query tile's dQ */
        if (DQ) dq_turns<BC, BQ>(p, qt, &first, &last);
        if (PF && threadIdx.x == 0 && kt != last)
            wait_value(p.sem + bh * ((p.tq + BQ - 1) / BQ) + qt, (unsigned)(last - kt));
        __syncthreads(); /* PF: and the turn has come (thread 0 saw it) */
        if (PF && kt != last) { /* the running sums, under this step's products */
            const float *acc = p.dq_acc + (bh * p.tq + qt * BQ) * D;
            for (int i = threadIdx.x; i < BQ * D / 4; i += 32 * NW) {
                const int row = i / (D / 4);
                cp16(sAcc + 4 * i, acc + 4 * i, qt * BQ + row < p.tq);
            }
            cp_commit();
        }
        if (qt == qt0) kf.load(sK, warp, lane), vf.load(sV, warp, lane);
        const uint16_t *cQ = sQ + buf * BQ * LD, *cdO = sdO + buf * BQ * LD;
        const float *cL = sL + buf * BQ, *cDl = sDl + buf * BQ;
        const int64_t qs0 = qt * BQ;

        /* S^T = K Q^T and dP^T = V dO^T: this warp's keys by BQ queries */
        float st[MW][NQ][4], dpt[MW][NQ][4];
#pragma unroll
        for (int m = 0; m < MW; m++)
#pragma unroll
            for (int n = 0; n < NQ; n++)
#pragma unroll
                for (int i = 0; i < 4; i++) st[m][n][i] = dpt[m][n][i] = 0.f;
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            uint32_t ak[MW][4], av[MW][4];
#pragma unroll
            for (int m = 0; m < MW; m++) kf.get(ak[m], sK, warp, lane, m, ks), vf.get(av[m], sV, warp, lane, m, ks);
#pragma unroll
            for (int np = 0; np < NQ / 2; np++) {
                uint32_t b[4];
                ldsm4(b, cQ + np * 16 * LD + ks * 16 + b_off(lane, LD));
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma(st[m][2 * np], ak[m], b[0], b[1]);
                    mma(st[m][2 * np + 1], ak[m], b[2], b[3]);
                }
                ldsm4(b, cdO + np * 16 * LD + ks * 16 + b_off(lane, LD));
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma(dpt[m][2 * np], av[m], b[0], b[1]);
                    mma(dpt[m][2 * np + 1], av[m], b[2], b[3]);
                }
            }
        }

        if (needs_mask(p, qs0, BQ, k0, BC)) { /* one uniform branch: the other tiles run no mask code */
#pragma unroll
            for (int m = 0; m < MW; m++) mask_k(p, st[m], k0 + (warp * MW + m) * 16, qs0, g, t4);
        }

        /* P^T and dS^T (in st and dpt) */
#pragma unroll
        for (int n = 0; n < NQ; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int col = n * 8 + 2 * t4 + e;
                const float lse2 = cL[col], dlt = cDl[col];
#pragma unroll
                for (int m = 0; m < MW; m++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const float pv = ex2(fmaf(st[m][n][2 * h + e], sl2, -lse2));
                        st[m][n][2 * h + e] = pv;
                        dpt[m][n][2 * h + e] = pv * (dpt[m][n][2 * h + e] - dlt);
                    }
            }

        /* dV += P^T dO, dK += dS^T Q */
#pragma unroll
        for (int ks = 0; ks < BQ / 16; ks++) {
            uint32_t pa[MW][4], da[MW][4];
#pragma unroll
            for (int m = 0; m < MW; m++) {
                acc_to_a(pa[m], st[m][2 * ks], st[m][2 * ks + 1]);
                acc_to_a(da[m], dpt[m][2 * ks], dpt[m][2 * ks + 1]);
                if (DQ) { /* dS^T for dQ's share: keys (rows g, g + 8) by queries (columns 2 t4, 2 t4 + 8) */
                    uint16_t *r = sdS + ((warp * MW + m) * 16 + g) * LDS + ks * 16 + 2 * t4;
                    *reinterpret_cast<uint32_t *>(r) = da[m][0];
                    *reinterpret_cast<uint32_t *>(r + 8 * LDS) = da[m][1];
                    *reinterpret_cast<uint32_t *>(r + 8) = da[m][2];
                    *reinterpret_cast<uint32_t *>(r + 8 * LDS + 8) = da[m][3];
                }
                if (DS) { /* dS of queries 16 ks.. x keys 16 (warp MW + m).., the A fragment of dS^T transposed:
                           * dS's (q 0-7, k 0-7), (q 8-15, k 0-7), (q 0-7, k 8-15), (q 8-15, k 8-15) are dS^T's
                           * (k 0-7, q 0-7), (k 0-7, q 8-15), (k 8-15, q 0-7), (k 8-15, q 8-15) */
                    const uint4 f = make_uint4(movt(da[m][0]), movt(da[m][2]), movt(da[m][1]), movt(da[m][3]));
                    *reinterpret_cast<uint4 *>(ds + (qt * (BQ / 16) + ks) * (BC * 16) + (warp * MW + m) * 256 + lane * 8) = f;
                }
            }
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                uint32_t b[4];
                ldsm4t(b, cdO + ks * 16 * LD + dp * 16 + a_off(lane, LD));
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma(adv[m][2 * dp], pa[m], b[0], b[1]);
                    mma(adv[m][2 * dp + 1], pa[m], b[2], b[3]);
                }
                ldsm4t(b, cQ + ks * 16 * LD + dp * 16 + a_off(lane, LD));
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma(adk[m][2 * dp], da[m], b[0], b[1]);
                    mma(adk[m][2 * dp + 1], da[m], b[2], b[3]);
                }
            }
        }
        if (DQ) dq_share<D, NW, BC, BQ, PF>(p, sK, sdS, sAcc, kt, qt, bh, first, last);
        __syncthreads(); /* every read of this buffer is done before it is refilled */
        if (DQ) dq_release<BQ, FENCE>(p, kt, qt, bh, first, last);
    }

    uint16_t *dk = p.dk + bh * p.tk * D, *dv = p.dv + bh * p.tk * D;
#pragma unroll
    for (int m = 0; m < MW; m++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t kj = k0 + (warp * MW + m) * 16 + g + 8 * h;
            if (kj >= p.tk) continue;
#pragma unroll
            for (int n = 0; n < ND; n++) {
                *reinterpret_cast<uint32_t *>(dk + kj * D + n * 8 + 2 * t4) =
                    pack2(adk[m][n][2 * h] * p.scale, adk[m][n][2 * h + 1] * p.scale);
                *reinterpret_cast<uint32_t *>(dv + kj * D + n * 8 + 2 * t4) =
                    pack2(adv[m][n][2 * h], adv[m][n][2 * h + 1]);
            }
        }
}


/* HOLD: the warp's K and V fragments stay in registers (else they are reloaded from shared memory) */
template <int D, int NW, int MW, int BQ, int MINB, bool HOLD>
__global__ void __launch_bounds__(32 * NW, MINB) bwd_dkdv(Params p) {
    dkdv_tile<D, NW, MW, BQ, HOLD, false>(p, 0, 0);
}

/* bwd_dkdv that also stores each pair's dS^T for bwd_dq_ds (Params::ds; the launcher sizes it with ds_first) */
template <int D, int NW, int MW, int BQ, int MINB, bool HOLD>
__global__ void __launch_bounds__(32 * NW, MINB) bwd_dkdv_ds(Params p) {
    dkdv_tile<D, NW, MW, BQ, HOLD, false, DKDV_STORE_DS>(p, 0, 0);
}

/* One-kernel deterministic backward: dK and dV as bwd_dkdv, and dQ without a second kernel. Each block takes a
 * ticket (an atomic counter: tickets follow the order in which blocks start, so a block holding a ticket only ever
 * waits for blocks that hold smaller ones, which have started and wait only for smaller ones in turn: no deadlock
 * whatever the scheduler does). Ticket t is head t / n_kt, key tile n_kt - 1 - t % n_kt: the last key tiles first,
 * the ones with the least work under a causal mask. A query tile's key tiles add their shares of dQ in decreasing
 * key tile order, each after the one before it (its semaphore counts them): the first writes its share, the
 * others add theirs (a plain read, add and write of f32, no atomics on data), the last (the query tile's first key
 * tile) writes dQ = scale * sum in bf16 instead. Each block walks its query tiles upwards from the diagonal, so
 * under a causal mask block kt reaches a query tile one step after block kt + 1 did and seldom waits. The sums
 * are in a fixed order, so the bits are the same on every run (not the two-kernel path's: that order differs).
 * p.dq_acc and p.sem as in Params; the semaphores and the ticket must be zero at launch. */
template <int D, int NW, int MW, int BQ, int MINB, int OPT>
__global__ void __launch_bounds__(32 * NW, MINB) bwd1(Params p) {
    using B = Bwd1<D, NW, MW, BQ, OPT>;
    const int64_t n_kt = (p.tk + B::BC - 1) / B::BC, n_qt = (p.tq + BQ - 1) / BQ;
    unsigned *ticket = reinterpret_cast<unsigned *>(ATTN_SMEM() + (B::SMEM - 16) / 4);
    if (threadIdx.x == 0) *ticket = take_ticket(p.sem + (int64_t)gridDim.y * n_qt);
    __syncthreads();
    const int64_t t = *ticket;
    dkdv_tile<D, NW, MW, BQ, (OPT & BWD1_HOLD) != 0, true, OPT>(p, n_kt - 1 - t % n_kt, t / n_kt);
}

/* The end of both dQ kernels: the warp's dQ rows (scale times its sums) in bf16, or with split keys this share's
 * f32 partial (dq_combine adds the shares); rows past tq are not written. */
template <int D, int MW>
__device__ __forceinline__ void store_dq(const Params &p, const float (&acc)[MW][D / 8][4], int64_t q0, int64_t bh,
                                         int warp, int g, int t4) {
    float *part = p.n_split > 1 ? p.part + ((int64_t)blockIdx.z * gridDim.y + bh) * p.tq * D : nullptr;
    uint16_t *dq = p.dq + bh * p.tq * D;
#pragma unroll
    for (int m = 0; m < MW; m++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t qi = q0 + (warp * MW + m) * 16 + g + 8 * h;
            if (qi >= p.tq) continue;
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                const float lo = acc[m][n][2 * h] * p.scale, hi = acc[m][n][2 * h + 1] * p.scale;
                if (part) *reinterpret_cast<float2 *>(part + qi * D + n * 8 + 2 * t4) = make_float2(lo, hi);
                else *reinterpret_cast<uint32_t *>(dq + qi * D + n * 8 + 2 * t4) = pack2(lo, hi);
            }
        }
}

/* dQ of one tile of 16 NW MW queries (MW groups of 16 per warp), over the key tiles (BK) it sees:
 *   S = Q K^T, P = exp(scale S - lse), dP = dO V^T, dS = P (dP - delta), dQ += dS K (times scale). */
template <int D, int NW, int MW, int BK> struct Dq {
    static constexpr int BR = 16 * NW * MW, THREADS = 32 * NW, LD = D + 8;
    static constexpr int SMEM = (2 * BR + 4 * BK) * LD * 2; /* Q, dO; K and V x2 */
};

/* HOLD: the warp's Q and dO fragments stay in registers (else they are reloaded from shared memory) */
template <int D, int NW, int MW, int BK, int MINB, bool HOLD>
__global__ void __launch_bounds__(32 * NW, MINB) bwd_dq(Params p) {
    using C = Dq<D, NW, MW, BK>;
    constexpr int BR = C::BR, T = C::THREADS, LD = C::LD, ND = D / 8, NC = BK / 8;
    uint16_t *sQ = smem16(), *sdO = sQ + BR * LD, *sK = sdO + BR * LD, *sV = sK + 2 * BK * LD;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int n_qt = (p.tq + BR - 1) / BR;
    const int64_t q0 = (int64_t)(n_qt - 1 - (int)blockIdx.x) * BR, bh = blockIdx.y;
    const uint16_t *q = p.q + bh * p.tq * D, *k = p.k + bh * p.tk * D, *v = p.v + bh * p.tk * D;
    const uint16_t *dout = p.dout + bh * p.tq * D;
    const float sl2 = p.scale * LOG2E;
    int64_t k_lo, k_hi;
    key_range(p, q0, q0 + BR < p.tq ? q0 + BR : p.tq, &k_lo, &k_hi);
    int64_t kt0 = k_lo / BK, kt1 = (k_hi + BK - 1) / BK;
    split_tiles(p, &kt0, &kt1);
    if (kt0 >= kt1) { /* an empty share of split keys adds zeros */
        float *part = p.part + ((int64_t)blockIdx.z * gridDim.y + bh) * p.tq * D;
        for (int64_t i = threadIdx.x; i < (int64_t)BR * D; i += T)
            if (q0 + i / D < p.tq) part[q0 * D + i] = 0.f;
        return;
    }

    load_rows<D, BR, T>(sQ, q, q0, p.tq, p.aligned);
    load_rows<D, BR, T>(sdO, dout, q0, p.tq, p.aligned);
    load_rows<D, BK, T>(sK, k, kt0 * BK, p.tk, p.aligned);
    load_rows<D, BK, T>(sV, v, kt0 * BK, p.tk, p.aligned);
    cp_commit();
    float lse2[MW][2], dlt[MW][2];
#pragma unroll
    for (int m = 0; m < MW; m++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t qi = q0 + (warp * MW + m) * 16 + g + 8 * h;
            lse2[m][h] = qi < p.tq ? p.lse[bh * p.tq + qi] * LOG2E : 0.f;
            dlt[m][h] = qi < p.tq ? p.delta[bh * p.tq + qi] : 0.f;
        }
    float acc[MW][ND][4];
#pragma unroll
    for (int m = 0; m < MW; m++)
#pragma unroll
        for (int n = 0; n < ND; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[m][n][i] = 0.f;
    AFrags<D, MW, HOLD> qf, dof;

    for (int64_t kt = kt0; kt < kt1; kt++) {
        const int buf = (int)((kt - kt0) & 1);
        if (kt + 1 < kt1) {
            load_rows<D, BK, T>(sK + (buf ^ 1) * BK * LD, k, (kt + 1) * BK, p.tk, p.aligned);
            load_rows<D, BK, T>(sV + (buf ^ 1) * BK * LD, v, (kt + 1) * BK, p.tk, p.aligned);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        if (kt == kt0) qf.load(sQ, warp, lane), dof.load(sdO, warp, lane);
        const uint16_t *cK = sK + buf * BK * LD, *cV = sV + buf * BK * LD;
        const int64_t k0 = kt * BK;

        float s[MW][NC][4], dp[MW][NC][4];
#pragma unroll
        for (int m = 0; m < MW; m++)
#pragma unroll
            for (int n = 0; n < NC; n++)
#pragma unroll
                for (int i = 0; i < 4; i++) s[m][n][i] = dp[m][n][i] = 0.f;
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            uint32_t aq[MW][4], ad[MW][4];
#pragma unroll
            for (int m = 0; m < MW; m++) qf.get(aq[m], sQ, warp, lane, m, ks), dof.get(ad[m], sdO, warp, lane, m, ks);
#pragma unroll
            for (int np = 0; np < NC / 2; np++) {
                uint32_t b[4];
                ldsm4(b, cK + np * 16 * LD + ks * 16 + b_off(lane, LD));
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma(s[m][2 * np], aq[m], b[0], b[1]);
                    mma(s[m][2 * np + 1], aq[m], b[2], b[3]);
                }
                ldsm4(b, cV + np * 16 * LD + ks * 16 + b_off(lane, LD));
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma(dp[m][2 * np], ad[m], b[0], b[1]);
                    mma(dp[m][2 * np + 1], ad[m], b[2], b[3]);
                }
            }
        }

        if (needs_mask(p, q0, BR, k0, BK)) { /* one uniform branch: the other tiles run no mask code */
#pragma unroll
            for (int m = 0; m < MW; m++) mask_q(p, s[m], q0 + (warp * MW + m) * 16, k0, g, t4);
        }
#pragma unroll
        for (int m = 0; m < MW; m++)
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int n = 0; n < NC; n++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const float pv = ex2(fmaf(s[m][n][2 * h + e], sl2, -lse2[m][h]));
                        dp[m][n][2 * h + e] = pv * (dp[m][n][2 * h + e] - dlt[m][h]);
                    }

        /* dQ += dS K */
#pragma unroll
        for (int ks = 0; ks < BK / 16; ks++) {
            uint32_t da[MW][4];
#pragma unroll
            for (int m = 0; m < MW; m++) acc_to_a(da[m], dp[m][2 * ks], dp[m][2 * ks + 1]);
#pragma unroll
            for (int dd = 0; dd < ND / 2; dd++) {
                uint32_t b[4];
                ldsm4t(b, cK + ks * 16 * LD + dd * 16 + a_off(lane, LD));
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma(acc[m][2 * dd], da[m], b[0], b[1]);
                    mma(acc[m][2 * dd + 1], da[m], b[2], b[3]);
                }
            }
        }
        __syncthreads();
    }

    store_dq<D, MW>(p, acc, q0, bh, warp, g, t4); /* split keys: this share of dQ in f32, added up by dq_combine */
}

/* dQ from stored dS (after bwd_dkdv_ds wrote it in tiles of SBC keys x SBQ queries): one tile of BR = 16 NW MW
 * queries, over the key tiles of SBC it sees, dQ += dS K, one tile product where bwd_dq recomputes S = Q K^T and
 * dP = dO V^T first (three). Each step copies the key tile's K and its stored tiles of this block's queries
 * (whole tiles, contiguous; zeros for query tiles the key tile does not see: none are stored) into shared memory
 * with cp.async, double buffered; a warp reads its A fragments there with one 16-byte load each (Params::ds: the
 * tiles are in fragment order). The keys are added in increasing order, 16 a product, as in bwd_dq: deterministic. */
template <int D, int NW, int MW, int SBC, int SBQ> struct DqDs {
    static constexpr int BR = 16 * NW * MW, THREADS = 32 * NW, LD = D + 8;
    static_assert(BR % SBQ == 0 && SBQ % 16 == 0 && SBC % 16 == 0, "bwd_dq_ds: a block's queries must be whole stored tiles");
    static constexpr int SMEM = 2 * (SBC * LD + BR * SBC) * 2; /* K (rows padded) and dS (fragments), two buffers each */
};

template <int D, int NW, int MW, int SBC, int SBQ, int MINB>
__global__ void __launch_bounds__(32 * NW, MINB) bwd_dq_ds(Params p) {
    using C = DqDs<D, NW, MW, SBC, SBQ>;
    constexpr int BR = C::BR, T = C::THREADS, LD = C::LD, ND = D / 8, TILE = SBC * SBQ;
    uint16_t *sK = smem16(), *sS = sK + 2 * SBC * LD;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int n_qt = (p.tq + BR - 1) / BR;
    const int64_t q0 = (int64_t)(n_qt - 1 - (int)blockIdx.x) * BR, bh = blockIdx.y, qs0 = q0 / SBQ;
    const uint16_t *k = p.k + bh * p.tk * D, *ds = p.ds + bh * p.ds_head * (int64_t)TILE;
    int64_t k_lo, k_hi;
    key_range(p, q0, q0 + BR < p.tq ? q0 + BR : p.tq, &k_lo, &k_hi);
    int64_t kt0 = k_lo / SBC, kt1 = k_hi > k_lo ? (k_hi + SBC - 1) / SBC : kt0;
    split_tiles(p, &kt0, &kt1); /* split keys (blockIdx.z): this block's share; an empty one stores zeros */
    int64_t next = ds_first<SBC, SBQ>(p, kt0); /* the stored index of the next key tile's first tile */
    /* K of key tile kt and the stored dS of this block's queries into buffer buf; advances next */
    auto load = [&](int64_t kt, int buf) {
        load_rows<D, SBC, T>(sK + buf * SBC * LD, k, kt * SBC, p.tk, p.aligned);
        int64_t a, b;
        ds_query_tiles<SBC, SBQ>(p, kt, &a, &b);
#pragma unroll
        for (int j = 0; j < BR / SBQ; j++) {
            const bool in = qs0 + j >= a && qs0 + j < b;
            const uint16_t *src = in ? ds + (next + qs0 + j - a) * TILE : ds;
            uint16_t *dst = sS + (buf * BR / SBQ + j) * TILE;
            for (int e = threadIdx.x; e < TILE / 8; e += T) cp16(dst + 8 * e, in ? src + 8 * e : src, in);
        }
        next += b - a;
    };
    float acc[MW][ND][4];
#pragma unroll
    for (int m = 0; m < MW; m++)
#pragma unroll
        for (int n = 0; n < ND; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[m][n][i] = 0.f;
    if (kt0 < kt1) load(kt0, 0), cp_commit();
    for (int64_t kt = kt0; kt < kt1; kt++) {
        const int buf = (int)((kt - kt0) & 1);
        if (kt + 1 < kt1) {
            load(kt + 1, buf ^ 1);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        const uint16_t *cK = sK + buf * SBC * LD, *cS = sS + buf * BR * SBC;
#pragma unroll
        for (int ks = 0; ks < SBC / 16; ks++) {
            uint32_t a[MW][4];
#pragma unroll
            for (int m = 0; m < MW; m++) { /* row group warp MW + m is query block (warp MW + m) of the stored tiles */
                const uint4 f = *reinterpret_cast<const uint4 *>(cS + ((warp * MW + m) * (SBC / 16) + ks) * 256 + lane * 8);
                a[m][0] = f.x, a[m][1] = f.y, a[m][2] = f.z, a[m][3] = f.w;
            }
#pragma unroll
            for (int dd = 0; dd < ND / 2; dd++) {
                uint32_t b[4];
                ldsm4t(b, cK + ks * 16 * LD + dd * 16 + a_off(lane, LD));
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma(acc[m][2 * dd], a[m], b[0], b[1]);
                    mma(acc[m][2 * dd + 1], a[m], b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* every read of this buffer is done before it is refilled */
    }
    store_dq<D, MW>(p, acc, q0, bh, warp, g, t4);
}

/* ---- the configurations the launchers use (attention.cu) -------------------------------------------------- */

/* A kernel configuration: NW warps of MW x 16 rows (query rows in the forward and dQ kernels, keys in
 * dK/dV), tile T of the other side (keys; queries for dK/dV), MINB blocks per SM asked of the register
 * allocator (__launch_bounds__), HOLD: the A fragments stay in registers (backward kernels); for the
 * forward, its option bits instead (FWD_RELOAD_Q, FWD_V_LATE; 0: Q held). */
template <int NW_, int MW_, int T_, int MINB_, int HOLD_> struct K {
    enum { NW = NW_, MW = MW_, T = T_, MINB = MINB_, HOLD = HOLD_ };
};

/* The launchers' choice, from timings on an H100 (dev/cuda/attention_bf16.cu times the alternatives;
 * dev/cuda/README.md has the numbers): the first of each pair when its grid has at least WAVES blocks per
 * SM, else the second (fewer rows per block: more blocks on small problems). */
template <int D> struct Cfg;
template <> struct Cfg<64> {
    typedef K<4, 2, 128, 2, 1> Fwd; /* FA2's shape, Q reloaded: after the mask change 6-7% under the same with V late
                                     * (b1, the choice before) at 8K-32K (H200, 2026-12-07: 0.521 / 5.940 ms at 8K / 32K) */
    typedef K<4, 1, 64, 4, 0> FwdSmall;
    typedef K<4, 2, 32, 2, 0> Kv;
    typedef K<4, 1, 64, 2, 1> KvSmall;
    typedef K<8, 1, 64, 2, 0> Dq;
    typedef K<4, 1, 64, 3, 1> DqSmall;
    typedef K<4, 2, 32, 2, 0> Bwd1; /* the one-kernel backward (TTT_ATTN_BWD1=1): Kv's shape; H100: 41.9 ms at 32K, dkdv + dq 24.8 */
    typedef K<4, 2, 0, 2, 0> DqDs;  /* dQ from stored dS (TTT_ATTN_DS=1; its tiles are Kv's) */
    enum { FWD_WAVES = 2, KV_WAVES = 4, DQ_WAVES = 2 };
};
template <> struct Cfg<128> {
    typedef K<4, 2, 64, 2, 1> Fwd; /* FA2's shape, Q reloaded, 2 blocks an SM for the register allocator: 4% / 1% under
                                    * the same with 1 (the choice before) at 8K / 32K (H200, 2026-12-07: 0.964 / 11.543 ms) */
    typedef K<4, 2, 64, 1, 1> FwdSmall;
    typedef K<4, 1, 64, 2, 0> Kv;
    typedef K<4, 1, 64, 2, 0> KvSmall;
    typedef K<4, 2, 32, 2, 0> Dq;
    typedef K<4, 2, 32, 2, 0> DqSmall;
    typedef K<4, 1, 32, 2, 0> Bwd1; /* the one-kernel backward (TTT_ATTN_BWD1=1): 244 registers, no spills (Kv's
                                     * 4x1/64 spills 32 B here); H100: 110.5 ms at 32K (8x1/32 86.0, dkdv + dq 46.6) */
    typedef K<4, 2, 0, 2, 0> DqDs;  /* dQ from stored dS (TTT_ATTN_DS=1) */
    enum { FWD_WAVES = 0, KV_WAVES = 0, DQ_WAVES = 0 };
};

}  // namespace attnbf

#endif
