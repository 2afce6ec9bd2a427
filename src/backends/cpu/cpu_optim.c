/* Fused optimizer updates on dense tensors (PyTorch semantics). */
#include <math.h>

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
