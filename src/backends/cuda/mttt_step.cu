/* The MTTT-MLP inner step and read-out on the GPU (backend.h: mttt_mlp_step, mttt_mlp_step_bwd,
 * mttt_mlp_apply, mttt_mlp_apply_bwd): the launchers of mttt_step.cuh's kernels, f32 and f64 (bf16 and
 * anything else declines, and the op composes the same math: src/composed/mttt_step.c). Each call plans
 * (mttt::plan_memory, plan_chunks) the memory mode, tile rows and token chunks from the shape and the device
 * (its shared memory, SMs and the kernel's resident blocks), runs the kernel over (chunks, B H) blocks, then
 * mttt::reduce, which adds each pair's chunk partials in order into the outputs. The partials live in the
 * instance's mttt_scratch (calls on one stream never overlap). f32 in contexts that allow f32 on the tensor
 * cores (ttt_ctx_config.tf32) runs the kernels' tensor-core instances (mma_on).
 * Declined, having written nothing: shapes whose shared memory does not fit even with the weights in global
 * memory and one-row tiles, B H over the grid's 65535 rows, extents past int indexing. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern __shared__ double mttt_smem_raw[];
#define MTTT_SMEM() ((void *)mttt_smem_raw)
#include "mttt_step.cuh"

static bool same_float(const ttt_tensor *const *t, int n, ttt_dtype dt) {
    if (dt != TTT_F32 && dt != TTT_F64) return false;
    for (int i = 0; i < n; i++)
        if (t[i] && t[i]->dtype != dt) return false;
    return true;
}

/* The per-pair extents the kernels index with int, and the grid's y extent (B H). */
static bool sizes_ok(int64_t BH, int64_t m, int64_t d, int64_t F, int64_t D) {
    if (BH < 1 || BH > 65535 || m < 1 || d < 1 || F < 1 || D < 1) return false;
    const int64_t big = INT_MAX / 16;
    return m <= big && d * F <= big && m * d <= big && m * D <= big && D * d <= big && m * F <= big;
}

static int64_t blocks(int64_t n) { return (n + mttt::THREADS - 1) / mttt::THREADS; }

/* the blocks of kernel (bytes of shared memory, its limit already raised) the GPU keeps resident at once;
 * remembered per (kernel, GPU, bytes), so steps after the first (and a graph's recording) ask no API */
template <typename K> static int64_t resident(const CuDev *D, K kernel, int64_t bytes) {
    enum { SLOTS = 64 };
    static struct {
        const void *fn;
        int dev;
        int64_t bytes, per_sm;
    } seen[SLOTS];
    static int n_seen;
    for (int i = 0; i < n_seen; i++)
        if (seen[i].fn == (const void *)kernel && seen[i].dev == D->index && seen[i].bytes == bytes)
            return seen[i].per_sm * D->sm_count;
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, mttt::THREADS, (size_t)bytes) != cudaSuccess ||
        per_sm < 1) {
        (void)cudaGetLastError(); /* not sticky: one block an SM, the safe guess */
        per_sm = 1;
    }
    if (n_seen < SLOTS) seen[n_seen].fn = (const void *)kernel, seen[n_seen].dev = D->index, seen[n_seen].bytes = bytes,
                        seen[n_seen++].per_sm = per_sm;
    return (int64_t)per_sm * D->sm_count;
}

/* runs the reduce kernel over the partials at part (pe per (pair, chunk)) */
template <typename R> static int reduce(CuDev *D, mttt::Reduce<R> &r, int64_t BH, const char *who) {
    mttt::reduce<R><<<dim3((unsigned)blocks(r.pe), (unsigned)BH), mttt::THREADS, 0, D->stream>>>(r);
    LAUNCHED(who);
    return TTT_OK;
}

template <typename R> static mttt::Seg<R> seg(void *out, const void *base, int batched, int64_t size, int64_t off, double alpha) {
    mttt::Seg<R> s;
    s.out = (R *)out, s.base = (const R *)base, s.base_batched = batched, s.size = (int)size, s.off = (int)off;
    s.alpha = (R)alpha;
    return s;
}

static void *data(const ttt_tensor *t) { return t ? t->data : NULL; }

/* The shared memory a plan may use: the GPU's limit, or less under TTT_MTTT_SMEM_KB (for timing the plans that
 * keep the weights in global memory or take shorter tiles, and so fit more blocks an SM). */
