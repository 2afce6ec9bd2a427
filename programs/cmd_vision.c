/* ttt vision: train and evaluate ViT classifiers on Fashion-MNIST with MTTT
 * or attention sequence layers (SPEC §1; docs/vision.md).
 *
 *   ttt vision train [flags]   writes OUT/metrics.jsonl and OUT/checkpoint.safetensors
 *   ttt vision eval --out OUT  test loss / accuracy of the saved model
 *
 * Resuming is bit-exact: everything a step depends on is a pure function of
 * the stored state and (seed, epoch, step) -- the data order of an epoch, the
 * SGD mini-batch split of a step -- and the checkpoint holds the parameters,
 * the AdamW moments and the step count.
 *
 * On CUDA, a training step's forward, loss and backward are recorded once as a
 * CUDA graph and replayed for later batches of the same size (--cuda-graph;
 * include/ttt/graph.h); the gradient clipping and AdamW update run outside it,
 * since their learning rate and step count change every step. Replays compute
 * exactly what the recorded ops compute, so runs with and without graphs agree. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "ttt/runtime.h"
#include "ttt/checkpoint.h"
#include "ttt/graph.h"
#include "ttt/ttt.h"
#include "ttt/vit.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
/* Flag ranges (also checked when a stored config is read back). */
enum { MAX_DIM = 4096, MAX_DEPTH = 64, MAX_UPSAMPLE = 8, MAX_BATCH = 65536 };
enum { CLASSES = 10 }; /* Fashion-MNIST */

/* ---- choices ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    ttt_seq_kind kind;
    ttt_mttt_learner learner;
    ttt_feature_map feature;
} LAYERS[] = {
    {"attention", TTT_SEQ_ATTENTION, TTT_MTTT_LINEAR, TTT_FEAT_IDENTITY},
    {"linear-attention", TTT_SEQ_LINEAR_ATTENTION, TTT_MTTT_LINEAR, TTT_FEAT_IDENTITY},
    {"linear-attention-elu", TTT_SEQ_LINEAR_ATTENTION, TTT_MTTT_LINEAR, TTT_FEAT_ELU1},
    {"mttt-linear", TTT_SEQ_MTTT, TTT_MTTT_LINEAR, TTT_FEAT_IDENTITY},
    {"mttt-kernel", TTT_SEQ_MTTT, TTT_MTTT_KERNEL, TTT_FEAT_IDENTITY},
    {"mttt-mlp", TTT_SEQ_MTTT, TTT_MTTT_MLP, TTT_FEAT_IDENTITY},
};
enum { N_LAYERS = sizeof LAYERS / sizeof LAYERS[0], LAYER_MTTT_MLP = 5 };

static const struct {
    const char *name;
    int patch; /* 0: one token per pixel */
} TOKENS[] = {{"patch4", 4}, {"patch7", 7}, {"pixels", 0}};
enum { N_TOKENS = sizeof TOKENS / sizeof TOKENS[0] };

static const char *const POS[] = {"learned", "sincos"}; /* ttt_vit_pos order */

static int lookup(const char *v, int n, const char *const *names) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i])) return i;
    return -1;
}

static int layer_index(const char *v) {
    for (int i = 0; i < N_LAYERS; i++)
        if (!strcmp(v, LAYERS[i].name)) return i;
    return -1;
}

static int tokens_index(const char *v) {
    for (int i = 0; i < N_TOKENS; i++)
        if (!strcmp(v, TOKENS[i].name)) return i;
    return -1;
}

static int layer_has_inner_loop(int layer) {
    return LAYERS[layer].kind == TTT_SEQ_MTTT && LAYERS[layer].learner != TTT_MTTT_KERNEL;
}

/* ---- configuration ------------------------------------------------------------------------- */

typedef struct {
    /* What the trained model and its trajectory depend on: stored in the
     * checkpoint, required to match on --resume, read back by eval. */
    int layer, tokens, pos, sgd, no_decoder_ln;
    int64_t inner_steps, upsample, dim, depth, heads, epochs, batch, seed, train_limit;
    double eta, lr, wd;
    /* Per run: may change between runs of the same model. */
    int device; /* -1 auto */
    const char *data, *out;
    int64_t test_limit, threads;
    int checkpoint, resume;
    int cuda_graph; /* -1 auto (on for CUDA unless --sgd), 0 off, 1 on */
    int timing;     /* print where a training step's time goes, per epoch */
} vision_cfg;

/* "key=value key=value ...": the stored form of the model/training part. */
static void config_format(const vision_cfg *c, char *buf, size_t n) {
    char eta[32], lr[32], wd[32];
    cli_fmt_double(eta, sizeof eta, c->eta);
    cli_fmt_double(lr, sizeof lr, c->lr);
    cli_fmt_double(wd, sizeof wd, c->wd);
    snprintf(buf, n,
             "layer=%s inner_steps=%lld sgd=%d eta=%s no_decoder_ln=%d tokens=%s upsample=%lld pos=%s dim=%lld "
             "depth=%lld heads=%lld epochs=%lld batch=%lld lr=%s wd=%s seed=%lld train_limit=%lld",
             LAYERS[c->layer].name, (long long)c->inner_steps, c->sgd, eta, c->no_decoder_ln, TOKENS[c->tokens].name,
             (long long)c->upsample, POS[c->pos], (long long)c->dim, (long long)c->depth, (long long)c->heads,
             (long long)c->epochs, (long long)c->batch, lr, wd, (long long)c->seed, (long long)c->train_limit);
}

/* Reads a stored config back (for eval). Returns 0 and names the bad key in err on failure. */
static int config_parse(const char *s, vision_cfg *c, char *err, size_t errn) {
    char v[64], *end;
    const char *ints[] = {"inner_steps", "upsample", "dim", "depth", "heads", "epochs", "batch", "seed",
                          "train_limit"};
    int64_t *iout[] = {&c->inner_steps, &c->upsample, &c->dim, &c->depth, &c->heads, &c->epochs, &c->batch,
                       &c->seed, &c->train_limit};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        errno = 0;
        long long x = cli_config_value(s, ints[i], v, sizeof v) ? strtoll(v, &end, 10) : -1;
        if (x < 0 || errno || *end) return snprintf(err, errn, "bad or missing %s", ints[i]), 0;
        *iout[i] = x;
    }
    const char *bools[] = {"sgd", "no_decoder_ln"};
    int *bout[] = {&c->sgd, &c->no_decoder_ln};
    for (size_t i = 0; i < 2; i++) {
        if (!cli_config_value(s, bools[i], v, sizeof v) || (strcmp(v, "0") && strcmp(v, "1")))
            return snprintf(err, errn, "bad or missing %s", bools[i]), 0;
        *bout[i] = v[0] == '1';
    }
    const char *dbls[] = {"eta", "lr", "wd"};
    double *dout[] = {&c->eta, &c->lr, &c->wd};
    for (size_t i = 0; i < 3; i++) {
        double x = cli_config_value(s, dbls[i], v, sizeof v) ? strtod(v, &end) : NAN;
        if (!isfinite(x) || *end) return snprintf(err, errn, "bad or missing %s", dbls[i]), 0;
        *dout[i] = x;
    }
    if (!cli_config_value(s, "layer", v, sizeof v) || (c->layer = layer_index(v)) < 0)
        return snprintf(err, errn, "bad or missing layer"), 0;
    if (!cli_config_value(s, "tokens", v, sizeof v) || (c->tokens = tokens_index(v)) < 0)
        return snprintf(err, errn, "bad or missing tokens"), 0;
    if (!cli_config_value(s, "pos", v, sizeof v) || (c->pos = lookup(v, 2, POS)) < 0)
        return snprintf(err, errn, "bad or missing pos"), 0;
    if (c->inner_steps > TTT_MTTT_MAX_STEPS || c->upsample < 1 || c->upsample > MAX_UPSAMPLE || c->dim < 1 ||
        c->dim > MAX_DIM || c->depth < 1 || c->depth > MAX_DEPTH || c->heads < 1 || c->batch < 1 ||
        c->batch > MAX_BATCH)
        return snprintf(err, errn, "a size is out of range"), 0;
    return 1;
}

