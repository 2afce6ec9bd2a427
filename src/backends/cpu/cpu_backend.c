/* The CPU backend: its kernel table, memory, copies (with dtype conversion)
 * and fills. Kernels live in cpu_*.c beside this file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_internal.h"

/* cpu_ttt_scan.c: the fused TTT-Linear scan and TTT-MLP forward (backend.h) */
int cpu_ttt_linear_scan(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *w_out, ttt_tensor *b_out,
                        ttt_tensor *w_states, ttt_tensor *b_states, const ttt_tensor *q, const ttt_tensor *k,
                        const ttt_tensor *v, const ttt_tensor *eta, const ttt_tensor *tok, const ttt_tensor *ln_w,
                        const ttt_tensor *ln_b, const ttt_tensor *w0, const ttt_tensor *b0, double eps);
int cpu_ttt_linear_scan_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *deta,
                            ttt_tensor *dtok, ttt_tensor *dln_w, ttt_tensor *dln_b, ttt_tensor *dw0, ttt_tensor *db0,
                            const ttt_tensor *dout, const ttt_tensor *dw_out, const ttt_tensor *db_out,
                            const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                            const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b,
                            const ttt_tensor *w_states, const ttt_tensor *b_states, double eps);
int cpu_ttt_mlp_scan(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *w1_out, ttt_tensor *b1_out, ttt_tensor *w2_out,
                     ttt_tensor *b2_out, ttt_tensor *states, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                     const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b, const ttt_tensor *w1,
                     const ttt_tensor *b1, const ttt_tensor *w2, const ttt_tensor *b2, double eps);
int cpu_ttt_mlp_scan_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *deta,
                         ttt_tensor *dtok, ttt_tensor *dln_w, ttt_tensor *dln_b, ttt_tensor *dw1, ttt_tensor *db1,
                         ttt_tensor *dw2, ttt_tensor *db2, const ttt_tensor *dout, const ttt_tensor *dw1_out,
                         const ttt_tensor *db1_out, const ttt_tensor *dw2_out, const ttt_tensor *db2_out,
                         const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                         const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b, const ttt_tensor *states,
                         double eps);
/* cpu_ttt_step.c: TTT-Linear's decode step (backend.h) */
int cpu_ttt_linear_step(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *w, ttt_tensor *c, ttt_tensor *gw,
                        ttt_tensor *gc, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                        const ttt_tensor *eta, const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b,
                        int64_t r0, double eps);
int cpu_ttt_mlp_step(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *const *w, ttt_tensor *const *g,
                     const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                     const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b, int64_t r0, double eps);
/* cpu_mttt.c: the fused MTTT-MLP inner step (backend.h) */
int cpu_mttt_mlp_step(ttt_backend_state *self, ttt_tensor *w1_out, ttt_tensor *b1_out, ttt_tensor *w2_out,
                      ttt_tensor *b2_out, ttt_tensor *loss, const ttt_tensor *w1, const ttt_tensor *b1,
                      const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *k, const ttt_tensor *xt,
                      const ttt_tensor *gh, const ttt_tensor *lng, const ttt_tensor *lnb, double eta, double eps);
int cpu_mttt_mlp_step_bwd(ttt_backend_state *self, ttt_tensor *dw1, ttt_tensor *db1, ttt_tensor *dw2, ttt_tensor *db2,
                          ttt_tensor *dk, ttt_tensor *dxt, ttt_tensor *dgh, ttt_tensor *dlng, ttt_tensor *dlnb,
                          const ttt_tensor *dw1_out, const ttt_tensor *db1_out, const ttt_tensor *dw2_out,
                          const ttt_tensor *db2_out, const ttt_tensor *dloss, const ttt_tensor *w1,
                          const ttt_tensor *b1, const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *k,
                          const ttt_tensor *xt, const ttt_tensor *gh, const ttt_tensor *lng, const ttt_tensor *lnb,
                          double eta, double eps);
int cpu_mttt_mlp_apply(ttt_backend_state *self, ttt_tensor *out, const ttt_tensor *w1, const ttt_tensor *b1,
                       const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *q);
int cpu_mttt_mlp_apply_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dw1, ttt_tensor *db1, ttt_tensor *dw2,
                           ttt_tensor *db2, const ttt_tensor *dout, const ttt_tensor *w1, const ttt_tensor *b1,
                           const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *q);
