/* A host emulator for the CUDA kernels in this folder and in
 * src/backends/cuda/attention_kernels.cuh and attention_bf16.cuh, so their
 * indexing, masking and barrier logic can be checked on a machine without a
 * GPU (this workplace's GPU time is scarce). Each CUDA thread of a block is a
 * ucontext coroutine on one OS thread. Blocks run one after another, so
 * __shared__ can be a plain static. Between two __syncthreads each warp runs
 * to the next one before the next warp starts (see run_block): shared-memory
 * hazards between warps show up. Warp collectives (shuffles, mma.sync,
 * ldmatrix) exchange values through per-thread slots and wait for their own
 * warp only, so they must be called uniformly across a warp, as on the GPU.
 * cp.async copies land at cp.async.wait_group, their destination poisoned
 * until then. Slow (a context switch per thread per collective): small shapes
 * only.
 *
 * Shuffles (__shfl_xor_sync and __shfl_down_sync on float and double)
 * and __shared__ variables (statics) cover block reductions too.
 *
 * Usage: #include "emu.h" before the kernels, then
 *   emu::launch(grid, block, [&] { my_kernel(args...); });
 */
#ifndef TTT_DEV_CUDA_EMU_H
#define TTT_DEV_CUDA_EMU_H
#define TTT_EMU 1 /* kernels pick their emulated intrinsics (mma, ldmatrix, cp.async) */

#include <ucontext.h>

/* Switching coroutines: glibc's swapcontext saves the signal mask with a system call on every
 * switch, and the emulator switches per thread at every warp collective. On x86-64 a plain
 * register switch (below) does the same job several times faster; AddressSanitizer builds keep
 * swapcontext, which ASan intercepts to follow the stack changes. */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(EMU_SWAPCONTEXT)
