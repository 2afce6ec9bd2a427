/* Kernel-level profile (TTT_PROFILE=1 in the environment): every context
 * created then runs on a copy of its backend whose kernel entries synchronize
 * the device, time the call and add it to a table keyed by the entry (and the
 * elementwise op code); the table goes to stderr when the last profiled
 * context is freed. Synchronizing around each kernel removes overlap of host
 * and device work, so totals are "device time plus launch", an upper bound
 * per kernel; it answers "where does a step go", not "how fast is the step".
 * While a CUDA graph is recorded nothing is timed (recording must not sync).
 * Process-wide, like the backends themselves. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

enum { MAX_ROWS = 96 };

typedef struct {
    char name[64];
    long long calls;
    double seconds;
} prof_row;

static prof_row g_rows[MAX_ROWS];
static int g_n_rows;
static const ttt_backend *g_real;
static ttt_backend g_table;
static int g_recording, g_users;

static const char *const UNARY[TTT_U_COUNT] = {"neg", "exp", "log", "tanh", "sigmoid", "gelu", "silu", "relu", "sqrt",
                                               "rsqrt", "abs", "sign", "step", "pow", "clamp", "inrange", "affine",
                                               "elu1"};
static const char *const BINARY[TTT_B_COUNT] = {"add", "sub", "mul", "div", "max", "min", "gt", "ge", "eq"};
static const char *const DTYPE[4] = {"f32", "f64", "bf16", "i32"};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double begin(void) {
    if (g_recording) return 0;
    g_real->synchronize();
    return now();
}

static void end(double t0, const char *kind, const char *op, ttt_dtype dt) {
    if (g_recording) return;
    g_real->synchronize();
    const double dt_s = now() - t0;
    char name[64];
    snprintf(name, sizeof name, "%s%s%s %s", kind, op ? ":" : "", op ? op : "", (unsigned)dt < 4 ? DTYPE[dt] : "?");
    for (int i = 0; i < g_n_rows; i++)
        if (!strcmp(g_rows[i].name, name)) {
            g_rows[i].calls++;
            g_rows[i].seconds += dt_s;
            return;
        }
    if (g_n_rows == MAX_ROWS) return;
    snprintf(g_rows[g_n_rows].name, sizeof g_rows[g_n_rows].name, "%s", name);
    g_rows[g_n_rows].calls = 1;
    g_rows[g_n_rows++].seconds = dt_s;
}

#define TIMED(kind, op, dt, call)         \
    do {                                  \
        const double t0_ = begin();       \
        const int rc_ = (call);           \
        end(t0_, kind, op, dt);           \
        return rc_;                       \
    } while (0)

static int p_copy(ttt_tensor *d, const ttt_tensor *s) { TIMED("copy", s->dtype == d->dtype ? NULL : "convert", d->dtype, g_real->copy(d, s)); }
static int p_fill(ttt_tensor *d, double v) { TIMED("fill", NULL, d->dtype, g_real->fill(d, v)); }
static int p_unary(ttt_unary_op op, ttt_tensor *d, const ttt_tensor *s, double p0, double p1) {
    TIMED("unary", (unsigned)op < TTT_U_COUNT ? UNARY[op] : "?", d->dtype, g_real->unary(op, d, s, p0, p1));
}
static int p_binary(ttt_binary_op op, ttt_tensor *d, const ttt_tensor *a, const ttt_tensor *b) {
    TIMED("binary", (unsigned)op < TTT_B_COUNT ? BINARY[op] : "?", d->dtype, g_real->binary(op, d, a, b));
}
static int p_where(ttt_tensor *d, const ttt_tensor *c, const ttt_tensor *a, const ttt_tensor *b) {
    TIMED("where", NULL, d->dtype, g_real->where(d, c, a, b));
}
static int p_reduce(ttt_reduce_op op, ttt_tensor *d, const ttt_tensor *s) {
    TIMED("reduce", op == TTT_R_MAX ? "max" : "sum", s->dtype, g_real->reduce(op, d, s));
}
static int p_matmul(ttt_tensor *c, const ttt_tensor *a, const ttt_tensor *b, int ta, int tb) {
    /* by shape: [batch x] M x N x K and the transposes, since one slow shape hides among fast ones */
    char shape[48];
    const int nd = c->ndim;
    int64_t batch = 1;
    for (int i = 0; i < nd - 2; i++) batch *= c->shape[i];
    const int64_t k = ta ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    snprintf(shape, sizeof shape, "%lldx%lldx%lldx%lld %s%s", (long long)batch, (long long)c->shape[nd - 2],
             (long long)c->shape[nd - 1], (long long)k, ta ? "T" : "N", tb ? "T" : "N");
    TIMED("matmul", shape, c->dtype, g_real->matmul(c, a, b, ta, tb));
}
static int p_softmax(ttt_tensor *d, const ttt_tensor *s, int log) {
    TIMED("softmax", log ? "log" : NULL, s->dtype, g_real->softmax(d, s, log));
}
static int p_norm(ttt_norm_kind k, ttt_tensor *d, const ttt_tensor *s, double eps) {
    TIMED("norm", k == TTT_NORM_RMS ? "rms" : "layer", s->dtype, g_real->norm(k, d, s, eps));
}
static int p_norm_bwd(ttt_norm_kind k, ttt_tensor *dx, const ttt_tensor *x, const ttt_tensor *y, const ttt_tensor *dy,
                      double eps) {
    TIMED("norm_bwd", k == TTT_NORM_RMS ? "rms" : "layer", x->dtype, g_real->norm_bwd(k, dx, x, y, dy, eps));
}
static int p_cross_entropy(ttt_tensor *d, const ttt_tensor *l, const ttt_tensor *t, int ig) {
    TIMED("cross_entropy", NULL, l->dtype, g_real->cross_entropy(d, l, t, ig));
}
static int p_cross_entropy_bwd(ttt_tensor *d, const ttt_tensor *l, const ttt_tensor *t, const ttt_tensor *g, int ig) {
    TIMED("cross_entropy_bwd", NULL, l->dtype, g_real->cross_entropy_bwd(d, l, t, g, ig));
}
static int p_one_hot(ttt_tensor *d, const ttt_tensor *t, int ig) { TIMED("one_hot", NULL, d->dtype, g_real->one_hot(d, t, ig)); }
static int p_gather(ttt_tensor *d, const ttt_tensor *tb, const ttt_tensor *ids) {
    TIMED("gather_rows", NULL, tb->dtype, g_real->gather_rows(d, tb, ids));
}
static int p_scatter(ttt_tensor *d, const ttt_tensor *s, const ttt_tensor *ids) {
    TIMED("scatter_add_rows", NULL, s->dtype, g_real->scatter_add_rows(d, s, ids));
}
static int p_rope(ttt_tensor *d, const ttt_tensor *s, int ax, int64_t p0, double th, int inv) {
    TIMED("rope", NULL, s->dtype, g_real->rope(d, s, ax, p0, th, inv));
}
static int p_mask(ttt_tensor *d, const ttt_tensor *s, int64_t w, int64_t qo, double fill) {
    TIMED("attn_mask", NULL, s->dtype, g_real->attn_mask(d, s, w, qo, fill));
}
static int p_adamw(ttt_tensor *p, const ttt_tensor *g, ttt_tensor *m, ttt_tensor *v, double lr, double b1, double b2,
                   double eps, double wd, int64_t step) {
    TIMED("adamw", NULL, p->dtype, g_real->adamw(p, g, m, v, lr, b1, b2, eps, wd, step));
}
static int p_sgd(ttt_tensor *p, const ttt_tensor *g, ttt_tensor *b, double lr, double mom, double wd, int nest) {
    TIMED("sgd", NULL, p->dtype, g_real->sgd(p, g, b, lr, mom, wd, nest));
}
static int p_attention_fwd(ttt_tensor *o, ttt_tensor *lse, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                           int causal, int64_t w, double scale) {
    TIMED("attention_fwd", NULL, q->dtype, g_real->attention_fwd(o, lse, q, k, v, causal, w, scale));
}
static int p_attention_bwd(ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *delta, const ttt_tensor *dout,
                           const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *out,
                           const ttt_tensor *lse, int causal, int64_t w, double scale) {
    TIMED("attention_bwd", NULL, q->dtype,
          g_real->attention_bwd(dq, dk, dv, delta, dout, q, k, v, out, lse, causal, w, scale));
}
static int p_attention_bwd2(ttt_tensor *gq, ttt_tensor *gk, ttt_tensor *gv, ttt_tensor *gg, ttt_tensor *rows,
                            const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *g,
                            const ttt_tensor *lse, const ttt_tensor *delta, const ttt_tensor *uq, const ttt_tensor *uk,
                            const ttt_tensor *uv, int causal, int64_t w, double scale) {
    TIMED("attention_bwd2", NULL, q->dtype,
          g_real->attention_bwd2(gq, gk, gv, gg, rows, q, k, v, g, lse, delta, uq, uk, uv, causal, w, scale));
}
static int p_graph_begin(void) {
    const int rc = g_real->graph_begin();
    g_recording = rc == TTT_OK;
    return rc;
}
static int p_graph_end(void **g) {
    g_recording = 0;
    return g_real->graph_end(g);
}
static int p_graph_replay(void *g) {
    const double t0 = begin();
    const int rc = g_real->graph_replay(g);
    end(t0, "graph_replay", NULL, TTT_F32);
    return rc;
}