int cpu_unary(ttt_backend_state *self, ttt_unary_op op, ttt_tensor *dst, const ttt_tensor *src, double p0, double p1);
int cpu_binary(ttt_backend_state *self, ttt_binary_op op, ttt_tensor *dst, const ttt_tensor *a, const ttt_tensor *b);
int cpu_where(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *cond, const ttt_tensor *a, const ttt_tensor *b);
int cpu_reduce(ttt_backend_state *self, ttt_reduce_op op, ttt_tensor *dst, const ttt_tensor *src);
int cpu_matmul(ttt_backend_state *self, ttt_tensor *c, const ttt_tensor *a, const ttt_tensor *b, int trans_a, int trans_b);
int cpu_softmax(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, int log);
int cpu_norm(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dst, const ttt_tensor *src, double eps);
int cpu_cross_entropy(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *logits, const ttt_tensor *targets, int ignore_index);
int cpu_norm_bwd(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dx, const ttt_tensor *x, const ttt_tensor *y, const ttt_tensor *dy,
                 double eps);
int cpu_cross_entropy_bwd(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *logits, const ttt_tensor *targets, const ttt_tensor *grow,
                          int ignore_index);
int cpu_cross_entropy_bwd2(ttt_backend_state *self, ttt_tensor *gx, ttt_tensor *ggrow, const ttt_tensor *logits,
                           const ttt_tensor *targets, const ttt_tensor *grow, const ttt_tensor *u, int ignore_index);
int cpu_one_hot(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *targets, int ignore_index);
int cpu_gather_rows(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *table, const ttt_tensor *ids);
int cpu_scatter_add_rows(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, const ttt_tensor *ids);
int cpu_rope(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, int seq_axis, int64_t pos0, double theta, int inverse);
#ifdef TTT_HAVE_LAPACK
int cpu_svd(ttt_backend_state *self, const ttt_tensor *a, ttt_tensor *u, ttt_tensor *s, ttt_tensor *vt);
#endif
int cpu_attn_mask(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, int64_t window, int64_t q_offset, double fill);
int cpu_adamw(ttt_backend_state *self, ttt_tensor *p, const ttt_tensor *g, ttt_tensor *m, ttt_tensor *v, double lr, double beta1, double beta2,
              double eps, double weight_decay, int64_t step);
int cpu_sgd(ttt_backend_state *self, ttt_tensor *p, const ttt_tensor *g, ttt_tensor *buf, double lr, double momentum, double weight_decay,
            int nesterov);
int cpu_adamw_multi(ttt_backend_state *self, int n, ttt_tensor *const *p, ttt_tensor *const *g, ttt_tensor *const *m,
                    ttt_tensor *const *v, const double *weight_decay, double lr, double beta1, double beta2, double eps,
                    int64_t step);
int cpu_sumsq_multi(ttt_backend_state *self, ttt_tensor *dst, int n, const ttt_tensor *const *x);
int cpu_scale_multi(ttt_backend_state *self, int n, ttt_tensor *const *x, double a);
int cpu_clip_step(ttt_backend_state *self, int n, ttt_tensor *const *out, ttt_tensor *norm, const ttt_tensor *const *w,
                  const ttt_tensor *const *g, double eta, double clip);
int cpu_clip_step_bwd(ttt_backend_state *self, int n, ttt_tensor *const *dg, const ttt_tensor *const *dout,
                      const ttt_tensor *const *g, const ttt_tensor *norm, double eta, double clip);
int cpu_norm_affine(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dst, const ttt_tensor *src,
                    const ttt_tensor *gamma, double eps);
int cpu_norm_affine_bwd(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dx, ttt_tensor *dgx, const ttt_tensor *x,
                        const ttt_tensor *gamma, const ttt_tensor *dy, double eps);
int cpu_swiglu(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *a, const ttt_tensor *b);
int cpu_swiglu_bwd2(ttt_backend_state *self, ttt_tensor *ga, ttt_tensor *gb, ttt_tensor *gdy, const ttt_tensor *a,
                    const ttt_tensor *b, const ttt_tensor *dy, const ttt_tensor *u, const ttt_tensor *v);
