/* The fused TTT-MLP scan on the GPU (backend.h: ttt_mlp_scan, ttt_mlp_scan_bwd): the launchers of
 * ttt_mlp_scan.cuh's kernels, one block per (batch, head) for the forward and one for the reverse scan.
 * Each call takes the highest memory mode whose shared memory fits the device (ttt_mlp_scan.cuh says what
 * the modes keep where): at d 64, F 256, b 16 on H100 (227 KiB a block) the forward keeps the weights and
 * its buffers in shared memory (207 KiB) and the backward its buffers (219 KiB), reading the weights from
 * the stored states and carrying their gradients in the output tensors; where not even the buffers fit,
 * mode 0 puts them in the instance's scan_scratch (shared with the Linear scan's backward: calls on one
 * stream never overlap). f32 only, as the Linear scan's entries (the op refuses bf16 for the MLP scan;
 * f64 declines and composes, though the kernels are templated and the emulator test runs them in f64);
 * sizes whose int indexing could overflow are declined too, and the op then composes the same math. */
#include <limits.h>

#include "cuda_internal.h"

extern __shared__ float4 tmlp_smem_raw[];
#define TTT_MLP_SMEM() ((void *)tmlp_smem_raw)
#include "ttt_mlp_scan.cuh"

static bool all_f32(const ttt_tensor *const *t, int n) {
    for (int i = 0; i < n; i++)
        if (t[i] && t[i]->dtype != TTT_F32) return false;
    return true;
}

/* The kernels' limits: f32, and the per-(batch, head) extents they index with int (rows of a sequence,
 * weights, mini-batch buffers) well inside int; grids of at most INT_MAX blocks. */
static bool takes(const ttt_tensor *q, const ttt_tensor *tok, int64_t F) {
    if (q->dtype != TTT_F32 || tok->dtype != TTT_F32) return false;
    const int64_t BH = q->shape[0] * q->shape[1], T = q->shape[2], d = q->shape[3], bs = tok->shape[0];
    if (d < 1 || F < 1 || bs < 1 || BH < 1 || BH > INT_MAX || T < bs) return false;
    return T * d <= INT_MAX / 2 && d * F <= INT_MAX / 4 && bs * F <= INT_MAX / 16 && bs * bs <= INT_MAX / 8;
}

int ttt__cu_ttt_mlp_scan(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *w1_out, ttt_tensor *b1_out,
                         ttt_tensor *w2_out, ttt_tensor *b2_out, ttt_tensor *states, const ttt_tensor *q,
                         const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta, const ttt_tensor *tok,
                         const ttt_tensor *ln_w, const ttt_tensor *ln_b, const ttt_tensor *w1, const ttt_tensor *b1,
                         const ttt_tensor *w2, const ttt_tensor *b2, double eps) {
    ENTER(D, self);
    const int64_t F = w1->shape[w1->ndim - 1];
    const ttt_tensor *all[] = {q, k, v, eta, tok, ln_w, ln_b, w1, b1, w2, b2, states};
    if (!takes(q, tok, F) || !all_f32(all, 12)) return TTT_BACKEND_DECLINED;
    tmlp::Fwd<float> p;
    p.out = (float *)out->data, p.w1_out = (float *)w1_out->data, p.b1_out = (float *)b1_out->data;
    p.w2_out = (float *)w2_out->data, p.b2_out = (float *)b2_out->data;
    p.st = states ? (float *)states->data : NULL;
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.eta = (const float *)eta->data, p.tok = (const float *)tok->data;
    p.ln_w = (const float *)ln_w->data, p.ln_b = (const float *)ln_b->data;
    p.w1 = (const float *)w1->data, p.b1 = (const float *)b1->data, p.w2 = (const float *)w2->data;
    p.b2 = (const float *)b2->data;
    p.H = (int)q->shape[1], p.T = (int)q->shape[2], p.d = (int)q->shape[3], p.F = (int)F, p.bs = (int)tok->shape[0];
    p.N = p.T / p.bs;
    p.w1_batched = w1->ndim == 4, p.b1_batched = b1->ndim == 4, p.w2_batched = w2->ndim == 4, p.b2_batched = b2->ndim == 4;
    p.eps = (float)eps;
    const int64_t BH = q->shape[0] * q->shape[1];
    p.mode = tmlp::pick_mode(true, p.d, p.F, p.bs, sizeof(float), (size_t)cu_smem_limit(D));
    p.scr = NULL;
    if (p.mode == 0) {
        if (scratch_reserve(D, &D->scan_scratch, sizeof(float) * (size_t)BH * tmlp::fwd_buf_elems(p.d, p.F, p.bs),
                            "ttt_mlp_scan"))
            return TTT_ERR;
        p.scr = (float *)D->scan_scratch.p;
    }
    const size_t bytes = tmlp::fwd_smem_elems(p.d, p.F, p.bs, p.mode) * sizeof(float);
    static int allowed[CU_MAX_GPUS];
    if (cu_allow_smem(tmlp::mlp_fwd<float>, bytes, D, allowed)) return TTT_ERR;
    tmlp::mlp_fwd<float><<<(unsigned)BH, tmlp::THREADS, bytes, D->stream>>>(p);
    LAUNCHED("ttt_mlp_scan");
    return TTT_OK;
}