static int64_t plan_limit(const CuDev *D) {
    static const int64_t cap = [] {
        const char *e = getenv("TTT_MTTT_SMEM_KB");
        const long kb = e && *e ? atol(e) : 0;
        return kb > 0 ? (int64_t)kb * 1024 : (int64_t)0;
    }();
    const int64_t limit = cu_smem_limit(D);
    return cap > 0 && cap < limit ? cap : limit;
}

/* The kernels' TC for this call: 1, the f32 products on the tensor cores (mttt_step.cuh: mm_tc, split-bf16, ~2^-16
 * relative where the FMA tiles give f32's 2^-24); 2, the same at TF32's precision (mma .tf32, ~2^-11 a product,
 * one mma where split-bf16 takes three); 0, the FMA tiles; f64 always 0. 1 in contexts that allow f32 matmuls on
 * the tensor cores (ttt_ctx_config.tf32, as ttt_scan.cu's mma_mode): split-bf16 is finer than TF32's 2^-11, and
 * a context that asks for f32 exactness gets the FMA tiles. First run on an H100 on 2026-12-07: parity with the
 * CPU at 1e-5..6e-5, compute-sanitizer clean, bit-repeatable, the ViT's step 1.24x faster. TTT_MTTT_MMA in the
 * environment (read once) overrides: 0 never, 2 split-bf16 in every context (f32; to time the two and to run the
 * tests' checks through the tensor-core path), 3 TF32 in contexts that allow it (emulator-checked, not yet run
 * on a GPU), 4 TF32 in every context (the tests), 1 the default. */
static int mma_on(const CuDev *D, size_t es) {
    static const int env = [] {
        const char *e = getenv("TTT_MTTT_MMA");
        return e && e[0] >= '0' && e[0] <= '4' && !e[1] ? e[0] - '0' : 1;
    }();
    if (es != 4) return 0;
    switch (env) {
    case 0: return 0;
    case 2: return 1;
    case 3: return D->tf32 ? 2 : 0;
    case 4: return 2;
    default: return D->tf32 ? 1 : 0;
    }
}

template <typename R>
static int step_fwd(CuDev *D, ttt_tensor *const *wo, ttt_tensor *loss, const ttt_tensor *const *w, const ttt_tensor *k,
                    const ttt_tensor *xt, const ttt_tensor *gh, const ttt_tensor *lng, const ttt_tensor *lnb, double eta,
                    double eps) {
    const int64_t B = k->shape[0], H = k->shape[1], m = k->shape[2], d = k->shape[3], F = w[0]->shape[w[0]->ndim - 1];
    const int64_t Dd = xt->shape[3], BH = B * H;
    if (!sizes_ok(BH, m, d, F, Dd)) return TTT_BACKEND_DECLINED;
    const int es = (int)sizeof(R), tc = mma_on(D, sizeof(R));
    mttt::Plan pl;
    if (!mttt::plan_memory(plan_limit(D), [&](int mode, int tm) { return mttt::fwd_smem_bytes(mode, tm, (int)d, (int)F, (int)Dd, es, tc); }, &pl))
        return TTT_BACKEND_DECLINED;
    const auto kernel = tc == 2 ? mttt::step_fwd<R, sizeof(R) == 4 ? 2 : 0> : tc ? mttt::step_fwd<R, sizeof(R) == 4 ? 1 : 0> : mttt::step_fwd<R, 0>;
    static int allowed[4][CU_MAX_GPUS]; /* f32, f32 on the tensor cores (split-bf16, TF32), f64 */
    if (cu_allow_smem(kernel, (size_t)pl.bytes, D, allowed[es == 8 ? 3 : tc])) return TTT_ERR;
    mttt::plan_chunks(m, BH, resident(D, kernel, pl.bytes), &pl);
    const int64_t pe = mttt::fwd_part_elems((int)d, (int)F);
    if (scratch_reserve(D, &D->mttt_scratch, sizeof(R) * (size_t)(BH * pl.nch * pe), "mttt_mlp_step")) return TTT_ERR;
    mttt::Step<R> p;
    p.part = (R *)D->mttt_scratch.p;
    p.w1 = (const R *)w[0]->data, p.b1 = (const R *)w[1]->data, p.w2 = (const R *)w[2]->data, p.b2 = (const R *)w[3]->data;
    p.k = (const R *)k->data, p.xt = (const R *)xt->data, p.gh = (const R *)gh->data;
    p.lng = (const R *)data(lng), p.lnb = (const R *)data(lnb);
    const bool xt_heads = xt->shape[1] != 1 || H == 1;
    for (int a = 0; a < 3; a++) p.ks[a] = k->stride[a], p.xs[a] = xt->stride[a];
    if (!xt_heads) p.xs[1] = 0;
    p.H = (int)H, p.m = (int)m, p.d = (int)d, p.F = (int)F, p.D = (int)Dd;
    for (int i = 0; i < 4; i++) p.wb[i] = w[i]->ndim == 4;
    p.mode = pl.mode, p.tm = pl.tm, p.cl = pl.cl, p.nch = pl.nch, p.loss_only = wo[0] == NULL, p.eps = eps;
    kernel<<<dim3((unsigned)pl.nch, (unsigned)BH), mttt::THREADS, (size_t)pl.bytes, D->stream>>>(p);
    LAUNCHED("mttt_mlp_step");
    mttt::Reduce<R> r;
    r.part = p.part, r.nch = pl.nch, r.pe = (int)pe, r.H = (int)H, r.nseg = 0;
    const int64_t dF = d * F;
    if (wo[0]) {
        r.seg[r.nseg++] = seg<R>(wo[0]->data, w[0]->data, p.wb[0], dF, 0, -eta);
        r.seg[r.nseg++] = seg<R>(wo[1]->data, w[1]->data, p.wb[1], F, dF, -eta);
        r.seg[r.nseg++] = seg<R>(wo[2]->data, w[2]->data, p.wb[2], dF, dF + F, -eta);
        r.seg[r.nseg++] = seg<R>(wo[3]->data, w[3]->data, p.wb[3], d, 2 * dF + F, -eta);
    }
    r.seg[r.nseg++] = seg<R>(loss->data, NULL, 0, 1, pe - 1, 0.5 / (double)m);
    return reduce(D, r, BH, "mttt_mlp_step (sums)");
}

