/* The fused TTT-Linear scan on the GPU (backend.h: ttt_linear_scan, ttt_linear_scan_bwd): the
 * launchers of ttt_scan.cuh's kernels: the forward one block per (batch, head); the backward one block
 * per (batch, head, mini-batch) for what does not depend on the carried gradient of W, then one per
 * (batch, head) for the reverse scan, handing over through the instance's scan_scratch (5 b d + 2 b +
 * 2 d floats a mini-batch: 21 KB at d 64, b 16, about 5x q's size; kept, like the other scratch
 * buffers, at its largest). f32 only (the op casts bf16 to f32 around them), head sizes up to 128, and
 * only where the kernels' shared memory fits the device (d 64, b 16: 47 KB forward, 54 KB and 79 KB
 * backward; d 128: 124 KB, 135 KB and 221 KB, under H100's 227 KB; where W does not fit beside the
 * reverse scan's other buffers, it reads W from the stored state in global memory). Anything else is
 * declined, and the op composes the same math of the other kernels. Where d and the mini-batch are
 * multiples of 16, the products with W run on the tensor cores for bf16 inputs or in tf32 contexts
 * (mma_mode). TTT_SCAN_V2=1: at d 64, b 16 on the tensor cores, ttt_scan2.cuh's low-latency kernels instead
 * (the state in registers, the outputs and dk's carried terms computed per mini-batch in parallel), behind a
 * device flag where the old kernels' choice depended on q and k's values (v2_takes, v2_flag). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern __shared__ float4 tscan_smem_raw[];
#define TTT_SCAN_SMEM() reinterpret_cast<float *>(tscan_smem_raw)
#include "ttt_scan.cuh"
#include "ttt_scan2.cuh"

/* The kernels' limits: f32, d <= 128, int-sized offsets within a sequence and grids, and the kernels'
 * shared memory (the reverse scan's with W in it or not) under the device's limit; *w_in_smem says
 * which reverse scan runs. */
static bool takes(const CuDev *D, const ttt_tensor *q, const ttt_tensor *tok, int *w_in_smem) {
    if (q->dtype != TTT_F32 || tok->dtype != TTT_F32) return false;
    const int64_t BH = q->shape[0] * q->shape[1], T = q->shape[2], d = q->shape[3], bs = tok->shape[0];
    if (d < 1 || d > tscan::MAX_D || bs < 1 || bs > 4096 || BH < 1 || BH * (T / bs) > INT_MAX || T * d > INT_MAX / 2)
        return false;
    const size_t limit = (size_t)cu_smem_limit(D);
    if (tscan::fwd_smem_floats((int)d, (int)bs) * sizeof(float) > limit) return false;
    if (tscan::bwd_pre_smem_floats((int)d, (int)bs) * sizeof(float) > limit) return false;
    *w_in_smem = tscan::bwd_smem_floats((int)d, (int)bs, 1) * sizeof(float) <= limit;
    return *w_in_smem || tscan::bwd_smem_floats((int)d, (int)bs, 0) * sizeof(float) <= limit;
}

/* Fwd::mma for this call. The products with W go on the tensor cores (ttt_scan.cuh: mma_f32x3, ~2^-16
 * relative) where d and the mini-batch are multiples of 16: for every mini-batch in contexts that allow
 * f32 matmuls on the tensor cores (ttt_ctx_config.tf32: 2), else for the mini-batches whose q and k are
 * bf16 values, which is what the op passes for bf16 inputs (1); f32 inputs keep f32's FMAs. TTT_SCAN_MMA=0
 * in the environment (read once) keeps the FMAs everywhere, to compare the two on a GPU; TTT_SCAN_MMA=2
 * takes the tensor cores for every mini-batch in every context (a check of those paths on f32 data, e.g.
 * ttt_rnn_bench --check, whose other products stay f32). */
static int mma_mode(const CuDev *D, int d, int bs) {
    static int env = -1; /* 0 off, 1 the default, 2 always */
    if (env < 0) {
        const char *e = getenv("TTT_SCAN_MMA");
        env = e && !strcmp(e, "0") ? 0 : e && !strcmp(e, "2") ? 2 : 1;
    }
    return !env || !tscan::mma_fits(d, bs) ? 0 : D->tf32 || env == 2 ? 2 : 1;
}

/* TTT_SCAN_SPLIT=1 (read once): the forward as scan_fwd_h + scan_fwd_o (ttt_scan.cuh says why); off by
 * default until a GPU run measures it against the one-kernel forward. */
static bool split_fwd(void) {
    static const bool on = ttt__env_switch("TTT_SCAN_SPLIT", false);
    return on;
}

