/* The fused MTTT-MLP inner step on the CPU (backend.h: mttt_mlp_step, mttt_mlp_step_bwd) and the learner's
 * read-out (mttt_mlp_apply, _bwd): OpenMP over the B * H (batch, head) pairs, each pair's whole step (three
 * products forward, the inner gradient's four, the update) in a per-thread scratch of a few m x F matrices
 * that stays in L2. The composed form makes dozens of passes over [B, H, m, F] tensors for the same step
 * (src/composed/mttt_step.c). */
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

/* The compiler would fold the B loads of the product's inner loop into every FMA (12 loads where 2 do, and
 * the loop bound by loads): an empty asm that needs the vector in a register keeps it there. */
#if defined(__GNUC__) && defined(__AVX__) && (defined(__x86_64__) || defined(__i386__))
#define KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define KEEP_IN_REGISTER(v) (void)0
#endif

#define R float
#define SFX _f32
#define EXP exp_f32 /* no libm call: the gelu loops vectorize (cpu_internal.h) */
#include "cpu_mttt_impl.h"
#undef R
#undef SFX
#undef EXP
#define R double
#define SFX _f64
#define EXP exp
#include "cpu_mttt_impl.h"
#undef R
#undef SFX
#undef EXP

typedef struct {
    int64_t B, H, m, d, F, D;
    int xt_heads; /* xt is [B, H, m, D] (else [B, 1, m, D], shared by the heads) */
    int64_t w_off[4]; /* 1: the weight is per pair [B, H, ..]; 0: per head [H, ..] */
} step_dims;

static int dims_of(const char *kernel, const ttt_tensor *const *w, const ttt_tensor *k, const ttt_tensor *xt,
                   step_dims *s) {
    if (k->dtype != TTT_F32 && k->dtype != TTT_F64) return cpu_unsupported(kernel, k->dtype);
    s->B = k->shape[0], s->H = k->shape[1], s->m = k->shape[2], s->d = k->shape[3];
    s->F = w[0]->shape[w[0]->ndim - 1], s->D = xt->shape[3];
    s->xt_heads = xt->shape[1] != 1 || s->H == 1;
    for (int i = 0; i < 4; i++) s->w_off[i] = w[i]->ndim == 4;
    return TTT_OK;
}

/* Scratch kept between calls: a fresh malloc of this size is an mmap whose pages fault in on every call (a few
 * percent of the step). One buffer, taken and put back atomically, so concurrent callers (two contexts) each
 * get their own: the loser of a race just allocates. */
typedef struct {
    void *p;
    size_t size;
} scratch_buf;
static _Atomic(scratch_buf *) cached_scratch;

static scratch_buf *scratch_take(size_t size) {
    scratch_buf *b = atomic_exchange(&cached_scratch, NULL);
    if (b && b->size >= size) return b;
    if (b) free(b->p), free(b);
    b = malloc(sizeof *b);
    if (b && !(b->p = malloc(size))) free(b), b = NULL;
    if (b) b->size = size;
    return b;
}

static void scratch_give(scratch_buf *b) {
    if (!b) return;
    scratch_buf *old = atomic_exchange(&cached_scratch, b);
    if (old) free(old->p), free(old);
}

/* Runs body for every pair bh on a team sized by the work, each thread with its own scratch scr_ of
 * scratch_elems (taken before the region, so a failed allocation fails the call; pre_buf is freed then). */
#define FOR_EACH_PAIR(kernel, self, s, elem_size, scratch_elems, ...)                                             \
    do {                                                                                                         \
        const int64_t n_bh_ = (s).B * (s).H;                                                                     \
        const int team_ = cpu_team(self, n_bh_ * (s).m * (s).d * (s).F);                                         \
        const size_t per_ = ((size_t)(scratch_elems) * (elem_size) + 63) & ~(size_t)63;                         \
        scratch_buf *sb_ = scratch_take(per_ * (size_t)team_ + 64);                                              \
        if (!sb_) {                                                                                              \
            free(pre_buf);                                                                                       \
            ttt_backend_error("%s: out of host memory for %d x %zu bytes of scratch", kernel, team_, per_);        \
            return TTT_ERR;                                                                                      \
        }                                                                                                        \
        char *scr_all_ = sb_->p;                                                                                 \
        if (team_ > 1) {                                                                                         \
            _Pragma("omp parallel num_threads(team_)") {                                                         \
                void *scr_ = scr_all_ + per_ * (size_t)omp_get_thread_num();                                     \
                _Pragma("omp for schedule(dynamic, 1)") for (int64_t bh = 0; bh < n_bh_; bh++) {               \
                    __VA_ARGS__                                                                                  \
                }                                                                                                \
            }                                                                                                    \
        } else {                                                                                                 \
            void *scr_ = scr_all_;                                                                               \
            for (int64_t bh = 0; bh < n_bh_; bh++) {                                                             \
                __VA_ARGS__                                                                                      \
            }                                                                                                    \
        }                                                                                                        \
        scratch_give(sb_);                                                                                       \
    } while (0)