/* On since the H100 run of 2026-12-06 (test_mttt_fused's CUDA checks, gradcheck, memcheck); TTT_MTTT_CUDA=0
 * (read once) makes them decline, and the composed step runs (TTT_FUSED=0 does that for every fused path). */
static bool mttt_env(void) {
    static const bool on = ttt__env_switch("TTT_MTTT_CUDA", true);
    return on;
}

int ttt__cu_mttt_mlp_step(ttt_backend_state *self, ttt_tensor *w1_out, ttt_tensor *b1_out, ttt_tensor *w2_out,
                          ttt_tensor *b2_out, ttt_tensor *loss, const ttt_tensor *w1, const ttt_tensor *b1,
                          const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *k, const ttt_tensor *xt,
                          const ttt_tensor *gh, const ttt_tensor *lng, const ttt_tensor *lnb, double eta, double eps) {
    if (!mttt_env()) return TTT_BACKEND_DECLINED;
    ENTER(D, self);
    const ttt_tensor *all[] = {w1_out, b1_out, w2_out, b2_out, loss, w1, b1, w2, b2, k, xt, gh, lng, lnb};
    if (!same_float(all, 14, k->dtype) || k->stride[3] != 1 || xt->stride[3] != 1) return TTT_BACKEND_DECLINED;
    ttt_tensor *wo[4] = {w1_out, b1_out, w2_out, b2_out};
    const ttt_tensor *w[4] = {w1, b1, w2, b2};
    return k->dtype == TTT_F32 ? step_fwd<float>(D, wo, loss, w, k, xt, gh, lng, lnb, eta, eps)
                               : step_fwd<double>(D, wo, loss, w, k, xt, gh, lng, lnb, eta, eps);
}