int cpu_norm_bwd2(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *gx, ttt_tensor *gdy, ttt_tensor *ggx,
                  const ttt_tensor *x, const ttt_tensor *gamma, const ttt_tensor *dy, const ttt_tensor *u,
                  const ttt_tensor *v, double eps);
int cpu_swiglu_bwd(ttt_backend_state *self, ttt_tensor *da, ttt_tensor *db, const ttt_tensor *a, const ttt_tensor *b,
                   const ttt_tensor *dy);

int cpu_gdn_chunk_fwd(ttt_backend_state *self, ttt_tensor *o, ttt_tensor *s_out, ttt_tensor *states, const ttt_tensor *q,
                      const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *beta, const ttt_tensor *g,
                      const ttt_tensor *s0, int64_t chunk);
int cpu_gdn_chunk_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *dbeta,
                      ttt_tensor *dg, ttt_tensor *ds0, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                      const ttt_tensor *beta, const ttt_tensor *g, const ttt_tensor *states, const ttt_tensor *dout,
                      const ttt_tensor *ds_out, int64_t chunk);
int cpu_ssd_chunk_fwd(ttt_backend_state *self, ttt_tensor *o, ttt_tensor *s_out, ttt_tensor *states, const ttt_tensor *q,
                      const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *g, const ttt_tensor *s0, int64_t chunk);
int cpu_ssd_chunk_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *dg,
                      ttt_tensor *ds0, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *g,
                      const ttt_tensor *states, const ttt_tensor *dout, const ttt_tensor *ds_out, int64_t chunk);

int cpu_unsupported(const char *kernel, ttt_dtype dt) {
    static const char *names[] = {"f32", "f64", "bf16", "i32"};
    ttt_backend_error("%s: dtype %s is not supported on the cpu", kernel, (unsigned)dt < 4 ? names[dt] : "?");
    return TTT_ERR;
}

static void *cpu_alloc(ttt_backend_state *self, size_t bytes) {
    (void)self;
    size_t n = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, n ? n : 64);
}
static void cpu_free(ttt_backend_state *self, void *p) {
    (void)self;
    free(p);
}
static int cpu_upload(ttt_backend_state *self, void *dst, const void *host, size_t bytes) {
    (void)self;
    if (bytes) memcpy(dst, host, bytes);
    return TTT_OK;
}
static int cpu_download(ttt_backend_state *self, void *host, const void *src, size_t bytes) {
    (void)self;
    if (bytes) memcpy(host, src, bytes);
    return TTT_OK;
}
static int cpu_sync(ttt_backend_state *self) {
    (void)self;
    return TTT_OK;
}

/* On a shared machine a parallel region is as slow as its slowest thread,
 * and a thread the scheduler has put aside for another process's keeps the
 * whole team waiting for a time slice: on a loaded 2-core machine two threads
 * ran a language model's decoding over 100x slower than one. So instances that
 * fit the machine count the cores that other processes leave free: /proc/
 * loadavg's fourth field is the number of runnable tasks now, this process's
 * own runnable threads among them (own_runnable); the rest, scaled to the
 * share of the machine's processors this process may use, are taken as busy.
 * Sampled at most every 100 ms. */
static _Atomic int g_free_cores;
static _Atomic long long g_free_cores_at; /* ms of the last sample */

/* This process's threads that are runnable now (their state in /proc/self/task/N/stat is R):
 * loadavg's count includes them, and they are not another process's load. */
static long own_runnable(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return 1;
    long n = 0;
    struct dirent *e;
    char path[64], buf[256];
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/self/task/%.20s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        const size_t got = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[got] = 0;
        const char *close = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
        if (close && close[1] == ' ' && close[2] == 'R') n++;
    }
    closedir(d);
    return n > 0 ? n : 1;
}

static int sample_free_cores(void) {
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    int mine = 1;
#ifdef _OPENMP
    mine = omp_get_num_procs(); /* the processors this process may run on */
#endif
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return mine;
    double l1, l5, l15;
    long running = 0, total = 0;
    const int got = fscanf(f, "%lf %lf %lf %ld/%ld", &l1, &l5, &l15, &running, &total);
    fclose(f);
    if (got != 5 || online < 1 || mine < 1) return mine;
    const long own = own_runnable();
    const double others = (double)(running > own ? running - own : 0) * (double)mine / (double)online;
    const int free_cores = (int)((double)mine - others + 0.5);
    return free_cores < 1 ? 1 : free_cores > mine ? mine : free_cores;
}

