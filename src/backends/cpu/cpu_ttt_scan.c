/* The fused TTT-Linear scan (backend.h: ttt_linear_scan, ttt_linear_scan_bwd) and TTT-MLP's forward
 * (ttt_mlp_scan) on the CPU: one
 * (batch, head) per work item, OpenMP over B * H, every mini-batch's products as plain loops over
 * a few KB of per-thread scratch. What it replaces is ~40 small ops per mini-batch, so on the CPU
 * too the gain is the per-op overhead (allocation, dispatch, graph nodes), not the arithmetic. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#define R float
#define SFX _f32
#define TANH tanh_f32 /* no libm call: the gelu loops vectorize (cpu_internal.h) */
#include "cpu_ttt_scan_impl.h"
#undef R
#undef SFX
#undef TANH
#define R double
#define SFX _f64
#define TANH tanh
#include "cpu_ttt_scan_impl.h"
#undef R
#undef SFX
#undef TANH

typedef struct {
    int64_t B, H, T, d, bs, N;
    int w0_batched, b0_batched;
} scan_dims;

static int dims_of(const char *kernel, const ttt_tensor *q, const ttt_tensor *tok, const ttt_tensor *w0,
                   const ttt_tensor *b0, scan_dims *s) {
    if (q->dtype != TTT_F32 && q->dtype != TTT_F64) return cpu_unsupported(kernel, q->dtype);
    s->B = q->shape[0], s->H = q->shape[1], s->T = q->shape[2], s->d = q->shape[3];
    s->bs = cpu_numel(tok);
    s->N = s->bs ? s->T / s->bs : 0;
    s->w0_batched = w0 && w0->ndim == 4;
    s->b0_batched = b0 && b0->ndim == 4;
    return TTT_OK;
}

/* Runs body(bh, scratch) for every (batch, head) bh on a team sized by the work, each thread with
 * its own scratch (allocated here, before the region, so a failed allocation fails the call). */
#define FOR_EACH_HEAD(kernel, self, dims, elem_size, scratch_elems, ...)                                             \
    do {                                                                                                     \
        const int64_t n_bh_ = (dims).B * (dims).H;                                                           \
        const int team_ = cpu_team(self, n_bh_ * (dims).T * (dims).d * (dims).d / 4);                       \
        const size_t per_ = (size_t)(scratch_elems) * (elem_size);                                           \
        char *scr_all_ = malloc(per_ * (size_t)team_ + 64);                                                  \
        if (!scr_all_) {                                                                                     \
            ttt_backend_error("%s: out of host memory for %d x %zu bytes of scratch", kernel, team_, per_);    \
            return TTT_ERR;                                                                                  \
        }                                                                                                    \
        if (team_ > 1) {                                                                                     \
            _Pragma("omp parallel num_threads(team_)") {                                                     \
                void *scr_ = scr_all_ + per_ * (size_t)omp_get_thread_num();                                 \
                _Pragma("omp for schedule(dynamic, 1)") for (int64_t bh = 0; bh < n_bh_; bh++) {           \
                    __VA_ARGS__                                                                              \
                }                                                                                            \
            }                                                                                                \
        } else {                                                                                             \
            void *scr_ = scr_all_;                                                                           \
            for (int64_t bh = 0; bh < n_bh_; bh++) {                                                         \
                __VA_ARGS__                                                                                  \
            }                                                                                                \
        }                                                                                                    \
        free(scr_all_);                                                                                      \
    } while (0)

/* The arguments of one (batch, head) bh, from the entries' locals. */
#define FWD_ARGS(R)                                                                                             \
    (R *)out->data + bh * T * d, (R *)w_out->data + bh * d * d, (R *)b_out->data + bh * d,                 \
        keep ? (R *)w_states->data + bh * N * d * d : NULL, keep ? (R *)b_states->data + bh * N * d : NULL, \
        (const R *)q->data + bh * T * d, (const R *)k->data + bh * T * d, (const R *)v->data + bh * T * d,  \
        (const R *)eta->data + bh * T, (const R *)tok->data, (const R *)ln_w->data + h * d,                 \
        (const R *)ln_b->data + h * d, (const R *)w0->data + wi * d * d, (const R *)b0->data + bi * d, N, bs, d, eps
