/* Fused attention on the GPU: the launchers of the kernels in
 * attention_kernels.cuh (f32, head sizes up to 128) and attention_bf16.cuh
 * (bf16 on the tensor cores, head sizes 64 and 128 with v's equal to q's)
 * behind the backend entries attention_fwd and attention_bwd
 * (include/ttt/backend.h). Anything else is declined and ttt_attention
 * composes it instead (bf16 it declines goes to the f32 path, cast). With
 * TTT_CUDNN=1, bf16 calls without a sliding window try cuDNN's fused attention
 * first (attention_cudnn.cu) and come here when it declines.
 *
 * Backward (flash-attention 2 style, deterministic): delta = rowsum(dout * out),
 * then one kernel per key tile for dK and dV and one per query tile for dQ,
 * each recomputing the probabilities of its tiles from lse. Two kernels
 * instead of one with atomic adds into dQ cost two more tile products (7 in
 * all, against 5) but give the same bits on every run. TTT_ATTN_BWD1=1 runs
 * the bf16 backward as one kernel with 5 products that is deterministic too
 * (dQ's shares added in a fixed order behind semaphores; attnbf::bwd1).
 * TTT_ATTN_DS=1 keeps the two kernels but has the dK/dV one store dS, so that
 * dQ is one product on it (attnbf::bwd_dkdv_ds, bwd_dq_ds; launch_bf16_bwd_ds). */
#include <limits.h>
#include <string.h>
#include <stdint.h>

#include "cuda_internal.h"
#include "attention_cudnn.h"

extern __shared__ float4 attn_smem_raw[];
#define ATTN_SMEM() reinterpret_cast<float *>(attn_smem_raw)
#include "attention_kernels.cuh"
#include "attention_bf16.cuh"

enum { MAX_HEAD = 128, MAX_GRID_Y = 65535 };

struct AttnShape {
    int64_t bh, tq, tk, d, dv;
};