/* element offsets of pair bh's blocks */
#define PAIR_OFFSETS                                                                                              \
    const int64_t h = bh % s.H, b = bh / s.H, d = s.d, F = s.F, D = s.D, m = s.m;                                \
    const int64_t o_w1 = (s.w_off[0] ? bh : h) * d * F, o_b1 = (s.w_off[1] ? bh : h) * F;                       \
    const int64_t o_w2 = (s.w_off[2] ? bh : h) * F * d, o_b2 = (s.w_off[3] ? bh : h) * d;                       \
    /* k and xt may be views with any strides but a unit last one (a permute of the projections, a slice) */   \
    const int64_t o_k = b * k->stride[0] + h * k->stride[1], ldk = k->stride[2];                                 \
    const int64_t o_x = b * xt->stride[0] + (s.xt_heads ? h * xt->stride[1] : 0), ldx = xt->stride[2]

#define FWD_ARGS(R)                                                                                               \
    step ? (R *)w1_out->data + bh * d * F : NULL, step ? (R *)b1_out->data + bh * F : NULL,                     \
        step ? (R *)w2_out->data + bh * F * d : NULL, step ? (R *)b2_out->data + bh * d : NULL,                 \
        (const R *)w1->data + o_w1, (const R *)b1->data + o_b1,                     \
        (const R *)w2->data + o_w2, (const R *)b2->data + o_b2, (const R *)k->data + o_k,                      \
        (const R *)xt->data + o_x, (const R *)gh->data + h * D * d, lng ? (const R *)lng->data + h * D : NULL,  \
        lnb ? (const R *)lnb->data + h * D : NULL, m, d, F, D, ldk, ldx, (R)eta, eps

/* The transposes of gh and of the weights shared by the batch (W_0 at step 0), once per head instead of once
 * per pair: pre[h] = {G^T [d, D] (NULL without gh), W1^T [F, d] or NULL, W2^T [d, F] or NULL} over buf (NULL
 * on OOM). */
static void *head_transposes(const step_dims *s, const ttt_tensor *gh, const ttt_tensor *w1, const ttt_tensor *w2,
                             int f32, void ***pre) {
    const int64_t d = s->d, F = s->F, D = s->D, H = s->H;
    const int tw1 = !s->w_off[0], tw2 = !s->w_off[2];
    const size_t es = f32 ? sizeof(float) : sizeof(double);
    const int64_t nG = gh ? d * D : 0;
    const size_t per = ((size_t)(nG + (tw1 ? F * d : 0) + (tw2 ? d * F : 0)) * es + 63) & ~(size_t)63;
    char *buf = malloc(per * (size_t)H + sizeof(void *) * 3 * (size_t)H);
    if (!buf) return NULL;
    void **p = (void **)(buf + per * (size_t)H);
    for (int64_t h = 0; h < H; h++) {
        char *at = buf + per * (size_t)h;
        p[3 * h] = gh ? at : NULL;
        p[3 * h + 1] = tw1 ? at + (size_t)nG * es : NULL;
        p[3 * h + 2] = tw2 ? at + (size_t)(nG + (tw1 ? F * d : 0)) * es : NULL;
        if (f32) {
            if (gh) transpose_f32(p[3 * h], (const float *)gh->data + h * D * d, D, d);
            if (tw1) transpose_f32(p[3 * h + 1], (const float *)w1->data + h * d * F, d, F);
            if (tw2) transpose_f32(p[3 * h + 2], (const float *)w2->data + h * F * d, F, d);
        } else {
            if (gh) transpose_f64(p[3 * h], (const double *)gh->data + h * D * d, D, d);
            if (tw1) transpose_f64(p[3 * h + 1], (const double *)w1->data + h * d * F, d, F);
            if (tw2) transpose_f64(p[3 * h + 2], (const double *)w2->data + h * F * d, F, d);
        }
    }
    *pre = p;
    return buf;
}