int ttt__profile_enabled(void) {
    const char *e = getenv("TTT_PROFILE");
    return e && *e && strcmp(e, "0");
}

const ttt_backend *ttt__profile_wrap(const ttt_backend *real) {
    if (g_real && g_real != real) return real; /* one profiled backend per process */
    if (!g_real) {
        g_real = real;
        g_table = *real;
        g_table.copy = p_copy, g_table.fill = p_fill, g_table.unary = p_unary, g_table.binary = p_binary;
        g_table.where = p_where, g_table.reduce = p_reduce, g_table.matmul = p_matmul, g_table.softmax = p_softmax;
        g_table.norm = p_norm, g_table.cross_entropy = p_cross_entropy, g_table.one_hot = p_one_hot;
        g_table.gather_rows = p_gather, g_table.scatter_add_rows = p_scatter, g_table.rope = p_rope;
        if (real->cross_entropy_bwd) g_table.cross_entropy_bwd = p_cross_entropy_bwd;
        if (real->norm_bwd) g_table.norm_bwd = p_norm_bwd;
        g_table.attn_mask = p_mask, g_table.adamw = p_adamw, g_table.sgd = p_sgd;
        if (real->attention_fwd) g_table.attention_fwd = p_attention_fwd;
        if (real->attention_bwd) g_table.attention_bwd = p_attention_bwd;
        if (real->attention_bwd2) g_table.attention_bwd2 = p_attention_bwd2;
        if (real->graph_begin) {
            g_table.graph_begin = p_graph_begin, g_table.graph_end = p_graph_end;
            g_table.graph_replay = p_graph_replay;
        }
    }
    g_users++;
    return &g_table;
}