static int64_t token_count(const vision_cfg *c, int64_t *features) {
    const int64_t P = TOKENS[c->tokens].patch, side = 28 * c->upsample;
    *features = P ? P * P : 1;
    return P ? (28 / P) * (28 / P) : side * side;
}

static ttt_vit_config model_config(const vision_cfg *c) {
    int64_t features, n = token_count(c, &features);
    ttt_vit_config m = ttt_vit_config_default(features, n, c->dim, c->depth, c->heads, LAYERS[c->layer].kind,
                                              LAYERS[c->layer].learner);
    m.classes = CLASSES;
    m.pos = (ttt_vit_pos)c->pos;
    m.seq.feature = LAYERS[c->layer].feature;
    m.seq.steps = (int)c->inner_steps;
    m.seq.eta = c->eta;
    m.seq.sgd = c->sgd;
    m.seq.no_decoder_ln = c->no_decoder_ln;
    return m;
}

/* ---- small utilities ------------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t mix64(uint64_t z) { /* splitmix64 finaliser */
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The training order of one epoch: a Fisher-Yates shuffle seeded by (seed, epoch) only. */
static void epoch_order(uint64_t seed, int64_t epoch, int64_t n, int64_t *order) {
    uint64_t s = mix64(seed ^ mix64(0x5EEDull + (uint64_t)epoch));
    for (int64_t i = 0; i < n; i++) order[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        s = mix64(s);
        int64_t j = (int64_t)((double)(s >> 11) * 0x1.0p-53 * (double)(i + 1));
        if (j > i) j = i;
        int64_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* The SGD inner-loop seed of a training step (the model derives one per block). */
static uint64_t step_seed(uint64_t seed, int64_t step) {
    return mix64(seed * 0xD1B54A32D192ED03ull + (uint64_t)step);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void json_array(FILE *f, const double *v, int n) {
    if (n <= 0) {
        fputs("null", f);
        return;
    }
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        cli_json_num(f, v[i]);
    }
    fputc(']', f);
}

/* ---- data ------------------------------------------------------------------------------------- */

typedef struct {
    ttt_idx images, labels;
    int64_t n; /* examples used (a prefix of the split) */
} split;

static int load_split(const char *dir, int train, int64_t limit, split *s) {
    char err[512];
    *s = (split){0};
    if (ttt_fashion_mnist_load(dir, train, &s->images, &s->labels, err, sizeof err) != TTT_OK) {
        fprintf(stderr,
                "ttt vision: %s\n  Fashion-MNIST comes from the Debian package dataset-fashion-mnist "
                "(sudo apt-get install dataset-fashion-mnist, files in %s), or pass --data DIR\n",
                err, TTT_FASHION_MNIST_DIR);
        return TTT_ERR;
    }
    s->n = limit > 0 && limit < s->images.dims[0] ? limit : s->images.dims[0];
    return TTT_OK;
}

static void split_free(split *s) {
    ttt_idx_free(&s->images);
    ttt_idx_free(&s->labels);
}

/* ---- one batch -------------------------------------------------------------------------------- */

typedef struct {
    double loss_sum, inner_sum[TTT_MTTT_MAX_STEPS + 1];
    int64_t correct, seen;
} tally;

/* Adds a forwarded batch to t: its loss (sum over examples), correct count
 * and the inner losses il (averaged over blocks, weighted by batch size). */
static int tally_batch(ttt_ctx *ctx, const vision_cfg *c, const split *s, const int64_t *idx, int64_t bs,
                       ttt_tensor *loss, ttt_tensor *logits, const double *il, tally *t) {
    const int T = (int)c->inner_steps;
    if (!loss || !logits) return TTT_ERR;
    float lg[64 * CLASSES];
    const int64_t K = CLASSES;
    double lv = ttt_item(ctx, loss);
    if (!isfinite(lv)) {
        if (!ttt_error(ctx)[0])
            fprintf(stderr, "ttt vision: the loss is not finite (%g); try a smaller --lr or --eta\n", lv);
        return TTT_ERR;
    }
    /* accuracy: argmax per row, in chunks that fit the stack buffer */
    for (int64_t b0 = 0; b0 < bs; b0 += 64) {
        int64_t nb = bs - b0 < 64 ? bs - b0 : 64;
        ttt_tensor *part = ttt_slice(ctx, logits, 0, b0, b0 + nb, 1);
        if (!part || ttt_copy_to_host(ctx, part, lg, TTT_F32) != TTT_OK) return TTT_ERR;
        for (int64_t b = 0; b < nb; b++) {
            int64_t best = 0;
            for (int64_t k = 1; k < K; k++)
                if (lg[b * K + k] > lg[b * K + best]) best = k;
            t->correct += best == s->labels.data[idx[b0 + b]];
        }
    }
    t->loss_sum += lv * (double)bs;
    t->seen += bs;
    for (int j = 0; il && j <= T; j++) {
        double a = 0;
        for (int64_t blk = 0; blk < c->depth; blk++) a += il[blk * (T + 1) + j];
        t->inner_sum[j] += a / (double)c->depth * (double)bs;
    }
    return TTT_OK;
}

/* Forward a batch without gradients (evaluation) and tally it. */
static int run_batch(ttt_ctx *ctx, const ttt_vit *m, const vision_cfg *c, const split *s, const int64_t *idx,
                     int64_t bs, const ttt_vit_run_opts *base, tally *t) {
    double il[MAX_DEPTH * (TTT_MTTT_MAX_STEPS + 1)];
    ttt_vit_run_opts o = *base;
    o.inner_loss = layer_has_inner_loop(c->layer) ? il : NULL;
    ttt_tensor *x = ttt_vision_tokens(ctx, &s->images, idx, bs, TOKENS[c->tokens].patch, (int)c->upsample, TTT_F32);
    ttt_tensor *y = ttt_vision_labels(ctx, &s->labels, idx, bs);
    ttt_tensor *logits = ttt_vit_forward(ctx, m, x, &o);
    ttt_tensor *loss = ttt_cross_entropy(ctx, logits, y, -100);
    return tally_batch(ctx, c, s, idx, bs, loss, logits, o.inner_loss, t);
}

typedef struct {
    double loss, acc, inner[TTT_MTTT_MAX_STEPS + 1], seconds;
    int n_inner; /* T + 1, or 0 for layers without an inner loop */
} eval_result;

static void tally_result(const vision_cfg *c, const tally *t, eval_result *r) {
    r->loss = t->seen ? t->loss_sum / (double)t->seen : NAN;
    r->acc = t->seen ? (double)t->correct / (double)t->seen : NAN;
    r->n_inner = layer_has_inner_loop(c->layer) ? (int)c->inner_steps + 1 : 0;
    for (int j = 0; j < r->n_inner; j++) r->inner[j] = t->seen ? t->inner_sum[j] / (double)t->seen : NAN;
}

/* The test split in order, without gradients (the inner loops still run). */
static int evaluate(ttt_ctx *ctx, const ttt_vit *m, const vision_cfg *c, const split *test, eval_result *r) {
    const double t0 = now_s();
    tally t = {0};
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)c->batch);
    if (!idx) {
        fprintf(stderr, "ttt vision: out of host memory\n");
        return TTT_ERR;
    }
    int rc = TTT_OK;
    ttt_no_grad_begin(ctx);
    for (int64_t b0 = 0, k = 0; b0 < test->n && rc == TTT_OK; b0 += c->batch, k++) {
        ttt_step_reset(ctx);
        const int64_t bs = test->n - b0 < c->batch ? test->n - b0 : c->batch;
        for (int64_t i = 0; i < bs; i++) idx[i] = b0 + i;
        ttt_vit_run_opts o = {.seed = step_seed((uint64_t)c->seed ^ 0xE7A1ull, k)};
        rc = run_batch(ctx, m, c, test, idx, bs, &o, &t);
    }
    ttt_no_grad_end(ctx);
    ttt_step_reset(ctx);
    free(idx);
    tally_result(c, &t, r);
    r->seconds = now_s() - t0;
    return rc;
}