int cpu_mttt_mlp_step(ttt_backend_state *self, ttt_tensor *w1_out, ttt_tensor *b1_out, ttt_tensor *w2_out,
                      ttt_tensor *b2_out, ttt_tensor *loss, const ttt_tensor *w1, const ttt_tensor *b1,
                      const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *k, const ttt_tensor *xt,
                      const ttt_tensor *gh, const ttt_tensor *lng, const ttt_tensor *lnb, double eta, double eps) {
    step_dims s = {0};
    const ttt_tensor *w[4] = {w1, b1, w2, b2};
    if (dims_of("mttt_mlp_step", w, k, xt, &s)) return TTT_ERR;
    const int f32 = k->dtype == TTT_F32, step = w1_out != NULL; /* else the loss only */
    const int64_t scr_n = f32 ? fwd_scratch_f32(s.m, s.d, s.F, s.D) : fwd_scratch_f64(s.m, s.d, s.F, s.D);
    void **pre;
    void *pre_buf = head_transposes(&s, gh, w1, w2, f32, &pre);
    if (!pre_buf) {
        ttt_backend_error("mttt_mlp_step: out of host memory");
        return TTT_ERR;
    }
    FOR_EACH_PAIR("mttt_mlp_step", self, s, f32 ? sizeof(float) : sizeof(double), scr_n, {
        PAIR_OFFSETS;
        if (f32) ((float *)loss->data)[bh] = (float)step_fwd_f32(FWD_ARGS(float), (const float *const *)(pre + 3 * h), (float *)scr_);
        else ((double *)loss->data)[bh] = step_fwd_f64(FWD_ARGS(double), (const double *const *)(pre + 3 * h), (double *)scr_);
    });
    free(pre_buf);
    return TTT_OK;
}

#define BWD_ARGS(R)                                                                                               \
    (R *)dw1->data + bh * d * F, (R *)db1->data + bh * F, (R *)dw2->data + bh * F * d, (R *)db2->data + bh * d, \
        (R *)dk->data + bh * m * d, (R *)dxt->data + bh * m * D, (R *)dgh->data + bh * D * d,                   \
        dlng ? (R *)dlng->data + bh * D : NULL, dlnb ? (R *)dlnb->data + bh * D : NULL,                         \
        dw1_out ? (const R *)dw1_out->data + bh * d * F : NULL, db1_out ? (const R *)db1_out->data + bh * F : NULL, \
        dw2_out ? (const R *)dw2_out->data + bh * F * d : NULL, db2_out ? (const R *)db2_out->data + bh * d : NULL, \
        dloss ? ((const R *)dloss->data)[bh] : (R)0, (const R *)w1->data + o_w1, (const R *)b1->data + o_b1,    \
        (const R *)w2->data + o_w2, (const R *)b2->data + o_b2, (const R *)k->data + o_k,                      \
        (const R *)xt->data + o_x, (const R *)gh->data + h * D * d, lng ? (const R *)lng->data + h * D : NULL,  \
        lnb ? (const R *)lnb->data + h * D : NULL, m, d, F, D, ldk, ldx, (R)eta, eps

int cpu_mttt_mlp_step_bwd(ttt_backend_state *self, ttt_tensor *dw1, ttt_tensor *db1, ttt_tensor *dw2, ttt_tensor *db2,
                          ttt_tensor *dk, ttt_tensor *dxt, ttt_tensor *dgh, ttt_tensor *dlng, ttt_tensor *dlnb,
                          const ttt_tensor *dw1_out, const ttt_tensor *db1_out, const ttt_tensor *dw2_out,
                          const ttt_tensor *db2_out, const ttt_tensor *dloss, const ttt_tensor *w1,
                          const ttt_tensor *b1, const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *k,
                          const ttt_tensor *xt, const ttt_tensor *gh, const ttt_tensor *lng, const ttt_tensor *lnb,
                          double eta, double eps) {
    step_dims s = {0};
    const ttt_tensor *w[4] = {w1, b1, w2, b2};
    if (dims_of("mttt_mlp_step_bwd", w, k, xt, &s)) return TTT_ERR;
    const int f32 = k->dtype == TTT_F32;
    const int64_t scr_n = f32 ? bwd_scratch_f32(s.m, s.d, s.F, s.D) : bwd_scratch_f64(s.m, s.d, s.F, s.D);
    void **pre;
    void *pre_buf = head_transposes(&s, gh, w1, w2, f32, &pre);
    if (!pre_buf) {
        ttt_backend_error("mttt_mlp_step_bwd: out of host memory");
        return TTT_ERR;
    }
    FOR_EACH_PAIR("mttt_mlp_step_bwd", self, s, f32 ? sizeof(float) : sizeof(double), scr_n, {
        PAIR_OFFSETS;
        (void)o_x;
        if (f32) step_bwd_f32(BWD_ARGS(float), (const float *const *)(pre + 3 * h), (float *)scr_);
        else step_bwd_f64(BWD_ARGS(double), (const double *const *)(pre + 3 * h), (double *)scr_);
    });
    free(pre_buf);
    return TTT_OK;
}

/* ---- the read-out (backend.h: mttt_mlp_apply) ---- */

