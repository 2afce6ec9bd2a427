/* A host emulator for the CUDA kernels in this folder and in
 * src/backends/cuda/attention_kernels.cuh, so their indexing, masking and
 * barrier logic can be checked on a machine without a GPU (this workplace's
 * GPU time is scarce). Each CUDA thread of a block is a ucontext coroutine on
 * one OS thread; __syncthreads switches to the next thread, and a block's
 * threads run round by round until all of them have returned. Blocks run one
 * after another, so __shared__ can be a plain static. Warp shuffles go through
 * a block-wide exchange: kernels must call them uniformly across the block
 * (ours do). Slow (a context switch per thread per barrier): small shapes only.
 *
 * Usage: #include "emu.h" before the kernels, then
 *   emu::launch(grid, block, [&] { my_kernel(args...); });
 */
#ifndef TTT_DEV_CUDA_EMU_H
#define TTT_DEV_CUDA_EMU_H

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
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

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace emu {

struct Thread {
    ucontext_t uc;
    std::vector<char> stack;
    bool done;
};

inline ucontext_t g_sched;
inline std::vector<Thread> g_threads;
inline int g_cur;
inline dim3 g_grid, g_block, g_bidx;
inline const std::function<void()> *g_body;
inline std::vector<float> g_exchange;
inline std::vector<float> g_smem(1 << 16); /* dynamic shared memory, floats */

inline dim3 thread_idx() {
    unsigned t = (unsigned)g_cur;
    return dim3(t % g_block.x, (t / g_block.x) % g_block.y, t / (g_block.x * g_block.y));
}

inline void barrier() { swapcontext(&g_threads[g_cur].uc, &g_sched); }

inline void trampoline() {
    (*g_body)();
    g_threads[g_cur].done = true;
    /* uc_link returns to the scheduler */
}

inline void run_block(int n) {
    g_threads.assign(n, Thread());
    for (int t = 0; t < n; t++) {
        Thread &th = g_threads[t];
        th.stack.resize(256 << 10);
        th.done = false;
        getcontext(&th.uc);
        th.uc.uc_stack.ss_sp = th.stack.data();
        th.uc.uc_stack.ss_size = th.stack.size();
        th.uc.uc_link = &g_sched;
        makecontext(&th.uc, trampoline, 0);
    }
    for (;;) {
        int n_done = 0;
        for (int t = 0; t < n; t++) {
            g_cur = t;
            swapcontext(&g_sched, &g_threads[t].uc);
            n_done += g_threads[t].done;
        }
        if (n_done == n) return;
        if (n_done) {
            fprintf(stderr, "emu: %d of %d threads returned while others wait at a barrier\n", n_done, n);
            abort();
        }
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
            }
}

inline float shfl_xor(float v, int lane_mask) {
    g_exchange[g_cur] = v;
    barrier();
    const int partner = (g_cur & ~31) | ((g_cur & 31) ^ lane_mask);
    float r = g_exchange[partner];
    barrier();
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
inline void mma_bf16_16816(float *d, const uint32_t *a, const uint32_t *b) {
    const int n = (int)(g_block.x * g_block.y * g_block.z);
    if ((int)g_xu.size() < 6 * n) g_xu.resize(6 * n);
    for (int i = 0; i < 4; i++) g_xu[g_cur * 6 + i] = a[i];
    for (int i = 0; i < 2; i++) g_xu[g_cur * 6 + 4 + i] = b[i];
    barrier();
    const int warp0 = g_cur & ~31, lane = g_cur & 31, g = lane >> 2, t = lane & 3;
    auto A = [&](int r, int k) {
        const int ln = (r % 8) * 4 + (k % 8) / 2, reg = (r >= 8) + 2 * (k >= 8);
        return bf16_half(g_xu[(warp0 + ln) * 6 + reg], k % 2);
    };
    auto B = [&](int k, int c) {
        const int ln = c * 4 + (k % 8) / 2, reg = 4 + (k >= 8);
        return bf16_half(g_xu[(warp0 + ln) * 6 + reg], k % 2);
    };
    float r[4];
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float acc = 0;
        for (int k = 0; k < 16; k++) acc += A(row, k) * B(k, col);
        r[i] = d[i] + acc;
    }
    barrier();
    for (int i = 0; i < 4; i++) d[i] = r[i];
}

}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::g_bidx)
#define blockDim (emu::g_block)
#define gridDim (emu::g_grid)
#define __syncthreads() emu::barrier()
#define __syncwarp() emu::barrier()
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) { return emu::shfl_xor(v, lane_mask); }
inline float __expf(float x) { return expf(x); }
inline float __fdividef(float a, float b) { return a / b; }

#endif
