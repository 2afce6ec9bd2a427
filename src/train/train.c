/* The training runner (include/ttt/train.h; layout in docs/checkpoint.md).
 * Public headers only: the runner is a client of the engine like any program. */
#include "ttt/train.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ttt/autodiff.h"
#include "ttt/checkpoint.h"
#include "ttt/fileio.h"
#include "ttt/graph.h"
#include "ttt/ops.h"
#include "ttt/runtime.h"

/* Graphable micro-batches run eagerly before recording: the first grows the
 * step arena, the next reset merges its blocks, so the recording allocates
 * nothing (include/ttt/graph.h). */
enum { GRAPH_AFTER = 2 };
enum { PH_BATCH, PH_STEP, PH_READ, PH_CLIP, PH_OPTIM };
const char *const ttt_train_phase_names[5] = {"data", "forward+backward", "readback", "clip", "optimizer"};

struct ttt_trainer {
    ttt_ctx *ctx;
    ttt_train_model m;
    ttt_train_config c;
    char *ckpt, *metrics;
    ttt_optimizer *opt;
    ttt_checkpoint_names names;
    int64_t step, first, end;
    /* the log window: saved in checkpoints, so a resumed run writes the same lines */
    double win_loss, win_aux[TTT_TRAIN_MAX_AUX];
    int64_t win_steps;
    /* where ttt_item_into writes the loss and aux (must outlive the graph) */
    double slot_loss, slot_aux[TTT_TRAIN_MAX_AUX];
    ttt_graph *graph;
    int graph_mode; /* -1 auto, 0 off, 1 required */
    int64_t eager_graphable;
    double lr, gnorm;
    /* timing of this process */
    double t0, t_last, t_progress, phase[5];
    int64_t items_window, items_total, phase_steps, replays;
    uint64_t allocs_after_first;
    /* data-parallel (include/ttt/dist.h): R ranks, this one's rank; zero holds the optimizer */
    int R, rank, dist_stop;
    ttt_dist_zero *zero;
};

static volatile sig_atomic_t g_stop;
void ttt_train_request_stop(void) { g_stop = 1; }
int ttt_train_stop_requested(void) { return g_stop != 0; }
void ttt_train_clear_stop(void) { g_stop = 0; }

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

int ttt_train_install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* a second signal ends the process as usual */
    return sigaction(SIGINT, &sa, NULL) == 0 && sigaction(SIGTERM, &sa, NULL) == 0 ? TTT_OK : TTT_ERR;
}