/* The kernels' limits; false: leave it to the composed path. */
static bool supported(const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, AttnShape *s) {
    if (q->dtype != TTT_F32 || k->dtype != TTT_F32 || v->dtype != TTT_F32 || q->ndim < 2) return false;
    const int r = q->ndim;
    *s = AttnShape{ttt__leading(q), q->shape[r - 2], k->shape[r - 2], q->shape[r - 1], v->shape[r - 1]};
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


template <int D>
static int launch_fwd(CuDev *dev, const attn::Params &p, int64_t bh) {
    static uint64_t ready; /* per GPU: ttt__allow_smem */
    const int smem = attn::fwd_smem<D>();
    if (ttt__allow_smem(attn::attn_fwd<D>, smem, dev, &ready)) return TTT_ERR;
    const dim3 grid((unsigned)((p.tq + attn::BR - 1) / attn::BR), (unsigned)bh);
    attn::attn_fwd<D><<<grid, attn::THREADS, smem, dev->stream>>>(p);
    LAUNCHED("attention_fwd");
    return TTT_OK;
}

template <int D>
static int launch_bwd(CuDev *dev, const attn::Params &p, int64_t bh) {
    static uint64_t ready_kv, ready_q; /* per GPU: ttt__allow_smem */
    const int smem = attn::bwd_smem<D>();
    if (ttt__allow_smem(attn::attn_bwd_dkdv<D>, smem, dev, &ready_kv) || ttt__allow_smem(attn::attn_bwd_dq<D>, smem, dev, &ready_q))
        return TTT_ERR;
    const int64_t rows = bh * p.tq;
    attn::attn_delta<<<(unsigned)((rows + 7) / 8), attn::THREADS, 0, dev->stream>>>(p, rows);
    LAUNCHED("attention_delta");
    attn::Params pd = p;
    pd.delta = p.delta_out;
    const dim3 grid_k((unsigned)((p.tk + attn::Tile<D>::BC - 1) / attn::Tile<D>::BC), (unsigned)bh);
    attn::attn_bwd_dkdv<D><<<grid_k, attn::THREADS, smem, dev->stream>>>(pd);
    LAUNCHED("attention_bwd_dkdv");
    const dim3 grid_q((unsigned)((p.tq + attn::BR - 1) / attn::BR), (unsigned)bh);
    attn::attn_bwd_dq<D><<<grid_q, attn::THREADS, smem, dev->stream>>>(pd);
    LAUNCHED("attention_bwd_dq");
    return TTT_OK;
}

/* ---- bf16 ------------------------------------------------------------------------------------------------- */

static bool bf16_shape(const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, AttnShape *s) {
    if (q->dtype != TTT_BF16 || k->dtype != TTT_BF16 || v->dtype != TTT_BF16 || q->ndim < 2) return false;
    const int r = q->ndim;
    *s = AttnShape{ttt__leading(q), q->shape[r - 2], k->shape[r - 2], q->shape[r - 1], v->shape[r - 1]};
    return s->bh >= 1 && s->bh <= MAX_GRID_Y && s->tq >= 1 && s->tk >= 1 && s->tq <= INT_MAX / 2 &&
           s->tk <= INT_MAX / 2 && (s->d == 64 || s->d == 128) && s->dv == s->d;
}


static attnbf::Params bf16_params(const AttnShape &s, int causal, int64_t window, double scale) {
    attnbf::Params p;
    memset(&p, 0, sizeof p);
    p.tq = (int)s.tq, p.tk = (int)s.tk;
    p.causal = causal;
    p.window = causal ? window : 0;
    p.off = causal ? s.tk - s.tq : 0;
    p.scale = (float)scale;
    return p;
}

/* How many shares to split the keys of each query tile into (blockIdx.z; attention_bf16.cuh's split_tiles):
 * more than one only where the grid's blocks fill less than the GPU's block slots (minb per SM) and every share
 * keeps at least 8 key tiles to amortize the combining pass. TTT-E2E's chunks are the case: 1K queries over up
 * to 9K keys make 16 query tiles a head. TTT_ATTN_SPLIT=0 turns splitting off, =N forces N shares. */
static int key_shares(const CuDev *dev, int64_t blocks, int64_t tk, int64_t window, int rows, int bk, int minb) {
    static const int forced = [] {
        const char *e = getenv("TTT_ATTN_SPLIT");
        return e && *e ? atoi(e) : -1;
    }();
    int64_t keys = tk; /* the most keys one query tile sees */
    if (window > 0 && window + rows < keys) keys = window + rows;
    const int64_t tiles = (keys + bk - 1) / bk;
    if (forced >= 0) return (int)(forced < 1 ? 1 : forced < tiles ? forced : tiles);
    const int64_t slots = (int64_t)minb * dev->sm_count;
    if (blocks >= slots || tiles < 16) return 1;
    int64_t n = (slots + blocks - 1) / blocks;
    if (n > tiles / 8) n = tiles / 8;
    if (n > 16) n = 16;
    return n < 2 ? 1 : (int)n;
}

/* The f32 partials of n shares of split keys (forward: outputs and log-sum-exps; dQ: its shares). */
static int reserve_shares(CuDev *dev, attnbf::Params *p, int n, int64_t rows, int d, bool lse) {
    const size_t per = (size_t)rows * (size_t)(d + (lse ? 1 : 0));
    if (scratch_reserve(dev, &dev->attn_scratch, sizeof(float) * per * (size_t)n, "attention (split keys)")) return TTT_ERR;
    p->n_split = n;
    p->part = (float *)dev->attn_scratch.p;
    p->part_lse = lse ? p->part + (size_t)rows * d * n : NULL;
    return TTT_OK;
}

template <int D, typename C>
static int launch_bf16_fwd_cfg(CuDev *dev, const attnbf::Params &p0, int64_t bh) {
    typedef attnbf::Fwd<D, C::NW, C::MW, C::T> F;
    static uint64_t ready; /* per GPU: ttt__allow_smem */
    if (ttt__allow_smem(attnbf::fwd<D, C::NW, C::MW, C::T, C::MINB, C::HOLD>, F::SMEM, dev, &ready)) return TTT_ERR;
    attnbf::Params p = p0;
    const int64_t tiles = (p.tq + F::BR - 1) / F::BR, rows = bh * p.tq;
    const int n = key_shares(dev, tiles * bh, p.tk, p.causal ? p.window : 0, F::BR, C::T, C::MINB);
    if (n > 1 && reserve_shares(dev, &p, n, rows, D, true)) return TTT_ERR;
    const dim3 grid((unsigned)tiles, (unsigned)bh, (unsigned)n);
    attnbf::fwd<D, C::NW, C::MW, C::T, C::MINB, C::HOLD><<<grid, F::THREADS, F::SMEM, dev->stream>>>(p);
    LAUNCHED("attention_fwd_bf16");
    if (n > 1) {
        attnbf::fwd_combine<D><<<(unsigned)((rows + 7) / 8), 256, 0, dev->stream>>>(p, rows);
        LAUNCHED("attention_fwd_combine_bf16");
    }
    return TTT_OK;
}

template <int D, typename C>
static int launch_bf16_dkdv_cfg(CuDev *dev, const attnbf::Params &p, int64_t bh) {
    typedef attnbf::Dkdv<D, C::NW, C::MW, C::T> Kt;
    static uint64_t ready; /* per GPU: ttt__allow_smem */
    if (ttt__allow_smem(attnbf::bwd_dkdv<D, C::NW, C::MW, C::T, C::MINB, (bool)C::HOLD>, Kt::SMEM, dev, &ready))
        return TTT_ERR;
    const dim3 grid((unsigned)((p.tk + Kt::BC - 1) / Kt::BC), (unsigned)bh);
    attnbf::bwd_dkdv<D, C::NW, C::MW, C::T, C::MINB, (bool)C::HOLD>
        <<<grid, Kt::THREADS, Kt::SMEM, dev->stream>>>(p);
    LAUNCHED("attention_bwd_dkdv_bf16");
    return TTT_OK;
}

template <int D, typename C>
static int launch_bf16_dq_cfg(CuDev *dev, const attnbf::Params &p0, int64_t bh) {
    typedef attnbf::Dq<D, C::NW, C::MW, C::T> Qt;
    static uint64_t ready; /* per GPU: ttt__allow_smem */
    if (ttt__allow_smem(attnbf::bwd_dq<D, C::NW, C::MW, C::T, C::MINB, (bool)C::HOLD>, Qt::SMEM, dev, &ready))
        return TTT_ERR;
    attnbf::Params p = p0;
    const int64_t tiles = (p.tq + Qt::BR - 1) / Qt::BR, rows = bh * p.tq;
    const int n = key_shares(dev, tiles * bh, p.tk, p.causal ? p.window : 0, Qt::BR, C::T, C::MINB);
    if (n > 1 && reserve_shares(dev, &p, n, rows, D, false)) return TTT_ERR;
    const dim3 grid((unsigned)tiles, (unsigned)bh, (unsigned)n);
    attnbf::bwd_dq<D, C::NW, C::MW, C::T, C::MINB, (bool)C::HOLD>
        <<<grid, Qt::THREADS, Qt::SMEM, dev->stream>>>(p);
    LAUNCHED("attention_bwd_dq_bf16");
    if (n > 1) {
        attnbf::dq_combine<D><<<(unsigned)((rows + 7) / 8), 256, 0, dev->stream>>>(p, rows);
        LAUNCHED("attention_dq_combine_bf16");
    }
    return TTT_OK;
}

/* TTT_ATTN_BWD1=1: the bf16 backward runs as one kernel (attnbf::bwd1: dK, dV and dQ, dQ's shares added in a
 * fixed order behind per-tile semaphores, so still the same bits on every run, not the two-kernel path's) instead
 * of dkdv + dq. Off by default: correct on an H100 but 1.7-2.4x slower than dkdv + dq there (its turns serialize
 * the blocks; docs/benchmarks.md, "The one-kernel backward"). */
static bool bwd1_wanted() {
    static const bool on = [] {
        const char *e = getenv("TTT_ATTN_BWD1");
        return e && atoi(e) > 0;
    }();
    return on;
}

/* bwd1 in attnbf::Cfg's configuration: dQ's f32 sums [bh, tq, D] and the semaphores (one per head and query tile,
 * then the block ticket) in the attention scratch, the semaphores zeroed on the stream before the kernel. */
template <int D>
static int launch_bf16_bwd1(CuDev *dev, const attnbf::Params &p0, int64_t bh) {
    typedef typename attnbf::Cfg<D>::Bwd1 C;
    typedef attnbf::Bwd1<D, C::NW, C::MW, C::T, C::HOLD> B;
    static uint64_t ready; /* per GPU: ttt__allow_smem */
    if (ttt__allow_smem(attnbf::bwd1<D, C::NW, C::MW, C::T, C::MINB, (int)C::HOLD>, B::SMEM, dev, &ready))
        return TTT_ERR;
    attnbf::Params p = p0;
    const int64_t n_qt = (p.tq + C::T - 1) / C::T, n_kt = (p.tk + B::BC - 1) / B::BC;
    const size_t acc = sizeof(float) * (size_t)(bh * p.tq) * D, sem = sizeof(unsigned) * (size_t)(bh * n_qt + 1);
    if (scratch_reserve(dev, &dev->attn_scratch, acc + sem, "attention (one-kernel backward)")) return TTT_ERR;
    p.dq_acc = (float *)dev->attn_scratch.p;
    p.sem = (unsigned *)((char *)dev->attn_scratch.p + acc);
    CU(cudaMemsetAsync(p.sem, 0, sem, dev->stream));
    attnbf::bwd1<D, C::NW, C::MW, C::T, C::MINB, (int)C::HOLD>
        <<<dim3((unsigned)n_kt, (unsigned)bh), B::THREADS, B::SMEM, dev->stream>>>(p);
    LAUNCHED("attention_bwd1_bf16");
    return TTT_OK;
}

/* TTT_ATTN_DS=1: the bf16 backward stores dS (bf16) from the dK/dV kernel (attnbf::bwd_dkdv_ds) and computes dQ
 * from it with one tile product (attnbf::bwd_dq_ds) instead of recomputing S, P and dP (three). The stored tiles
 * of a group of heads must fit TTT_ATTN_DS_MB (default 1024; fractions allowed, for tests): the heads run in equal
 * groups as large as the cap allows (at T 8K all 12 heads' causal half, 0.8 GB, in one), or, if one head's tiles
 * do not fit, the two-kernel path runs. The same bits on every run. Off by default until timed on a GPU. */
static int64_t ds_cap() {
    static const int64_t cap = [] {
        const char *e = getenv("TTT_ATTN_DS");
        if (!e || atoi(e) <= 0) return (int64_t)0;
        const char *m = getenv("TTT_ATTN_DS_MB");
        const double mb = m && *m ? atof(m) : 1024.0;
        return mb > 0 ? (int64_t)(mb * 1048576.0) : (int64_t)0;
    }();
    return cap;
}

/* The stored-dS backward in the dK/dV configuration C (its key tile x query tile are the stored tiles) with dQ in
 * the configuration Q of attnbf::DqDs, over groups of heads; TTT_BACKEND_DECLINED (nothing launched) where it is off
 * or one head's tiles exceed the cap. */
template <int D, typename C, typename Q>
static int launch_bf16_bwd_ds(CuDev *dev, const attnbf::Params &p0, int64_t bh) {
    typedef attnbf::Dkdv<D, C::NW, C::MW, C::T> Kt;
    typedef attnbf::DqDs<D, Q::NW, Q::MW, Kt::BC, C::T> Qt;
    const int64_t cap = ds_cap();
    if (cap <= 0) return TTT_BACKEND_DECLINED;
    const int64_t n_kt = (p0.tk + Kt::BC - 1) / Kt::BC, per_head = attnbf::ds_first<Kt::BC, C::T>(p0, n_kt);
    const int64_t head_bytes = per_head * Kt::BC * C::T * 2;
    int64_t group = head_bytes > 0 ? cap / head_bytes : bh;
    if (group < 1) return TTT_BACKEND_DECLINED;
    if (group > bh) group = bh;
    const int64_t n_groups = (bh + group - 1) / group;
    group = (bh + n_groups - 1) / n_groups; /* equal groups */
    static uint64_t ready_kv, ready_q; /* per GPU: ttt__allow_smem */
    if (ttt__allow_smem(attnbf::bwd_dkdv_ds<D, C::NW, C::MW, C::T, C::MINB, (bool)C::HOLD>, Kt::SMEM, dev, &ready_kv) ||
        ttt__allow_smem(attnbf::bwd_dq_ds<D, Q::NW, Q::MW, Kt::BC, C::T, Q::MINB>, Qt::SMEM, dev, &ready_q))
        return TTT_ERR;
    /* dQ's keys split into shares where its grid is small (TTT-E2E's chunks: key_shares), their f32 partials after
     * the stored tiles in the same scratch */
    const int64_t q_tiles = (p0.tq + Qt::BR - 1) / Qt::BR;
    const int n_split = key_shares(dev, q_tiles * group, p0.tk, p0.causal ? p0.window : 0, Qt::BR, Kt::BC, Q::MINB);
    const size_t ds_bytes = ((size_t)(group * head_bytes) + 255) / 256 * 256;
    const size_t part_bytes = n_split > 1 ? sizeof(float) * (size_t)(group * p0.tq) * D * (size_t)n_split : 0;
    if (scratch_reserve(dev, &dev->attn_scratch, ds_bytes + part_bytes > 0 ? ds_bytes + part_bytes : 16,
                        "attention (stored dS)"))
        return TTT_ERR;
    for (int64_t h0 = 0; h0 < bh; h0 += group) {
        const int64_t n = bh - h0 < group ? bh - h0 : group, qo = h0 * p0.tq, ko = h0 * p0.tk;
        attnbf::Params p = p0; /* this group's heads */
        p.q += qo * D, p.dout += qo * D, p.dq += qo * D, p.lse += qo, p.delta += qo;
        p.k += ko * D, p.v += ko * D, p.dk += ko * D, p.dv += ko * D;
        p.ds = (uint16_t *)dev->attn_scratch.p;
        p.ds_head = per_head;
        p.n_split = n_split;
        p.part = n_split > 1 ? (float *)((char *)dev->attn_scratch.p + ds_bytes) : NULL;
        attnbf::bwd_dkdv_ds<D, C::NW, C::MW, C::T, C::MINB, (bool)C::HOLD>
            <<<dim3((unsigned)n_kt, (unsigned)n), Kt::THREADS, Kt::SMEM, dev->stream>>>(p);
        LAUNCHED("attention_bwd_dkdv_ds_bf16");
        attnbf::bwd_dq_ds<D, Q::NW, Q::MW, Kt::BC, C::T, Q::MINB>
            <<<dim3((unsigned)q_tiles, (unsigned)n, (unsigned)n_split), Qt::THREADS, Qt::SMEM, dev->stream>>>(p);
        LAUNCHED("attention_bwd_dq_ds_bf16");
        if (n_split > 1) {
            const int64_t rows = n * p.tq;
            attnbf::dq_combine<D><<<(unsigned)((rows + 7) / 8), 256, 0, dev->stream>>>(p, rows);
            LAUNCHED("attention_dq_combine_bf16");
        }
    }
    return TTT_OK;
}

/* Whether a grid of ceil(n / rows) x bh blocks has at least waves blocks per SM. */
static bool big_grid(const CuDev *dev, int64_t n, int rows, int64_t bh, int waves) {
    return (n + rows - 1) / rows * bh >= (int64_t)waves * dev->sm_count;
}

/* attnbf::Cfg's large-grid configuration where its grid is large enough, else the small-grid one */
template <int D>
static int launch_bf16_fwd(CuDev *dev, const attnbf::Params &p, int64_t bh) {
    typedef attnbf::Cfg<D> C;
    if (big_grid(dev, p.tq, 16 * C::Fwd::NW * C::Fwd::MW, bh, C::FWD_WAVES))
        return launch_bf16_fwd_cfg<D, typename C::Fwd>(dev, p, bh);
    return launch_bf16_fwd_cfg<D, typename C::FwdSmall>(dev, p, bh);
}

template <int D>
static int launch_bf16_bwd(CuDev *dev, const attnbf::Params &p, int64_t bh) {
    typedef attnbf::Cfg<D> C;
    const int64_t rows = bh * p.tq;
    attnbf::delta<D><<<(unsigned)((rows + 7) / 8), 256, 0, dev->stream>>>(p, rows);
    LAUNCHED("attention_delta_bf16");
    attnbf::Params pd = p;
    pd.delta = p.delta_out;
    if (bwd1_wanted()) return launch_bf16_bwd1<D>(dev, pd, bh);
    const bool big_kv = big_grid(dev, p.tk, 16 * C::Kv::NW * C::Kv::MW, bh, C::KV_WAVES);
    const int ds = big_kv ? launch_bf16_bwd_ds<D, typename C::Kv, typename C::DqDs>(dev, pd, bh)
                          : launch_bf16_bwd_ds<D, typename C::KvSmall, typename C::DqDs>(dev, pd, bh);
    if (ds != TTT_BACKEND_DECLINED) return ds;
    const int rc = big_kv ? launch_bf16_dkdv_cfg<D, typename C::Kv>(dev, pd, bh)
                          : launch_bf16_dkdv_cfg<D, typename C::KvSmall>(dev, pd, bh);
    if (rc != TTT_OK) return rc;
    if (big_grid(dev, p.tq, 16 * C::Dq::NW * C::Dq::MW, bh, C::DQ_WAVES))
        return launch_bf16_dq_cfg<D, typename C::Dq>(dev, pd, bh);
    return launch_bf16_dq_cfg<D, typename C::DqSmall>(dev, pd, bh);
}

static int bf16_fwd(CuDev *dev, ttt_tensor *out, ttt_tensor *lse, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                    int causal, int64_t window, double scale) {
    AttnShape s;
    if (!bf16_shape(q, k, v, &s) || out->dtype != TTT_BF16 || !ttt__aligned4(out->data)) return TTT_BACKEND_DECLINED;
    /* cuDNN first where it is enabled and takes the call (attention_cudnn.h); it never fails a call, it declines */
    if (ttt__cudnn_attn_fwd(dev, out, lse, q, k, v, causal, window, scale) == TTT_OK) return TTT_OK;
    attnbf::Params p = bf16_params(s, causal, window, scale);
    p.q = (const uint16_t *)q->data, p.k = (const uint16_t *)k->data, p.v = (const uint16_t *)v->data;
    p.out = (uint16_t *)out->data;
    p.lse_out = lse ? (float *)lse->data : NULL;
    p.aligned = ttt__aligned16(p.q) && ttt__aligned16(p.k) && ttt__aligned16(p.v);
    return s.d == 64 ? launch_bf16_fwd<64>(dev, p, s.bh) : launch_bf16_fwd<128>(dev, p, s.bh);
}

static int bf16_bwd(CuDev *dev, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *delta, const ttt_tensor *dout,
                    const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *out,
                    const ttt_tensor *lse, int causal, int64_t window, double scale) {
    AttnShape s;
    if (!bf16_shape(q, k, v, &s) || dout->dtype != TTT_BF16 || out->dtype != TTT_BF16 || dq->dtype != TTT_BF16 ||
        dk->dtype != TTT_BF16 || dv->dtype != TTT_BF16 || !ttt__aligned4(dq->data) || !ttt__aligned4(dk->data) ||
        !ttt__aligned4(dv->data))
        return TTT_BACKEND_DECLINED;
    attnbf::Params p = bf16_params(s, causal, window, scale);
    p.q = (const uint16_t *)q->data, p.k = (const uint16_t *)k->data, p.v = (const uint16_t *)v->data;
    p.o = (const uint16_t *)out->data, p.dout = (const uint16_t *)dout->data, p.lse = (const float *)lse->data;
    p.dq = (uint16_t *)dq->data, p.dk = (uint16_t *)dk->data, p.dv = (uint16_t *)dv->data;
    p.delta_out = (float *)delta->data;
    p.aligned = ttt__aligned16(p.q) && ttt__aligned16(p.k) && ttt__aligned16(p.v) && ttt__aligned16(p.dout);
    if (ttt__cudnn_attn_wanted(q, k, causal, window)) {
        /* cuDNN's backward reads delta = rowsum(dout * out) (attention_cudnn.cu says why): our kernel writes it,
         * the same bits as our own backward's; then cuDNN runs the rest, or declines and our kernels run it all */
        const int64_t rows = s.bh * p.tq;
        if (s.d == 64) attnbf::delta<64><<<(unsigned)((rows + 7) / 8), 256, 0, dev->stream>>>(p, rows);
        else attnbf::delta<128><<<(unsigned)((rows + 7) / 8), 256, 0, dev->stream>>>(p, rows);
        LAUNCHED("attention_delta_bf16");
        if (ttt__cudnn_attn_bwd(dev, dq, dk, dv, delta, dout, q, k, v, out, lse, causal, window, scale) == TTT_OK)
            return TTT_OK;
    }
    return s.d == 64 ? launch_bf16_bwd<64>(dev, p, s.bh) : launch_bf16_bwd<128>(dev, p, s.bh);
}

/* ---- the entries ---------------------------------------------------------------------------------------- */

int ttt__cu_attention_fwd(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *lse, const ttt_tensor *q, const ttt_tensor *k,
                            const ttt_tensor *v, int causal, int64_t window, double scale) {
    ENTER(dev, self);
    if (q->dtype == TTT_BF16) return bf16_fwd(dev, out, lse, q, k, v, causal, window, scale);
    AttnShape s;
    if (!supported(q, k, v, &s)) return TTT_BACKEND_DECLINED;
    attn::Params p = params(s, causal, window, scale);
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.out = (float *)out->data;
    p.lse_out = lse ? (float *)lse->data : NULL;
    p.vec4 = s.d % 4 == 0 && s.dv % 4 == 0 && ttt__aligned16(p.q) && ttt__aligned16(p.k) && ttt__aligned16(p.v);
    return s.d <= 64 && s.dv <= 64 ? launch_fwd<64>(dev, p, s.bh) : launch_fwd<128>(dev, p, s.bh);
}

int ttt__cu_attention_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *delta, const ttt_tensor *dout,
                            const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *out,
                            const ttt_tensor *lse, int causal, int64_t window, double scale) {
    ENTER(dev, self);
    if (q->dtype == TTT_BF16) return bf16_bwd(dev, dq, dk, dv, delta, dout, q, k, v, out, lse, causal, window, scale);
    AttnShape s;
    if (!supported(q, k, v, &s)) return TTT_BACKEND_DECLINED;
    attn::Params p = params(s, causal, window, scale);
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.o = (const float *)out->data, p.lse = (const float *)lse->data, p.dout = (const float *)dout->data;
    p.dq = (float *)dq->data, p.dk = (float *)dk->data, p.dv = (float *)dv->data;
    p.delta_out = (float *)delta->data;
    p.vec4 = s.d % 4 == 0 && s.dv % 4 == 0 && ttt__aligned16(p.q) && ttt__aligned16(p.k) && ttt__aligned16(p.v) &&
             ttt__aligned16(p.dout);
    return s.d <= 64 && s.dv <= 64 ? launch_bwd<64>(dev, p, s.bh) : launch_bwd<128>(dev, p, s.bh);
}