template <typename R>
static int step_bwd(CuDev *D, ttt_tensor *const *g, const ttt_tensor *const *u, const ttt_tensor *dloss,
                    const ttt_tensor *const *w, const ttt_tensor *k, const ttt_tensor *xt, const ttt_tensor *gh,
                    const ttt_tensor *lng, const ttt_tensor *lnb, double eta, double eps) {
    const int64_t B = k->shape[0], H = k->shape[1], m = k->shape[2], d = k->shape[3], F = w[0]->shape[w[0]->ndim - 1];
    const int64_t Dd = xt->shape[3], BH = B * H;
    if (!sizes_ok(BH, m, d, F, Dd)) return TTT_BACKEND_DECLINED;
    const int es = (int)sizeof(R), tc = mma_on(D, sizeof(R));
    mttt::Plan pl;
    if (!mttt::plan_memory(plan_limit(D), [&](int mode, int tm) { return mttt::bwd_smem_bytes(mode, tm, (int)d, (int)F, (int)Dd, es, tc); }, &pl))
        return TTT_BACKEND_DECLINED;
    const auto kernel = tc == 2 ? mttt::step_bwd<R, sizeof(R) == 4 ? 2 : 0> : tc ? mttt::step_bwd<R, sizeof(R) == 4 ? 1 : 0> : mttt::step_bwd<R, 0>;
    static int allowed[4][CU_MAX_GPUS]; /* as step_fwd's */
    if (cu_allow_smem(kernel, (size_t)pl.bytes, D, allowed[es == 8 ? 3 : tc])) return TTT_ERR;
    mttt::plan_chunks(m, BH, resident(D, kernel, pl.bytes), &pl);
    const int64_t pe = mttt::bwd_part_elems((int)d, (int)F, (int)Dd);
    if (scratch_reserve(D, &D->mttt_scratch, sizeof(R) * (size_t)(BH * pl.nch * pe), "mttt_mlp_step_bwd")) return TTT_ERR;
    mttt::StepBwd<R> p;
    p.part = (R *)D->mttt_scratch.p, p.dk = (R *)g[4]->data, p.dx = (R *)g[5]->data;
    p.u1 = (const R *)data(u[0]), p.v1 = (const R *)data(u[1]), p.u2 = (const R *)data(u[2]), p.v2 = (const R *)data(u[3]);
    p.dloss = (const R *)data(dloss);
    p.w1 = (const R *)w[0]->data, p.b1 = (const R *)w[1]->data, p.w2 = (const R *)w[2]->data, p.b2 = (const R *)w[3]->data;
    p.k = (const R *)k->data, p.xt = (const R *)xt->data, p.gh = (const R *)gh->data;
    p.lng = (const R *)data(lng), p.lnb = (const R *)data(lnb);
    const bool xt_heads = xt->shape[1] != 1 || H == 1;
    for (int a = 0; a < 3; a++) p.ks[a] = k->stride[a], p.xs[a] = xt->stride[a];
    if (!xt_heads) p.xs[1] = 0;
    p.H = (int)H, p.m = (int)m, p.d = (int)d, p.F = (int)F, p.D = (int)Dd;
    for (int i = 0; i < 4; i++) p.wb[i] = w[i]->ndim == 4;
    p.mode = pl.mode, p.tm = pl.tm, p.cl = pl.cl, p.nch = pl.nch, p.eta = eta, p.eps = eps;
    kernel<<<dim3((unsigned)pl.nch, (unsigned)BH), mttt::THREADS, (size_t)pl.bytes, D->stream>>>(p);
    LAUNCHED("mttt_mlp_step_bwd");
    mttt::Reduce<R> r;
    r.part = p.part, r.nch = pl.nch, r.pe = (int)pe, r.H = (int)H, r.nseg = 0;
    const int64_t dF = d * F, o = 2 * dF + F + d; /* dG's offset */
    r.seg[r.nseg++] = seg<R>(g[0]->data, data(u[0]), 1, dF, 0, 1);
    r.seg[r.nseg++] = seg<R>(g[1]->data, data(u[1]), 1, F, dF, 1);
    r.seg[r.nseg++] = seg<R>(g[2]->data, data(u[2]), 1, dF, dF + F, 1);
    r.seg[r.nseg++] = seg<R>(g[3]->data, data(u[3]), 1, d, 2 * dF + F, 1);
    r.seg[r.nseg++] = seg<R>(g[6]->data, NULL, 0, Dd * d, o, 1);
    r.seg[r.nseg++] = seg<R>(data(g[7]), NULL, 0, Dd, o + Dd * d, 1);
    r.seg[r.nseg++] = seg<R>(data(g[8]), NULL, 0, Dd, o + Dd * d + Dd, 1);
    return reduce(D, r, BH, "mttt_mlp_step_bwd (sums)");
}