#define EMU_FAST_SWITCH 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#undef EMU_FAST_SWITCH
#endif
#endif

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float4 {
    float x, y, z, w;
};
struct float2 {
    float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
struct alignas(16) uint4 {
    uint32_t x, y, z, w;
};
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return uint4{x, y, z, w}; }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace emu {

/* One cp.async copy in flight: bytes to dst, of which the first src_bytes come from src (the rest zeros). */
struct Copy {
    void *dst;
    const void *src;
    int bytes, src_bytes;
};

struct Thread {
    ucontext_t uc;
    void *sp; /* EMU_FAST_SWITCH: the saved stack pointer */
    bool done;
    int wait;                               /* RUN, AT_WARP (a warp collective) or AT_BLOCK (__syncthreads) */
    std::vector<Copy> open;                 /* cp.async issued since the last commit */
    std::vector<std::vector<Copy>> groups;  /* committed groups, oldest first */
};
enum { RUN = 0, AT_WARP = 1, AT_BLOCK = 2 };

inline ucontext_t g_sched;
inline void *g_sched_sp;
inline std::vector<Thread> g_threads;
inline int g_cur;
inline dim3 g_grid, g_block, g_bidx;
inline const std::function<void()> *g_body;
inline std::vector<float> g_exchange;
inline std::vector<float> g_smem(1 << 16); /* dynamic shared memory, floats */
inline bool g_reverse;                      /* run the warps last to first (alternates per block) */
/* Coroutine stacks, one per thread slot, kept from block to block: allocating and zero-filling
 * 256 KB per thread for every block was most of the emulator's run time. */
constexpr size_t kStackBytes = 256 << 10;
inline std::vector<std::unique_ptr<char[]>> g_stacks;

inline dim3 thread_idx() {
    unsigned t = (unsigned)g_cur;
    return dim3(t % g_block.x, (t / g_block.x) % g_block.y, t / (g_block.x * g_block.y));
}

#ifdef EMU_FAST_SWITCH
/* emu_switch(save, load): push the callee-saved registers, store rsp in *save, load rsp, pop, return
 * into the other coroutine. A local symbol: each emulator test is one translation unit. */
extern "C" void emu_switch(void **save, void *load);
asm(".text\n"
    "emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n");
#endif

inline void to_scheduler() {
#ifdef EMU_FAST_SWITCH
    emu_switch(&g_threads[g_cur].sp, g_sched_sp);
#else
    swapcontext(&g_threads[g_cur].uc, &g_sched);
#endif
}

/* __syncthreads: every thread of the block */
inline void barrier() {
    g_threads[g_cur].wait = AT_BLOCK;
    to_scheduler();
}
/* the lockstep point of a warp collective: the threads of this warp only */
inline void warp_barrier() {
    g_threads[g_cur].wait = AT_WARP;
    to_scheduler();
}

inline void trampoline() {
    (*g_body)();
    g_threads[g_cur].done = true;
#ifdef EMU_FAST_SWITCH
    void *unused;
    emu_switch(&unused, g_sched_sp); /* never resumed */
    abort();
#endif
    /* swapcontext: uc_link returns to the scheduler */
}

/* Runs one block. Between two __syncthreads each warp runs on its own, all the
 * way to the next one, before the next warp starts (first to last, or last to
 * first on every other block): a warp that writes shared memory another warp
 * still has to read in the same phase (a missing __syncthreads) overwrites it
 * first, and with cp.async's poison the reader sees NaN. */
inline void run_block(int n) {
    g_threads.assign(n, Thread());
    while ((int)g_stacks.size() < n) g_stacks.emplace_back(new char[kStackBytes]);
    for (int t = 0; t < n; t++) {
        Thread &th = g_threads[t];
        th.done = false;
        th.wait = RUN;
#ifdef EMU_FAST_SWITCH
        /* a first switch pops six zero registers and returns into trampoline, which then sees rsp
         * = 8 mod 16 as after a call */
        uintptr_t top = ((uintptr_t)g_stacks[t].get() + kStackBytes) & ~(uintptr_t)15;
        void **sp = (void **)top;
        *--sp = nullptr;                        /* trampoline's return address: it never returns */
        *--sp = (void *)&trampoline;
        for (int r = 0; r < 6; r++) *--sp = nullptr;
        th.sp = sp;
#else
        getcontext(&th.uc);
        th.uc.uc_stack.ss_sp = g_stacks[t].get();
        th.uc.uc_stack.ss_size = kStackBytes;
        th.uc.uc_link = &g_sched;
        makecontext(&th.uc, trampoline, 0);
#endif
    }
    const int n_warps = (n + 31) / 32;
    for (;;) {
        for (int wi = 0; wi < n_warps; wi++) {
            const int w = g_reverse ? n_warps - 1 - wi : wi, lo = 32 * w, hi = lo + 32 < n ? lo + 32 : n;
            for (;;) {
                for (int t = lo; t < hi; t++)
                    if (!g_threads[t].done && g_threads[t].wait == RUN) {
                        g_cur = t;
#ifdef EMU_FAST_SWITCH
                        emu_switch(&g_sched_sp, g_threads[t].sp);
#else
                        swapcontext(&g_sched, &g_threads[t].uc);
#endif
                    }
                int at_warp = 0;
                for (int t = lo; t < hi; t++) at_warp += !g_threads[t].done && g_threads[t].wait == AT_WARP;
                if (at_warp == 0) break; /* the warp is at __syncthreads or has returned */
                if (at_warp != hi - lo) {
                    fprintf(stderr, "emu: warp %d: %d of %d threads at a warp collective, the others not\n", w,
                            at_warp, hi - lo);
                    abort();
                }
                for (int t = lo; t < hi; t++) g_threads[t].wait = RUN;
            }
        }
        int n_done = 0;
        for (int t = 0; t < n; t++) n_done += g_threads[t].done;
        if (n_done == n) {
            for (int t2 = 0; t2 < n; t2++)
                if (!g_threads[t2].open.empty() || !g_threads[t2].groups.empty()) {
                    fprintf(stderr, "emu: thread %d returned with cp.async copies not waited for\n", t2);
                    abort();
                }
            return;
        }
        if (n_done) {
            fprintf(stderr, "emu: %d of %d threads returned while others wait at a barrier\n", n_done, n);
            abort();
        }
        for (int t = 0; t < n; t++) g_threads[t].wait = RUN;
    }
}

/* body runs once per thread of every block. */
inline void launch(dim3 grid, dim3 block, const std::function<void()> &body) {
    g_grid = grid;
    g_block = block;
    g_body = &body;
    const int n = (int)(block.x * block.y * block.z);
    g_exchange.assign(n, 0.0f);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                g_bidx = dim3(x, y, z);
                /* poison shared memory so reads of unwritten slots show up */
                for (auto &f : g_smem) f = NAN;
                run_block(n);
                g_reverse = !g_reverse;
            }
}