/* ---- checkpoint ------------------------------------------------------------------------------- */

/* The metadata of PATH (malloc'd JSON) without loading tensors. */
static char *read_metadata(ttt_ctx *ctx, const char *path) {
    char *json = NULL;
    ttt_named_tensor none = {0};
    if (ttt_load_safetensors(ctx, path, 0, &none, &json) != TTT_OK) {
        fprintf(stderr, "ttt vision: %s\n", ttt_error(ctx));
        free(json);
        return NULL;
    }
    if (!json) fprintf(stderr, "ttt vision: %s has no metadata: not a ttt vision checkpoint\n", path);
    return json;
}

static int meta_int(const char *json, const char *key, int64_t *out) {
    char buf[64], *end;
    if (ttt_metadata_get(json, key, buf, sizeof buf) != TTT_OK) return TTT_ERR;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || end == buf || v < 0) return TTT_ERR;
    *out = v;
    return TTT_OK;
}

/* ---- metrics file ------------------------------------------------------------------------------- */

/* Keeps the lines of epochs <= epochs (a run killed between writing an
 * epoch's metrics and its checkpoint leaves one line too many). */
static int metrics_truncate(const char *path, int64_t epochs) {
    FILE *in = fopen(path, "r");
    if (!in) return errno == ENOENT ? TTT_OK : TTT_ERR;
    char tmp[4200];
    FILE *out = snprintf(tmp, sizeof tmp, "%s.tmp", path) < (int)sizeof tmp ? fopen(tmp, "w") : NULL;
    if (!out) {
        fclose(in);
        return TTT_ERR;
    }
    char line[8192];
    long long e;
    while (fgets(line, sizeof line, in))
        if (sscanf(line, "{\"epoch\": %lld", &e) == 1 && e <= epochs) fputs(line, out);
    fclose(in);
    int ok = fflush(out) == 0 && fsync(fileno(out)) == 0;
    ok = fclose(out) == 0 && ok;
    return ok && rename(tmp, path) == 0 ? TTT_OK : TTT_ERR;
}

static int metrics_append(const char *path, int64_t epoch, int64_t step, const eval_result *train,
                          const eval_result *test, double ips, double lr) {
    FILE *f = fopen(path, "a");
    if (!f) return TTT_ERR;
    fprintf(f, "{\"epoch\": %lld, \"step\": %lld, \"train_loss\": ", (long long)epoch, (long long)step);
    cli_json_num(f, train->loss);
    fputs(", \"train_acc\": ", f);
    cli_json_num(f, train->acc);
    fputs(", \"test_loss\": ", f);
    cli_json_num(f, test->loss);
    fputs(", \"test_acc\": ", f);
    cli_json_num(f, test->acc);
    fputs(", \"lr\": ", f);
    cli_json_num(f, lr);
    fputs(", \"inner_loss\": ", f);
    json_array(f, test->inner, test->n_inner);
    fputs(", \"train_inner_loss\": ", f);
    json_array(f, train->inner, train->n_inner);
    fputs(", \"images_per_s\": ", f);
    cli_json_num(f, ips);
    fputs(", \"seconds\": ", f);
    cli_json_num(f, train->seconds);
    fputs(", \"eval_seconds\": ", f);
    cli_json_num(f, test->seconds);
    fputs("}\n", f);
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    return fclose(f) == 0 && ok ? TTT_OK : TTT_ERR;
}

/* ---- progress ---------------------------------------------------------------------------------- */

typedef struct {
    int tty, shown;
    double last;
} progress;

/* A line on stderr at most every 2 s: \r-overwritten on a terminal, one per line otherwise. */
static void progress_line(progress *p, int64_t epoch, int64_t epochs, int64_t s, int64_t spe, double ips,
                          const tally *t, double eta_s) {
    const double now = now_s();
    if (now - p->last < 2.0) return;
    p->last = now;
    fprintf(stderr, "%sepoch %lld/%lld  step %lld/%lld  %.0f img/s  loss %.4f  acc %.2f%%  ETA %dm%02ds%s",
            p->tty ? "\r" : "", (long long)epoch, (long long)epochs, (long long)s, (long long)spe, ips,
            t->loss_sum / (double)t->seen, 100.0 * (double)t->correct / (double)t->seen, (int)(eta_s / 60),
            (int)fmod(eta_s, 60), p->tty ? "\033[K" : "\n");
    fflush(stderr);
    p->shown = 1;
}

static void progress_end(progress *p) {
    if (p->tty && p->shown) fputs("\r\033[K", stderr);
    p->shown = 0;
}

/* ---- training ------------------------------------------------------------------------------------ */

static ttt_ctx *make_ctx(const vision_cfg *c) {
    ttt_ctx_config cc = {.device = (ttt_device)c->device, .seed = (uint64_t)c->seed, .threads = (int)c->threads};
    ttt_ctx *ctx = ttt_ctx_new(&cc);
    if (!ctx)
        fprintf(stderr, "ttt vision: could not create a %s context: %s\n", c->device == TTT_CUDA ? "cuda" : "cpu",
                ttt_runtime_error());
    return ctx;
}

