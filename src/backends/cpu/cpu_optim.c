/* Fused optimizer updates on dense tensors (PyTorch semantics). */
#include <math.h>
#include <stdlib.h>

#include "cpu_internal.h"

#define OPT_LOOP(T)                                                                                   \
    do {                                                                                              \
        T *pp = p->data, *mm = m->data, *vv = v->data;                                                \
        const T *gg = g->data;                                                                        \
        _Pragma("omp parallel for if (team > 1) num_threads(team) schedule(static)") \
        for (int64_t i = 0; i < n; i++) {                                                             \
            double w = pp[i] * (1.0 - lr * weight_decay);                                             \
            double mi = beta1 * mm[i] + (1.0 - beta1) * gg[i];                                        \
            double vi = beta2 * vv[i] + (1.0 - beta2) * (double)gg[i] * gg[i];                        \
            mm[i] = (T)mi;                                                                            \
            vv[i] = (T)vi;                                                                            \
            pp[i] = (T)(w - lr * (mi / bc1) / (sqrt(vi / bc2) + eps));                                \
        }                                                                                             \
    } while (0)

int cpu_adamw(ttt_backend_state *self, ttt_tensor *p, const ttt_tensor *g, ttt_tensor *m, ttt_tensor *v, double lr, double beta1, double beta2,
              double eps, double weight_decay, int64_t step) {
    if (p->dtype != TTT_F32 && p->dtype != TTT_F64) return cpu_unsupported("adamw", p->dtype);
    int64_t n = cpu_numel(p);
    const int team = cpu_team(self, n);
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    if (p->dtype == TTT_F32) OPT_LOOP(float);
    else OPT_LOOP(double);
    return TTT_OK;
}

#define SGD_LOOP(T)                                                                                   \
    do {                                                                                              \
        T *pp = p->data, *bb = buf->data;                                                             \
        const T *gg = g->data;                                                                        \
        _Pragma("omp parallel for if (team > 1) num_threads(team) schedule(static)") \
        for (int64_t i = 0; i < n; i++) {                                                             \
            double d = gg[i] + weight_decay * pp[i];                                                  \
            if (momentum != 0) {                                                                      \
                double b = momentum * bb[i] + d;                                                      \
                bb[i] = (T)b;                                                                         \
                d = nesterov ? d + momentum * b : b;                                                  \
            }                                                                                         \
            pp[i] = (T)(pp[i] - lr * d);                                                              \
        }                                                                                             \
    } while (0)

int cpu_sgd(ttt_backend_state *self, ttt_tensor *p, const ttt_tensor *g, ttt_tensor *buf, double lr, double momentum, double weight_decay,
            int nesterov) {
    if (p->dtype != TTT_F32 && p->dtype != TTT_F64) return cpu_unsupported("sgd", p->dtype);
    int64_t n = cpu_numel(p);
    const int team = cpu_team(self, n);
    if (p->dtype == TTT_F32) SGD_LOOP(float);
    else SGD_LOOP(double);
    return TTT_OK;
}

/* ---- multi-tensor forms (the same arithmetic as the per-tensor entries) -------------------------------------- */

int cpu_unary(ttt_backend_state *self, ttt_unary_op op, ttt_tensor *dst, const ttt_tensor *src, double p0, double p1);

int cpu_adamw_multi(ttt_backend_state *self, int n, ttt_tensor *const *p, ttt_tensor *const *g, ttt_tensor *const *m,
                    ttt_tensor *const *v, const double *weight_decay, double lr, double beta1, double beta2, double eps,
                    int64_t step) {
    for (int i = 0; i < n; i++)
        if (cpu_adamw(self, p[i], g[i], m[i], v[i], lr, beta1, beta2, eps, weight_decay[i], step) != TTT_OK)
            return TTT_ERR;
    return TTT_OK;
}

int cpu_scale_multi(ttt_backend_state *self, int n, ttt_tensor *const *x, double a) {
    for (int i = 0; i < n; i++)
        if (cpu_unary(self, TTT_U_AFFINE, x[i], x[i], a, 0.0) != TTT_OK) return TTT_ERR;
    return TTT_OK;
}

/* sum(x * x) as the composed ops form it on the CPU: each square rounded to x's dtype (the binary mul),
 * summed in 8 double lanes (cpu_reduce's sum of a contiguous run), the lanes pairwise. Products and sums in
 * separate statements, so no compiler contracts them into fused multiply-adds. */
#define SUMSQ_LANES(NAME, T)                                                        \
    static double NAME(const T *x, int64_t n) {                                     \
        double l[8] = {0};                                                          \
        int64_t j = 0;                                                              \
        for (; j + 8 <= n; j += 8)                                                  \
            for (int e = 0; e < 8; e++) {                                           \
                const T sq = x[j + e] * x[j + e];                                   \
                l[e] += (double)sq;                                                 \
            }                                                                       \
        for (; j < n; j++) {                                                        \
            const T sq = x[j] * x[j];                                               \
            l[j % 8] += (double)sq;                                                 \
        }                                                                           \
        return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));  \
    }
SUMSQ_LANES(sumsq_f32, float)
SUMSQ_LANES(sumsq_f64, double)