static int set_err(char *err, size_t n, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return TTT_ERR;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t mix64(uint64_t z) { /* splitmix64 finaliser */
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- small helpers ------------------------------------------------------------------------- */

void ttt_json_number(char *buf, size_t len, double v) {
    if (isfinite(v)) snprintf(buf, len, "%.9g", v);
    else snprintf(buf, len, "null");
}

void ttt_format_double(char *buf, size_t len, double v) {
    snprintf(buf, len, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, len, "%.17g", v);
}

int ttt_kv_get(const char *s, const char *key, char *buf, size_t len) {
    if (!s || !key || !buf || !len) return 0;
    size_t kl = strlen(key);
    for (const char *p = s; p && *p;) {
        while (*p == ' ') p++;
        const char *end = strchr(p, ' ');
        size_t l = end ? (size_t)(end - p) : strlen(p);
        if (l > kl && !strncmp(p, key, kl) && p[kl] == '=') {
            size_t vl = l - kl - 1 < len - 1 ? l - kl - 1 : len - 1;
            memcpy(buf, p + kl + 1, vl);
            buf[vl] = 0;
            return 1;
        }
        p = end;
    }
    return 0;
}

int ttt_metadata_int(const char *json, const char *key, int64_t *out) {
    char buf[64], *end;
    if (!json || !key || !out || ttt_metadata_get(json, key, buf, sizeof buf) != TTT_OK) return TTT_ERR;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || end == buf || v < 0) return TTT_ERR;
    *out = v;
    return TTT_OK;
}

/* mkdir -p; *made set to 1 if the last component was created here. 0 / -1 with errno. */
static int mkdir_p(const char *path, int *made) {
    char buf[4096];
    *made = 0;
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return errno = ENAMETOOLONG, -1;
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    if (mkdir(buf, 0777) == 0) return *made = 1, 0;
    return errno == EEXIST ? 0 : -1;
}

/* ---- checkpoint layout ----------------------------------------------------------------------- */

void ttt_checkpoint_names_free(ttt_checkpoint_names *l) {
    if (!l) return;
    for (int i = 0; i < l->n_owned; i++) free(l->owned[i]);
    free(l->owned);
    free(l->t);
    *l = (ttt_checkpoint_names){0};
}

int ttt_checkpoint_names_build(int n, ttt_tensor *const *params, const char *const *names, const ttt_optimizer *opt,
                               ttt_checkpoint_names *l, char *err, size_t err_len) {
    if (!l) return set_err(err, err_len, "ttt_checkpoint_names_build: no output");
    *l = (ttt_checkpoint_names){0};
    if (n <= 0 || !params || !names) return set_err(err, err_len, "ttt_checkpoint_names_build: no parameters");
    for (int i = 0; i < n; i++)
        if (!params[i] || !names[i] || !*names[i])
            return set_err(err, err_len, "ttt_checkpoint_names_build: parameter %d has no %s", i,
                           params[i] ? "name" : "tensor");
    int ns = 0;
    ttt_tensor *const *state = opt ? ttt_optimizer_state(opt, &ns) : NULL;
    /* AdamW: m and v per parameter; SGD: momentum per parameter, or none */
    if (opt && ns != 0 && ns != n && ns != 2 * n)
        return set_err(err, err_len, "ttt_checkpoint_names_build: the optimizer holds %d state tensors for %d parameters",
                       ns, n);
    l->t = calloc((size_t)(n + ns), sizeof *l->t);
    l->owned = calloc((size_t)ns + 1, sizeof *l->owned);
    if (!l->t || !l->owned) {
        ttt_checkpoint_names_free(l);
        return set_err(err, err_len, "out of host memory");
    }
    for (int i = 0; i < n; i++) l->t[l->n++] = (ttt_named_tensor){names[i], params[i]};
    for (int i = 0; i < ns; i++) {
        const char *kind = ns == n ? "momentum" : i < n ? "m" : "v";
        const char *p = names[i % n];
        size_t len = strlen(p) + 24;
        if (!(l->owned[l->n_owned] = malloc(len))) {
            ttt_checkpoint_names_free(l);
            return set_err(err, err_len, "out of host memory");
        }
        snprintf(l->owned[l->n_owned], len, "optim.%s.%s", kind, p);
        l->t[l->n++] = (ttt_named_tensor){l->owned[l->n_owned++], state[i]};
    }
    return TTT_OK;
}

char *ttt_checkpoint_metadata(ttt_ctx *ctx, const char *path) {
    char *json = NULL;
    ttt_named_tensor none = {0};
    if (ttt_load_safetensors(ctx, path, 0, &none, &json) != TTT_OK) {
        free(json);
        return NULL;
    }
    return json ? json : strdup("{}");
}

int ttt_checkpoint_load_params(ttt_ctx *ctx, const char *path, int n, ttt_tensor *const *params,
                               const char *const *names, char **metadata_json, char *err, size_t err_len) {
    if (metadata_json) *metadata_json = NULL;
    if (!ctx) return set_err(err, err_len, "ttt_checkpoint_load_params: no context");
    ttt_checkpoint_names l;
    if (ttt_checkpoint_names_build(n, params, names, NULL, &l, err, err_len) != TTT_OK) return TTT_ERR;
    int rc = ttt_load_safetensors(ctx, path, l.n, l.t, metadata_json);
    ttt_checkpoint_names_free(&l);
    return rc == TTT_OK ? TTT_OK : set_err(err, err_len, "%s", ttt_error(ctx));
}

/* ---- metrics ---------------------------------------------------------------------------------- */

/* The "step" of a JSON metrics line; -1 if it has none. */
static int64_t line_step(const char *line, const char *end) {
    const char *k = line;
    while ((k = strstr(k, "\"step\":")) && k < end) {
        char *e;
        long long v = strtoll(k + 7, &e, 10);
        if (e != k + 7) return v;
        k += 7;
    }
    return -1;
}

/* Keeps the complete lines of steps <= step (a run killed after logging past
 * its last checkpoint, or in the middle of a line), in one atomic rewrite. */
static int metrics_truncate(const char *path, int64_t step, char *err, size_t err_len) {
    char *data = NULL;
    size_t len = 0;
    if (access(path, F_OK) != 0)
        return ttt_write_file_atomic(path, "", 0, err, err_len); /* lost: start it again */
    if (ttt_read_file(path, &data, &len, err, err_len) != TTT_OK) return TTT_ERR;
    size_t w = 0;
    for (size_t i = 0; i < len;) {
        char *nl = memchr(data + i, '\n', len - i);
        if (!nl) break; /* a torn last line */
        const size_t l = (size_t)(nl - (data + i)) + 1;
        const int64_t s = line_step(data + i, nl);
        if (s <= step) memmove(data + w, data + i, l), w += l;
        i += l;
    }
    int rc = ttt_write_file_atomic(path, data, w, err, err_len);
    free(data);
    return rc;
}

static int metrics_append(const char *path, const char *line, char *err, size_t err_len) {
    FILE *f = fopen(path, "a");
    if (!f) return set_err(err, err_len, "cannot append to %s: %s", path, strerror(errno));
    int ok = fputs(line, f) >= 0 && fputc('\n', f) != EOF && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int e = errno;
    ok = fclose(f) == 0 && ok;
    return ok ? TTT_OK : set_err(err, err_len, "cannot append to %s: %s", path, strerror(e));
}

/* ---- open / close ------------------------------------------------------------------------------ */

static const char *meta_value(const ttt_train_config *c, const char *key) {
    for (const char *const *p = c->meta; p && p[0] && p[1]; p += 2)
        if (!strcmp(p[0], key)) return p[1];
    return NULL;
}

/* Appends to err, a line per key=value that differs between the stored and the current settings. */
static void explain_mismatch(const char *stored, const char *now, char *err, size_t err_len) {
    size_t used = strlen(err);
    for (int pass = 0; pass < 2; pass++) {
        const char *s = pass ? stored : now;
        for (const char *p = s; *p;) {
            const char *eq = strchr(p, '='), *end = strchr(p, ' ');
            if (!end) end = p + strlen(p);
            char key[64], a[256], b[256];
            if (eq && eq < end && (size_t)(eq - p) < sizeof key) {
                snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
                const int ha = ttt_kv_get(stored, key, a, sizeof a), hb = ttt_kv_get(now, key, b, sizeof b);
                if (((!pass && (!ha || strcmp(a, b))) || (pass && !hb)) && used < err_len)
                    used += (size_t)snprintf(err + used, err_len - used, "\n  %-13s checkpoint %s, now %s", key,
                                             ha ? a : "(none)", hb ? b : "(none)");
            }
            p = *end ? end + 1 : end;
        }
    }
}

static int check_settings(ttt_trainer *t, const char *json, char *err, size_t err_len) {
    char stored[4096];
    int differ = 0;
    snprintf(err, err_len, "the settings differ from those of the run in %s:", t->ckpt);
    for (const char *const *k = t->c.match; k && *k; k++) {
        const char *now = meta_value(&t->c, *k);
        const int has = ttt_metadata_get(json, *k, stored, sizeof stored) == TTT_OK;
        if (has && now && !strcmp(stored, now)) continue;
        differ = 1;
        if (has && now && strchr(now, '=')) explain_mismatch(stored, now, err, err_len);
        else {
            size_t u = strlen(err);
            snprintf(err + u, err_len - u, "\n  %-13s checkpoint %s, now %s", *k, has ? stored : "(none)",
                     now ? now : "(none)");
        }
    }
    if (!differ) return TTT_OK;
    size_t u = strlen(err);
    snprintf(err + u, err_len - u, "\n  repeat the run's settings to resume it");
    return TTT_TRAIN_MISMATCH;
}

/* Data-parallel: an optimizer over every parameter (the state a one-process run
 * keeps), and the checkpoint names with it, for loading and writing files. */
static int full_names(ttt_trainer *t, ttt_optimizer **full, ttt_checkpoint_names *names, char *err, size_t err_len) {
    ttt_optim_config oc = t->c.optim;
    oc.lr = t->c.lr;
    *full = t->c.optimizer ? ttt_sgd_new(t->ctx, t->m.n_params, t->m.params, t->m.decay, &oc)
                           : ttt_adamw_new(t->ctx, t->m.n_params, t->m.params, t->m.decay, &oc);
    if (!*full) return set_err(err, err_len, "the optimizer state of a checkpoint: %s", ttt_error(t->ctx));
    if (ttt_checkpoint_names_build(t->m.n_params, t->m.params, t->m.param_names, *full, names, err, err_len) != TTT_OK) {
        ttt_optimizer_free(*full);
        *full = NULL;
        return TTT_ERR;
    }
    return TTT_OK;
}

/* Data-parallel: whether every rank got rc == TTT_OK; a rank that did not is
 * named to the others. Returns rc on the failing rank, TTT_ERR elsewhere. */
static int agree(ttt_trainer *t, int rc, const char *what, char *err, size_t err_len) {
    if (t->R == 1) return rc;
    int who = -1;
    char e2[256];
    const int any = ttt_dist_any(t->c.dist, rc != TTT_OK, &who, what, e2, sizeof e2);
    if (any < 0) return rc != TTT_OK ? rc : set_err(err, err_len, "%s", e2);
    if (!any || rc != TTT_OK) return rc;
    return set_err(err, err_len, "rank %d: %s failed on rank %d (its message says why)", t->rank, what, who);
}

static int resume(ttt_trainer *t, char *err, size_t err_len) {
    if (access(t->ckpt, F_OK) != 0) return set_err(err, err_len, "cannot resume: %s: %s", t->ckpt, strerror(errno));
    char *json = ttt_checkpoint_metadata(t->ctx, t->ckpt);
    if (!json) return set_err(err, err_len, "%s", ttt_error(t->ctx));
    char win[512], v[64], state[8192];
    int rc = check_settings(t, json, err, err_len);
    if (rc != TTT_OK) goto out;
    rc = TTT_ERR;
    if (ttt_metadata_int(json, "step", &t->step) != TTT_OK ||
        ttt_metadata_get(json, "log_window", win, sizeof win) != TTT_OK) {
        set_err(err, err_len, "%s lacks step / log_window metadata: not a checkpoint of this runner", t->ckpt);
        goto out;
    }
    char *end = NULL;
    if (ttt_kv_get(win, "loss_sum", v, sizeof v)) t->win_loss = strtod(v, &end);
    int bad = !end || *end || !ttt_kv_get(win, "steps", v, sizeof v) || (t->win_steps = atoll(v)) < 0;
    for (int i = 0; i < t->m.n_aux && !bad; i++) {
        char key[96];
        snprintf(key, sizeof key, "aux.%s", t->m.aux_names[i]);
        bad = !ttt_kv_get(win, key, v, sizeof v) || (t->win_aux[i] = strtod(v, &end), *end);
    }
    if (bad) {
        set_err(err, err_len, "%s: bad log_window metadata '%s'", t->ckpt, win);
        goto out;
    }
    if (t->step > t->c.steps) {
        set_err(err, err_len, "%s is at step %lld, past the run's %lld steps", t->ckpt, (long long)t->step,
                (long long)t->c.steps);
        goto out;
    }
    if (t->m.state_load) {
        const int has = ttt_metadata_get(json, "model_state", state, sizeof state) == TTT_OK;
        if (t->m.state_load(t->m.user, t->step, has ? state : NULL, err, err_len) != TTT_OK) goto out;
    }
    if (t->zero) { /* every rank reads the whole file, then keeps its slice of the optimizer state */
        ttt_optimizer *full = NULL;
        ttt_checkpoint_names names = {0};
        int ok = full_names(t, &full, &names, err, err_len) == TTT_OK;
        if (ok && ttt_load_safetensors(t->ctx, t->ckpt, names.n, names.t, NULL) != TTT_OK)
            ok = 0, set_err(err, err_len, "%s", ttt_error(t->ctx));
        if (ok) ok = ttt_dist_zero_load_state(t->zero, full, t->step, err, err_len) == TTT_OK;
        ttt_checkpoint_names_free(&names);
        ttt_optimizer_free(full);
        if (!ok) goto out;
    } else if (ttt_load_safetensors(t->ctx, t->ckpt, t->names.n, t->names.t, NULL) != TTT_OK ||
               ttt_optimizer_set_steps(t->opt, t->step) != TTT_OK) {
        set_err(err, err_len, "%s", ttt_error(t->ctx));
        goto out;
    }
    if (t->rank == 0 && metrics_truncate(t->metrics, t->step, err, err_len) != TTT_OK) goto out;
    rc = TTT_OK;
out:
    free(json);
    return rc;
}

static int start_fresh(ttt_trainer *t, char *err, size_t err_len) {
    if (t->rank != 0) return TTT_OK; /* rank 0 alone writes files */
    if (access(t->ckpt, F_OK) == 0) {
        set_err(err, err_len, "%s exists (a run is there): resume it, or choose another directory", t->ckpt);
        return TTT_TRAIN_EXISTS;
    }
    int made = 0;
    if (mkdir_p(t->c.dir, &made) != 0) return set_err(err, err_len, "cannot create %s: %s", t->c.dir, strerror(errno));
    if (ttt_write_file_atomic(t->metrics, "", 0, err, err_len) != TTT_OK) {
        if (made) rmdir(t->c.dir); /* leave no empty folder behind */
        return TTT_ERR;
    }
    return TTT_OK;
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int ttt_train_open(ttt_ctx *ctx, const ttt_train_model *m, const ttt_train_config *c, ttt_trainer **out, char *err,
                   size_t err_len) {
    if (err && err_len) err[0] = 0;
    if (!out) return set_err(err, err_len, "ttt_train_open: no output");
    *out = NULL;
    if (!ctx || !m || !c) return set_err(err, err_len, "ttt_train_open: no %s", !ctx ? "context" : !m ? "model" : "config");
    if (!m->batch || !m->loss) return set_err(err, err_len, "ttt_train_open: the model has no %s callback", m->batch ? "loss" : "batch");
    if (m->n_aux < 0 || m->n_aux > TTT_TRAIN_MAX_AUX)
        return set_err(err, err_len, "ttt_train_open: n_aux %d is not in [0, %d]", m->n_aux, TTT_TRAIN_MAX_AUX);
    for (int i = 0; i < m->n_aux; i++)
        if (!m->aux_names[i] || !*m->aux_names[i]) return set_err(err, err_len, "ttt_train_open: aux %d has no name", i);
    if (!c->dir || !*c->dir) return set_err(err, err_len, "ttt_train_open: no directory");
    if (c->steps < 1 || c->accum < 1 || c->warmup < 0 || c->warmup > c->steps || c->stop_at < 0 ||
        c->stop_at > c->steps || c->save_every < 0 || c->log_every < 0 || !(c->clip >= 0) || !(c->lr >= 0) ||
        !(c->min_lr >= 0) || (c->optimizer != 0 && c->optimizer != 1) || c->cuda_graph < -1 || c->cuda_graph > 1)
        return set_err(err, err_len,
                       "ttt_train_open: bad settings (steps %lld >= 1, accum %d >= 1, 0 <= warmup %lld <= steps, "
                       "0 <= stop_at <= steps, clip, lr >= 0, optimizer 0 or 1, cuda_graph -1..1)",
                       (long long)c->steps, c->accum, (long long)c->warmup);
    const int R = ttt_dist_size(c->dist);
    if (!c->dist && ttt_dist_launched_many())
        return set_err(err, err_len, "a launcher started several processes, but this program trains %s in one "
                                     "process (it has no data-parallel mode)", m->name ? m->name : "its model");
    if (R > 1 && !m->dist_ok)
        return set_err(err, err_len, "data-parallel training (%d ranks): the model '%s' cannot split its batches "
                                     "between ranks", R, m->name ? m->name : "?");
    if (R > 1 && c->accum % R)
        return set_err(err, err_len, "data-parallel training: %d micro-batches per step do not split into %d ranks",
                       c->accum, R);
    const int can_graph = m->graph_ok && ttt_graph_supported(ctx);
    if (c->cuda_graph == 1 && !can_graph)
        return set_err(err, err_len, "CUDA graphs were asked for, but %s", !m->graph_ok ? "this model's step cannot be replayed"
                                                                                         : "the device has none (CUDA only)");
    ttt_trainer *t = calloc(1, sizeof *t);
    if (!t) return set_err(err, err_len, "out of host memory");
    t->ctx = ctx, t->m = *m, t->c = *c;
    t->graph_mode = can_graph ? c->cuda_graph : 0;
    t->R = R, t->rank = ttt_dist_rank(c->dist);
    t->end = c->stop_at ? c->stop_at : c->steps;
    t->ckpt = path_join(c->dir, c->checkpoint_name ? c->checkpoint_name : "checkpoint.safetensors");
    t->metrics = path_join(c->dir, c->metrics_name ? c->metrics_name : "metrics.jsonl");
    int rc = TTT_ERR;
    if (!t->ckpt || !t->metrics) {
        set_err(err, err_len, "out of host memory");
        goto fail;
    }
    ttt_optim_config oc = c->optim;
    oc.lr = c->lr;
    if (R > 1) { /* ZeRO-1: this rank's slice of the optimizer; the parameters made equal to rank 0's */
        if (ttt_dist_zero_new(c->dist, ctx, m->n_params, m->params, m->decay, c->optimizer, &oc, &t->zero, err,
                              err_len) != TTT_OK)
            goto fail;
    } else {
        t->opt = c->optimizer ? ttt_sgd_new(ctx, m->n_params, m->params, m->decay, &oc)
                              : ttt_adamw_new(ctx, m->n_params, m->params, m->decay, &oc);
        if (!t->opt) {
            set_err(err, err_len, "%s", ttt_error(ctx));
            goto fail;
        }
        if (ttt_checkpoint_names_build(m->n_params, m->params, m->param_names, t->opt, &t->names, err, err_len) != TTT_OK)
            goto fail;
    }
    rc = c->resume ? resume(t, err, err_len) : start_fresh(t, err, err_len);
    rc = agree(t, rc, c->resume ? "resuming the run" : "starting the run", err, err_len);
    if (rc != TTT_OK) goto fail;
    t->first = t->step;
    *out = t;
    return TTT_OK;
fail:
    ttt_train_close(t);
    return rc;
}

void ttt_train_close(ttt_trainer *t) {
    if (!t) return;
    if (t->graph) ttt_graph_free(t->ctx, t->graph);
    ttt_checkpoint_names_free(&t->names);
    ttt_optimizer_free(t->opt);
    ttt_dist_zero_free(t->zero);
    free(t->ckpt), free(t->metrics);
    free(t);
}

int64_t ttt_train_step(const ttt_trainer *t) { return t ? t->step : -1; }
int64_t ttt_train_first_step(const ttt_trainer *t) { return t ? t->first : -1; }
ttt_optimizer *ttt_train_optimizer(const ttt_trainer *t) { return t ? t->opt : NULL; }
const char *ttt_train_checkpoint_path(const ttt_trainer *t) { return t ? t->ckpt : NULL; }
const char *ttt_train_metrics_path(const ttt_trainer *t) { return t ? t->metrics : NULL; }
int ttt_train_graph_active(const ttt_trainer *t) { return t && t->graph; }
uint64_t ttt_train_allocs_after_first(const ttt_trainer *t) { return t ? t->allocs_after_first : 0; }

/* ---- checkpoint ------------------------------------------------------------------------------ */

static int write_checkpoint(ttt_trainer *t, const ttt_checkpoint_names *names, char *err, size_t err_len);

int ttt_train_save(ttt_trainer *t, char *err, size_t err_len) {
    if (!t) return set_err(err, err_len, "ttt_train_save: no trainer");
    if (!t->zero) return write_checkpoint(t, &t->names, err, err_len);
    /* data-parallel: the optimizer state gathered to rank 0, which writes the one file */
    ttt_optimizer *full = NULL;
    ttt_checkpoint_names names = {0};
    int rc = t->rank == 0 ? full_names(t, &full, &names, err, err_len) : TTT_OK;
    rc = agree(t, rc, "preparing the checkpoint", err, err_len);
    if (rc == TTT_OK) rc = ttt_dist_zero_gather_state(t->zero, full, 0, err, err_len);
    if (rc == TTT_OK) { /* (a failed transfer ends the job: no more collectives then) */
        rc = t->rank == 0 ? write_checkpoint(t, &names, err, err_len) : TTT_OK;
        rc = agree(t, rc, "writing the checkpoint", err, err_len);
    }
    ttt_checkpoint_names_free(&names);
    ttt_optimizer_free(full);
    return rc;
}

static int write_checkpoint(ttt_trainer *t, const ttt_checkpoint_names *names, char *err, size_t err_len) {
    enum { MAX_META = 64 };
    const char *meta[2 * MAX_META + 1];
    int k = 0;
    for (const char *const *p = t->c.meta; p && p[0] && p[1] && k < 2 * (MAX_META - 6); p += 2) meta[k++] = p[0], meta[k++] = p[1];
    char step[32], win[1024], rng[64], opt[32], sum[40], *state = NULL;
    snprintf(step, sizeof step, "%lld", (long long)t->step);
    ttt_format_double(sum, sizeof sum, t->win_loss);
    int w = snprintf(win, sizeof win, "loss_sum=%s steps=%lld", sum, (long long)t->win_steps);
    for (int i = 0; i < t->m.n_aux && w < (int)sizeof win; i++) {
        ttt_format_double(sum, sizeof sum, t->win_aux[i]);
        w += snprintf(win + w, sizeof win - (size_t)w, " aux.%s=%s", t->m.aux_names[i], sum);
    }
    snprintf(rng, sizeof rng, "per-step seed=%llu", (unsigned long long)t->c.seed);
    snprintf(opt, sizeof opt, "%s", t->c.optimizer ? "sgd" : "adamw");
    meta[k++] = "step", meta[k++] = step, meta[k++] = "log_window", meta[k++] = win;
    meta[k++] = "rng", meta[k++] = rng, meta[k++] = "optimizer", meta[k++] = opt;
    if (t->m.state_save) {
        enum { STATE = 8192 };
        if (!(state = malloc(STATE))) return set_err(err, err_len, "out of host memory");
        if (t->m.state_save(t->m.user, t->step, state, STATE) != TTT_OK) {
            free(state);
            return set_err(err, err_len, "step %lld: the model could not describe its state", (long long)t->step);
        }
        meta[k++] = "model_state", meta[k++] = state;
    }
    meta[k] = NULL;
    int rc = ttt_save_safetensors(t->ctx, t->ckpt, names->n, names->t, meta);
    free(state);
    return rc == TTT_OK ? TTT_OK : set_err(err, err_len, "%s", ttt_error(t->ctx));
}

/* ---- the step -------------------------------------------------------------------------------- */

static void phase(ttt_trainer *t, int ph, double *tp) {
    const double n = now_s();
    t->phase[ph] += n - *tp;
    *tp = n;
}

/* Names the first parameter whose gradient holds a non-finite value. */
static void name_bad_gradient(ttt_trainer *t, char *err, size_t err_len) {
    for (int i = 0; i < t->m.n_params; i++) {
        const ttt_tensor *g = t->m.params[i]->grad;
        if (!g) continue;
        const int64_t n = ttt_numel(g);
        double *h = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
        if (!h || ttt_copy_to_host(t->ctx, g, h, TTT_F64) != TTT_OK) {
            free(h);
            continue;
        }
        for (int64_t j = 0; j < n; j++)
            if (!isfinite(h[j])) {
                set_err(err, err_len,
                        "step %lld: the gradient of parameter '%s' is not finite (%g at element %lld); stopped before "
                        "the update, the last checkpoint is untouched",
                        (long long)t->step + 1, t->m.param_names[i], h[j], (long long)j);
                free(h);
                return;
            }
        free(h);
    }
    set_err(err, err_len, "step %lld: the gradient norm is not finite; stopped before the update, the last checkpoint "
                          "is untouched", (long long)t->step + 1);
}

/* Records loss() + backward of the current micro-batch as a graph. */
static int record(ttt_trainer *t, ttt_train_info *info) {
    ttt_ctx *ctx = t->ctx;
    if (ttt_graph_begin(ctx) != TTT_OK) return TTT_ERR;
    info->recording = 1;
    ttt_tensor *aux[TTT_TRAIN_MAX_AUX] = {0};
    ttt_tensor *l = t->m.loss(ctx, t->m.user, info, aux);
    info->recording = 0;
    /* an op that fails leaves its message, which ttt_graph_end reports */
    if (l) {
        ttt_tensor *lb = info->n_micro > 1 ? ttt_scale(ctx, l, 1.0 / (double)info->n_micro) : l;
        if (lb && ttt_backward(ctx, lb) == TTT_OK && ttt_item_into(ctx, l, 1.0, &t->slot_loss) == TTT_OK)
            for (int i = 0; i < t->m.n_aux; i++)
                if (!aux[i] || ttt_item_into(ctx, aux[i], 1.0, &t->slot_aux[i]) != TTT_OK) break;
    }
    return ttt_graph_end(ctx, &t->graph);
}

static int micro_batch(ttt_trainer *t, ttt_train_info *info, double *tp, int64_t *items, char *err, size_t err_len) {
    ttt_ctx *ctx = t->ctx;
    int graphable = 0;
    ttt_step_reset(ctx);
    if (t->m.batch(ctx, t->m.user, info, items, &graphable, err, err_len) != TTT_OK) return TTT_ERR;
    phase(t, PH_BATCH, tp);
    info->replayed = 0;
    if (t->graph_mode && graphable && t->eager_graphable >= GRAPH_AFTER) {
        if (!t->graph && record(t, info) != TTT_OK) {
            if (t->graph_mode > 0)
                return set_err(err, err_len, "step %lld: recording the CUDA graph failed: %s", (long long)info->step + 1,
                               ttt_error(ctx));
            if (t->c.progress)
                fprintf(t->c.progress, "recording the CUDA graph failed, training without graphs: %s\n", ttt_error(ctx));
            ttt_clear_error(ctx);
            t->graph_mode = 0; /* auto: never again */
            ttt_step_reset(ctx);
            if (t->m.batch(ctx, t->m.user, info, items, &graphable, err, err_len) != TTT_OK) return TTT_ERR;
        } else {
            if (ttt_graph_replay(ctx, t->graph) != TTT_OK)
                return set_err(err, err_len, "step %lld: %s", (long long)info->step + 1, ttt_error(ctx));
            t->replays++;
            info->replayed = 1;
        }
    }
    if (!info->replayed) {
        ttt_tensor *aux[TTT_TRAIN_MAX_AUX] = {0};
        ttt_tensor *l = t->m.loss(ctx, t->m.user, info, aux);
        if (!l) return set_err(err, err_len, "step %lld: %s", (long long)info->step + 1, ttt_error(ctx));
        ttt_tensor *lb = info->n_micro > 1 ? ttt_scale(ctx, l, 1.0 / (double)info->n_micro) : l;
        /* backward is queued before the host reads the loss, so the device works while the host waits */
        if (!lb || ttt_backward(ctx, lb) != TTT_OK)
            return set_err(err, err_len, "step %lld: %s", (long long)info->step + 1, ttt_error(ctx));
        phase(t, PH_STEP, tp);
        if (ttt_item_into(ctx, l, 1.0, &t->slot_loss) != TTT_OK)
            return set_err(err, err_len, "step %lld: %s", (long long)info->step + 1, ttt_error(ctx));
        for (int i = 0; i < t->m.n_aux; i++)
            if (!aux[i] || ttt_item_into(ctx, aux[i], 1.0, &t->slot_aux[i]) != TTT_OK)
                return set_err(err, err_len, "step %lld: aux '%s': %s", (long long)info->step + 1, t->m.aux_names[i],
                               aux[i] ? ttt_error(ctx) : "the loss function returned none");
        if (graphable) t->eager_graphable++;
    } else {
        phase(t, PH_STEP, tp);
    }
    if (!isfinite(t->slot_loss))
        return set_err(err, err_len, "step %lld: the loss of micro-batch %d is not finite (%g); stopped before the "
                                     "update, the last checkpoint is untouched",
                       (long long)info->step + 1, info->micro, t->slot_loss);
    if (t->m.after_micro && t->m.after_micro(ctx, t->m.user, info, t->slot_loss, t->slot_aux) != TTT_OK)
        return set_err(err, err_len, "step %lld: %s", (long long)info->step + 1,
                       ttt_error(ctx)[0] ? ttt_error(ctx) : "the model's after_micro failed");
    phase(t, PH_READ, tp);
    return TTT_OK;
}

/* Data-parallel step: this rank's micro-batches, then every rank's losses (in
 * the order of the micro-batches, so the sums are a one-process run's), then
 * ZeRO: gradients summed over the ranks, clipped, this rank's slice updated,
 * parameters all-gathered. The exchange of losses also carries the stop
 * requests (all ranks stop after the same step) and names a rank that died or
 * hangs in its forward or backward pass. */
static int dist_step(ttt_trainer *t, ttt_train_info *info, double *tp, double *loss, double *aux, char *err,
                     size_t err_len) {
    ttt_ctx *ctx = t->ctx;
    const ttt_train_config *c = &t->c;
    const int A = c->accum / t->R, na = t->m.n_aux, per = A * (1 + na) + 2;
    double *mine = malloc(sizeof(double) * (size_t)per * (size_t)(t->R + 1)), *all = mine + per;
    if (!mine) return set_err(err, err_len, "out of host memory");
    int64_t items_local = 0;
    for (int a = 0; a < A; a++) {
        info->micro = t->rank * A + a;
        int64_t items = 0;
        if (micro_batch(t, info, tp, &items, err, err_len) != TTT_OK) {
            free(mine);
            return TTT_ERR;
        }
        mine[a] = t->slot_loss;
        for (int i = 0; i < na; i++) mine[A + a * na + i] = t->slot_aux[i];
        items_local += items;
    }
    ttt_step_reset(ctx);
    mine[per - 2] = (double)items_local;
    mine[per - 1] = ttt_train_stop_requested() ? 1 : 0;
    char what[64];
    snprintf(what, sizeof what, "step %lld: exchanging the losses", (long long)t->step + 1);
    if (ttt_dist_allgather_f64(c->dist, mine, all, per, what, err, err_len) != TTT_OK) {
        free(mine);
        return TTT_ERR;
    }
    double sum = 0, asum[TTT_TRAIN_MAX_AUX] = {0};
    t->dist_stop = 0;
    for (int r = 0; r < t->R; r++) {
        const double *v = all + (size_t)r * (size_t)per;
        for (int a = 0; a < A; a++) {
            sum += v[a];
            for (int i = 0; i < na; i++) asum[i] += v[A + a * na + i];
        }
        t->items_window += (int64_t)v[per - 2], t->items_total += (int64_t)v[per - 2];
        t->dist_stop |= v[per - 1] != 0;
    }
    free(mine);
    phase(t, PH_READ, tp);
    int updated = 0;
    if (ttt_dist_zero_step(t->zero, t->lr, c->clip, &t->gnorm, &updated, t->step, err, err_len) != TTT_OK) return TTT_ERR;
    phase(t, PH_OPTIM, tp);
    if (!updated) {
        name_bad_gradient(t, err, err_len); /* this rank's own gradients; the sum over the ranks is not finite */
        return TTT_ERR;
    }
    t->phase_steps++;
    *loss = sum / (double)c->accum;
    for (int i = 0; i < na; i++) aux[i] = asum[i] / (double)c->accum;
    return TTT_OK;
}

static int one_step(ttt_trainer *t, double *loss, double *aux, char *err, size_t err_len) {
    ttt_ctx *ctx = t->ctx;
    const ttt_train_config *c = &t->c;
    ttt_train_info info = {.step = t->step, .total_steps = c->steps, .n_micro = c->accum};
    info.lr = t->lr = ttt_lr_warmup_cosine(t->step, c->warmup, c->steps, c->lr, c->min_lr);
    double tp = now_s();
    /* the RNG is a function of (seed, step): nothing to store, and a resumed step draws the same numbers */
    ttt_manual_seed(ctx, mix64(c->seed ^ mix64((uint64_t)t->step)));
    if (ttt_zero_grad(ctx, t->m.n_params, t->m.params) != TTT_OK)
        return set_err(err, err_len, "step %lld: %s", (long long)t->step + 1, ttt_error(ctx));
    double sum = 0, asum[TTT_TRAIN_MAX_AUX] = {0};
    if (t->zero) return dist_step(t, &info, &tp, loss, aux, err, err_len);
    for (int a = 0; a < c->accum; a++) {
        info.micro = a;
        int64_t items = 0;
        if (micro_batch(t, &info, &tp, &items, err, err_len) != TTT_OK) return TTT_ERR;
        sum += t->slot_loss;
        for (int i = 0; i < t->m.n_aux; i++) asum[i] += t->slot_aux[i];
        t->items_window += items, t->items_total += items;
    }
    ttt_step_reset(ctx);
    if (ttt_clip_grad_norm(ctx, t->m.n_params, t->m.params, c->clip > 0 ? c->clip : INFINITY, &t->gnorm) != TTT_OK)
        return set_err(err, err_len, "step %lld: %s", (long long)t->step + 1, ttt_error(ctx));
    phase(t, PH_CLIP, &tp);
    if (!isfinite(t->gnorm)) {
        name_bad_gradient(t, err, err_len);
        return TTT_ERR;
    }
    if (ttt_optimizer_step(t->opt, t->lr) != TTT_OK)
        return set_err(err, err_len, "step %lld: %s", (long long)t->step + 1, ttt_error(ctx));
    phase(t, PH_OPTIM, &tp);
    t->phase_steps++;
    *loss = sum / (double)c->accum;
    for (int i = 0; i < t->m.n_aux; i++) aux[i] = asum[i] / (double)c->accum;
    return TTT_OK;
}

static void fill_stats(const ttt_trainer *t, ttt_train_stats *st, double now) {
    memset(st, 0, sizeof *st);
    st->step = t->step, st->total_steps = t->c.steps, st->end_step = t->end, st->first_step = t->first;
    st->window_steps = t->win_steps;
    st->loss = t->win_steps ? t->win_loss / (double)t->win_steps : NAN;
    for (int i = 0; i < t->m.n_aux; i++) st->aux[i] = t->win_steps ? t->win_aux[i] / (double)t->win_steps : NAN;
    st->lr = t->lr, st->grad_norm = t->gnorm;
    st->items_per_s = now > t->t_last ? (double)t->items_window / (now - t->t_last) : 0;
    st->items_seen = t->items_total;
    st->elapsed_s = now - t->t0;
    const int64_t done = t->step - t->first;
    st->eta_s = done > 0 ? st->elapsed_s / (double)done * (double)(t->c.steps - t->step) : 0;
    memcpy(st->phase_s, t->phase, sizeof t->phase);
    st->phase_steps = t->phase_steps, st->replays = t->replays;
}

static int default_log_line(const ttt_trainer *t, const ttt_train_stats *st, char *buf, size_t n) {
    char v[40];
    size_t u = 0;
#define ADD(...) (u += (size_t)snprintf(buf + u, u < n ? n - u : 0, __VA_ARGS__))
    ADD("{\"step\": %lld, \"loss\": ", (long long)st->step);
    ttt_json_number(v, sizeof v, st->loss), ADD("%s", v);
    for (int i = 0; i < t->m.n_aux; i++) ttt_json_number(v, sizeof v, st->aux[i]), ADD(", \"%s\": %s", t->m.aux_names[i], v);
    ttt_json_number(v, sizeof v, st->lr), ADD(", \"lr\": %s", v);
    ttt_json_number(v, sizeof v, st->grad_norm), ADD(", \"grad_norm\": %s", v);
    ttt_json_number(v, sizeof v, st->items_per_s), ADD(", \"items_per_s\": %s", v);
    ttt_json_number(v, sizeof v, st->elapsed_s), ADD(", \"elapsed_s\": %s}", v);
#undef ADD
    return u < n ? TTT_OK : TTT_ERR;
}

static void default_progress(const ttt_trainer *t, const ttt_train_stats *st, FILE *f) {
    fprintf(f, "step %lld/%lld  loss %.4f", (long long)st->step, (long long)st->total_steps, st->loss);
    for (int i = 0; i < t->m.n_aux; i++) fprintf(f, "  %s %.4f", t->m.aux_names[i], st->aux[i]);
    fprintf(f, "  lr %.3e  |g| %.3f  %.0f %s/s  ETA %dm%02ds\n", st->lr, st->grad_norm, st->items_per_s,
            t->c.item_unit ? t->c.item_unit : "items", (int)(st->eta_s / 60), (int)fmod(st->eta_s, 60));
    fflush(f);
}

int ttt_train_run(ttt_trainer *t, char *err, size_t err_len) {
    if (err && err_len) err[0] = 0;
    if (!t) return set_err(err, err_len, "ttt_train_run: no trainer");
    const ttt_train_config *c = &t->c;
    const double every = c->progress_every_s > 0 ? c->progress_every_s : 10.0;
    t->t0 = t->t_last = t->t_progress = now_s();
    enum { LINE = 16384 };
    char *line = malloc(LINE);
    if (!line) return set_err(err, err_len, "out of host memory");
    int rc = TTT_OK;
    while (t->step < t->end) {
        double loss = NAN, aux[TTT_TRAIN_MAX_AUX] = {0};
        if ((rc = one_step(t, &loss, aux, err, err_len)) != TTT_OK) break;
        t->step++;
        if (t->step == t->first + 1) {
            ttt_memory_stats ms;
            if (ttt_ctx_memory_stats(t->ctx, &ms) == TTT_OK) t->allocs_after_first = ms.driver_allocs;
        }
        t->win_loss += loss, t->win_steps++;
        for (int i = 0; i < t->m.n_aux; i++) t->win_aux[i] += aux[i];
        const int log_now = c->want_log ? c->want_log(c->user, t->step)
                                        : (c->log_every && t->step % c->log_every == 0) || t->step == c->steps;
        double now = now_s();
        const int progress_now = c->progress && t->rank == 0 && (log_now || t->step == t->first + 1 || now - t->t_progress >= every);
        ttt_train_stats st;
        if (log_now || progress_now) {
            ttt_synchronize(t->ctx); /* a rate of work done, not queued */
            now = now_s();
            fill_stats(t, &st, now);
            st.logged = log_now;
        }
        if (log_now && t->rank == 0) {
            line[0] = 0;
            if ((c->log_line ? c->log_line(t->ctx, c->user, &st, line, LINE, err, err_len)
                             : default_log_line(t, &st, line, LINE)) != TTT_OK) {
                if (!err || !err[0]) set_err(err, err_len, "step %lld: the metrics line could not be made", (long long)t->step);
                rc = TTT_ERR;
                break;
            }
            if ((rc = metrics_append(t->metrics, line, err, err_len)) != TTT_OK) break;
        }
        if (progress_now) {
            if (c->progress_line) c->progress_line(c->user, &st, c->progress);
            else default_progress(t, &st, c->progress);
            t->t_progress = now_s();
        }
        if (log_now) { /* the next window's rate starts after the log work (an evaluation) */
            t->win_loss = 0, t->win_steps = 0, t->items_window = 0;
            memset(t->win_aux, 0, sizeof t->win_aux);
            memset(t->phase, 0, sizeof t->phase);
            t->phase_steps = t->replays = 0;
            t->t_last = now_s();
        }
        const int stop = (t->zero ? t->dist_stop : ttt_train_stop_requested()) && t->step < t->end;
        if ((c->save_every && t->step % c->save_every == 0) || t->step == t->end || stop)
            if ((rc = ttt_train_save(t, err, err_len)) != TTT_OK) break;
        if (stop) {
            rc = TTT_TRAIN_STOPPED;
            break;
        }
    }
    free(line);
    return rc;
}