/* A training step's forward, loss and backward as one CUDA graph: recorded at
 * the third full batch (the first two size the step arena), replayed for every
 * full batch after; a last, smaller batch runs without it. */
enum { GRAPH_AFTER = 2 };
typedef struct {
    ttt_graph *g;
    ttt_tensor *x, *y;         /* persistent inputs the graph reads */
    ttt_tensor *loss, *logits; /* persistent copies of its outputs */
    double il[MAX_DEPTH * (TTT_MTTT_MAX_STEPS + 1)]; /* inner losses, written after each replay */
    int64_t eager_full;        /* full batches run before recording */
} step_graph;

/* Where a training step's time goes (--timing): host-visible seconds, so a
 * phase that waits for the device includes the device work still queued. */
enum { PH_DATA, PH_STEP, PH_READ, PH_CLIP, PH_OPTIM, N_PH };
static const char *const PH_NAMES[N_PH] = {"data", "forward+backward", "readback", "clip", "optimizer"};

/* Everything a training run holds. */
typedef struct {
    char ckpt[4200], metrics[4200], cfgstr[1024];
    split tr, te;
    ttt_ctx *ctx;
    ttt_vit m;
    ttt_optimizer *opt;
    cli_named_list nl;           /* what the checkpoint holds */
    int64_t *order;          /* this epoch's training order */
    int64_t done_epochs, step, steps_per_epoch, total_steps, warmup;
    progress pr;
    double run_seconds;      /* training time of this process, for the ETA */
    int64_t run_steps;
    step_graph sg;
    double phase[N_PH];      /* this epoch's seconds per phase */
    int64_t phase_steps, replays;
} run_t;

static void run_free(run_t *r) {
    if (r->ctx) ttt_graph_free(r->ctx, r->sg.g);
    cli_named_free(&r->nl);
    ttt_optimizer_free(r->opt);
    if (r->ctx) ttt_vit_free(r->ctx, &r->m);
    ttt_ctx_free(r->ctx);
    free(r->order);
    split_free(&r->tr);
    split_free(&r->te);
}

/* Prints which stored config values differ from the flags'. */
static void explain_mismatch(const char *ckpt, const char *stored, const char *now) {
    static const char *const keys[] = {"layer",  "inner_steps", "sgd",   "eta",    "no_decoder_ln", "tokens",
                                       "upsample", "pos",       "dim",   "depth",  "heads",         "epochs",
                                       "batch",  "lr",          "wd",    "seed",   "train_limit"};
    fprintf(stderr, "ttt vision: --resume: the flags describe another run than %s:\n", ckpt);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        char a[64], b[64];
        int ha = cli_config_value(stored, keys[k], a, sizeof a), hb = cli_config_value(now, keys[k], b, sizeof b);
        if (!ha || !hb || strcmp(a, b))
            fprintf(stderr, "  %-12s checkpoint %s, now %s\n", keys[k], ha ? a : "(none)", hb ? b : "(none)");
    }
    fprintf(stderr, "  repeat the run's flags to resume it\n");
}

/* --resume: the same config, then parameters, AdamW state and step count
 * from the checkpoint; metrics lines past its epoch are dropped. */
static int resume(run_t *r) {
    char *json = read_metadata(r->ctx, r->ckpt), stored[1024];
    int code = EXIT_RUNTIME;
    if (!json) return code;
    if (ttt_metadata_get(json, "config", stored, sizeof stored) != TTT_OK ||
        meta_int(json, "epoch", &r->done_epochs) != TTT_OK || meta_int(json, "step", &r->step) != TTT_OK)
        fprintf(stderr, "ttt vision: %s lacks config/epoch/step metadata: not a ttt vision checkpoint\n", r->ckpt);
    else if (strcmp(stored, r->cfgstr)) {
        explain_mismatch(r->ckpt, stored, r->cfgstr);
        code = EXIT_USAGE;
    } else if (ttt_load_safetensors(r->ctx, r->ckpt, r->nl.n, r->nl.t, NULL) != TTT_OK ||
               ttt_optimizer_set_steps(r->opt, r->step) != TTT_OK)
        fprintf(stderr, "ttt vision: %s\n", ttt_error(r->ctx));
    else if (metrics_truncate(r->metrics, r->done_epochs) != TTT_OK)
        fprintf(stderr, "ttt vision: cannot rewrite %s: %s\n", r->metrics, strerror(errno));
    else
        code = -1;
    free(json);
    return code;
}

/* A new run: the directory and an empty metrics file. */
static int start_fresh(run_t *r, const char *out) {
    if (cli_mkdir_p(out) != 0) {
        fprintf(stderr, "ttt vision: cannot create %s: %s\n", out, strerror(errno));
        return EXIT_RUNTIME;
    }
    FILE *f = fopen(r->metrics, "w");
    if (!f) {
        fprintf(stderr, "ttt vision: cannot write %s: %s\n", r->metrics, strerror(errno));
        return EXIT_RUNTIME;
    }
    fclose(f);
    return -1;
}

/* Data, context, model, optimizer; then resume or start. Returns -1 to go on, or an exit code. */
static int run_open(vision_cfg *c, run_t *r) {
    snprintf(r->ckpt, sizeof r->ckpt, "%s/checkpoint.safetensors", c->out);
    snprintf(r->metrics, sizeof r->metrics, "%s/metrics.jsonl", c->out);
    if (c->resume && !file_exists(r->ckpt)) {
        fprintf(stderr, "ttt vision: --resume: %s does not exist (nothing to resume)\n", r->ckpt);
        return EXIT_RUNTIME;
    }
    if (!c->resume && file_exists(r->ckpt)) {
        fprintf(stderr, "ttt vision: %s already holds a run; pass --resume to continue it, or choose another --out "
                        "(or delete the directory)\n", c->out);
        return EXIT_USAGE;
    }
    if (load_split(c->data, 1, c->train_limit, &r->tr) != TTT_OK ||
        load_split(c->data, 0, c->test_limit, &r->te) != TTT_OK)
        return EXIT_RUNTIME;
    c->train_limit = r->tr.n; /* the stored config names the count actually used */
    config_format(c, r->cfgstr, sizeof r->cfgstr);
    if (!(r->ctx = make_ctx(c))) return EXIT_RUNTIME;
    if (!(r->order = malloc(sizeof(int64_t) * (size_t)r->tr.n))) {
        fprintf(stderr, "ttt vision: out of host memory\n");
        return EXIT_RUNTIME;
    }
    ttt_vit_config mc = model_config(c);
    ttt_optim_config oc = {.lr = c->lr, .beta1 = 0.9, .beta2 = 0.999, .weight_decay = c->wd};
    if (ttt_vit_init(r->ctx, &r->m, &mc, TTT_F32) != TTT_OK ||
        !(r->opt = ttt_adamw_new(r->ctx, r->m.n_params, r->m.params, r->m.decay, &oc)) ||
        cli_named_build(r->m.n_params, r->m.params, (const char *const *)r->m.names, r->opt, &r->nl) != 0) {
        fprintf(stderr, "ttt vision: %s\n", ttt_error(r->ctx)[0] ? ttt_error(r->ctx) : "out of host memory");
        return EXIT_RUNTIME;
    }
    /* warmup: 1 epoch or 5% of the steps, whichever is shorter; then cosine to 0 */
    r->steps_per_epoch = (r->tr.n + c->batch - 1) / c->batch;
    r->total_steps = r->steps_per_epoch * c->epochs;
    const int64_t five = (r->total_steps + 19) / 20;
    r->warmup = five < r->steps_per_epoch ? five : r->steps_per_epoch;
    r->pr = (progress){.tty = isatty(STDERR_FILENO), .last = now_s()};
    return c->resume ? resume(r) : start_fresh(r, c->out);
}