/* __shfl_down_sync: lane l reads lane l + delta of its warp, or keeps its own value past the warp's end */
inline std::vector<double> g_exchange_d;
inline double shfl_down(double v, int delta) {
    const int n = (int)(g_block.x * g_block.y * g_block.z);
    if ((int)g_exchange_d.size() < n) g_exchange_d.resize(n);
    g_exchange_d[g_cur] = v;
    warp_barrier();
    const int lane = g_cur & 31, src = (g_cur & ~31) + lane + delta;
    const double r = lane + delta < 32 && src < n ? g_exchange_d[src] : v;
    warp_barrier();
    return r;
}

inline float shfl_xor(float v, int lane_mask) {
    g_exchange[g_cur] = v;
    warp_barrier();
    const int partner = (g_cur & ~31) | ((g_cur & 31) ^ lane_mask);
    float r = g_exchange[partner];
    warp_barrier();
    return r;
}
inline double shfl_xor(double v, int lane_mask) {
    const int n = (int)(g_block.x * g_block.y * g_block.z);
    if ((int)g_exchange_d.size() < n) g_exchange_d.resize(n);
    g_exchange_d[g_cur] = v;
    warp_barrier();
    const int partner = (g_cur & ~31) | ((g_cur & 31) ^ lane_mask);
    const double r = g_exchange_d[partner];
    warp_barrier();
    return r;
}

/* mma.sync.m16n8k16.row.col f32 += bf16 x bf16 for the calling warp, with the
 * PTX fragment layout: lane = 4 g + t; A regs {r g, r g+8} x {k 2t.., k 2t+8..},
 * B regs {k 2t.., k 2t+8..} x n g, C {r g, r g+8} x n 2t..; the lower 16 bits
 * of a register hold the element of lower index. */
inline std::vector<uint32_t> g_xu;
inline float bf16_half(uint32_t w, int high) {
    uint32_t b = high ? (w & 0xffff0000u) : (w << 16);
    float f;
    memcpy(&f, &b, 4);
    return f;
}
/* mma.sync.m16n8k8.row.col f32 += tf32 x tf32 for the calling warp, with the PTX fragment layout: lane = 4 g + t;
 * A regs a0 (r g, k t), a1 (r g+8, k t), a2 (r g, k t+4), a3 (r g+8, k t+4); B regs b0 (k t, n g), b1 (k t+4, n g);
 * C as m16n8k16's. The registers hold f32 bit patterns whose low 13 bits the hardware ignores (cvt.rna.tf32.f32
 * clears them): the emulator clears them too, so an operand not converted still counts as TF32. */
inline float tf32_value(uint32_t w) {
    const uint32_t b = w & 0xffffe000u;
    float f;
    memcpy(&f, &b, 4);
    return f;
}
/* One m16n8 mma for the calling warp: the lanes' A (4) and B (2) registers exchanged through per-thread slots, then
 * each lane's C elements (rows g, g + 8, columns 2t, 2t + 1) summed over k from 0 in f32. tf32: m16n8k8 .tf32,
 * else m16n8k16 bf16 (layouts above each entry). */
