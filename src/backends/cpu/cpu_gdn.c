/* The fused chunkwise Gated DeltaNet core on the CPU (backend.h: gdn_chunk_fwd, gdn_chunk_bwd): one
 * (batch, head) per OpenMP work item, its state S [dk, dv] in a per-thread buffer that every chunk
 * updates in place, so nothing of size T x T or T x dk x dv is ever formed. The per-head bodies are in
 * cpu_gdn_impl.h, compiled once for f32 and once for f64 (each computes in its own precision). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#define REAL float
#define FN(name) name##_f32
#include "cpu_gdn_impl.h"
#undef REAL
#undef FN
#define REAL double
#define FN(name) name##_f64
#include "cpu_gdn_impl.h"
#undef REAL
#undef FN

typedef struct {
    int64_t BH, T, C, dk, dv;
} gdn_dims;

static gdn_dims dims_of(const ttt_tensor *q, const ttt_tensor *v, int64_t chunk) {
    gdn_dims d = {q->shape[0] * q->shape[1], q->shape[2], chunk, q->shape[3], v->shape[3]};
    if (d.C > d.T) d.C = d.T; /* one chunk: no longer than the sequence */
    return d;
}

/* Threads: one per head at most; a head's work is about T (dk dv + C (dk + dv)) multiply-adds. */
static int64_t work_of(const gdn_dims *d) { return d->BH * d->T * (d->dk * d->dv + d->C * (d->dk + d->dv)); }

static int check_args(const char *kernel, const ttt_tensor *q, int64_t chunk) {
    if (q->dtype != TTT_F32 && q->dtype != TTT_F64) return cpu_unsupported(kernel, q->dtype);
    if (chunk < 1) {
        ttt_backend_error("%s: chunk %lld must be >= 1", kernel, (long long)chunk);
        return TTT_ERR;
    }
    return TTT_OK;
}

#define PTR(t, T_) ((t) ? (T_ *)(t)->data : NULL)

int cpu_gdn_chunk_fwd(ttt_backend_state *self, ttt_tensor *o, ttt_tensor *s_out, ttt_tensor *states, const ttt_tensor *q,
                      const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *beta, const ttt_tensor *g,
                      const ttt_tensor *s0, int64_t chunk) {
    if (check_args("gdn_chunk_fwd", q, chunk) != TTT_OK) return TTT_ERR;
    const gdn_dims d = dims_of(q, v, chunk);
    const int f32 = q->dtype == TTT_F32;
    const size_t esize = f32 ? sizeof(float) : sizeof(double);
    const int64_t per = f32 ? fwd_scratch_f32(d.C, d.dk, d.dv) : fwd_scratch_f64(d.C, d.dk, d.dv);
    const int64_t N = (d.T + d.C - 1) / d.C, kd = d.T * d.dk, vd = d.T * d.dv, sd = d.dk * d.dv;
    int failed = 0;
    CPU_PARALLEL(self, work_of(&d), {
        void *w = malloc(esize * (size_t)per); /* per thread, reused by its heads */
        if (!w) {
            _Pragma("omp atomic write") failed = 1;
        }
        _Pragma("omp for schedule(dynamic, 1)") for (int64_t h = 0; h < d.BH; h++) {
            if (!w) continue;
            if (f32)
                fwd_head_f32(d.T, d.C, d.dk, d.dv, PTR(q, const float) + h * kd, PTR(k, const float) + h * kd,
                             PTR(v, const float) + h * vd, PTR(beta, const float) + h * d.T, PTR(g, const float) + h * d.T,
                             s0 ? PTR(s0, const float) + h * sd : NULL, PTR(o, float) + h * vd,
                             s_out ? PTR(s_out, float) + h * sd : NULL, states ? PTR(states, float) + h * N * sd : NULL,
                             w);
            else
                fwd_head_f64(d.T, d.C, d.dk, d.dv, PTR(q, const double) + h * kd, PTR(k, const double) + h * kd,
                             PTR(v, const double) + h * vd, PTR(beta, const double) + h * d.T,
                             PTR(g, const double) + h * d.T, s0 ? PTR(s0, const double) + h * sd : NULL,
                             PTR(o, double) + h * vd, s_out ? PTR(s_out, double) + h * sd : NULL,
                             states ? PTR(states, double) + h * N * sd : NULL, w);
        }
        free(w);
    });
    if (failed) {
        ttt_backend_error("gdn_chunk_fwd: out of host memory for the per-thread chunk scratch");
        return TTT_ERR;
    }
    return TTT_OK;
}

int cpu_gdn_chunk_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *dbeta,
                      ttt_tensor *dg, ttt_tensor *ds0, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                      const ttt_tensor *beta, const ttt_tensor *g, const ttt_tensor *states, const ttt_tensor *dout,
                      const ttt_tensor *ds_out, int64_t chunk) {
    if (check_args("gdn_chunk_bwd", q, chunk) != TTT_OK) return TTT_ERR;
    const gdn_dims d = dims_of(q, v, chunk);
    const int f32 = q->dtype == TTT_F32;
    const size_t esize = f32 ? sizeof(float) : sizeof(double);
    const int64_t per = f32 ? bwd_scratch_f32(d.C, d.dk, d.dv) : bwd_scratch_f64(d.C, d.dk, d.dv);
    const int64_t N = (d.T + d.C - 1) / d.C, kd = d.T * d.dk, vd = d.T * d.dv, sd = d.dk * d.dv;
    int failed = 0;
    CPU_PARALLEL(self, 2 * work_of(&d), {
        void *w = malloc(esize * (size_t)per);
        if (!w) {
            _Pragma("omp atomic write") failed = 1;
        }
        _Pragma("omp for schedule(dynamic, 1)") for (int64_t h = 0; h < d.BH; h++) {
            if (!w) continue;
            if (f32)
                bwd_head_f32(d.T, d.C, d.dk, d.dv, PTR(q, const float) + h * kd, PTR(k, const float) + h * kd,
                             PTR(v, const float) + h * vd, PTR(beta, const float) + h * d.T, PTR(g, const float) + h * d.T,
                             PTR(states, const float) + h * N * sd, dout ? PTR(dout, const float) + h * vd : NULL,
                             ds_out ? PTR(ds_out, const float) + h * sd : NULL, PTR(dq, float) + h * kd,
                             PTR(dk, float) + h * kd, PTR(dv, float) + h * vd, PTR(dbeta, float) + h * d.T,
                             PTR(dg, float) + h * d.T, ds0 ? PTR(ds0, float) + h * sd : NULL, w);
            else
                bwd_head_f64(d.T, d.C, d.dk, d.dv, PTR(q, const double) + h * kd, PTR(k, const double) + h * kd,
                             PTR(v, const double) + h * vd, PTR(beta, const double) + h * d.T,
                             PTR(g, const double) + h * d.T, PTR(states, const double) + h * N * sd,
                             dout ? PTR(dout, const double) + h * vd : NULL,
                             ds_out ? PTR(ds_out, const double) + h * sd : NULL, PTR(dq, double) + h * kd,
                             PTR(dk, double) + h * kd, PTR(dv, double) + h * vd, PTR(dbeta, double) + h * d.T,
                             PTR(dg, double) + h * d.T, ds0 ? PTR(ds0, double) + h * sd : NULL, w);
        }
        free(w);
    });
    if (failed) {
        ttt_backend_error("gdn_chunk_bwd: out of host memory for the per-thread chunk scratch");
        return TTT_ERR;
    }
    return TTT_OK;
}