static void print_header(const vision_cfg *c, const run_t *r) {
    int64_t features, ntok = token_count(c, &features), params = 0;
    for (int i = 0; i < r->m.n_params; i++) params += ttt_numel(r->m.params[i]);
    printf("ttt vision train: %s on %s tokens (%lld x %lld), ViT D=%lld depth %lld heads %lld, %lld parameters\n"
           "  %lld train / %lld test images, batch %lld, %lld steps/epoch, AdamW lr %g (warmup %lld steps, cosine), "
           "wd %g, device %s, out %s\n",
           LAYERS[c->layer].name, TOKENS[c->tokens].name, (long long)ntok, (long long)features, (long long)c->dim,
           (long long)c->depth, (long long)c->heads, (long long)params, (long long)r->tr.n, (long long)r->te.n,
           (long long)c->batch, (long long)r->steps_per_epoch, c->lr, (long long)r->warmup, c->wd,
           c->device == TTT_CUDA ? "cuda" : "cpu", c->out);
    if (layer_has_inner_loop(c->layer))
        printf("  inner loop: T=%lld %s steps, eta %g%s\n", (long long)c->inner_steps, c->sgd ? "SGD" : "batch-GD",
               c->eta, c->checkpoint ? ", rematerialized" : "");
    if (c->device == TTT_CUDA)
        printf("  CUDA graphs: %s\n", c->cuda_graph ? "on (forward + backward recorded at the third full batch)"
                                               : c->sgd ? "off (--sgd draws a new mini-batch split each step)" : "off");
    if (c->resume) printf("  resuming after epoch %lld (step %lld)\n", (long long)r->done_epochs, (long long)r->step);
    fflush(stdout);
}

static void phase_add(run_t *r, int ph, double *t) {
    const double now = now_s();
    r->phase[ph] += now - *t;
    *t = now;
}

/* Records the step (first call), then replays it on this batch. Returns
 * TTT_ERR with the context's message on failure; *record_failed tells a
 * failed recording (nothing ran) from a failed replay. */
static int graph_step(const vision_cfg *c, run_t *r, const int64_t *idx, tally *t, int *record_failed, double *tp) {
    ttt_ctx *ctx = r->ctx;
    step_graph *sg = &r->sg;
    const int64_t B = c->batch;
    const int inner = layer_has_inner_loop(c->layer);
    *record_failed = 0;
    ttt_tensor *x = ttt_vision_tokens(ctx, &r->tr.images, idx, B, TOKENS[c->tokens].patch, (int)c->upsample, TTT_F32);
    ttt_tensor *y = ttt_vision_labels(ctx, &r->tr.labels, idx, B);
    if (!x || !y) return TTT_ERR;
    if (!sg->x && (!(sg->x = ttt_persistent(ctx, TTT_F32, x->ndim, x->shape, "graph.tokens")) ||
                   !(sg->y = ttt_persistent(ctx, TTT_I32, y->ndim, y->shape, "graph.labels")) ||
                   !(sg->loss = ttt_persistent(ctx, TTT_F32, 0, NULL, "graph.loss")) ||
                   !(sg->logits = ttt_persistent(ctx, TTT_F32, TTT_DIMS(B, CLASSES), "graph.logits"))))
        return TTT_ERR;
    if (ttt_assign(ctx, sg->x, x) != TTT_OK || ttt_assign(ctx, sg->y, y) != TTT_OK) return TTT_ERR;
    phase_add(r, PH_DATA, tp);
    if (!sg->g) {
        /* The seed only steers the SGD split, which graphs do not support. */
        ttt_vit_run_opts o = {.checkpoint = c->checkpoint, .inner_loss = inner ? sg->il : NULL};
        if (ttt_graph_begin(ctx) != TTT_OK) {
            *record_failed = 1;
            return TTT_ERR;
        }
        ttt_tensor *logits = ttt_vit_forward(ctx, &r->m, sg->x, &o);
        ttt_tensor *loss = ttt_cross_entropy(ctx, logits, sg->y, -100);
        /* an op that fails leaves its message, which ttt_graph_end reports */
        if (ttt_assign(ctx, sg->loss, loss) == TTT_OK && ttt_assign(ctx, sg->logits, logits) == TTT_OK &&
            ttt_zero_grad(ctx, r->m.n_params, r->m.params) == TTT_OK)
            ttt_backward(ctx, loss);
        if (ttt_graph_end(ctx, &sg->g) != TTT_OK) {
            *record_failed = 1;
            return TTT_ERR;
        }
    }
    if (ttt_graph_replay(ctx, sg->g) != TTT_OK) return TTT_ERR;
    phase_add(r, PH_STEP, tp);
    r->replays++;
    int rc = tally_batch(ctx, c, &r->tr, idx, B, sg->loss, sg->logits, inner ? sg->il : NULL, t);
    phase_add(r, PH_READ, tp);
    return rc;
}

