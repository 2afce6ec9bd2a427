/* The fused chunkwise SSD / linear-attention core on the GPU (backend.h: ssd_chunk_fwd, ssd_chunk_bwd): the
 * launchers of the chunk-parallel kernels in ssd_chunk.cuh (256 threads a block), f32 only (the op casts
 * bf16 inputs to f32 before calling, as the cores compute bf16 in f32).
 *
 *   forward:  ssd_prep (per chunk) -> ssd_scan (per state element, chunks in order) -> ssd_out (per chunk)
 *   backward: ssd_prep (per chunk) -> ssd_scan (chunks in reverse) -> ssd_bwd_chunk (per chunk)
 * Scratch: the instance's gdn_scratch (stream-ordered; the two fused cores never run at once on a stream):
 * forward a_c [B H N] and the states when the caller keeps none [B H N dk dv]; backward a_c and the per-chunk
 * state gradients [B H N dk dv].
 *
 * Off unless TTT_SSD_CUDA_FUSED=1: checked on the host emulator (dev/cuda/ssd_chunk_emu_test.cpp) but not
 * yet measured on a GPU, and plain FMA loops (no register tiles), so the composed core may well be faster
 * until a GPU run (bench/mixers/run_linear_gpu.sh, part fused) says otherwise. Declined, so that the cores
 * compose instead: other dtypes and chunks over 64 (the C x C matrices in shared memory). The forward
 * declines exactly what the backward would, so a recorded forward always has its backward. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern __shared__ double ssd_smem_raw[];
#define SSD_SMEM() (ssd_smem_raw)
#include "ssd_chunk.cuh"

enum { SSD_THREADS = 256, SSD_MAX_CHUNK = 64 };

static bool ssd_supported(const ttt_tensor *q, const ttt_tensor *v, const ttt_tensor *g, int64_t chunk,
                          ssdk::Params *p, int64_t *bh) {
    static const bool enabled = ttt__env_switch("TTT_SSD_CUDA_FUSED", false);
    if (!enabled) return false;
    if (q->dtype != TTT_F32 || v->dtype != TTT_F32 || (g && g->dtype != TTT_F32) || q->ndim != 4 || v->ndim != 4)
        return false;
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], K = q->shape[3], V = v->shape[3];
    if (chunk < 1 || B * H < 1 || T < 1 || K < 1 || V < 1 || T > INT_MAX / 2 || K * V > INT_MAX / 2) return false;
    const int C = (int)(chunk < T ? chunk : T);
    if (C > SSD_MAX_CHUNK) return false;
    const int64_t N = (T + C - 1) / C;
    if (B * H * N > INT_MAX) return false; /* the per-chunk kernels' grid.x */
    memset(p, 0, sizeof *p);
    p->T = (int)T, p->C = C, p->K = (int)K, p->V = (int)V, p->N = (int)N;
    *bh = B * H;
    return true;
}

static unsigned scan_blocks(int64_t elements) {
    const int64_t b = (elements + SSD_THREADS - 1) / SSD_THREADS;
    return (unsigned)(b < 65535 ? b : 65535);
}

int ttt__cu_ssd_chunk_fwd(ttt_backend_state *self, ttt_tensor *o, ttt_tensor *s_out, ttt_tensor *states,
                          const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *g,
                          const ttt_tensor *s0, int64_t chunk) {
    ENTER(dev, self);
    ssdk::Params p;
    int64_t bh;
    if (!ssd_supported(q, v, g, chunk, &p, &bh)) return TTT_BACKEND_DECLINED;
    const int64_t nA = bh * p.N, nS = states ? 0 : bh * p.N * p.K * p.V;
    if (scratch_reserve(dev, &dev->gdn_scratch, sizeof(float) * (size_t)(nA + nS), "ssd_chunk_fwd")) return TTT_ERR;
    float *w = (float *)dev->gdn_scratch.p;
    p.decay = w;
    p.states = states ? (float *)states->data : w + nA;
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.g = g ? (const float *)g->data : NULL;
    p.s0 = s0 ? (const float *)s0->data : NULL;
    p.o = (float *)o->data;
    p.s_out = s_out ? (float *)s_out->data : NULL;
    const unsigned items = (unsigned)(bh * p.N);
    const int64_t elements = bh * p.K * p.V;
    ssdk::ssd_prep<<<items, SSD_THREADS, (size_t)ssdk::prep_smem_bytes(p.C), dev->stream>>>(p, 0);
    LAUNCHED("ssd_chunk_fwd (per-chunk maps)");
    ssdk::ssd_scan<<<scan_blocks(elements), SSD_THREADS, 0, dev->stream>>>(p, 0, elements);
    LAUNCHED("ssd_chunk_fwd (state scan)");
    ssdk::ssd_out<<<items, SSD_THREADS, (size_t)ssdk::out_smem_bytes(p.C), dev->stream>>>(p);
    LAUNCHED("ssd_chunk_fwd (output)");
    return TTT_OK;
}

int ttt__cu_ssd_chunk_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *dg,
                          ttt_tensor *ds0, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                          const ttt_tensor *g, const ttt_tensor *states, const ttt_tensor *dout,
                          const ttt_tensor *ds_out, int64_t chunk) {
    ENTER(dev, self);
    ssdk::Params p;
    int64_t bh;
    if (!ssd_supported(q, v, g, chunk, &p, &bh)) return TTT_BACKEND_DECLINED;
    if ((g == NULL) != (dg == NULL)) {
        ttt_backend_error("ssd_chunk_bwd: dg must be given exactly when g is");
        return TTT_ERR;
    }
    const int64_t nA = bh * p.N, nS = bh * p.N * p.K * p.V;
    if (scratch_reserve(dev, &dev->gdn_scratch, sizeof(float) * (size_t)(nA + nS), "ssd_chunk_bwd")) return TTT_ERR;
    float *w = (float *)dev->gdn_scratch.p;
    p.decay = w, p.dstates = w + nA;
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.g = g ? (const float *)g->data : NULL;
    p.states = (float *)states->data;
    p.dout = dout ? (const float *)dout->data : NULL;
    p.ds_out = ds_out ? (const float *)ds_out->data : NULL;
    p.dq = (float *)dq->data, p.dk = (float *)dk->data, p.dv = (float *)dv->data;
    p.dg = dg ? (float *)dg->data : NULL;
    p.ds0 = ds0 ? (float *)ds0->data : NULL;
    const unsigned items = (unsigned)(bh * p.N);
    const int64_t elements = bh * p.K * p.V;
    ssdk::ssd_prep<<<items, SSD_THREADS, (size_t)ssdk::prep_smem_bytes(p.C), dev->stream>>>(p, 1);
    LAUNCHED("ssd_chunk_bwd (per-chunk maps)");
    ssdk::ssd_scan<<<scan_blocks(elements), SSD_THREADS, 0, dev->stream>>>(p, 1, elements);
    LAUNCHED("ssd_chunk_bwd (state-gradient scan)");
    ssdk::ssd_bwd_chunk<<<items, SSD_THREADS, (size_t)ssdk::bwd_smem_bytes(p.C, SSD_THREADS), dev->stream>>>(p);
    LAUNCHED("ssd_chunk_bwd (per-chunk gradients)");
    return TTT_OK;
}