/* ttt_scan2.cuh's low-latency kernels where they apply (v2_takes): on by default since the H100 run of
 * 2026-12-06 (checks against f64 and the sanitizers clean; the bf16 core 3.2-3.6x the kernels above);
 * TTT_SCAN_V2=0 (read once) keeps the kernels above. */
static bool v2_env(void) {
    static const bool on = ttt__env_switch("TTT_SCAN_V2", true);
    return on;
}
/* d 64, b 16, the products on the tensor cores (mma != 0), cp.async's 16-byte alignment of the rows it loads */
static bool v2_takes(const CuDev *D, int d, int bs, int mma, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                     const ttt_tensor *eta) {
    return v2_env() && d == tscan2::D && bs == tscan2::BS && mma != 0 && ttt__aligned16(q->data) &&
           ttt__aligned16(k->data) && ttt__aligned16(v->data) && ttt__aligned16(eta->data) &&
           tscan2::bwd_smem_floats() * sizeof(float) <= (size_t)cu_smem_limit(D);
}
/* mma 1: the kernels' choice for the whole call, on the device: *flag = 0 where a q or k value is not a bf16 value
 * (tscan2::qk_bf16), else nonzero (1 in each byte) */
static int v2_flag(CuDev *D, int *flag, const ttt_tensor *q, const ttt_tensor *k) {
    CU(cudaMemsetAsync(flag, 1, sizeof(int), D->stream));
    const int64_t n4 = q->shape[0] * q->shape[1] * q->shape[2] * q->shape[3] / 4;
    const int64_t blocks = n4 / 256 + 1 < 1024 ? n4 / 256 + 1 : 1024;
    tscan2::qk_bf16<<<(unsigned)blocks, 256, 0, D->stream>>>((const float4 *)q->data, (const float4 *)k->data, n4, flag);
    LAUNCHED("ttt_linear_scan (bf16 check)");
    return TTT_OK;
}

static bool all_f32(const ttt_tensor *const *t, int n) {
    for (int i = 0; i < n; i++)
        if (t[i] && t[i]->dtype != TTT_F32) return false;
    return true;
}