/* One training step on the batch idx[0..bs). */
static int train_step(const vision_cfg *c, run_t *r, const int64_t *idx, int64_t bs, double lr, tally *t) {
    ttt_ctx *ctx = r->ctx;
    double tp = now_s();
    int rc = TTT_ERR, done = 0;
    if (c->cuda_graph && bs == c->batch && r->sg.eager_full >= GRAPH_AFTER) {
        int record_failed = 0;
        rc = graph_step(c, r, idx, t, &record_failed, &tp);
        done = 1;
        if (rc != TTT_OK && record_failed && c->cuda_graph < 0) { /* auto: go on without graphs */
            fprintf(stderr, "ttt vision: recording the CUDA graph failed, training without graphs: %s\n",
                    ttt_error(ctx));
            ttt_clear_error(ctx);
            r->sg.eager_full = -1; /* never again */
            ttt_step_reset(ctx);
            done = 0;
        } else if (rc != TTT_OK && record_failed) {
            fprintf(stderr, "ttt vision: recording the CUDA graph failed (--cuda-graph off trains without): %s\n",
                    ttt_error(ctx));
            ttt_clear_error(ctx);
            return TTT_ERR;
        }
    }
    if (!done) {
        double il[MAX_DEPTH * (TTT_MTTT_MAX_STEPS + 1)];
        ttt_vit_run_opts o = {.seed = step_seed((uint64_t)c->seed, r->step), .checkpoint = c->checkpoint,
                              .inner_loss = layer_has_inner_loop(c->layer) ? il : NULL};
        ttt_tensor *x = ttt_vision_tokens(ctx, &r->tr.images, idx, bs, TOKENS[c->tokens].patch, (int)c->upsample,
                                          TTT_F32);
        ttt_tensor *y = ttt_vision_labels(ctx, &r->tr.labels, idx, bs);
        phase_add(r, PH_DATA, &tp);
        ttt_tensor *logits = ttt_vit_forward(ctx, &r->m, x, &o);
        ttt_tensor *loss = ttt_cross_entropy(ctx, logits, y, -100);
        /* backward is queued before the host reads the loss, so the device works while the host waits */
        rc = loss ? ttt_zero_grad(ctx, r->m.n_params, r->m.params) : TTT_ERR;
        if (rc == TTT_OK) rc = ttt_backward(ctx, loss);
        phase_add(r, PH_STEP, &tp);
        if (rc == TTT_OK) rc = tally_batch(ctx, c, &r->tr, idx, bs, loss, logits, o.inner_loss, t);
        phase_add(r, PH_READ, &tp);
        if (bs == c->batch && r->sg.eager_full >= 0) r->sg.eager_full++;
    }
    if (rc == TTT_OK) rc = ttt_clip_grad_norm(ctx, r->m.n_params, r->m.params, 1.0, NULL);
    phase_add(r, PH_CLIP, &tp);
    if (rc == TTT_OK) rc = ttt_optimizer_step(r->opt, lr);
    phase_add(r, PH_OPTIM, &tp);
    r->phase_steps++;
    return rc;
}

/* One epoch of training steps; *res gets the epoch's running figures, *lr the last lr. */
static int train_epoch(const vision_cfg *c, run_t *r, int64_t epoch, eval_result *res, double *lr) {
    tally t = {0};
    const double t0 = now_s();
    epoch_order((uint64_t)c->seed, epoch, r->tr.n, r->order);
    int rc = TTT_OK;
    memset(r->phase, 0, sizeof r->phase);
    r->phase_steps = r->replays = 0;
    for (int64_t s = 0; s < r->steps_per_epoch && rc == TTT_OK; s++, r->step++) {
        ttt_step_reset(r->ctx); /* frees the previous step's temporaries */
        const int64_t b0 = s * c->batch, bs = r->tr.n - b0 < c->batch ? r->tr.n - b0 : c->batch;
        *lr = ttt_lr_warmup_cosine(r->step, r->warmup, r->total_steps, c->lr, 0.0);
        rc = train_step(c, r, r->order + b0, bs, *lr, &t);
        if (rc != TTT_OK) break;
        const double el = now_s() - t0;
        r->run_steps++;
        const double per_step = (r->run_seconds + el) / (double)r->run_steps;
        progress_line(&r->pr, epoch, c->epochs, s + 1, r->steps_per_epoch, (double)t.seen / el, &t,
                      per_step * (double)(r->total_steps - r->step - 1));
    }
    ttt_step_reset(r->ctx);
    tally_result(c, &t, res);
    res->seconds = now_s() - t0;
    r->run_seconds += res->seconds;
    return rc;
}

/* Metrics first, then the checkpoint: a run killed in between leaves one
 * metrics line too many, which --resume drops. */
static int save_epoch(const vision_cfg *c, run_t *r, int64_t epoch, const eval_result *trr, const eval_result *ter,
                      double lr) {
    if (metrics_append(r->metrics, epoch, r->step, trr, ter, (double)r->tr.n / trr->seconds, lr) != TTT_OK) {
        fprintf(stderr, "ttt vision: cannot append to %s: %s\n", r->metrics, strerror(errno));
        return TTT_ERR;
    }
    char se[32], ss[32], sd[32];
    snprintf(se, sizeof se, "%lld", (long long)epoch);
    snprintf(ss, sizeof ss, "%lld", (long long)r->step);
    snprintf(sd, sizeof sd, "%lld", (long long)c->seed);
    const char *meta[] = {"format", "ttt-vision/1", "config", r->cfgstr, "epoch", se, "step", ss, "seed", sd, NULL};
    if (ttt_save_safetensors(r->ctx, r->ckpt, r->nl.n, r->nl.t, meta) != TTT_OK) {
        fprintf(stderr, "ttt vision: %s\n", ttt_error(r->ctx));
        return TTT_ERR;
    }
    return TTT_OK;
}

static int train(vision_cfg *c) {
    run_t r = {0};
    int code = run_open(c, &r);
    if (code >= 0) {
        run_free(&r);
        return code;
    }
    print_header(c, &r);
    if (r.done_epochs >= c->epochs) printf("  all %lld epochs are done\n", (long long)c->epochs);
    code = 0;
    for (int64_t epoch = r.done_epochs + 1; epoch <= c->epochs && code == 0; epoch++) {
        eval_result trr, ter;
        double lr = 0;
        int rc = train_epoch(c, &r, epoch, &trr, &lr);
        if (rc == TTT_OK) rc = evaluate(r.ctx, &r.m, c, &r.te, &ter);
        progress_end(&r.pr);
        if (rc != TTT_OK) {
            if (ttt_error(r.ctx)[0]) fprintf(stderr, "ttt vision: %s\n", ttt_error(r.ctx));
            code = EXIT_RUNTIME;
            break;
        }
        printf("epoch %lld/%lld  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.0f img/s  %.1f s",
               (long long)epoch, (long long)c->epochs, trr.loss, 100 * trr.acc, ter.loss, 100 * ter.acc,
               (double)r.tr.n / trr.seconds, trr.seconds);
        if (ter.n_inner) printf("  inner %.4f -> %.4f", ter.inner[0], ter.inner[ter.n_inner - 1]);
        printf("\n");
        if (c->timing && r.phase_steps) {
            printf("  ms per training step (%lld steps, %lld graph replays):", (long long)r.phase_steps,
                   (long long)r.replays);
            for (int ph = 0; ph < N_PH; ph++) printf("  %s %.2f", PH_NAMES[ph], 1e3 * r.phase[ph] / (double)r.phase_steps);
            printf("\n");
        }
        fflush(stdout);
        if (save_epoch(c, &r, epoch, &trr, &ter, lr) != TTT_OK) code = EXIT_RUNTIME;
    }
    run_free(&r);
    return code;
}

