/* Kernel-level profile (TTT_PROFILE=1 in the environment): every context
 * created then runs on a copy of its backend whose kernel entries synchronize
 * the device, time the call and add it to a table keyed by the entry (and the
 * elementwise op code); the table goes to stderr when the last profiled
 * context is freed. Synchronizing around each kernel removes overlap of host
 * and device work, so totals are "device time plus launch", an upper bound
 * per kernel; it answers "where does a step go", not "how fast is the step".
 * While a CUDA graph is recorded nothing is timed (recording must not sync).
 * Each profiled context gets a wrapper instance (prof_state) around its real
 * backend instance; the wrappers are generated from TTT_KERNEL_LIST, so a new
 * kernel entry is profiled once it has a DESC_ line below (the build fails
 * until it has). The table itself is process-wide, and so are the call counts tests read
 * (ttt__profile_calls; per device kind, only the calls that did the work: ttt__profile_ran).
 * TTT_PROFILE=scopes keys the rows by the node whose VJP queued the kernel as well ("forward" outside any),
 * e.g. "rms_norm_backward > norm_bwd2:rms bf16". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

enum { MAX_ROWS = 768 };

typedef struct {
    char name[96];
    long long calls;
    double seconds;
    double first; /* the first call's seconds: one-time work (cuBLAS's handle and workspace, lazy module loading)
                     lands there, and would otherwise inflate the row's per-call time */
} prof_row;

/* A profiled instance: the real table and instance, and the table the context calls. */
typedef struct {
    const ttt_backend *real;
    ttt_backend_state *rs;
    ttt_backend table;
    int recording;
} prof_state;

static prof_row g_rows[MAX_ROWS];
const char *ttt__profile_scope;
static int g_scopes; /* TTT_PROFILE=scopes: rows keyed by the running VJP's node too */
static int g_n_rows, g_users;
static long long g_calls[TTT_K_COUNT];
/* per device kind (TTT_CPU, TTT_CUDA): the calls that did the work (returned TTT_OK), and those that
 * declined it (TTT_BACKEND_DECLINED: the op then composed it of other entries) */
enum { N_DEVICES = 2 };
static long long g_ran[N_DEVICES][TTT_K_COUNT], g_declined[N_DEVICES][TTT_K_COUNT];
static const char *const DTYPE[4] = {"f32", "f64", "bf16", "i32"};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static prof_state *P_(ttt_backend_state *self) { return (prof_state *)self; }

static double begin(prof_state *P) {
    if (P->recording) return 0;
    P->real->synchronize(P->rs);
    return now();
}

static void end(prof_state *P, ttt_kernel k, int rc, double t0, ttt_dtype dt, const char *op) {
    if ((unsigned)k < TTT_K_COUNT) {
        g_calls[k]++;
        const unsigned dev = (unsigned)P->real->device;
        if (dev < N_DEVICES && rc == TTT_OK) g_ran[dev][k]++;
        else if (dev < N_DEVICES && rc == TTT_BACKEND_DECLINED) g_declined[dev][k]++;
    }
    if (P->recording) return;
    P->real->synchronize(P->rs);
    const double dt_s = now() - t0;
    const char *kind = (unsigned)k < TTT_K_COUNT ? ttt_kernel_name(k) : "graph_replay";
    char name[96];
    snprintf(name, sizeof name, "%s%s%s%s%s %s", g_scopes ? (ttt__profile_scope ? ttt__profile_scope : "forward") : "",
             g_scopes ? " > " : "", kind, op ? ":" : "", op ? op : "", (unsigned)dt < 4 ? DTYPE[dt] : "?");
    for (int i = 0; i < g_n_rows; i++)
        if (!strcmp(g_rows[i].name, name)) {
            g_rows[i].calls++;
            g_rows[i].seconds += dt_s;
            return;
        }
    if (g_n_rows == MAX_ROWS) return;
    snprintf(g_rows[g_n_rows].name, sizeof g_rows[g_n_rows].name, "%s", name);
    g_rows[g_n_rows].calls = 1;
    g_rows[g_n_rows].first = dt_s;
    g_rows[g_n_rows++].seconds = dt_s;
}

