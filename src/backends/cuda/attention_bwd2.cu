/* The fused double backward of attention (kernels in attention_bwd2.cuh)
 * behind the backend entry attention_bwd2 (include/ttt/backend.h). f32, head
 * sizes up to 128; anything else is declined and the op layer differentiates
 * the composed attention instead. Three launches: the row statistics, then gQ
 * and gdout per query tile, then gK and gV per key tile. */
#include <limits.h>
#include <string.h>
#include <stdint.h>

#include "cuda_internal.h"

extern __shared__ float4 attn_bwd2_smem_raw[];
#define ATTN_SMEM() reinterpret_cast<float *>(attn_bwd2_smem_raw)
#include "attention_bwd2.cuh"

namespace {

bool dense_f32(const ttt_tensor *t) { return t && t->dtype == TTT_F32; }

template <int D>
int launch(CuDev *dev, const attn::Params &p, const attn::Bwd2 &b, int64_t bh) {
    static uint64_t r_ok, q_ok, kv_ok; /* per GPU: ttt__allow_smem */
    const int sr = attn::bwd2_rows_smem<D>(), sq = attn::bwd2_q_smem<D>(), skv = attn::bwd2_kv_smem<D>();
    if (ttt__allow_smem(attn::attn_bwd2_rows<D>, sr, dev, &r_ok) || ttt__allow_smem(attn::attn_bwd2_q<D>, sq, dev, &q_ok) ||
        ttt__allow_smem(attn::attn_bwd2_kv<D>, skv, dev, &kv_ok))
        return TTT_ERR;
    const dim3 grid_q((unsigned)((p.tq + attn::BR - 1) / attn::BR), (unsigned)bh);
    const dim3 grid_k((unsigned)((p.tk + attn::Tile<D>::BC - 1) / attn::Tile<D>::BC), (unsigned)bh);
    attn::attn_bwd2_rows<D><<<grid_q, attn::THREADS, sr, dev->stream>>>(p, b);
    LAUNCHED("attention_bwd2_rows");
    attn::attn_bwd2_q<D><<<grid_q, attn::THREADS, sq, dev->stream>>>(p, b);
    LAUNCHED("attention_bwd2_q");
    attn::attn_bwd2_kv<D><<<grid_k, attn::THREADS, skv, dev->stream>>>(p, b);
    LAUNCHED("attention_bwd2_kv");
    return TTT_OK;
}

}  // namespace

int ttt__cu_attention_bwd2(ttt_backend_state *self, ttt_tensor *gq, ttt_tensor *gk, ttt_tensor *gv, ttt_tensor *gdout, ttt_tensor *rows,
                             const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *dout,
                             const ttt_tensor *lse, const ttt_tensor *delta, const ttt_tensor *uq, const ttt_tensor *uk,
                             const ttt_tensor *uv, int causal, int64_t window, double scale) {
    ENTER(dev, self);
    const ttt_tensor *all[] = {gq, gk, gv, gdout, rows, q, k, v, dout, lse, delta, uq, uk, uv};
    for (const ttt_tensor *t : all)
        if (!dense_f32(t)) return TTT_BACKEND_DECLINED;
    if (q->ndim < 2) return TTT_BACKEND_DECLINED;
    const int r = q->ndim;
    const int64_t bh = ttt__leading(q), tq = q->shape[r - 2], tk = k->shape[r - 2], d = q->shape[r - 1], dv = v->shape[r - 1];
    if (bh < 1 || bh > 65535 || tq < 1 || tk < 1 || tq > INT_MAX / 2 || tk > INT_MAX / 2 || d < 1 || d > 128 || dv < 1 ||
        dv > 128)
        return TTT_BACKEND_DECLINED;
    attn::Params p;
    memset(&p, 0, sizeof p);
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.dout = (const float *)dout->data, p.lse = (const float *)lse->data, p.delta = (const float *)delta->data;
    p.tq = (int)tq, p.tk = (int)tk, p.d = (int)d, p.dvd = (int)dv;
    p.causal = causal;
    p.window = causal ? window : 0;
    p.off = causal ? tk - tq : 0;
    p.scale = (float)scale;
    const void *ptrs[] = {q->data, k->data, v->data, dout->data, uq->data, uk->data, uv->data};
    p.vec4 = d % 4 == 0 && dv % 4 == 0;
    for (const void *ptr : ptrs) p.vec4 = p.vec4 && ttt__aligned16(ptr);
    attn::Bwd2 b;
    b.uq = (const float *)uq->data, b.uk = (const float *)uk->data, b.uv = (const float *)uv->data;
    b.ra = (float *)rows->data, b.rc = (float *)rows->data + bh * tq;
    b.gq = (float *)gq->data, b.gk = (float *)gk->data, b.gv = (float *)gv->data, b.gg = (float *)gdout->data;
    return d <= 64 && dv <= 64 ? launch<64>(dev, p, b, bh) : launch<128>(dev, p, b, bh);
}
