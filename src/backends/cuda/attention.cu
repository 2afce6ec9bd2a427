/* Fused attention on the GPU: the launchers of the kernels in
 * attention_kernels.cuh behind the backend entries attention_fwd and
 * attention_bwd (include/ttt/backend.h). f32 only, head sizes up to 128;
 * anything else is declined and ttt_attention composes it instead.
 *
 * Backward (flash-attention 2 style, deterministic): delta = rowsum(dout * out),
 * then one kernel per key tile for dK and dV and one per query tile for dQ,
 * each recomputing the probabilities of its tiles from lse. Two kernels
 * instead of one with atomic adds into dQ cost two more tile products (7 in
 * all, against 5) but give the same bits on every run. */
#include <limits.h>
#include <string.h>
#include <stdint.h>

#include "cuda_internal.h"

extern __shared__ float4 attn_smem_raw[];
#define ATTN_SMEM() reinterpret_cast<float *>(attn_smem_raw)
#include "attention_kernels.cuh"

enum { MAX_HEAD = 128, MAX_GRID_Y = 65535 };

struct AttnShape {
    int64_t bh, tq, tk, d, dv;
};

static int64_t leading(const ttt_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim - 2; i++) n *= t->shape[i];
    return n;
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* The kernels' limits; false: leave it to the composed path. */
static bool supported(const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, AttnShape *s) {
    if (q->dtype != TTT_F32 || k->dtype != TTT_F32 || v->dtype != TTT_F32 || q->ndim < 2) return false;
    const int r = q->ndim;
    *s = AttnShape{leading(q), q->shape[r - 2], k->shape[r - 2], q->shape[r - 1], v->shape[r - 1]};
    return s->bh >= 1 && s->bh <= MAX_GRID_Y && s->tq >= 1 && s->tk >= 1 && s->tq <= INT_MAX / 2 &&
           s->tk <= INT_MAX / 2 && s->d >= 1 && s->d <= MAX_HEAD && s->dv >= 1 && s->dv <= MAX_HEAD;
}

static attn::Params params(const AttnShape &s, int causal, int64_t window, double scale) {
    attn::Params p;
    memset(&p, 0, sizeof p);
    p.tq = (int)s.tq, p.tk = (int)s.tk, p.d = (int)s.d, p.dvd = (int)s.dv;
    p.causal = causal;
    p.window = causal ? window : 0;
    p.off = causal ? s.tk - s.tq : 0;
    p.scale = (float)scale;
    return p;
}

/* Raise a kernel's dynamic shared-memory limit once (above the default 48 KB). */
template <typename K>
static int allow_smem(K kernel, int bytes, bool *done) {
    if (!*done) {
        CU(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
        *done = true;
    }
    return TTT_OK;
}

template <int D>
static int launch_fwd(const attn::Params &p, int64_t bh) {
    static bool ready;
    const int smem = attn::fwd_smem<D>();
    if (allow_smem(attn::attn_fwd<D>, smem, &ready)) return TTT_ERR;
    const dim3 grid((unsigned)((p.tq + attn::BR - 1) / attn::BR), (unsigned)bh);
    attn::attn_fwd<D><<<grid, attn::THREADS, smem, ttt__cuda_stream()>>>(p);
    LAUNCHED("attention_fwd");
    return TTT_OK;
}

template <int D>
static int launch_bwd(const attn::Params &p, int64_t bh) {
    static bool ready_kv, ready_q;
    const int smem = attn::bwd_smem<D>();
    if (allow_smem(attn::attn_bwd_dkdv<D>, smem, &ready_kv) || allow_smem(attn::attn_bwd_dq<D>, smem, &ready_q))
        return TTT_ERR;
    const int64_t rows = bh * p.tq;
    attn::attn_delta<<<(unsigned)((rows + 7) / 8), attn::THREADS, 0, ttt__cuda_stream()>>>(p, rows);
    LAUNCHED("attention_delta");
    attn::Params pd = p;
    pd.delta = p.delta_out;
    const dim3 grid_k((unsigned)((p.tk + attn::Tile<D>::BC - 1) / attn::Tile<D>::BC), (unsigned)bh);
    attn::attn_bwd_dkdv<D><<<grid_k, attn::THREADS, smem, ttt__cuda_stream()>>>(pd);
    LAUNCHED("attention_bwd_dkdv");
    const dim3 grid_q((unsigned)((p.tq + attn::BR - 1) / attn::BR), (unsigned)bh);
    attn::attn_bwd_dq<D><<<grid_q, attn::THREADS, smem, ttt__cuda_stream()>>>(pd);
    LAUNCHED("attention_bwd_dq");
    return TTT_OK;
}

int ttt__cuda_attention_fwd(ttt_tensor *out, ttt_tensor *lse, const ttt_tensor *q, const ttt_tensor *k,
                            const ttt_tensor *v, int causal, int64_t window, double scale) {
    AttnShape s;
    if (!supported(q, k, v, &s)) return TTT_BACKEND_DECLINED;
    attn::Params p = params(s, causal, window, scale);
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.out = (float *)out->data;
    p.lse_out = lse ? (float *)lse->data : NULL;
    p.vec4 = s.d % 4 == 0 && s.dv % 4 == 0 && aligned16(p.q) && aligned16(p.k) && aligned16(p.v);
    return s.d <= 64 && s.dv <= 64 ? launch_fwd<64>(p, s.bh) : launch_fwd<128>(p, s.bh);
}

int ttt__cuda_attention_bwd(ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *delta, const ttt_tensor *dout,
                            const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *out,
                            const ttt_tensor *lse, int causal, int64_t window, double scale) {
    AttnShape s;
    if (!supported(q, k, v, &s)) return TTT_BACKEND_DECLINED;
    attn::Params p = params(s, causal, window, scale);
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.o = (const float *)out->data, p.lse = (const float *)lse->data, p.dout = (const float *)dout->data;
    p.dq = (float *)dq->data, p.dk = (float *)dk->data, p.dv = (float *)dv->data;
    p.delta_out = (float *)delta->data;
    p.vec4 = s.d % 4 == 0 && s.dv % 4 == 0 && aligned16(p.q) && aligned16(p.k) && aligned16(p.v) &&
             aligned16(p.dout);
    return s.d <= 64 && s.dv <= 64 ? launch_bwd<64>(p, s.bh) : launch_bwd<128>(p, s.bh);
}
