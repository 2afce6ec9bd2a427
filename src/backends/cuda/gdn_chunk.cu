/* The fused chunkwise Gated DeltaNet core on the GPU (backend.h: gdn_chunk_fwd, gdn_chunk_bwd): the
 * launchers of the kernels in gdn_chunk.cuh, one block of 256 threads per (batch, head, tile of dv
 * columns) with its columns of the state in shared memory. f32 only (the op casts bf16 inputs to f32
 * before calling, as the cores compute bf16 in f32).
 *
 * Tiles (gdnk::choose_tile): the columns are split in halves while the grid has fewer blocks than the GPU
 * has SMs and tiles stay 16 columns or wider (B = 1, H = 12, dv = 64: 4 tiles of 16, 48 blocks), then further while the
 * backward's shared memory (gdnk::bwd_smem_floats) is more than a block gets, down to 8 columns (dk = dv
 * = 128 at C = 64: tiles of 16, 152 KB). With several tiles the backward writes per-tile partial dq, dk,
 * dbeta, dg into the instance's scratch and gdn_sum_tiles adds them in tile order (no atomics).
 * Declined, so that ttt_gated_delta_chunked composes the core of the generic kernels instead: other
 * dtypes, chunks over 64 and shapes that do not fit even in tiles of 8 (dk above about 290 at C =
 * 64). The forward declines exactly what the backward would, so a recorded forward always has its
 * backward. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern __shared__ float4 gdn_smem_raw[];
#define GDN_SMEM() reinterpret_cast<float *>(gdn_smem_raw)
#include "gdn_chunk.cuh"

enum { GDN_THREADS = 256, GDN_MAX_CHUNK = 64 };

/* The launch's shape, or false where the kernels leave it to the composed path. */
static bool gdn_supported(CuDev *dev, const ttt_tensor *q, const ttt_tensor *v, int64_t chunk, gdnk::Params *p,
                          int64_t *bh, int *tiles, int *smem_fwd, int *smem_bwd, int *smem_max) {
    /* Off unless TTT_GDN_CUDA_FUSED=1: on an H200 (2026-12-06, docs/mixers.md) these kernels were 1.8x (T 2K)
     * to 4x (T 8K) slower than the composed core, because each block walks every chunk in turn. They stay
     * checked (emu_gdn_chunk) and selectable for the chunk-parallel rewrite that has to beat the composed core. */
    static int enabled = -1;
    if (enabled < 0) {
        const char *e = getenv("TTT_GDN_CUDA_FUSED");
        enabled = e && !strcmp(e, "1");
    }
    if (!enabled) return false;
    if (q->dtype != TTT_F32 || v->dtype != TTT_F32 || q->ndim != 4 || v->ndim != 4) return false;
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], K = q->shape[3], V = v->shape[3];
    const int64_t wide = K > V ? K : V;
    if (chunk < 1 || chunk > GDN_MAX_CHUNK || B * H < 1 || B * H > INT_MAX || T < 1 || K < 1 || V < 1 ||
        T * wide > INT_MAX / 2)
        return false;
    const int C = (int)(chunk < T ? chunk : T);
    int optin = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev->index) != cudaSuccess) return false;
    const int vt = gdnk::choose_tile(B * H, C, (int)K, (int)V, GDN_THREADS, dev->sm_count, optin);
    if (!vt) return false;
    const int64_t fwd = (int64_t)gdnk::fwd_smem_floats(C, (int)K, vt) * 4;
    const int64_t bwd = (int64_t)gdnk::bwd_smem_floats(C, (int)K, vt, GDN_THREADS) * 4;
    memset(p, 0, sizeof *p);
    p->T = (int)T, p->C = C, p->K = (int)K, p->V = (int)V, p->VT = vt;
    *bh = B * H;
    *tiles = (int)((V + vt - 1) / vt);
    *smem_fwd = (int)fwd, *smem_bwd = (int)bwd, *smem_max = optin;
    return true;
}

