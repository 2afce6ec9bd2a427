/* The fused double backward of attention behind the backend entry
 * attention_bwd2 (include/ttt/backend.h): f32 (attention_bwd2.cuh, FMA tiles,
 * head sizes up to 128) and bf16 (attention_bwd2_bf16.cuh, tensor cores, head
 * sizes 64 and 128 with v's equal to q's; bf16 in and out like the first-order
 * bf16 entry, lse, delta and the row statistics f32). Anything else is declined
 * and the op layer differentiates the composed attention instead (bf16 cast to
 * f32 there: src/composed/attention.c, bwd2_composed). TTT_ATTN_BWD2_BF16=0
 * (read once) declines bf16 too, for before/after timings. Three launches: the
 * row statistics, then gQ and gdout per query tile, then gK and gV per key tile. */
#include <limits.h>
#include <string.h>
#include <stdint.h>

#include "cuda_internal.h"

extern __shared__ float4 attn_bwd2_smem_raw[];
#define ATTN_SMEM() reinterpret_cast<float *>(attn_bwd2_smem_raw)
#include "attention_bwd2.cuh"
#include "attention_bwd2_bf16.cuh"

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

/* ---- bf16 ------------------------------------------------------------------------------------------------- */

/* On by default; TTT_ATTN_BWD2_BF16=0 (read once) declines bf16, so the composed path (cast to f32) runs. */
bool bf16_env() {
    static const bool on = ttt__env_switch("TTT_ATTN_BWD2_BF16", true);
    return on;
}

template <int D>
int launch_bf16(CuDev *dev, const attnbf::Params &p, const attnbf::Bwd2 &b, int64_t bh) {
    typedef attnbf::Cfg2<D> C;
    typedef typename C::Rows R;
    typedef typename C::Q Q;
    typedef typename C::Kv KV;
    typedef attnbf::B2<D, R::NW, R::BT, R::SC> BR;
    typedef attnbf::B2<D, Q::NW, Q::BT, Q::SC> BQ;
    typedef attnbf::B2<D, KV::NW, KV::BT, KV::SC> BK;
    static uint64_t r_ok, q_ok, kv_ok; /* per GPU: ttt__allow_smem */
    if (ttt__allow_smem(attnbf::bwd2_rows<D, R::NW, R::BT, R::SC, R::MINB, (bool)R::HOLD>, BR::SMEM_Q, dev, &r_ok) ||
        ttt__allow_smem(attnbf::bwd2_q<D, Q::NW, Q::BT, Q::SC, Q::MINB, (bool)Q::HOLD>, BQ::SMEM_Q, dev, &q_ok) ||
        ttt__allow_smem(attnbf::bwd2_kv<D, KV::NW, KV::BT, KV::SC, KV::MINB, (bool)KV::HOLD>, BK::SMEM_KV, dev, &kv_ok))
        return TTT_ERR;
    attnbf::bwd2_rows<D, R::NW, R::BT, R::SC, R::MINB, (bool)R::HOLD>
        <<<dim3((unsigned)((p.tq + BR::BR - 1) / BR::BR), (unsigned)bh), BR::THREADS, BR::SMEM_Q, dev->stream>>>(p, b);
    LAUNCHED("attention_bwd2_rows_bf16");
    attnbf::bwd2_q<D, Q::NW, Q::BT, Q::SC, Q::MINB, (bool)Q::HOLD>
        <<<dim3((unsigned)((p.tq + BQ::BR - 1) / BQ::BR), (unsigned)bh), BQ::THREADS, BQ::SMEM_Q, dev->stream>>>(p, b);
    LAUNCHED("attention_bwd2_q_bf16");
    attnbf::bwd2_kv<D, KV::NW, KV::BT, KV::SC, KV::MINB, (bool)KV::HOLD>
        <<<dim3((unsigned)((p.tk + BK::BR - 1) / BK::BR), (unsigned)bh), BK::THREADS, BK::SMEM_KV, dev->stream>>>(p, b);
    LAUNCHED("attention_bwd2_kv_bf16");
    return TTT_OK;
}

int bf16_bwd2(CuDev *dev, ttt_tensor *gq, ttt_tensor *gk, ttt_tensor *gv, ttt_tensor *gdout, ttt_tensor *rows,
              const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *dout, const ttt_tensor *lse,
              const ttt_tensor *delta, const ttt_tensor *uq, const ttt_tensor *uk, const ttt_tensor *uv, int causal,
              int64_t window, double scale) {
    if (!bf16_env()) return TTT_BACKEND_DECLINED;
    const ttt_tensor *b16[] = {gq, gk, gv, gdout, q, k, v, dout, uq, uk, uv};
    for (const ttt_tensor *t : b16)
        if (!t || t->dtype != TTT_BF16) return TTT_BACKEND_DECLINED;
    if (!dense_f32(rows) || !dense_f32(lse) || !dense_f32(delta) || q->ndim < 2) return TTT_BACKEND_DECLINED;
    const int r = q->ndim;
    const int64_t bh = ttt__leading(q), tq = q->shape[r - 2], tk = k->shape[r - 2], d = q->shape[r - 1], dv = v->shape[r - 1];
    if (bh < 1 || bh > 65535 || tq < 1 || tk < 1 || tq > INT_MAX / 2 || tk > INT_MAX / 2 || (d != 64 && d != 128) ||
        dv != d)
        return TTT_BACKEND_DECLINED;
    for (const ttt_tensor *t : {gq, gk, gv, gdout})
        if (!ttt__aligned4(t->data)) return TTT_BACKEND_DECLINED; /* the kernels store bf16 pairs */
    attnbf::Params p;
    memset(&p, 0, sizeof p);
    p.q = (const uint16_t *)q->data, p.k = (const uint16_t *)k->data, p.v = (const uint16_t *)v->data;
    p.dout = (const uint16_t *)dout->data, p.lse = (const float *)lse->data, p.delta = (const float *)delta->data;
    p.tq = (int)tq, p.tk = (int)tk;
    p.causal = causal;
    p.window = causal ? window : 0;
    p.off = causal ? tk - tq : 0;
    p.scale = (float)scale;
    p.aligned = 1;
    for (const ttt_tensor *t : {q, k, v, dout, uq, uk, uv}) p.aligned = p.aligned && ttt__aligned16(t->data);
    attnbf::Bwd2 b;
    b.uq = (const uint16_t *)uq->data, b.uk = (const uint16_t *)uk->data, b.uv = (const uint16_t *)uv->data;
    b.ra = (float *)rows->data, b.rc = (float *)rows->data + bh * tq;
    b.gq = (uint16_t *)gq->data, b.gk = (uint16_t *)gk->data, b.gv = (uint16_t *)gv->data, b.gg = (uint16_t *)gdout->data;
    return d == 64 ? launch_bf16<64>(dev, p, b, bh) : launch_bf16<128>(dev, p, b, bh);
}

}  // namespace

int ttt__cu_attention_bwd2(ttt_backend_state *self, ttt_tensor *gq, ttt_tensor *gk, ttt_tensor *gv, ttt_tensor *gdout, ttt_tensor *rows,
                             const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *dout,
                             const ttt_tensor *lse, const ttt_tensor *delta, const ttt_tensor *uq, const ttt_tensor *uk,
                             const ttt_tensor *uv, int causal, int64_t window, double scale) {
    ENTER(dev, self);
    if (q->dtype == TTT_BF16)
        return bf16_bwd2(dev, gq, gk, gv, gdout, rows, q, k, v, dout, lse, delta, uq, uk, uv, causal, window, scale);
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