inline void mma_m16n8(float *d, const uint32_t *a, const uint32_t *b, bool tf32) {
    const int n = (int)(g_block.x * g_block.y * g_block.z);
    if ((int)g_xu.size() < 6 * n) g_xu.resize(6 * n);
    for (int i = 0; i < 4; i++) g_xu[g_cur * 6 + i] = a[i];
    for (int i = 0; i < 2; i++) g_xu[g_cur * 6 + 4 + i] = b[i];
    warp_barrier();
    const int warp0 = g_cur & ~31, lane = g_cur & 31, g = lane >> 2, t = lane & 3, K = tf32 ? 8 : 16;
    auto A = [&](int r, int k) {
        if (tf32) return tf32_value(g_xu[(warp0 + (r % 8) * 4 + k % 4) * 6 + (r >= 8) + 2 * (k >= 4)]);
        const int ln = (r % 8) * 4 + (k % 8) / 2, reg = (r >= 8) + 2 * (k >= 8);
        return bf16_half(g_xu[(warp0 + ln) * 6 + reg], k % 2);
    };
    auto B = [&](int k, int c) {
        if (tf32) return tf32_value(g_xu[(warp0 + c * 4 + k % 4) * 6 + 4 + (k >= 4)]);
        const int ln = c * 4 + (k % 8) / 2, reg = 4 + (k >= 8);
        return bf16_half(g_xu[(warp0 + ln) * 6 + reg], k % 2);
    };
    float r[4];
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float acc = 0;
        for (int k = 0; k < K; k++) acc += A(row, k) * B(k, col);
        r[i] = d[i] + acc;
    }
    warp_barrier();
    for (int i = 0; i < 4; i++) d[i] = r[i];
}
inline void mma_bf16_16816(float *d, const uint32_t *a, const uint32_t *b) { mma_m16n8(d, a, b, false); }
inline void mma_tf32_1688(float *d, const uint32_t *a, const uint32_t *b) { mma_m16n8(d, a, b, true); }

/* movmatrix.sync.aligned.m8n8.trans.b16 for the calling warp: lane 4 g + t holds elements (g, 2t), (g, 2t + 1) of
 * an 8 x 8 matrix M (the lower index in the lower 16 bits) and gets those of M^T: M(2t, g), M(2t + 1, g). */
inline std::vector<uint32_t> g_xm;
inline uint32_t movmatrix_trans(uint32_t v) {
    const int n = (int)(g_block.x * g_block.y * g_block.z);
    if ((int)g_xm.size() < n) g_xm.resize(n);
    g_xm[g_cur] = v;
    warp_barrier();
    const int warp0 = g_cur & ~31, lane = g_cur & 31, g = lane >> 2, t = lane & 3;
    auto M = [&](int r, int c) -> uint32_t {
        const uint32_t w = g_xm[warp0 + r * 4 + c / 2];
        return c % 2 ? w >> 16 : w & 0xffffu;
    };
    const uint32_t r = M(2 * t, g) | (M(2 * t + 1, g) << 16);
    warp_barrier();
    return r;
}

/* ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16 for the calling warp: lane
 * 8 i + j gives the address of row j of matrix i (16 bytes, 16-byte aligned);
 * register i of lane 4 g + t holds matrix i's elements (g, 2t), (g, 2t + 1), or
 * with trans (2t, g), (2t + 1, g), the lower index in the lower 16 bits. */
inline std::vector<const void *> g_xp;
inline void ldmatrix_x4(uint32_t *r, const void *row_addr, bool trans) {
    const int n = (int)(g_block.x * g_block.y * g_block.z);
    if ((int)g_xp.size() < n) g_xp.resize(n);
    if ((uintptr_t)row_addr & 15) {
        fprintf(stderr, "emu: ldmatrix row address %p not 16-byte aligned (thread %d)\n", row_addr, g_cur);
        abort();
    }
    g_xp[g_cur] = row_addr;
    warp_barrier();
    const int warp0 = g_cur & ~31, lane = g_cur & 31, g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        uint16_t lo, hi;
        if (!trans) {
            const uint16_t *row = (const uint16_t *)g_xp[warp0 + 8 * i + g];
            lo = row[2 * t], hi = row[2 * t + 1];
        } else {
            lo = ((const uint16_t *)g_xp[warp0 + 8 * i + 2 * t])[g];
            hi = ((const uint16_t *)g_xp[warp0 + 8 * i + 2 * t + 1])[g];
        }
        r[i] = (uint32_t)lo | ((uint32_t)hi << 16);
    }
    warp_barrier();
}