#define BWD_ARGS(R)                                                                                                \
    (R *)dq->data + bh * T * d, (R *)dk->data + bh * T * d, (R *)dv->data + bh * T * d,                         \
        (R *)deta->data + bh * T, (R *)dtok->data + bh * bs, (R *)dln_w->data + bh * d, (R *)dln_b->data + bh * d, \
        (R *)dw0->data + bh * d * d, (R *)db0->data + bh * d, (const R *)dout->data + bh * T * d,               \
        dw_out ? (const R *)dw_out->data + bh * d * d : NULL, db_out ? (const R *)db_out->data + bh * d : NULL, \
        (const R *)q->data + bh * T * d, (const R *)k->data + bh * T * d, (const R *)v->data + bh * T * d,     \
        (const R *)eta->data + bh * T, (const R *)tok->data, (const R *)ln_w->data + h * d,                    \
        (const R *)ln_b->data + h * d, (const R *)w_states->data + bh * N * d * d,                             \
        (const R *)b_states->data + bh * N * d, N, bs, d, eps

int cpu_ttt_linear_scan(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *w_out, ttt_tensor *b_out,
                        ttt_tensor *w_states, ttt_tensor *b_states, const ttt_tensor *q, const ttt_tensor *k,
                        const ttt_tensor *v, const ttt_tensor *eta, const ttt_tensor *tok, const ttt_tensor *ln_w,
                        const ttt_tensor *ln_b, const ttt_tensor *w0, const ttt_tensor *b0, double eps) {
    scan_dims s = {0};
    if (dims_of("ttt_linear_scan", q, tok, w0, b0, &s)) return TTT_ERR;
    const int64_t H = s.H, T = s.T, d = s.d, bs = s.bs, N = s.N;
    const int f32 = q->dtype == TTT_F32;
    const int64_t scr_n = f32 ? scratch_elems_f32(bs, d) : scratch_elems_f64(bs, d);
    FOR_EACH_HEAD("ttt_linear_scan", self, s, f32 ? sizeof(float) : sizeof(double), scr_n, {
        const int64_t h = bh % H, wi = s.w0_batched ? bh : h, bi = s.b0_batched ? bh : h;
        const int keep = w_states != NULL;
        if (f32) scan_fwd_f32(FWD_ARGS(float), (float *)scr_);
        else scan_fwd_f64(FWD_ARGS(double), (double *)scr_);
    });
    return TTT_OK;
}

int cpu_ttt_linear_scan_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *deta,
                            ttt_tensor *dtok, ttt_tensor *dln_w, ttt_tensor *dln_b, ttt_tensor *dw0, ttt_tensor *db0,
                            const ttt_tensor *dout, const ttt_tensor *dw_out, const ttt_tensor *db_out,
                            const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                            const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b,
                            const ttt_tensor *w_states, const ttt_tensor *b_states, double eps) {
    scan_dims s = {0};
    if (dims_of("ttt_linear_scan_bwd", q, tok, NULL, NULL, &s)) return TTT_ERR;
    const int64_t H = s.H, T = s.T, d = s.d, bs = s.bs, N = s.N;
    const int f32 = q->dtype == TTT_F32;
    const int64_t scr_n = f32 ? scratch_elems_f32(bs, d) : scratch_elems_f64(bs, d);
    FOR_EACH_HEAD("ttt_linear_scan_bwd", self, s, f32 ? sizeof(float) : sizeof(double), scr_n, {
        const int64_t h = bh % H;
        if (f32) scan_bwd_f32(BWD_ARGS(float), (float *)scr_);
        else scan_bwd_f64(BWD_ARGS(double), (double *)scr_);
    });
    return TTT_OK;
}

#define MLP_ARGS(R)                                                                                              \
    (R *)out->data + bh * T * d, (R *)w1_out->data + bh * d * F, (R *)b1_out->data + bh * F,                    \
        (R *)w2_out->data + bh * F * d, (R *)b2_out->data + bh * d,                                              \
        states ? (R *)states->data + bh * N * (2 * d * F + F + d) : NULL, (const R *)q->data + bh * T * d,      \
        (const R *)k->data + bh * T * d, (const R *)v->data + bh * T * d, (const R *)eta->data + bh * T,        \
        (const R *)tok->data, (const R *)ln_w->data + h * d, (const R *)ln_b->data + h * d,                    \
        (const R *)w1->data + (w1->ndim == 4 ? bh : h) * d * F, (const R *)b1->data + (b1->ndim == 4 ? bh : h) * F, \
        (const R *)w2->data + (w2->ndim == 4 ? bh : h) * F * d, (const R *)b2->data + (b2->ndim == 4 ? bh : h) * d, \
        N, bs, d, F, eps