/* dst = sum over i of (f64) sum(x[i] * x[i]), the per-tensor sums rounded to x's dtype (the reduce's
 * output) and added in order (the f64 adds of the composed path); tensors in parallel. */
int cpu_sumsq_multi(ttt_backend_state *self, ttt_tensor *dst, int n, const ttt_tensor *const *x) {
    if (dst->dtype != TTT_F64) {
        ttt_backend_error("sumsq_multi: dst must be f64");
        return TTT_ERR;
    }
    double *terms = n > 0 ? malloc(sizeof(double) * (size_t)n) : NULL;
    if (n > 0 && !terms) {
        ttt_backend_error("sumsq_multi: out of host memory for %d sums", n);
        return TTT_ERR;
    }
    int64_t work = 0;
    for (int i = 0; i < n; i++) {
        if (x[i]->dtype != TTT_F32 && x[i]->dtype != TTT_F64) {
            free(terms);
            return cpu_unsupported("sumsq_multi", x[i]->dtype);
        }
        work += cpu_numel(x[i]);
    }
CPU_PARALLEL(self, work,
    _Pragma("omp for schedule(dynamic, 1)")
        for (int i = 0; i < n; i++) {
            const int64_t k = cpu_numel(x[i]);
            terms[i] = x[i]->dtype == TTT_F32 ? (double)(float)sumsq_f32(x[i]->data, k) : sumsq_f64(x[i]->data, k);
        }
);
    double total = 0;
    for (int i = 0; i < n; i++) total = i == 0 ? terms[i] : total + terms[i];
    *(double *)dst->data = total;
    free(terms);
    return TTT_OK;
}

/* ---- TTT-E2E's clipped inner step (cpu_clip_step_impl.h: the passes, shared with the CUDA kernels' test) -------- */

#define R float
#define SFX _f32
#include "cpu_clip_step_impl.h"
#undef R
#undef SFX
#define R double
#define SFX _f64
#include "cpu_clip_step_impl.h"
#undef R
#undef SFX

/* Both entries: the forward (bwd 0: dst = out, a = w, norm written) or the backward (dst = dg, a = dout, norm
 * read), f32 or f64 (else declined). */
static int clip_entry(ttt_backend_state *self, const char *who, int bwd, int n, ttt_tensor *const *dst,
                      const ttt_tensor *const *a, const ttt_tensor *const *g, const ttt_tensor *norm, double eta,
                      double clip) {
    const ttt_dtype dt = g[0]->dtype;
    if (dt != TTT_F32 && dt != TTT_F64) return TTT_BACKEND_DECLINED;
    const int64_t B = g[0]->shape[0];
    int64_t *per = malloc(sizeof(int64_t) * (size_t)n), work = 0;
    void **p = malloc(sizeof(void *) * (size_t)(3 * n)); /* the data pointers of dst, a and g, as the passes take them */
    double *scratch = NULL;
    if (per && p) {
        for (int i = 0; i < n; i++) {
            per[i] = B ? cpu_numel(g[i]) / B : 0;
            work += cpu_numel(g[i]);
            p[i] = dst[i] ? dst[i]->data : NULL, p[n + i] = a[i] ? a[i]->data : NULL, p[2 * n + i] = g[i]->data;
        }
        scratch = malloc(sizeof(double) * (size_t)(clip_scratch_len(n, B, per) + 1));
    }
    if (!scratch) {
        free(per), free(p);
        ttt_backend_error("%s: out of host memory for %d tensors' per-chunk sums", who, n);
        return TTT_ERR;
    }
    const int team = cpu_team(self, work);
    double *nb = norm ? norm->data : NULL;
    if (dt == TTT_F32) {
        float *const *d = (float *const *)p;
        const float *const *x = (const float *const *)(p + n), *const *gg = (const float *const *)(p + 2 * n);
        if (bwd) clip_step_bwd_run_f32(n, B, per, d, x, gg, nb, eta, clip, scratch, team);
        else clip_step_run_f32(n, B, per, d, x, gg, nb, eta, clip, scratch, team);
    } else {
        double *const *d = (double *const *)p;
        const double *const *x = (const double *const *)(p + n), *const *gg = (const double *const *)(p + 2 * n);
        if (bwd) clip_step_bwd_run_f64(n, B, per, d, x, gg, nb, eta, clip, scratch, team);
        else clip_step_run_f64(n, B, per, d, x, gg, nb, eta, clip, scratch, team);
    }
    free(per), free(p), free(scratch);
    return TTT_OK;
}

int cpu_clip_step(ttt_backend_state *self, int n, ttt_tensor *const *out, ttt_tensor *norm, const ttt_tensor *const *w,
                  const ttt_tensor *const *g, double eta, double clip) {
    return clip_entry(self, "clip_step", 0, n, out, w, g, norm, eta, clip);
}

int cpu_clip_step_bwd(ttt_backend_state *self, int n, ttt_tensor *const *dg, const ttt_tensor *const *dout,
                      const ttt_tensor *const *g, const ttt_tensor *norm, double eta, double clip) {
    return clip_entry(self, "clip_step_bwd", 1, n, dg, dout, g, norm, eta, clip);
}