static int eval_cmd(vision_cfg *c) {
    char ckpt[4200], cfgstr[1024], err[128];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", c->out);
    if (!file_exists(ckpt)) {
        fprintf(stderr, "ttt vision eval: %s does not exist (train with ttt vision train --out %s)\n", ckpt, c->out);
        return EXIT_RUNTIME;
    }
    split te;
    if (load_split(c->data, 0, c->test_limit, &te) != TTT_OK) return EXIT_RUNTIME;
    ttt_ctx *ctx = make_ctx(c);
    ttt_vit m = {0};
    cli_named_list nl = {0};
    char *json = ctx ? read_metadata(ctx, ckpt) : NULL;
    int64_t epoch = 0, batch = c->batch;
    int exit_code = EXIT_RUNTIME;
    if (!json) goto out;
    if (ttt_metadata_get(json, "config", cfgstr, sizeof cfgstr) != TTT_OK || meta_int(json, "epoch", &epoch) ||
        !config_parse(cfgstr, c, err, sizeof err)) {
        fprintf(stderr, "ttt vision eval: %s: not a ttt vision checkpoint (config metadata: %s)\n", ckpt,
                ttt_metadata_get(json, "config", cfgstr, sizeof cfgstr) == TTT_OK ? err : "missing");
        goto out;
    }
    if (batch > 0) c->batch = batch; /* --batch only changes the evaluation batch */
    ttt_vit_config mc = model_config(c);
    if (ttt_vit_init(ctx, &m, &mc, TTT_F32) != TTT_OK || cli_named_build(m.n_params, m.params, (const char *const *)m.names, NULL, &nl) != 0 ||
        ttt_load_safetensors(ctx, ckpt, nl.n, nl.t, NULL) != TTT_OK) {
        fprintf(stderr, "ttt vision eval: %s\n", ttt_error(ctx));
        goto out;
    }
    eval_result r;
    if (evaluate(ctx, &m, c, &te, &r) != TTT_OK) {
        if (ttt_error(ctx)[0]) fprintf(stderr, "ttt vision eval: %s\n", ttt_error(ctx));
        goto out;
    }
    printf("%s (epoch %lld): %s\n", ckpt, (long long)epoch, cfgstr);
    printf("test: %lld images  loss %.4f  accuracy %.2f%%  %.1f s", (long long)te.n, r.loss, 100 * r.acc, r.seconds);
    if (r.n_inner) {
        printf("  inner loss");
        for (int j = 0; j < r.n_inner; j++) printf(" %.4f", r.inner[j]);
    }
    printf("\n");
    exit_code = 0;
out:
    free(json);
    cli_named_free(&nl);
    if (ctx) ttt_vit_free(ctx, &m);
    ttt_ctx_free(ctx);
    split_free(&te);
    return exit_code;
}

/* ---- flags ---------------------------------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: ttt vision train [flags]     train a ViT on Fashion-MNIST (docs/vision.md)\n"
            "       ttt vision eval --out DIR    test loss / accuracy of DIR/checkpoint.safetensors\n"
            "\n"
            "model:\n"
            "  --layer L         attention | linear-attention | linear-attention-elu | mttt-linear | mttt-kernel |\n"
            "                    mttt-mlp (default mttt-mlp)\n"
            "  --inner-steps T   inner gradient steps, 0..8 (mttt-linear, mttt-mlp; default 1)\n"
            "  --sgd             inner SGD over T random mini-batches instead of batch GD\n"
            "  --eta E           inner learning rate (default 1)\n"
            "  --no-decoder-ln   mttt-mlp: no LayerNorm after the decoder (the paper's ablation)\n"
            "  --tokens K        patch4 (49 tokens of 16) | patch7 (16 of 49) | pixels (784 of 1) (default patch4)\n"
            "  --upsample U      pixels only: enlarge images U times first (2: 3136 tokens) (default 1)\n"
            "  --pos P           learned | sincos position embeddings (default learned)\n"
            "  --dim D, --depth N, --heads H   width, blocks, heads (default 64, 4, 4)\n"
            "training:\n"
            "  --epochs N        (default 10)     --batch N   (default 128)\n"
            "  --lr LR           AdamW peak lr, betas 0.9/0.999, clip 1.0, warmup min(1 epoch, 5%% of steps) then\n"
            "                    cosine to 0 (default 0.001)\n"
            "  --wd W            weight decay on weight matrices only (default 0.0001)\n"
            "  --seed S          init, data order and SGD splits (default 1)\n"
            "  --train-limit N, --test-limit N   use the first N images of each split\n"
            "  --checkpoint      rematerialize inner steps in the backward pass (less memory)\n"
            "  --out DIR         default runs/<layer>[-T<k>][-sgd][-nodecln]-<tokens>[-up<U>]; writes\n"
            "                    DIR/metrics.jsonl and DIR/checkpoint.safetensors (every epoch, atomically)\n"
            "  --resume          continue DIR's run bit-exactly (the same model/training flags are required)\n"
            "  --cuda-graph on|off   record forward + backward once as a CUDA graph and replay it (default on\n"
            "                    with --device cuda, except with --sgd; same results, fewer kernel launches)\n"
            "  --timing          print where a training step's time goes, per epoch\n"
            "both:\n"
            "  --data DIR        Fashion-MNIST IDX files (default %s)\n"
            "  --device D        auto (cuda if present) | cpu | cuda (default auto)\n"
            "  --threads N       CPU threads (default: OpenMP's)\n"
            "eval: --out DIR, --data, --test-limit, --batch (evaluation batch), --device, --threads.\n"
            "exit codes: 0 ok, 1 runtime failure, 2 bad usage\n",
            TTT_FASHION_MNIST_DIR);
}

/* 1 if flag appears among the arguments (for flags that only some layers accept). */
static int has_flag(int argc, char **argv, const char *flag) {
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], flag)) return 1;
    return 0;
}

