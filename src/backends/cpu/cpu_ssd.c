/* The fused chunkwise decayed linear recurrence on the CPU (backend.h: ssd_chunk_fwd, ssd_chunk_bwd): Mamba 2's
 * SSD core and, without gates, causal linear attention's. One (batch, head) per OpenMP work item, its state
 * [dk, dv] in a per-thread buffer updated chunk by chunk, so nothing of size T x T or T x dk x dv is formed.
 * The per-head bodies are in cpu_ssd_impl.h, compiled once for f32 and once for f64. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#define REAL float
#define FN(name) name##_f32
#include "cpu_ssd_impl.h"
#undef REAL
#undef FN
#define REAL double
#define FN(name) name##_f64
#include "cpu_ssd_impl.h"
#undef REAL
#undef FN

typedef struct {
    int64_t BH, T, C, dk, dv;
} ssd_dims;

static ssd_dims dims_of(const ttt_tensor *q, const ttt_tensor *v, int64_t chunk) {
    ssd_dims d = {q->shape[0] * q->shape[1], q->shape[2], chunk, q->shape[3], v->shape[3]};
    if (d.C > d.T) d.C = d.T;
    return d;
}

/* a head's work: about T (dk dv + C (dk + dv)) multiply-adds */
static int64_t work_of(const ssd_dims *d) { return d->BH * d->T * (d->dk * d->dv + d->C * (d->dk + d->dv)); }

static int check_args(const char *kernel, const ttt_tensor *q, int64_t chunk) {
    if (q->dtype != TTT_F32 && q->dtype != TTT_F64) return cpu_unsupported(kernel, q->dtype);
    if (chunk < 1) {
        ttt_backend_error("%s: chunk %lld must be >= 1", kernel, (long long)chunk);
        return TTT_ERR;
    }
    return TTT_OK;
}

#define PTR(t, T_) ((t) ? (T_ *)(t)->data : NULL)
/* a head's slice of an optional tensor */
#define AT(t, T_, off) ((t) ? PTR(t, T_) + (off) : NULL)

int cpu_ssd_chunk_fwd(ttt_backend_state *self, ttt_tensor *o, ttt_tensor *s_out, ttt_tensor *states, const ttt_tensor *q,
                      const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *g, const ttt_tensor *s0, int64_t chunk) {
    if (check_args("ssd_chunk_fwd", q, chunk) != TTT_OK) return TTT_ERR;
    const ssd_dims d = dims_of(q, v, chunk);
    const int f32 = q->dtype == TTT_F32;
    const size_t esize = f32 ? sizeof(float) : sizeof(double);
    const int64_t per = f32 ? ssd_fwd_scratch_f32(d.C, d.dk, d.dv) : ssd_fwd_scratch_f64(d.C, d.dk, d.dv);
    const int64_t N = (d.T + d.C - 1) / d.C, kd = d.T * d.dk, vd = d.T * d.dv, sd = d.dk * d.dv;
    int failed = 0;
    CPU_PARALLEL(self, work_of(&d), {
        void *w = malloc(esize * (size_t)per); /* per thread, reused by its heads */
        double *G = malloc(sizeof(double) * 2 * (size_t)d.C);
        if (!w || !G) {
            _Pragma("omp atomic write") failed = 1;
        }
        _Pragma("omp for schedule(dynamic, 1)") for (int64_t h = 0; h < d.BH; h++) {
            if (!w || !G) continue;
            if (f32)
                ssd_fwd_head_f32(d.T, d.C, d.dk, d.dv, PTR(q, const float) + h * kd, PTR(k, const float) + h * kd,
                                 PTR(v, const float) + h * vd, AT(g, const float, h * d.T), AT(s0, const float, h * sd),
                                 PTR(o, float) + h * vd, AT(s_out, float, h * sd), AT(states, float, h * N * sd), w, G);
            else
                ssd_fwd_head_f64(d.T, d.C, d.dk, d.dv, PTR(q, const double) + h * kd, PTR(k, const double) + h * kd,
                                 PTR(v, const double) + h * vd, AT(g, const double, h * d.T),
                                 AT(s0, const double, h * sd), PTR(o, double) + h * vd, AT(s_out, double, h * sd),
                                 AT(states, double, h * N * sd), w, G);
        }
        free(w);
        free(G);
    });
    if (failed) {
        ttt_backend_error("ssd_chunk_fwd: out of host memory for the per-thread chunk scratch");
        return TTT_ERR;
    }
    return TTT_OK;
}

int cpu_ssd_chunk_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *dg,
                      ttt_tensor *ds0, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *g,
                      const ttt_tensor *states, const ttt_tensor *dout, const ttt_tensor *ds_out, int64_t chunk) {
    if (check_args("ssd_chunk_bwd", q, chunk) != TTT_OK) return TTT_ERR;
    if ((g == NULL) != (dg == NULL)) {
        ttt_backend_error("ssd_chunk_bwd: dg must be given exactly when g is");
        return TTT_ERR;
    }
    const ssd_dims d = dims_of(q, v, chunk);
    const int f32 = q->dtype == TTT_F32;
    const size_t esize = f32 ? sizeof(float) : sizeof(double);
    const int64_t per = f32 ? ssd_bwd_scratch_f32(d.C, d.dk, d.dv) : ssd_bwd_scratch_f64(d.C, d.dk, d.dv);
    const int64_t N = (d.T + d.C - 1) / d.C, kd = d.T * d.dk, vd = d.T * d.dv, sd = d.dk * d.dv;
    int failed = 0;
    CPU_PARALLEL(self, 2 * work_of(&d), {
        void *w = malloc(esize * (size_t)per);
        double *G = malloc(sizeof(double) * 2 * (size_t)d.C);
        if (!w || !G) {
            _Pragma("omp atomic write") failed = 1;
        }
        _Pragma("omp for schedule(dynamic, 1)") for (int64_t h = 0; h < d.BH; h++) {
            if (!w || !G) continue;
            if (f32)
                ssd_bwd_head_f32(d.T, d.C, d.dk, d.dv, PTR(q, const float) + h * kd, PTR(k, const float) + h * kd,
                                 PTR(v, const float) + h * vd, AT(g, const float, h * d.T),
                                 PTR(states, const float) + h * N * sd, AT(dout, const float, h * vd),
                                 AT(ds_out, const float, h * sd), PTR(dq, float) + h * kd, PTR(dk, float) + h * kd,
                                 PTR(dv, float) + h * vd, AT(dg, float, h * d.T), AT(ds0, float, h * sd), w, G);
            else
                ssd_bwd_head_f64(d.T, d.C, d.dk, d.dv, PTR(q, const double) + h * kd, PTR(k, const double) + h * kd,
                                 PTR(v, const double) + h * vd, AT(g, const double, h * d.T),
                                 PTR(states, const double) + h * N * sd, AT(dout, const double, h * vd),
                                 AT(ds_out, const double, h * sd), PTR(dq, double) + h * kd, PTR(dk, double) + h * kd,
                                 PTR(dv, double) + h * vd, AT(dg, double, h * d.T), AT(ds0, double, h * sd), w, G);
        }
        free(w);
        free(G);
    });
    if (failed) {
        ttt_backend_error("ssd_chunk_bwd: out of host memory for the per-thread chunk scratch");
        return TTT_ERR;
    }
    return TTT_OK;
}
