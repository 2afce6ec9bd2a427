/* A CUDA instance's device memory: large slabs from cudaMalloc, carved into
 * blocks (best fit, split, neighbours merged again on free) and given back to
 * the driver when the instance closes (its context is freed). Each instance
 * has its own pool, on its own GPU. Every device allocation of the backend goes through here:
 * the context's arena blocks and stash, persistent tensors, kernel scratch. A
 * context's steady-state step allocates nothing anyway (its arenas keep their
 * blocks); the pool makes the first steps, persistent tensors and scratch
 * growth cheap too, and keeps the driver's allocations few and large.
 *
 * TTT_CUDA_POOL=0 in the environment hands each request to cudaMalloc
 * directly, so compute-sanitizer sees every allocation's true bounds (inside a
 * slab an overrun of one block lands in the next and goes unnoticed). */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <iterator>
#include <map>
#include <new>
#include <mutex>
#include <vector>

#include "cuda_internal.h"

namespace {

constexpr size_t SLAB_MIN = (size_t)256 << 20; /* the smallest request to the driver */
constexpr size_t ALIGN = 512;                   /* every block starts 512-byte aligned (cudaMalloc gives 256) */

struct Block {
    size_t size;
    int slab;
    bool free;
};

}  // namespace

struct CuPool {
    std::mutex mu;
    std::vector<char *> slabs;      /* every slab's base, for the final cudaFree */
    std::map<char *, Block> blocks; /* by address; a slab's blocks are contiguous and ordered */
    int n_slabs = 0;
    size_t reserved = 0, in_use = 0;
    uint64_t driver_allocs = 0;
    int mode = -1; /* -1: not read yet; 0: pass-through; 1: pooled */
};

static bool pooled(CuPool &p) {
    if (p.mode < 0) {
        const char *e = getenv("TTT_CUDA_POOL");
        p.mode = e && !strcmp(e, "0") ? 0 : 1;
    }
    return p.mode == 1;
}

CuPool *ttt__cuda_pool_new(void) { return new (std::nothrow) CuPool; }

void ttt__cuda_pool_delete(CuPool *pool) {
    if (!pool) return;
    for (auto &kv : pool->blocks)
        if (kv.second.slab < 0) cudaFree(kv.first); /* pass-through blocks still allocated */
    for (char *slab : pool->slabs) cudaFree(slab);
    delete pool;
}

void *ttt__cuda_pool_alloc(CuPool *pool, size_t bytes) {
    CuPool &p = *pool;
    std::lock_guard<std::mutex> lock(p.mu);
    bytes = bytes ? (bytes + ALIGN - 1) / ALIGN * ALIGN : ALIGN;
    if (!pooled(p)) {
        void *ptr = NULL;
        if (cudaMalloc(&ptr, bytes) != cudaSuccess) {
            cudaGetLastError();
            ttt_backend_error("cudaMalloc(%zu) failed", bytes);
            return NULL;
        }
        p.driver_allocs++, p.reserved += bytes, p.in_use += bytes;
        p.blocks[(char *)ptr] = Block{bytes, -1, false};
        return ptr;
    }
    auto best = p.blocks.end();
    for (auto it = p.blocks.begin(); it != p.blocks.end(); ++it)
        if (it->second.free && it->second.size >= bytes && (best == p.blocks.end() || it->second.size < best->second.size))
            best = it;
    if (best == p.blocks.end()) {
        const size_t slab = bytes > SLAB_MIN ? bytes : SLAB_MIN;
        void *ptr = NULL;
        if (cudaMalloc(&ptr, slab) != cudaSuccess) {
            cudaGetLastError();
            ttt_backend_error("cudaMalloc(%zu) failed (a device memory slab for a %zu-byte block; %zu bytes reserved "
                              "in %d slabs already)", slab, bytes, p.reserved, p.n_slabs);
            return NULL;
        }
        try {
            p.slabs.push_back((char *)ptr);
        } catch (...) {
            cudaFree(ptr);
            ttt_backend_error("out of host memory (device memory pool)");
            return NULL;
        }
        p.driver_allocs++, p.reserved += slab;
        best = p.blocks.emplace((char *)ptr, Block{slab, p.n_slabs++, true}).first;
    }
    Block &b = best->second;
    if (b.size - bytes >= ALIGN) { /* split: the rest stays free */
        p.blocks.emplace(best->first + bytes, Block{b.size - bytes, b.slab, true});
        b.size = bytes;
    }
    b.free = false;
    p.in_use += b.size;
    return best->first;
}

void ttt__cuda_pool_free(CuPool *pool, void *ptr) {
    if (!ptr || !pool) return;
    CuPool &p = *pool;
    std::lock_guard<std::mutex> lock(p.mu);
    auto it = p.blocks.find((char *)ptr);
    if (it == p.blocks.end() || it->second.free) return; /* not ours, or freed twice: leave it */
    p.in_use -= it->second.size;
    if (it->second.slab < 0) { /* pass-through */
        p.reserved -= it->second.size;
        p.blocks.erase(it);
        cudaFree(ptr);
        return;
    }
    it->second.free = true;
    auto next = std::next(it);
    if (next != p.blocks.end() && next->second.free && next->second.slab == it->second.slab &&
        it->first + it->second.size == next->first) {
        it->second.size += next->second.size;
        p.blocks.erase(next);
    }
    if (it != p.blocks.begin()) {
        auto prev = std::prev(it);
        if (prev->second.free && prev->second.slab == it->second.slab && prev->first + prev->second.size == it->first) {
            prev->second.size += it->second.size;
            p.blocks.erase(it);
        }
    }
}

void ttt__cuda_pool_stats(CuPool *pool, size_t *reserved, size_t *in_use, uint64_t *driver_allocs) {
    CuPool &p = *pool;
    std::lock_guard<std::mutex> lock(p.mu);
    if (reserved) *reserved = p.reserved;
    if (in_use) *in_use = p.in_use;
    if (driver_allocs) *driver_allocs = p.driver_allocs;
}