int ttt__cu_ttt_mlp_scan_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *deta,
                             ttt_tensor *dtok, ttt_tensor *dln_w, ttt_tensor *dln_b, ttt_tensor *dw1, ttt_tensor *db1,
                             ttt_tensor *dw2, ttt_tensor *db2, const ttt_tensor *dout, const ttt_tensor *dw1_out,
                             const ttt_tensor *db1_out, const ttt_tensor *dw2_out, const ttt_tensor *db2_out,
                             const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                             const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b,
                             const ttt_tensor *states, double eps) {
    ENTER(D, self);
    const int64_t F = dw1->shape[3];
    const ttt_tensor *all[] = {dout, dw1_out, db1_out, dw2_out, db2_out, q, k, v, eta, tok, ln_w, ln_b, states};
    if (!takes(q, tok, F) || !all_f32(all, 13)) return TTT_BACKEND_DECLINED;
    tmlp::Bwd<float> p;
    p.dq = (float *)dq->data, p.dk = (float *)dk->data, p.dv = (float *)dv->data, p.deta = (float *)deta->data;
    p.dtok = (float *)dtok->data, p.dln_w = (float *)dln_w->data, p.dln_b = (float *)dln_b->data;
    p.dw1 = (float *)dw1->data, p.db1 = (float *)db1->data, p.dw2 = (float *)dw2->data, p.db2 = (float *)db2->data;
    p.dout = (const float *)dout->data;
    p.dw1_out = dw1_out ? (const float *)dw1_out->data : NULL, p.db1_out = db1_out ? (const float *)db1_out->data : NULL;
    p.dw2_out = dw2_out ? (const float *)dw2_out->data : NULL, p.db2_out = db2_out ? (const float *)db2_out->data : NULL;
    p.q = (const float *)q->data, p.k = (const float *)k->data, p.v = (const float *)v->data;
    p.eta = (const float *)eta->data, p.tok = (const float *)tok->data;
    p.ln_w = (const float *)ln_w->data, p.ln_b = (const float *)ln_b->data, p.st = (const float *)states->data;
    p.H = (int)q->shape[1], p.T = (int)q->shape[2], p.d = (int)q->shape[3], p.F = (int)F, p.bs = (int)tok->shape[0];
    p.N = p.T / p.bs, p.eps = (float)eps;
    const int64_t BH = q->shape[0] * q->shape[1];
    p.mode = tmlp::pick_mode(false, p.d, p.F, p.bs, sizeof(float), (size_t)cu_smem_limit(D));
    p.scr = NULL;
    if (p.mode == 0) {
        if (scratch_reserve(D, &D->scan_scratch, sizeof(float) * (size_t)BH * tmlp::bwd_buf_elems(p.d, p.F, p.bs),
                            "ttt_mlp_scan_bwd"))
            return TTT_ERR;
        p.scr = (float *)D->scan_scratch.p;
    }
    const size_t bytes = tmlp::bwd_smem_elems(p.d, p.F, p.bs, p.mode) * sizeof(float);
    static int allowed[CU_MAX_GPUS];
    if (cu_allow_smem(tmlp::mlp_bwd<float>, bytes, D, allowed)) return TTT_ERR;
    tmlp::mlp_bwd<float><<<(unsigned)BH, tmlp::THREADS, bytes, D->stream>>>(p);
    LAUNCHED("ttt_mlp_scan_bwd");
    return TTT_OK;
}