/* Parses flags into c; returns -1 to go on, or an exit code. */
static int parse(int argc, char **argv, int is_eval, vision_cfg *c, char *outbuf, size_t outn) {
    const char *cmd = is_eval ? "vision eval" : "vision train";
    for (int i = 2; i < argc; i++) {
        int r = 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if ((r = cli_flag_int(argc, argv, &i, "--test-limit", 1, 10000, &c->test_limit)) ||
            (r = cli_flag_int(argc, argv, &i, "--batch", 1, MAX_BATCH, &c->batch)) ||
            (r = cli_flag_int(argc, argv, &i, "--threads", 0, 1024, &c->threads))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        if (!is_eval && ((r = cli_flag_int(argc, argv, &i, "--inner-steps", 0, TTT_MTTT_MAX_STEPS, &c->inner_steps)) ||
                         (r = cli_flag_double(argc, argv, &i, "--eta", 0.0, 1000.0, &c->eta)) ||
                         (r = cli_flag_int(argc, argv, &i, "--upsample", 1, MAX_UPSAMPLE, &c->upsample)) ||
                         (r = cli_flag_int(argc, argv, &i, "--dim", 1, MAX_DIM, &c->dim)) ||
                         (r = cli_flag_int(argc, argv, &i, "--depth", 1, MAX_DEPTH, &c->depth)) ||
                         (r = cli_flag_int(argc, argv, &i, "--heads", 1, MAX_DIM, &c->heads)) ||
                         (r = cli_flag_int(argc, argv, &i, "--epochs", 1, 100000, &c->epochs)) ||
                         (r = cli_flag_double(argc, argv, &i, "--lr", 0.0, 1.0, &c->lr)) ||
                         (r = cli_flag_double(argc, argv, &i, "--wd", 0.0, 1.0, &c->wd)) ||
                         (r = cli_flag_int(argc, argv, &i, "--seed", 0, INT64_MAX, &c->seed)) ||
                         (r = cli_flag_int(argc, argv, &i, "--train-limit", 1, 60000, &c->train_limit)) ||
                         (r = cli_flag_bool(argv, i, "--sgd", &c->sgd)) ||
                         (r = cli_flag_bool(argv, i, "--no-decoder-ln", &c->no_decoder_ln)) ||
                         (r = cli_flag_bool(argv, i, "--checkpoint", &c->checkpoint)) ||
                         (r = cli_flag_bool(argv, i, "--timing", &c->timing)) ||
                         (r = cli_flag_bool(argv, i, "--resume", &c->resume)))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        const char *flag = argv[i];
        const int takes = !strcmp(flag, "--out") || !strcmp(flag, "--data") || !strcmp(flag, "--device") ||
                          (!is_eval && (!strcmp(flag, "--layer") || !strcmp(flag, "--tokens") || !strcmp(flag, "--pos") ||
                                        !strcmp(flag, "--cuda-graph")));
        if (!takes) return cli_unknown(cmd, flag);
        if (i + 1 >= argc) {
            fprintf(stderr, "ttt %s: %s needs a value\n", cmd, flag);
            return EXIT_USAGE;
        }
        const char *v = argv[++i];
        if (!strcmp(flag, "--out")) c->out = v;
        else if (!strcmp(flag, "--data")) c->data = v;
        else if (!strcmp(flag, "--cuda-graph")) {
            c->cuda_graph = !strcmp(v, "on") ? 1 : !strcmp(v, "off") ? 0 : -2;
            if (c->cuda_graph == -2) {
                fprintf(stderr, "ttt %s: --cuda-graph %s: expected on or off\n", cmd, v);
                return EXIT_USAGE;
            }
        }
        else if (!strcmp(flag, "--device")) {
            c->device = !strcmp(v, "auto") ? -1 : !strcmp(v, "cpu") ? TTT_CPU : !strcmp(v, "cuda") ? TTT_CUDA : -2;
            if (c->device == -2) {
                fprintf(stderr, "ttt %s: --device %s: expected auto, cpu or cuda\n", cmd, v);
                return EXIT_USAGE;
            }
        } else if (!strcmp(flag, "--layer")) {
            if ((c->layer = layer_index(v)) < 0) {
                fprintf(stderr, "ttt %s: --layer %s: expected attention, linear-attention, linear-attention-elu, "
                                "mttt-linear, mttt-kernel or mttt-mlp\n", cmd, v);
                return EXIT_USAGE;
            }
        } else if (!strcmp(flag, "--tokens")) {
            if ((c->tokens = tokens_index(v)) < 0) {
                fprintf(stderr, "ttt %s: --tokens %s: expected patch4, patch7 or pixels\n", cmd, v);
                return EXIT_USAGE;
            }
        } else if ((c->pos = lookup(v, 2, POS)) < 0) {
            fprintf(stderr, "ttt %s: --pos %s: expected learned or sincos\n", cmd, v);
            return EXIT_USAGE;
        }
    }
    if (c->out && strlen(c->out) > 4000) {
        fprintf(stderr, "ttt %s: --out: the path is too long\n", cmd);
        return EXIT_USAGE;
    }
    if (is_eval) {
        if (!c->out) {
            fprintf(stderr, "ttt vision eval: --out DIR is required (the directory of a training run)\n");
            return EXIT_USAGE;
        }
    } else {
        const char *bad = NULL;
        if (!layer_has_inner_loop(c->layer) &&
            (has_flag(argc, argv, "--inner-steps") || has_flag(argc, argv, "--sgd") || has_flag(argc, argv, "--eta")))
            bad = "--inner-steps, --sgd and --eta apply only to mttt-linear and mttt-mlp";
        else if (c->no_decoder_ln && c->layer != LAYER_MTTT_MLP)
            bad = "--no-decoder-ln applies only to mttt-mlp";
        else if (c->upsample > 1 && TOKENS[c->tokens].patch != 0) bad = "--upsample applies only to --tokens pixels";
        else if (c->dim % c->heads) bad = "--dim must be divisible by --heads";
        else if (c->pos == TTT_VIT_POS_SINCOS && c->dim % 4) bad = "--pos sincos needs --dim divisible by 4";
        else if (c->resume && !c->out) bad = "--resume needs --out DIR (the run to continue)";
        if (bad) {
            fprintf(stderr, "ttt vision train: %s\n", bad);
            return EXIT_USAGE;
        }
        if (!layer_has_inner_loop(c->layer)) { /* recorded as such in the config */
            c->inner_steps = 0;
            c->sgd = 0;
            c->eta = 0;
        }
        if (!c->out) {
            char up[32] = "", steps[32] = "";
            if (c->upsample > 1) snprintf(up, sizeof up, "-up%lld", (long long)c->upsample);
            if (layer_has_inner_loop(c->layer)) snprintf(steps, sizeof steps, "-T%lld", (long long)c->inner_steps);
            snprintf(outbuf, outn, "runs/%s%s%s%s-%s%s", LAYERS[c->layer].name, steps, c->sgd ? "-sgd" : "",
                     c->no_decoder_ln ? "-nodecln" : "", TOKENS[c->tokens].name, up);
            c->out = outbuf;
        }
    }
    if (c->device < 0) c->device = ttt_device_count(TTT_CUDA) > 0 ? TTT_CUDA : TTT_CPU;
    if (!is_eval && c->cuda_graph == 1 && (c->device != TTT_CUDA || c->sgd)) {
        fprintf(stderr, "ttt vision train: --cuda-graph on needs --device cuda and batch GD (%s)\n",
                c->sgd ? "--sgd draws a new mini-batch split on the host every step, which a replay cannot"
                       : "graphs are a CUDA feature");
        return EXIT_USAGE;
    }
    if (c->cuda_graph < 0) c->cuda_graph = !is_eval && c->device == TTT_CUDA && !c->sgd ? -1 : 0;
    return -1;
}

int cmd_vision(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const int is_eval = !strcmp(argv[1], "eval");
    if (!is_eval && strcmp(argv[1], "train")) {
        fprintf(stderr, "ttt vision: unknown subcommand '%s' (train or eval)\n", argv[1]);
        return EXIT_USAGE;
    }
    vision_cfg c = {.layer = LAYER_MTTT_MLP, .tokens = 0, .pos = TTT_VIT_POS_LEARNED, .inner_steps = 1,
                    .upsample = 1, .dim = 64, .depth = 4, .heads = 4, .epochs = 10, .batch = 128, .seed = 1,
                    .eta = 1.0, .lr = 1e-3, .wd = 1e-4, .device = -1, .data = TTT_FASHION_MNIST_DIR,
                    .cuda_graph = -1};
    if (is_eval) c.batch = 0; /* 0: the training batch */
    char outbuf[256];
    int r = parse(argc, argv, is_eval, &c, outbuf, sizeof outbuf);
    if (r >= 0) return r;
    return is_eval ? eval_cmd(&c) : train(&c);
}