/* matmuls by shape: [batch x] M x N x K and the transposes, since one slow shape hides among fast ones */
static const char *matmul_label(char *buf, size_t n, const ttt_tensor *c, const ttt_tensor *a, int ta, int tb) {
    const int nd = c->ndim;
    int64_t batch = 1;
    for (int i = 0; i < nd - 2; i++) batch *= c->shape[i];
    const int64_t k = ta ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    snprintf(buf, n, "%lldx%lldx%lldx%lld %s%s", (long long)batch, (long long)c->shape[nd - 2],
             (long long)c->shape[nd - 1], (long long)k, ta ? "T" : "N", tb ? "T" : "N");
    return buf;
}

/* reductions by shape too (source > result, the kept axes as 1): a slow reduction of one shape shows, e.g. the
 * per-head sum of per-pair weight gradients */
static const char *reduce_label(char *buf, size_t n, ttt_reduce_op op, const ttt_tensor *src, const ttt_tensor *dst) {
    size_t u = (size_t)snprintf(buf, n, "%s ", op == TTT_R_MAX ? "max" : "sum");
    for (int pass = 0; pass < 2; pass++) {
        const ttt_tensor *t = pass ? dst : src;
        for (int i = 0; i < t->ndim && u < n; i++)
            u += (size_t)snprintf(buf + u, n - u, "%s%lld", i ? "x" : "", (long long)t->shape[i]);
        if (!pass && u < n) u += (size_t)snprintf(buf + u, n - u, ">");
    }
    return buf;
}

/* Each kernel's row key: the dtype it computes in, and a sub-label (or NULL). */
#define DESC_copy dst->dtype, src->dtype == dst->dtype ? NULL : "convert"
#define DESC_fill dst->dtype, NULL
#define DESC_unary dst->dtype, ttt_unary_op_name(op)
#define DESC_binary dst->dtype, ttt_binary_op_name(op)
#define DESC_where dst->dtype, NULL
#define DESC_reduce src->dtype, reduce_label(label_, sizeof label_, op, src, dst)
#define DESC_matmul c->dtype, matmul_label(label_, sizeof label_, c, a, trans_a, trans_b)
#define DESC_softmax src->dtype, log ? "log" : NULL
#define DESC_norm src->dtype, kind == TTT_NORM_RMS ? "rms" : "layer"
#define DESC_norm_bwd x->dtype, kind == TTT_NORM_RMS ? "rms" : "layer"
#define DESC_norm_affine src->dtype, kind == TTT_NORM_RMS ? "rms" : "layer"
#define DESC_norm_affine_bwd x->dtype, kind == TTT_NORM_RMS ? "rms" : "layer"
#define DESC_norm_bwd2 x->dtype, kind == TTT_NORM_RMS ? "rms" : "layer"
#define DESC_cross_entropy logits->dtype, NULL
#define DESC_cross_entropy_bwd logits->dtype, NULL
#define DESC_cross_entropy_bwd2 logits->dtype, NULL
#define DESC_one_hot dst->dtype, NULL
#define DESC_gather_rows table->dtype, NULL
#define DESC_scatter_add_rows src->dtype, NULL
#define DESC_rope src->dtype, NULL
#define DESC_attn_mask src->dtype, NULL
#define DESC_swiglu dst->dtype, NULL
#define DESC_swiglu_bwd dy->dtype, NULL
#define DESC_swiglu_bwd2 dy->dtype, NULL
#define DESC_adamw p->dtype, NULL
#define DESC_adamw_multi n > 0 ? p[0]->dtype : TTT_F32, NULL
#define DESC_sumsq_multi n > 0 ? x[0]->dtype : TTT_F32, NULL
#define DESC_scale_multi n > 0 ? x[0]->dtype : TTT_F32, NULL
#define DESC_clip_step n > 0 ? g[0]->dtype : TTT_F32, NULL
#define DESC_clip_step_bwd n > 0 ? g[0]->dtype : TTT_F32, NULL
#define DESC_sgd p->dtype, NULL
#define DESC_attention_fwd q->dtype, NULL
#define DESC_attention_bwd q->dtype, NULL
#define DESC_attention_bwd2 q->dtype, NULL
#define DESC_ttt_linear_scan q->dtype, NULL
#define DESC_ttt_linear_scan_bwd q->dtype, NULL
#define DESC_ttt_mlp_scan q->dtype, NULL
#define DESC_ttt_mlp_scan_bwd q->dtype, NULL
#define DESC_gdn_chunk_fwd q->dtype, NULL
#define DESC_gdn_chunk_bwd q->dtype, NULL
#define DESC_ssd_chunk_fwd q->dtype, NULL
#define DESC_ssd_chunk_bwd q->dtype, NULL
#define DESC_ttt_linear_step q->dtype, NULL
#define DESC_ttt_mlp_step q->dtype, NULL
#define DESC_mttt_mlp_step k->dtype, NULL
#define DESC_mttt_mlp_step_bwd k->dtype, NULL
#define DESC_mttt_mlp_apply q->dtype, NULL
#define DESC_mttt_mlp_apply_bwd q->dtype, NULL