int cpu_free_cores(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    const long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (!g_free_cores || now - g_free_cores_at >= 100) {
        g_free_cores = sample_free_cores();
        g_free_cores_at = now;
    }
    return g_free_cores;
}

/* threads 0: what OpenMP would give a region here (OMP_NUM_THREADS, else the
 * processors this process may run on). */
static ttt_backend_state *cpu_open(const ttt_backend_config *cfg) {
    if (cfg->device_index != 0) {
        ttt_backend_error("cpu device %d does not exist (there is one cpu device, index 0)", cfg->device_index);
        return NULL;
    }
    if (cfg->threads < 0) {
        ttt_backend_error("cpu threads %d: must be 0 (fit the machine) or positive", cfg->threads);
        return NULL;
    }
    cpu_state *st = malloc(sizeof *st);
    if (!st) {
        ttt_backend_error("out of host memory (cpu backend instance)");
        return NULL;
    }
    st->threads = cfg->threads;
    st->fit_machine = cfg->threads == 0;
#ifdef _OPENMP
    if (st->threads == 0) st->threads = omp_get_max_threads();
#else
    st->threads = 1;
#endif
    if (st->threads < 1) st->threads = 1;
    return (ttt_backend_state *)st;
}

static void cpu_close(ttt_backend_state *self) { free(self); }

static inline double load(const char *p, ttt_dtype dt) {
    switch (dt) {
    case TTT_F32: return *(const float *)p;
    case TTT_F64: return *(const double *)p;
    case TTT_BF16: return ttt_bf16_to_f32(*(const uint16_t *)p);
    case TTT_I32: return *(const int32_t *)p;
    }
    return 0;
}

static inline void store(char *p, ttt_dtype dt, double v) {
    switch (dt) {
    case TTT_F32: *(float *)p = (float)v; break;
    case TTT_F64: *(double *)p = v; break;
    case TTT_BF16: *(uint16_t *)p = ttt_f32_to_bf16((float)v); break;
    case TTT_I32: /* truncate toward zero; NaN and out-of-range values saturate (a bare cast is UB) */
        *(int32_t *)p = v != v ? 0 : v <= INT32_MIN ? INT32_MIN : v >= INT32_MAX ? INT32_MAX : (int32_t)v;
        break;
    }
}

static size_t dsize(ttt_dtype dt) { return dt == TTT_F64 ? 8 : dt == TTT_BF16 ? 2 : 4; }

static int cpu_copy(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src) {
    const ttt_tensor *ops[2] = {dst, src};
    cpu_iter it;
    cpu_iter_init(&it, 2, ops);
    size_t ds = dsize(dst->dtype), ss = dsize(src->dtype);
    int same = dst->dtype == src->dtype;
    int64_t items = cpu_iter_items(&it), sd = cpu_iter_inner_stride(&it, 0), sx = cpu_iter_inner_stride(&it, 1);
    /* Work in exp-sized units: a dense copy moves 8 elements in the time an exp takes one, a strided or
     * converting one about 2. A thread woken for less (a decoded token's logits) costs more than it saves. */
    const int64_t work = cpu_numel(dst) / (same && sd == 1 && sx == 1 ? 8 : 2);
CPU_PARALLEL(self, work,
    _Pragma("omp for schedule(static)")
        for (int64_t w = 0; w < items; w++) {
            int64_t off[2], n;
            cpu_iter_item(&it, w, off, &n);
            char *y = (char *)dst->data + off[0] * (int64_t)ds;
            const char *x = (const char *)src->data + off[1] * (int64_t)ss;
            if (same && sd == 1 && sx == 1) {
                memcpy(y, x, (size_t)n * ds);
            } else if (same && ds == 4) {
                for (int64_t i = 0; i < n; i++) ((uint32_t *)y)[i * sd] = ((const uint32_t *)x)[i * sx];
            } else if (same && ds == 8) {
                for (int64_t i = 0; i < n; i++) ((uint64_t *)y)[i * sd] = ((const uint64_t *)x)[i * sx];
            } else if (same) {
                for (int64_t i = 0; i < n; i++) ((uint16_t *)y)[i * sd] = ((const uint16_t *)x)[i * sx];
            } else {
                for (int64_t i = 0; i < n; i++)
                    store(y + i * sd * (int64_t)ds, dst->dtype, load(x + i * sx * (int64_t)ss, src->dtype));
            }
        }
);
    return TTT_OK;
}