static int apply_dims(const char *kernel, const ttt_tensor *const *w, const ttt_tensor *q, step_dims *s) {
    if (q->dtype != TTT_F32 && q->dtype != TTT_F64) return cpu_unsupported(kernel, q->dtype);
    *s = (step_dims){.B = q->shape[0], .H = q->shape[1], .m = q->shape[2], .d = q->shape[3], .F = w[0]->shape[w[0]->ndim - 1]};
    for (int i = 0; i < 4; i++) s->w_off[i] = w[i]->ndim == 4;
    return TTT_OK;
}

#define APPLY_OFFSETS                                                                                             \
    const int64_t h = bh % s.H, d = s.d, F = s.F, n = s.m;                                                       \
    const int64_t o_q = (bh / s.H) * q->stride[0] + h * q->stride[1], ldq = q->stride[2]; /* a view: see above */ \
    const int64_t o_w1 = (s.w_off[0] ? bh : h) * d * F, o_b1 = (s.w_off[1] ? bh : h) * F;                       \
    const int64_t o_w2 = (s.w_off[2] ? bh : h) * F * d, o_b2 = (s.w_off[3] ? bh : h) * d

int cpu_mttt_mlp_apply(ttt_backend_state *self, ttt_tensor *out, const ttt_tensor *w1, const ttt_tensor *b1,
                       const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *q) {
    step_dims s;
    const ttt_tensor *w[4] = {w1, b1, w2, b2};
    if (apply_dims("mttt_mlp_apply", w, q, &s)) return TTT_ERR;
    const int f32 = q->dtype == TTT_F32;
    void *pre_buf = NULL;
    FOR_EACH_PAIR("mttt_mlp_apply", self, s, f32 ? sizeof(float) : sizeof(double),
                  f32 ? apply_scratch_f32(s.m, s.d, s.F) : apply_scratch_f64(s.m, s.d, s.F), {
                      APPLY_OFFSETS;
                      (void)o_b2;
                      if (f32)
                          apply_fwd_f32((float *)out->data + bh * n * d, (const float *)w1->data + o_w1,
                                        (const float *)b1->data + o_b1, (const float *)w2->data + o_w2,
                                        (const float *)b2->data + o_b2, (const float *)q->data + o_q, n, d, F, ldq,
                                        (float *)scr_);
                      else
                          apply_fwd_f64((double *)out->data + bh * n * d, (const double *)w1->data + o_w1,
                                        (const double *)b1->data + o_b1, (const double *)w2->data + o_w2,
                                        (const double *)b2->data + o_b2, (const double *)q->data + o_q, n, d, F, ldq,
                                        (double *)scr_);
                  });
    return TTT_OK;
}

int cpu_mttt_mlp_apply_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dw1, ttt_tensor *db1, ttt_tensor *dw2,
                           ttt_tensor *db2, const ttt_tensor *dout, const ttt_tensor *w1, const ttt_tensor *b1,
                           const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *q) {
    step_dims s;
    const ttt_tensor *w[4] = {w1, b1, w2, b2};
    if (apply_dims("mttt_mlp_apply_bwd", w, q, &s)) return TTT_ERR;
    const int f32 = q->dtype == TTT_F32;
    void **pre = NULL;
    void *pre_buf = head_transposes(&s, NULL, w1, w2, f32, &pre);
    if (!pre_buf) {
        ttt_backend_error("mttt_mlp_apply_bwd: out of host memory");
        return TTT_ERR;
    }
    FOR_EACH_PAIR("mttt_mlp_apply_bwd", self, s, f32 ? sizeof(float) : sizeof(double),
                  f32 ? apply_scratch_f32(s.m, s.d, s.F) : apply_scratch_f64(s.m, s.d, s.F), {
                      APPLY_OFFSETS;
                      (void)o_b2;
                      if (f32)
                          apply_bwd_f32((float *)dq->data + bh * n * d, (float *)dw1->data + bh * d * F,
                                        (float *)db1->data + bh * F, (float *)dw2->data + bh * F * d,
                                        (float *)db2->data + bh * d, (const float *)dout->data + bh * n * d,
                                        (const float *)w1->data + o_w1, (const float *)b1->data + o_b1,
                                        (const float *)w2->data + o_w2, (const float *)q->data + o_q, n, d, F, ldq,
                                        (const float *const *)(pre + 3 * h), (float *)scr_);
                      else
                          apply_bwd_f64((double *)dq->data + bh * n * d, (double *)dw1->data + bh * d * F,
                                        (double *)db1->data + bh * F, (double *)dw2->data + bh * F * d,
                                        (double *)db2->data + bh * d, (const double *)dout->data + bh * n * d,
                                        (const double *)w1->data + o_w1, (const double *)b1->data + o_b1,
                                        (const double *)w2->data + o_w2, (const double *)q->data + o_q, n, d, F, ldq,
                                        (const double *const *)(pre + 3 * h), (double *)scr_);
                  });
    free(pre_buf);
    return TTT_OK;
}