int cpu_ttt_mlp_scan(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *w1_out, ttt_tensor *b1_out, ttt_tensor *w2_out,
                     ttt_tensor *b2_out, ttt_tensor *states, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                     const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b, const ttt_tensor *w1,
                     const ttt_tensor *b1, const ttt_tensor *w2, const ttt_tensor *b2, double eps) {
    scan_dims s = {0};
    if (dims_of("ttt_mlp_scan", q, tok, NULL, NULL, &s)) return TTT_ERR;
    const int64_t H = s.H, T = s.T, d = s.d, bs = s.bs, N = s.N, F = w1->shape[w1->ndim - 1];
    const int f32 = q->dtype == TTT_F32;
    const int64_t scr_n = f32 ? mlp_scratch_elems_f32(bs, d, F) : mlp_scratch_elems_f64(bs, d, F);
    FOR_EACH_HEAD("ttt_mlp_scan", self, s, f32 ? sizeof(float) : sizeof(double), scr_n, {
        const int64_t h = bh % H;
        if (f32) mlp_scan_fwd_f32(MLP_ARGS(float), (float *)scr_);
        else mlp_scan_fwd_f64(MLP_ARGS(double), (double *)scr_);
    });
    return TTT_OK;
}

#define MLP_BWD_ARGS(R)                                                                                            \
    (R *)dq->data + bh * T * d, (R *)dk->data + bh * T * d, (R *)dv->data + bh * T * d,                         \
        (R *)deta->data + bh * T, (R *)dtok->data + bh * bs, (R *)dln_w->data + bh * d, (R *)dln_b->data + bh * d, \
        (R *)dw1->data + bh * d * F, (R *)db1->data + bh * F, (R *)dw2->data + bh * F * d, (R *)db2->data + bh * d, \
        (const R *)dout->data + bh * T * d,                                                                      \
        (const R *const[4]){dw1_out ? (const R *)dw1_out->data + bh * d * F : NULL,                             \
                            db1_out ? (const R *)db1_out->data + bh * F : NULL,                                 \
                            dw2_out ? (const R *)dw2_out->data + bh * F * d : NULL,                             \
                            db2_out ? (const R *)db2_out->data + bh * d : NULL},                                \
        (const R *)q->data + bh * T * d, (const R *)k->data + bh * T * d, (const R *)v->data + bh * T * d,     \
        (const R *)eta->data + bh * T, (const R *)tok->data, (const R *)ln_w->data + h * d,                    \
        (const R *)ln_b->data + h * d, (const R *)states->data + bh * N * (2 * d * F + F + d), N, bs, d, F, eps

int cpu_ttt_mlp_scan_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *deta,
                         ttt_tensor *dtok, ttt_tensor *dln_w, ttt_tensor *dln_b, ttt_tensor *dw1, ttt_tensor *db1,
                         ttt_tensor *dw2, ttt_tensor *db2, const ttt_tensor *dout, const ttt_tensor *dw1_out,
                         const ttt_tensor *db1_out, const ttt_tensor *dw2_out, const ttt_tensor *db2_out,
                         const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                         const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b, const ttt_tensor *states,
                         double eps) {
    scan_dims s = {0};
    if (dims_of("ttt_mlp_scan_bwd", q, tok, NULL, NULL, &s)) return TTT_ERR;
    const int64_t H = s.H, T = s.T, d = s.d, bs = s.bs, N = s.N, F = dw1->shape[3];
    const int f32 = q->dtype == TTT_F32;
    const int64_t scr_n = f32 ? mlp_bwd_scratch_elems_f32(bs, d, F) : mlp_bwd_scratch_elems_f64(bs, d, F);
    FOR_EACH_HEAD("ttt_mlp_scan_bwd", self, s, f32 ? sizeof(float) : sizeof(double), scr_n, {
        const int64_t h = bh % H;
        if (f32) mlp_scan_bwd_f32(MLP_BWD_ARGS(float), (float *)scr_);
        else mlp_scan_bwd_f64(MLP_BWD_ARGS(double), (double *)scr_);
    });
    return TTT_OK;
}