int ttt__cu_ttt_linear_scan(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *w_out, ttt_tensor *b_out,
                            ttt_tensor *w_states, ttt_tensor *b_states, const ttt_tensor *q, const ttt_tensor *k,
                            const ttt_tensor *v, const ttt_tensor *eta, const ttt_tensor *tok, const ttt_tensor *ln_w,
                            const ttt_tensor *ln_b, const ttt_tensor *w0, const ttt_tensor *b0, double eps) {
    ENTER(D, self);
    int w_in_smem;
    const ttt_tensor *all[] = {q, k, v, eta, tok, ln_w, ln_b, w0, b0};
    if (!takes(D, q, tok, &w_in_smem) || !all_f32(all, 9)) return TTT_BACKEND_DECLINED;
    tscan::Fwd p;
    p.out = (float *)out->data, p.w_out = (float *)w_out->data, p.b_out = (float *)b_out->data;
    p.w_st = w_states ? (float *)w_states->data : NULL, p.b_st = b_states ? (float *)b_states->data : NULL;
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.eta = (const float *)eta->data, p.tok = (const float *)tok->data;
    p.ln_w = (const float *)ln_w->data, p.ln_b = (const float *)ln_b->data;
    p.w0 = (const float *)w0->data, p.b0 = (const float *)b0->data;
    p.H = (int)q->shape[1], p.T = (int)q->shape[2], p.d = (int)q->shape[3], p.bs = (int)tok->shape[0];
    p.N = p.T / p.bs, p.w0_batched = w0->ndim == 4, p.b0_batched = b0->ndim == 4, p.eps = (float)eps;
    p.mma = mma_mode(D, p.d, p.bs);
    p.g_buf = NULL, p.gate = NULL, p.gate_on = 0;
    const int64_t BH = q->shape[0] * q->shape[1];
    if (v2_takes(D, p.d, p.bs, p.mma, q, k, v, eta)) {
        /* ttt_scan2.cuh: the serial walk of the state with W in registers (fwd_h), then every mini-batch's
         * outputs at once (scan_fwd_o); with mma 1 behind the device flag, the one-kernel forward otherwise */
        const tscan::Fwd p_old = p;
        const size_t nst = (size_t)(BH * p.N), g_floats = (size_t)(BH * p.T * p.d);
        const size_t st_floats = p.w_st ? 0 : nst * (size_t)p.d * (p.d + 1);
        if (scratch_reserve(D, &D->scan_scratch, sizeof(float) * (g_floats + st_floats + 4), "ttt_linear_scan (v2)"))
            return TTT_ERR;
        p.g_buf = (float *)D->scan_scratch.p;
        if (!p.w_st) p.w_st = p.g_buf + g_floats, p.b_st = p.w_st + nst * (size_t)p.d * p.d;
        int *flag = p.mma == 1 ? (int *)(p.g_buf + g_floats + st_floats) : NULL;
        if (flag && v2_flag(D, flag, q, k)) return TTT_ERR;
        p.gate = flag, p.gate_on = 1;
        const size_t hb = tscan2::fwd_smem_floats() * sizeof(float), ob = tscan::fwd_o_smem_floats(p.d, p.bs) * sizeof(float);
        static int h_allowed[CU_MAX_GPUS], o_allowed[CU_MAX_GPUS];
        if (cu_allow_smem(tscan2::fwd_h, hb, D, h_allowed) || cu_allow_smem(tscan::scan_fwd_o, ob, D, o_allowed))
            return TTT_ERR;
        tscan2::fwd_h<<<(unsigned)BH, tscan2::THREADS, hb, D->stream>>>(p);
        LAUNCHED("ttt_linear_scan (v2, serial part)");
        tscan::scan_fwd_o<<<(unsigned)(BH * p.N), tscan::THREADS, ob, D->stream>>>(p);
        LAUNCHED("ttt_linear_scan (v2, outputs)");
        if (!flag) return TTT_OK;
        p = p_old, p.gate = flag, p.gate_on = 0; /* the one-kernel forward, where q or k is not all bf16 */
    }
    if (split_fwd() && p.mma == 0) { /* the serial walk of the weights, then every mini-batch's outputs at once */
        const size_t nst = (size_t)(BH * p.N), g_floats = (size_t)(BH * p.T * p.d);
        const size_t st_floats = p.w_st ? 0 : nst * (size_t)p.d * (p.d + 1); /* states the caller does not keep */
        if (scratch_reserve(D, &D->scan_scratch, sizeof(float) * (g_floats + st_floats), "ttt_linear_scan (split)"))
            return TTT_ERR;
        p.g_buf = (float *)D->scan_scratch.p;
        if (!p.w_st) p.w_st = p.g_buf + g_floats, p.b_st = p.w_st + nst * (size_t)p.d * p.d;
        const size_t hb = tscan::fwd_h_smem_floats(p.d, p.bs) * sizeof(float), ob = tscan::fwd_o_smem_floats(p.d, p.bs) * sizeof(float);
        static int h_allowed[CU_MAX_GPUS], o_allowed[CU_MAX_GPUS];
        if ((size_t)cu_smem_limit(D) < hb || (size_t)cu_smem_limit(D) < ob) return TTT_BACKEND_DECLINED;
        if (cu_allow_smem(tscan::scan_fwd_h, hb, D, h_allowed) || cu_allow_smem(tscan::scan_fwd_o, ob, D, o_allowed))
            return TTT_ERR;
        tscan::scan_fwd_h<<<(unsigned)BH, tscan::THREADS, hb, D->stream>>>(p);
        LAUNCHED("ttt_linear_scan (serial part)");
        tscan::scan_fwd_o<<<(unsigned)(BH * p.N), tscan::THREADS, ob, D->stream>>>(p);
        LAUNCHED("ttt_linear_scan (outputs)");
        return TTT_OK;
    }
    const size_t bytes = tscan::fwd_smem_floats(p.d, p.bs) * sizeof(float);
    static int allowed[CU_MAX_GPUS];
    if (cu_allow_smem(tscan::scan_fwd, bytes, D, allowed)) return TTT_ERR;
    tscan::scan_fwd<<<(unsigned)(q->shape[0] * q->shape[1]), tscan::THREADS, bytes, D->stream>>>(p);
    LAUNCHED("ttt_linear_scan");
    return TTT_OK;
}