#define WRAP(name, params, args)                                            \
    static int p_##name(ttt_backend_state *self, TTT__UNPAREN params) {     \
        prof_state *P = P_(self);                                           \
        char label_[48];                                                    \
        (void)label_;                                                       \
        const double t0 = begin(P);                                         \
        const int rc = P->real->name(P->rs, TTT__UNPAREN args);             \
        end(P, TTT_K_##name, rc, t0, DESC_##name);                          \
        return rc;                                                          \
    }
TTT_KERNEL_LIST(WRAP)
#undef WRAP

/* The other entries pass through to the real instance. */
static void *p_alloc(ttt_backend_state *self, size_t bytes) { return P_(self)->real->alloc(P_(self)->rs, bytes); }
static void p_free(ttt_backend_state *self, void *ptr) { P_(self)->real->free(P_(self)->rs, ptr); }
static int p_upload(ttt_backend_state *self, void *dst, const void *host, size_t bytes) {
    return P_(self)->real->upload(P_(self)->rs, dst, host, bytes);
}
static int p_download(ttt_backend_state *self, void *host, const void *src, size_t bytes) {
    return P_(self)->real->download(P_(self)->rs, host, src, bytes);
}
static int p_synchronize(ttt_backend_state *self) { return P_(self)->real->synchronize(P_(self)->rs); }
static void p_memory_stats(ttt_backend_state *self, size_t *reserved, size_t *in_use, uint64_t *driver_allocs) {
    P_(self)->real->memory_stats(P_(self)->rs, reserved, in_use, driver_allocs);
}
static int p_graph_begin(ttt_backend_state *self) {
    prof_state *P = P_(self);
    const int rc = P->real->graph_begin(P->rs);
    P->recording = rc == TTT_OK;
    return rc;
}
static int p_graph_end(ttt_backend_state *self, void **g) {
    P_(self)->recording = 0;
    return P_(self)->real->graph_end(P_(self)->rs, g);
}
static int p_graph_replay(ttt_backend_state *self, void *g) {
    prof_state *P = P_(self);
    const double t0 = begin(P);
    const int rc = P->real->graph_replay(P->rs, g);
    end(P, TTT_K_COUNT, rc, t0, TTT_F32, NULL);
    return rc;
}
static void p_graph_free(ttt_backend_state *self, void *g) { P_(self)->real->graph_free(P_(self)->rs, g); }