int ttt__cu_gdn_chunk_fwd(ttt_backend_state *self, ttt_tensor *o, ttt_tensor *s_out, ttt_tensor *states,
                          const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *beta,
                          const ttt_tensor *g, const ttt_tensor *s0, int64_t chunk) {
    ENTER(dev, self);
    gdnk::Params p;
    int64_t bh;
    int tiles, smem_fwd, smem_bwd, smem_max;
    if (!gdn_supported(dev, q, v, chunk, &p, &bh, &tiles, &smem_fwd, &smem_bwd, &smem_max)) return TTT_BACKEND_DECLINED;
    static uint64_t ready; /* per GPU: the opt-in limit, set once (ttt__allow_smem) */
    if (ttt__allow_smem(gdnk::gdn_fwd, smem_max, dev, &ready)) return TTT_ERR;
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.beta = (const float *)beta->data, p.g = (const float *)g->data;
    p.s0 = s0 ? (const float *)s0->data : NULL;
    p.o = (float *)o->data;
    p.s_out = s_out ? (float *)s_out->data : NULL;
    p.states = states ? (float *)states->data : NULL;
    gdnk::gdn_fwd<<<dim3((unsigned)bh, (unsigned)tiles), GDN_THREADS, smem_fwd, dev->stream>>>(p);
    LAUNCHED("gdn_chunk_fwd");
    return TTT_OK;
}

int ttt__cu_gdn_chunk_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *dbeta,
                          ttt_tensor *dg, ttt_tensor *ds0, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                          const ttt_tensor *beta, const ttt_tensor *g, const ttt_tensor *states, const ttt_tensor *dout,
                          const ttt_tensor *ds_out, int64_t chunk) {
    ENTER(dev, self);
    gdnk::Params p;
    int64_t bh;
    int tiles, smem_fwd, smem_bwd, smem_max;
    if (!gdn_supported(dev, q, v, chunk, &p, &bh, &tiles, &smem_fwd, &smem_bwd, &smem_max)) return TTT_BACKEND_DECLINED;
    static uint64_t ready;
    if (ttt__allow_smem(gdnk::gdn_bwd, smem_max, dev, &ready)) return TTT_ERR;
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.beta = (const float *)beta->data, p.g = (const float *)g->data;
    p.states = (float *)states->data;
    p.dout = dout ? (const float *)dout->data : NULL;
    p.ds_out = ds_out ? (const float *)ds_out->data : NULL;
    p.dv = (float *)dv->data;
    p.ds0 = ds0 ? (float *)ds0->data : NULL;
    const int64_t nk = bh * p.T * p.K, nt = bh * p.T; /* elements of dq (and dk), of dbeta (and dg) */
    if (tiles == 1) {
        p.dq = (float *)dq->data, p.dk = (float *)dk->data, p.dbeta = (float *)dbeta->data, p.dg = (float *)dg->data;
    } else { /* partial sums per tile: [tiles, dq], [tiles, dk], [tiles, dbeta], [tiles, dg] */
        const size_t bytes = sizeof(float) * (size_t)tiles * (size_t)(2 * nk + 2 * nt);
        if (scratch_reserve(dev, &dev->gdn_scratch, bytes, "gdn_chunk_bwd")) return TTT_ERR;
        float *part = (float *)dev->gdn_scratch.p;
        p.part_k = nk, p.part_t = nt;
        p.dq = part, p.dk = part + tiles * nk, p.dbeta = part + 2 * tiles * nk, p.dg = p.dbeta + tiles * nt;
    }
    gdnk::gdn_bwd<<<dim3((unsigned)bh, (unsigned)tiles), GDN_THREADS, smem_bwd, dev->stream>>>(p);
    LAUNCHED("gdn_chunk_bwd");
    if (tiles > 1) {
        float *outs[4] = {(float *)dq->data, (float *)dk->data, (float *)dbeta->data, (float *)dg->data};
        const float *parts[4] = {p.dq, p.dk, p.dbeta, p.dg};
        for (int i = 0; i < 4; i++) {
            const int64_t n = i < 2 ? nk : nt, blocks = (n + 255) / 256 < 65535 ? (n + 255) / 256 : 65535;
            gdnk::gdn_sum_tiles<<<(unsigned)blocks, 256, 0, dev->stream>>>(outs[i], parts[i], n, tiles);
            LAUNCHED("gdn_chunk_bwd (sum of tiles)");
        }
    }
    return TTT_OK;
}