static int cpu_fill(ttt_backend_state *self, ttt_tensor *dst, double value) {
    const ttt_tensor *ops[1] = {dst};
    cpu_iter it;
    cpu_iter_init(&it, 1, ops);
    size_t ds = dsize(dst->dtype);
    int64_t items = cpu_iter_items(&it), sd = cpu_iter_inner_stride(&it, 0);
    char one[8];
    store(one, dst->dtype, value);
CPU_PARALLEL(self, cpu_numel(dst) / 8, /* a store per element: see cpu_copy */
    _Pragma("omp for schedule(static)")
        for (int64_t w = 0; w < items; w++) {
            int64_t off[1], n;
            cpu_iter_item(&it, w, off, &n);
            char *y = (char *)dst->data + off[0] * (int64_t)ds;
            if (value == 0.0 && sd == 1) memset(y, 0, (size_t)n * ds);
            else
                for (int64_t i = 0; i < n; i++) memcpy(y + i * sd * (int64_t)ds, one, ds);
        }
);
    return TTT_OK;
}

static const ttt_backend CPU = {
    .name = "cpu",
    .device = TTT_CPU,
    .open = cpu_open,
    .close = cpu_close,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .synchronize = cpu_sync,
#ifdef TTT_HAVE_LAPACK
    .svd = cpu_svd,
#endif
    .copy = cpu_copy,
    .fill = cpu_fill,
    .unary = cpu_unary,
    .binary = cpu_binary,
    .where = cpu_where,
    .reduce = cpu_reduce,
    .matmul = cpu_matmul,
    .softmax = cpu_softmax,
    .norm = cpu_norm,
    .cross_entropy = cpu_cross_entropy,
    .cross_entropy_bwd = cpu_cross_entropy_bwd,
    .cross_entropy_bwd2 = cpu_cross_entropy_bwd2,
    .norm_bwd = cpu_norm_bwd,
    .norm_affine = cpu_norm_affine,
    .norm_affine_bwd = cpu_norm_affine_bwd,
    .norm_bwd2 = cpu_norm_bwd2,
    .one_hot = cpu_one_hot,
    .gather_rows = cpu_gather_rows,
    .scatter_add_rows = cpu_scatter_add_rows,
    .rope = cpu_rope,
    .attn_mask = cpu_attn_mask,
    .swiglu = cpu_swiglu,
    .swiglu_bwd = cpu_swiglu_bwd,
    .swiglu_bwd2 = cpu_swiglu_bwd2,
    .adamw = cpu_adamw,
    .sgd = cpu_sgd,
    .adamw_multi = cpu_adamw_multi,
    .sumsq_multi = cpu_sumsq_multi,
    .scale_multi = cpu_scale_multi,
    .clip_step = cpu_clip_step,
    .clip_step_bwd = cpu_clip_step_bwd,
    .ttt_linear_scan = cpu_ttt_linear_scan,
    .ttt_linear_scan_bwd = cpu_ttt_linear_scan_bwd,
    .ttt_mlp_scan = cpu_ttt_mlp_scan,
    .ttt_mlp_scan_bwd = cpu_ttt_mlp_scan_bwd,
    .gdn_chunk_fwd = cpu_gdn_chunk_fwd,
    .gdn_chunk_bwd = cpu_gdn_chunk_bwd,
    .ssd_chunk_fwd = cpu_ssd_chunk_fwd,
    .ssd_chunk_bwd = cpu_ssd_chunk_bwd,
    .ttt_linear_step = cpu_ttt_linear_step,
    .ttt_mlp_step = cpu_ttt_mlp_step,
    .mttt_mlp_step = cpu_mttt_mlp_step,
    .mttt_mlp_step_bwd = cpu_mttt_mlp_step_bwd,
    .mttt_mlp_apply = cpu_mttt_mlp_apply,
    .mttt_mlp_apply_bwd = cpu_mttt_mlp_apply_bwd,
};

const ttt_backend *ttt_backend_cpu(void) { return &CPU; }
