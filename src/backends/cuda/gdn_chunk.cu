/* The fused chunkwise Gated DeltaNet core on the GPU (backend.h: gdn_chunk_fwd, gdn_chunk_bwd): the
 * launchers of the chunk-parallel kernels in gdn_chunk.cuh (256 threads a block), f32 only (the op casts
 * bf16 inputs to f32 before calling, as the cores compute bf16 in f32).
 *
 *   forward:  gdn_prep (per chunk) -> gdn_scan (per head and tile of dv columns, chunks in order) ->
 *             gdn_out (per chunk and tile)
 *   backward: gdn_prep (per chunk) -> gdn_scan (chunks in reverse) -> gdn_bwd_chunk (per chunk and tile)
 *             [-> gdn_sum_tiles, when the backward's columns are split]
 * The tiles (gdnk::make_plan, checked by the emulator test): the scan's dv columns are halved while it
 * has fewer blocks than the GPU has SMs, down to 8 columns (B = 1, H = 12, dv = 64: 8 tiles, 96 blocks);
 * the per-chunk kernels split columns only when B H N is below the SM count or their shared memory does
 * not fit (dk = dv = 128 at C = 64: the backward in tiles of 32). Scratch (the instance's gdn_scratch,
 * stream-ordered like the other scratch buffers; floats): forward A_c [B H N dk dk], Ut [B H T dv],
 * Qe [B H T dk], P [B H N C C], and the states when the caller keeps none [B H N dk dv]; backward A_c,
 * the per-chunk state gradients [B H N dk dv] and, with split columns, per-tile partial dq, dk, dbeta, dg.
 *
 * On by default where they were measured faster than the composed core (H100, 2026-12-06, docs/mixers.md:
 * dk = dv = 64, fwd + bwd 2.7x at T 2K and 1.9x at 8K in f32), that is for dk, dv <= 64; at dk = dv = 128
 * the forward was faster (1.5 against 2.3 ms) but forward + backward slower (6.7 against 6.1 ms), so wider
 * heads compose unless TTT_GDN_CUDA_FUSED=1 forces the kernels; TTT_GDN_CUDA_FUSED=0 switches them off.
 * Declined, so that ttt_gated_delta_chunked composes the core of the generic kernels instead: other
 * dtypes, chunks over 64 and shapes whose kernels do not fit in shared memory (at C = 64: dk above about
 * 235, or dv above about 580 at dk = 64). The forward declines exactly what the backward would, so a
 * recorded forward always has its backward. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern __shared__ float4 gdn_smem_raw[];
#define GDN_SMEM() reinterpret_cast<float *>(gdn_smem_raw)
#include "gdn_chunk.cuh"

enum { GDN_THREADS = 256, GDN_MAX_CHUNK = 64 };

/* The launch's shape and plan, or false where the kernels leave it to the composed path. */
static bool gdn_supported(CuDev *dev, const ttt_tensor *q, const ttt_tensor *v, int64_t chunk, gdnk::Params *p,
                          int64_t *bh, gdnk::Plan *plan, int *smem_max) {
    static int mode = -1; /* 0 off, 1 forced on, 2 where measured faster (the default) */
    if (mode < 0) {
        const char *e = getenv("TTT_GDN_CUDA_FUSED");
        mode = !e || !*e ? 2 : !strcmp(e, "1") ? 1 : 0;
    }
    if (!mode) return false;
    if (q->dtype != TTT_F32 || v->dtype != TTT_F32 || q->ndim != 4 || v->ndim != 4) return false;
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], K = q->shape[3], V = v->shape[3];
    if (mode == 2 && (K > 64 || V > 64)) return false;
    const int64_t wide = K > V ? K : V;
    if (chunk < 1 || chunk > GDN_MAX_CHUNK || B * H < 1 || B * H > INT_MAX || T < 1 || K < 1 || V < 1 ||
        T * wide > INT_MAX / 2)
        return false;
    const int C = (int)(chunk < T ? chunk : T);
    const int64_t N = (T + C - 1) / C;
    if (B * H * N > INT_MAX) return false; /* the per-chunk kernels' grid.x */
    int optin = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev->index) != cudaSuccess) return false;
    if (!gdnk::make_plan(B * H, (int)N, C, (int)K, (int)V, GDN_THREADS, dev->sm_count, optin, plan)) return false;
    memset(p, 0, sizeof *p);
    p->T = (int)T, p->C = C, p->K = (int)K, p->V = (int)V, p->N = (int)N;
    *bh = B * H;
    *smem_max = optin;
    return true;
}

static unsigned tiles_of(int V, int vt) { return (unsigned)((V + vt - 1) / vt); }