/* cp.async.cg 16 bytes (src_bytes 0: zero fill). The destination is poisoned
 * with 0xff bytes (bf16 / f32 NaN) when the copy is issued and written only
 * when cp_wait retires its group, so reading it before the wait, or a copy
 * issued while other threads still read the slot, shows up as NaN. */
inline void cp_async(void *dst, const void *src, int bytes, int src_bytes) {
    if (((uintptr_t)dst & 15) || (src_bytes && ((uintptr_t)src & 15))) {
        fprintf(stderr, "emu: cp.async %p <- %p not 16-byte aligned (thread %d)\n", dst, src, g_cur);
        abort();
    }
    memset(dst, 0xff, (size_t)bytes);
    g_threads[g_cur].open.push_back(Copy{dst, src, bytes, src_bytes});
}
inline void cp_commit() {
    Thread &t = g_threads[g_cur];
    t.groups.push_back(t.open);
    t.open.clear();
}
/* cp.async.wait_group n: all but the newest n committed groups are complete */
inline void cp_wait(int n) {
    Thread &t = g_threads[g_cur];
    while ((int)t.groups.size() > n) {
        for (const Copy &c : t.groups.front()) {
            memcpy(c.dst, c.src, (size_t)c.src_bytes);
            memset((char *)c.dst + c.src_bytes, 0, (size_t)(c.bytes - c.src_bytes));
        }
        t.groups.erase(t.groups.begin());
    }
}

/* Inter-block signalling (attention_bf16.cuh's one-kernel backward): a counter another block releases and this
 * one waits for with an acquire load, and tickets from an atomic add. Blocks run one after another in grid order,
 * so a waiter can only wait for blocks that have finished: the value is there already, or the kernel waits for a
 * block that has not run (on a GPU it could wait forever, or for a block launched after it): abort. */
inline long g_waits, g_releases; /* counted, so a test can see the signalling ran */
inline void wait_value(const unsigned *c, unsigned want) {
    g_waits++;
    if (*c != want) {
        fprintf(stderr, "emu: block (%u, %u, %u) thread %d waits for %u at %p, which holds %u: every earlier block "
                        "has finished, so this would wait for a later block (or forever)\n",
                g_bidx.x, g_bidx.y, g_bidx.z, g_cur, want, (const void *)c, *c);
        abort();
    }
}
inline void store_release(unsigned *c, unsigned v) {
    g_releases++;
    *c = v;
}
inline unsigned atomic_add(unsigned *c, unsigned v) {
    const unsigned old = *c;
    *c = old + v;
    return old;
}

}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::g_bidx)
#define blockDim (emu::g_block)
#define gridDim (emu::g_grid)
#define __syncthreads() emu::barrier()
#define __syncwarp() emu::warp_barrier()
inline void __threadfence() {} /* blocks run one after another: every write is seen */
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) { return emu::shfl_xor(v, lane_mask); }
inline double __shfl_xor_sync(unsigned, double v, int lane_mask) { return emu::shfl_xor(v, lane_mask); }
inline double __shfl_down_sync(unsigned, double v, int delta) { return emu::shfl_down(v, delta); }
inline float __shfl_down_sync(unsigned, float v, int delta) { return (float)emu::shfl_down((double)v, delta); }
/* blocks run one after another, so a block's shared variables can be statics */
#define __shared__ static
inline float __expf(float x) { return expf(x); }
inline float __fdividef(float a, float b) { return a / b; }

#endif