int ttt__cu_ttt_linear_scan_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *deta,
                                ttt_tensor *dtok, ttt_tensor *dln_w, ttt_tensor *dln_b, ttt_tensor *dw0, ttt_tensor *db0,
                                const ttt_tensor *dout, const ttt_tensor *dw_out, const ttt_tensor *db_out,
                                const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                                const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b,
                                const ttt_tensor *w_states, const ttt_tensor *b_states, double eps) {
    ENTER(D, self);
    int w_in_smem;
    const ttt_tensor *all[] = {dout, dw_out, db_out, q, k, v, eta, tok, ln_w, ln_b, w_states, b_states};
    if (!takes(D, q, tok, &w_in_smem) || !all_f32(all, 12)) return TTT_BACKEND_DECLINED;
    tscan::Bwd p;
    p.dq = (float *)dq->data, p.dk = (float *)dk->data, p.dv = (float *)dv->data, p.deta = (float *)deta->data;
    p.dtok = (float *)dtok->data, p.dln_w = (float *)dln_w->data, p.dln_b = (float *)dln_b->data;
    p.dw0 = (float *)dw0->data, p.db0 = (float *)db0->data;
    p.dout = (const float *)dout->data;
    p.dw_out = dw_out ? (const float *)dw_out->data : NULL, p.db_out = db_out ? (const float *)db_out->data : NULL;
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.eta = (const float *)eta->data, p.tok = (const float *)tok->data;
    p.ln_w = (const float *)ln_w->data, p.ln_b = (const float *)ln_b->data;
    p.w_st = (const float *)w_states->data, p.b_st = (const float *)b_states->data;
    p.H = (int)q->shape[1], p.T = (int)q->shape[2], p.d = (int)q->shape[3], p.bs = (int)tok->shape[0];
    p.N = p.T / p.bs, p.w_in_smem = w_in_smem, p.eps = (float)eps;
    p.mma = mma_mode(D, p.d, p.bs);
    p.post = NULL, p.gate = NULL, p.gate_on = 0;
    const int64_t BH = q->shape[0] * q->shape[1];
    const bool v2 = v2_takes(D, p.d, p.bs, p.mma, q, k, v, eta);
    const size_t pre_floats = (size_t)(BH * p.N) * tscan::bwd_scratch_floats(p.d, p.bs);
    const size_t v2_floats = v2 ? (size_t)(BH * p.N) * tscan2::post_floats() + 4 : 0;
    if (scratch_reserve(D, &D->scan_scratch, sizeof(float) * (pre_floats + v2_floats), "ttt_linear_scan_bwd")) return TTT_ERR;
    p.scr = (float *)D->scan_scratch.p;
    /* every mini-batch's gradients that do not depend on the carried dW, one block each; then the reverse scan */
    const size_t pre_bytes = tscan::bwd_pre_smem_floats(p.d, p.bs) * sizeof(float);
    static int pre_allowed[CU_MAX_GPUS];
    if (cu_allow_smem(tscan::scan_bwd_pre, pre_bytes, D, pre_allowed)) return TTT_ERR;
    tscan::scan_bwd_pre<<<(unsigned)(BH * p.N), tscan::THREADS, pre_bytes, D->stream>>>(p);
    LAUNCHED("ttt_linear_scan_bwd (per mini-batch)");
    if (v2) {
        /* ttt_scan2.cuh: the reverse scan with dW in registers (bwd2), then dk's and deta's terms that need the
         * carried dW' per mini-batch at once (bwd2_post); with mma 1 behind the device flag, scan_bwd otherwise */
        p.post = p.scr + pre_floats;
        int *flag = p.mma == 1 ? (int *)(p.post + (size_t)(BH * p.N) * tscan2::post_floats()) : NULL;
        if (flag && v2_flag(D, flag, q, k)) return TTT_ERR;
        p.gate = flag, p.gate_on = 1;
        const size_t sb = tscan2::bwd_smem_floats() * sizeof(float), pb = tscan2::post_smem_floats() * sizeof(float);
        static int s_allowed[CU_MAX_GPUS], p_allowed[CU_MAX_GPUS];
        if (cu_allow_smem(tscan2::bwd2, sb, D, s_allowed) || cu_allow_smem(tscan2::bwd2_post, pb, D, p_allowed))
            return TTT_ERR;
        tscan2::bwd2<<<(unsigned)BH, tscan2::THREADS, sb, D->stream>>>(p);
        LAUNCHED("ttt_linear_scan_bwd (v2, reverse scan)");
        tscan2::bwd2_post<<<(unsigned)(BH * p.N), tscan2::PT, pb, D->stream>>>(p);
        LAUNCHED("ttt_linear_scan_bwd (v2, per mini-batch)");
        if (!flag) return TTT_OK;
        p.gate_on = 0; /* scan_bwd, where q or k is not all bf16 */
    }
    const size_t bytes = tscan::bwd_smem_floats(p.d, p.bs, w_in_smem) * sizeof(float);
    static int allowed[CU_MAX_GPUS];
    if (cu_allow_smem(tscan::scan_bwd, bytes, D, allowed)) return TTT_ERR;
    tscan::scan_bwd<<<(unsigned)BH, tscan::THREADS, bytes, D->stream>>>(p);
    LAUNCHED("ttt_linear_scan_bwd");
    return TTT_OK;
}