int ttt__cu_mttt_mlp_step_bwd(ttt_backend_state *self, ttt_tensor *dw1, ttt_tensor *db1, ttt_tensor *dw2, ttt_tensor *db2,
                              ttt_tensor *dk, ttt_tensor *dxt, ttt_tensor *dgh, ttt_tensor *dlng, ttt_tensor *dlnb,
                              const ttt_tensor *dw1_out, const ttt_tensor *db1_out, const ttt_tensor *dw2_out,
                              const ttt_tensor *db2_out, const ttt_tensor *dloss, const ttt_tensor *w1,
                              const ttt_tensor *b1, const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *k,
                              const ttt_tensor *xt, const ttt_tensor *gh, const ttt_tensor *lng, const ttt_tensor *lnb,
                              double eta, double eps) {
    if (!mttt_env()) return TTT_BACKEND_DECLINED;
    ENTER(D, self);
    const ttt_tensor *all[] = {dw1, db1, dw2, db2, dk, dxt, dgh, dlng, dlnb, dw1_out, db1_out, dw2_out,
                               db2_out, dloss, w1, b1, w2, b2, k, xt, gh, lng, lnb};
    if (!same_float(all, 23, k->dtype) || k->stride[3] != 1 || xt->stride[3] != 1) return TTT_BACKEND_DECLINED;
    ttt_tensor *g[9] = {dw1, db1, dw2, db2, dk, dxt, dgh, dlng, dlnb};
    const ttt_tensor *u[4] = {dw1_out, db1_out, dw2_out, db2_out}, *w[4] = {w1, b1, w2, b2};
    return k->dtype == TTT_F32 ? step_bwd<float>(D, g, u, dloss, w, k, xt, gh, lng, lnb, eta, eps)
                               : step_bwd<double>(D, g, u, dloss, w, k, xt, gh, lng, lnb, eta, eps);
}

/* the read-out's parameters and plan (bwd: the backward's); false: declined */
template <typename R>
static bool apply_setup(const CuDev *D, bool bwd, const ttt_tensor *const *w, const ttt_tensor *q, mttt::Apply<R> *p,
                        mttt::Plan *pl) {
    const int64_t B = q->shape[0], H = q->shape[1], n = q->shape[2], d = q->shape[3], F = w[0]->shape[w[0]->ndim - 1];
    if (!sizes_ok(B * H, n, d, F, 1) || q->stride[3] != 1) return false;
    const int es = (int)sizeof(R), tc = mma_on(D, sizeof(R));
    if (!mttt::plan_memory(plan_limit(D), [&](int mode, int tm) { return mttt::apply_smem_bytes(bwd, mode, tm, (int)d, (int)F, es, tc); }, pl))
        return false;
    p->w1 = (const R *)w[0]->data, p->b1 = (const R *)w[1]->data, p->w2 = (const R *)w[2]->data;
    p->b2 = (const R *)w[3]->data, p->q = (const R *)q->data;
    for (int a = 0; a < 3; a++) p->qs[a] = q->stride[a];
    p->H = (int)H, p->n = (int)n, p->d = (int)d, p->F = (int)F;
    for (int i = 0; i < 4; i++) p->wb[i] = w[i]->ndim == 4;
    p->mode = pl->mode, p->tm = pl->tm;
    p->out = p->dq = p->part = NULL, p->dout = NULL;
    return true;
}

template <typename R> static int apply_fwd(CuDev *D, ttt_tensor *out, const ttt_tensor *const *w, const ttt_tensor *q) {
    mttt::Apply<R> p;
    mttt::Plan pl;
    if (!apply_setup<R>(D, false, w, q, &p, &pl)) return TTT_BACKEND_DECLINED;
    p.out = (R *)out->data;
    const int tc = mma_on(D, sizeof(R));
    const auto kernel = tc == 2 ? mttt::apply_fwd<R, sizeof(R) == 4 ? 2 : 0> : tc ? mttt::apply_fwd<R, sizeof(R) == 4 ? 1 : 0> : mttt::apply_fwd<R, 0>;
    static int allowed[4][CU_MAX_GPUS]; /* as step_fwd's */
    if (cu_allow_smem(kernel, (size_t)pl.bytes, D, allowed[sizeof(R) == 8 ? 3 : tc])) return TTT_ERR;
    mttt::plan_chunks(p.n, q->shape[0] * q->shape[1], resident(D, kernel, pl.bytes), &pl);
    p.cl = pl.cl, p.nch = pl.nch;
    kernel<<<dim3((unsigned)pl.nch, (unsigned)(q->shape[0] * q->shape[1])), mttt::THREADS, (size_t)pl.bytes, D->stream>>>(p);
    LAUNCHED("mttt_mlp_apply");
    return TTT_OK;
}