int ttt__cu_gdn_chunk_fwd(ttt_backend_state *self, ttt_tensor *o, ttt_tensor *s_out, ttt_tensor *states,
                          const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *beta,
                          const ttt_tensor *g, const ttt_tensor *s0, int64_t chunk) {
    ENTER(dev, self);
    gdnk::Params p;
    gdnk::Plan plan;
    int64_t bh;
    int smem_max;
    if (!gdn_supported(dev, q, v, chunk, &p, &bh, &plan, &smem_max)) return TTT_BACKEND_DECLINED;
    static uint64_t ready_prep, ready_scan, ready_out; /* per GPU: the opt-in limit, set once (ttt__allow_smem) */
    if (ttt__allow_smem(gdnk::gdn_prep, smem_max, dev, &ready_prep) ||
        ttt__allow_smem(gdnk::gdn_scan, smem_max, dev, &ready_scan) ||
        ttt__allow_smem(gdnk::gdn_out, smem_max, dev, &ready_out))
        return TTT_ERR;
    const int64_t nA = bh * p.N * p.K * p.K, nU = bh * p.T * p.V, nQ = bh * p.T * p.K, nP = bh * p.N * p.C * p.C,
                  nS = states ? 0 : bh * p.N * p.K * p.V;
    if (scratch_reserve(dev, &dev->gdn_scratch, sizeof(float) * (size_t)(nA + nU + nQ + nP + nS), "gdn_chunk_fwd"))
        return TTT_ERR;
    float *w = (float *)dev->gdn_scratch.p;
    p.amap = w, p.ut = w + nA, p.qe = p.ut + nU, p.pm = p.qe + nQ;
    p.states = states ? (float *)states->data : p.pm + nP;
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.beta = (const float *)beta->data, p.g = (const float *)g->data;
    p.s0 = s0 ? (const float *)s0->data : NULL;
    p.o = (float *)o->data;
    p.s_out = s_out ? (float *)s_out->data : NULL;
    const unsigned items = (unsigned)(bh * p.N);
    gdnk::gdn_prep<<<items, GDN_THREADS, (size_t)plan.prep_bytes, dev->stream>>>(p, 0);
    LAUNCHED("gdn_chunk_fwd (per-chunk maps)");
    p.VT = plan.scan_vt;
    gdnk::gdn_scan<<<dim3((unsigned)bh, tiles_of(p.V, p.VT)), GDN_THREADS, (size_t)plan.scan_bytes, dev->stream>>>(p, 0);
    LAUNCHED("gdn_chunk_fwd (state scan)");
    p.VT = plan.out_vt;
    gdnk::gdn_out<<<dim3(items, tiles_of(p.V, p.VT)), GDN_THREADS, (size_t)plan.out_bytes, dev->stream>>>(p);
    LAUNCHED("gdn_chunk_fwd (output)");
    return TTT_OK;
}

int ttt__cu_gdn_chunk_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *dbeta,
                          ttt_tensor *dg, ttt_tensor *ds0, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                          const ttt_tensor *beta, const ttt_tensor *g, const ttt_tensor *states, const ttt_tensor *dout,
                          const ttt_tensor *ds_out, int64_t chunk) {
    ENTER(dev, self);
    gdnk::Params p;
    gdnk::Plan plan;
    int64_t bh;
    int smem_max;
    if (!gdn_supported(dev, q, v, chunk, &p, &bh, &plan, &smem_max)) return TTT_BACKEND_DECLINED;
    static uint64_t ready_prep, ready_scan, ready_bwd;
    if (ttt__allow_smem(gdnk::gdn_prep, smem_max, dev, &ready_prep) ||
        ttt__allow_smem(gdnk::gdn_scan, smem_max, dev, &ready_scan) ||
        ttt__allow_smem(gdnk::gdn_bwd_chunk, smem_max, dev, &ready_bwd))
        return TTT_ERR;
    const int tiles = (int)tiles_of(p.V, plan.bwd_vt);
    const int64_t nk = bh * p.T * p.K, nt = bh * p.T; /* elements of dq (and dk), of dbeta (and dg) */
    const int64_t nA = bh * p.N * p.K * p.K, nS = bh * p.N * p.K * p.V, nPart = tiles > 1 ? tiles * (2 * nk + 2 * nt) : 0;
    if (scratch_reserve(dev, &dev->gdn_scratch, sizeof(float) * (size_t)(nA + nS + nPart), "gdn_chunk_bwd"))
        return TTT_ERR;
    float *w = (float *)dev->gdn_scratch.p;
    p.amap = w, p.dstates = w + nA;
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.beta = (const float *)beta->data, p.g = (const float *)g->data;
    p.states = (float *)states->data;
    p.dout = dout ? (const float *)dout->data : NULL;
    p.ds_out = ds_out ? (const float *)ds_out->data : NULL;
    p.dv = (float *)dv->data;
    p.ds0 = ds0 ? (float *)ds0->data : NULL;
    if (tiles == 1) {
        p.dq = (float *)dq->data, p.dk = (float *)dk->data, p.dbeta = (float *)dbeta->data, p.dg = (float *)dg->data;
    } else { /* partial sums per tile: [tiles, dq], [tiles, dk], [tiles, dbeta], [tiles, dg] */
        float *part = p.dstates + nS;
        p.part_k = nk, p.part_t = nt;
        p.dq = part, p.dk = part + tiles * nk, p.dbeta = part + 2 * tiles * nk, p.dg = p.dbeta + tiles * nt;
    }
    const unsigned items = (unsigned)(bh * p.N);
    gdnk::gdn_prep<<<items, GDN_THREADS, (size_t)plan.prep_bytes, dev->stream>>>(p, 1);
    LAUNCHED("gdn_chunk_bwd (per-chunk maps)");
    p.VT = plan.scan_vt;
    gdnk::gdn_scan<<<dim3((unsigned)bh, tiles_of(p.V, p.VT)), GDN_THREADS, (size_t)plan.scan_bytes, dev->stream>>>(p, 1);
    LAUNCHED("gdn_chunk_bwd (state-gradient scan)");
    p.VT = plan.bwd_vt;
    gdnk::gdn_bwd_chunk<<<dim3(items, (unsigned)tiles), GDN_THREADS, (size_t)plan.bwd_bytes, dev->stream>>>(p);
    LAUNCHED("gdn_chunk_bwd (per-chunk gradients)");
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