static int by_time(const void *a, const void *b) {
    const double x = ((const prof_row *)a)->seconds, y = ((const prof_row *)b)->seconds;
    return (x < y) - (x > y);
}

void ttt__profile_release(void) {
    if (!g_users || --g_users) return;
    double total = 0;
    for (int i = 0; i < g_n_rows; i++) total += g_rows[i].seconds;
    qsort(g_rows, (size_t)g_n_rows, sizeof g_rows[0], by_time);
    fprintf(stderr, "\n== TTT_PROFILE: kernel entries on %s, synchronized each (%.3f s in all) ==\n%-44s %10s %12s %10s %7s\n",
            g_real->name, total, "entry dtype", "calls", "total ms", "us/call", "share");
    for (int i = 0; i < g_n_rows; i++)
        fprintf(stderr, "%-44s %10lld %12.2f %10.1f %6.1f%%\n", g_rows[i].name, g_rows[i].calls, 1e3 * g_rows[i].seconds,
                1e6 * g_rows[i].seconds / (double)g_rows[i].calls, total > 0 ? 100 * g_rows[i].seconds / total : 0);
    if (g_real->memory_stats) {
        size_t reserved = 0, in_use = 0;
        uint64_t allocs = 0;
        g_real->memory_stats(&reserved, &in_use, &allocs);
        fprintf(stderr, "device memory: %.1f MiB reserved from the driver in %llu allocations, %.1f MiB in use\n",
                reserved / 1048576.0, (unsigned long long)allocs, in_use / 1048576.0);
    }
    g_n_rows = 0;
    g_real = NULL;
}