int ttt__cu_mttt_mlp_apply(ttt_backend_state *self, ttt_tensor *out, const ttt_tensor *w1, const ttt_tensor *b1,
                           const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *q) {
    if (!mttt_env()) return TTT_BACKEND_DECLINED;
    ENTER(D, self);
    const ttt_tensor *all[] = {out, w1, b1, w2, b2, q};
    if (!same_float(all, 6, q->dtype)) return TTT_BACKEND_DECLINED;
    const ttt_tensor *w[4] = {w1, b1, w2, b2};
    return q->dtype == TTT_F32 ? apply_fwd<float>(D, out, w, q) : apply_fwd<double>(D, out, w, q);
}

template <typename R>
static int apply_bwd(CuDev *D, ttt_tensor *const *g, const ttt_tensor *dout, const ttt_tensor *const *w, const ttt_tensor *q) {
    mttt::Apply<R> p;
    mttt::Plan pl;
    if (!apply_setup<R>(D, true, w, q, &p, &pl)) return TTT_BACKEND_DECLINED;
    const int64_t BH = q->shape[0] * q->shape[1], d = p.d, F = p.F, pe = mttt::apply_part_elems(p.d, p.F);
    const int tc = mma_on(D, sizeof(R));
    const auto kernel = tc == 2 ? mttt::apply_bwd<R, sizeof(R) == 4 ? 2 : 0> : tc ? mttt::apply_bwd<R, sizeof(R) == 4 ? 1 : 0> : mttt::apply_bwd<R, 0>;
    static int allowed[4][CU_MAX_GPUS]; /* as step_fwd's */
    if (cu_allow_smem(kernel, (size_t)pl.bytes, D, allowed[sizeof(R) == 8 ? 3 : tc])) return TTT_ERR;
    mttt::plan_chunks(p.n, BH, resident(D, kernel, pl.bytes), &pl);
    p.cl = pl.cl, p.nch = pl.nch;
    if (scratch_reserve(D, &D->mttt_scratch, sizeof(R) * (size_t)(BH * pl.nch * pe), "mttt_mlp_apply_bwd")) return TTT_ERR;
    p.part = (R *)D->mttt_scratch.p, p.dq = (R *)g[0]->data, p.dout = (const R *)dout->data;
    kernel<<<dim3((unsigned)pl.nch, (unsigned)BH), mttt::THREADS, (size_t)pl.bytes, D->stream>>>(p);
    LAUNCHED("mttt_mlp_apply_bwd");
    mttt::Reduce<R> r;
    r.part = p.part, r.nch = pl.nch, r.pe = (int)pe, r.H = p.H, r.nseg = 0;
    const int64_t dF = d * F;
    r.seg[r.nseg++] = seg<R>(g[1]->data, NULL, 0, dF, 0, 1);
    r.seg[r.nseg++] = seg<R>(g[2]->data, NULL, 0, F, dF, 1);
    r.seg[r.nseg++] = seg<R>(g[3]->data, NULL, 0, dF, dF + F, 1);
    r.seg[r.nseg++] = seg<R>(g[4]->data, NULL, 0, d, 2 * dF + F, 1);
    return reduce(D, r, BH, "mttt_mlp_apply_bwd (sums)");
}

int ttt__cu_mttt_mlp_apply_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dw1, ttt_tensor *db1, ttt_tensor *dw2,
                               ttt_tensor *db2, const ttt_tensor *dout, const ttt_tensor *w1, const ttt_tensor *b1,
                               const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *q) {
    if (!mttt_env()) return TTT_BACKEND_DECLINED;
    ENTER(D, self);
    const ttt_tensor *all[] = {dq, dw1, db1, dw2, db2, dout, w1, b1, w2, b2, q};
    if (!same_float(all, 11, q->dtype)) return TTT_BACKEND_DECLINED;
    ttt_tensor *g[5] = {dq, dw1, db1, dw2, db2};
    const ttt_tensor *w[4] = {w1, b1, w2, b2};
    return q->dtype == TTT_F32 ? apply_bwd<float>(D, g, dout, w, q) : apply_bwd<double>(D, g, dout, w, q);
}