int ttt__profile_enabled(void) {
    const char *e = getenv("TTT_PROFILE");
    g_scopes = e && !strcmp(e, "scopes");
    return e && *e && strcmp(e, "0");
}

long long ttt__profile_calls(ttt_kernel k) { return (unsigned)k < TTT_K_COUNT ? g_calls[k] : 0; }

long long ttt__profile_ran(ttt_device device, ttt_kernel k) {
    return (unsigned)k < TTT_K_COUNT && (unsigned)device < N_DEVICES ? g_ran[device][k] : 0;
}

long long ttt__profile_declined(ttt_device device, ttt_kernel k) {
    return (unsigned)k < TTT_K_COUNT && (unsigned)device < N_DEVICES ? g_declined[device][k] : 0;
}

int ttt__profile_wrap(const ttt_backend **be, ttt_backend_state **bs) {
    prof_state *P = calloc(1, sizeof *P);
    if (!P) return TTT_ERR;
    const ttt_backend *real = *be;
    P->real = real;
    P->rs = *bs;
    ttt_backend *t = &P->table;
    *t = *real; /* name, device, queries, open and close as they are */
    t->alloc = p_alloc, t->free = p_free, t->upload = p_upload, t->download = p_download;
    t->synchronize = p_synchronize;
    if (real->memory_stats) t->memory_stats = p_memory_stats;
    /* optional kernels stay NULL where the real backend has none */
#define INSTALL(name, params, args) \
    if (real->name) t->name = p_##name;
    TTT_KERNEL_LIST(INSTALL)
#undef INSTALL
    if (real->graph_begin) {
        t->graph_begin = p_graph_begin, t->graph_end = p_graph_end;
        t->graph_replay = p_graph_replay, t->graph_free = p_graph_free;
    }
    *be = t;
    *bs = (ttt_backend_state *)P;
    g_users++;
    return TTT_OK;
}

static int by_time(const void *a, const void *b) {
    const double x = ((const prof_row *)a)->seconds, y = ((const prof_row *)b)->seconds;
    return (x < y) - (x > y);
}

void ttt__profile_release(const ttt_backend *be, ttt_backend_state *bs) {
    prof_state *P = P_(bs);
    (void)be;
    size_t reserved = 0, in_use = 0;
    uint64_t allocs = 0;
    const int has_stats = P->real->memory_stats != NULL;
    if (has_stats) P->real->memory_stats(P->rs, &reserved, &in_use, &allocs);
    const char *name = P->real->name;
    P->real->close(P->rs);
    free(P);
    if (!g_users || --g_users) return;
    double total = 0;
    for (int i = 0; i < g_n_rows; i++) total += g_rows[i].seconds;
    qsort(g_rows, (size_t)g_n_rows, sizeof g_rows[0], by_time);
    /* us/call leaves the first call out (it is its own column) where there are others */
    fprintf(stderr,
            "\n== TTT_PROFILE: kernel entries on %s, synchronized each (%.3f s in all) ==\n%-60s %10s %12s %10s %7s %10s\n",
            name, total, "entry dtype", "calls", "total ms", "us/call", "share", "first ms");
    for (int i = 0; i < g_n_rows; i++) {
        const prof_row *r = &g_rows[i];
        const double per = r->calls > 1 ? (r->seconds - r->first) / (double)(r->calls - 1) : r->seconds;
        fprintf(stderr, "%-60s %10lld %12.2f %10.1f %6.1f%% %10.3f\n", r->name, r->calls, 1e3 * r->seconds, 1e6 * per,
                total > 0 ? 100 * r->seconds / total : 0, 1e3 * r->first);
    }
    if (has_stats) {
        fprintf(stderr, "device memory: %.1f MiB reserved from the driver in %llu allocations, %.1f MiB in use\n",
                reserved / 1048576.0, (unsigned long long)allocs, in_use / 1048576.0);
    }
    g_n_rows = 0;
}
