/* ttt vision: train and evaluate ViT classifiers on Fashion-MNIST with MTTT
 * or attention sequence layers (SPEC §1; docs/vision.md).
 *
 *   ttt vision train [flags]   writes OUT/metrics.jsonl and OUT/checkpoint.safetensors
 *   ttt vision eval --out OUT  test loss / accuracy of the saved model
 *
 * Training runs on the library's runner (include/ttt/train.h): this file
 * supplies the batch source (an epoch's order, a pure function of (seed,
 * epoch)), the loss, the epoch's tallies and its printing. Resuming is
 * bit-exact, also from a checkpoint written inside an epoch (SIGINT / SIGTERM).
 *
 * On CUDA, the runner records a full batch's forward, loss and backward once as
 * a CUDA graph and replays it (--cuda-graph; include/ttt/graph.h); clipping
 * and AdamW run outside it, since their learning rate and step count change
 * every step. Replays compute exactly what the recorded ops compute, so runs
 * with and without graphs agree. */
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
#include "ttt/train.h"
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
    int tf32;       /* CUDA: f32 products on the tensor cores (TF32 matmuls, split-bf16 MTTT-MLP kernels) */
    int cuda_graph; /* -1 auto (on for CUDA unless --sgd), 0 off, 1 on */
    int timing;     /* print where a training step's time goes, per epoch */
} vision_cfg;

/* "key=value key=value ...": the stored form of the model/training part. */
static void config_format(const vision_cfg *c, char *buf, size_t n) {
    char eta[32], lr[32], wd[32];
    ttt_format_double(eta, sizeof eta, c->eta);
    ttt_format_double(lr, sizeof lr, c->lr);
    ttt_format_double(wd, sizeof wd, c->wd);
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
        long long x = ttt_kv_get(s, ints[i], v, sizeof v) ? strtoll(v, &end, 10) : -1;
        if (x < 0 || errno || *end) return snprintf(err, errn, "bad or missing %s", ints[i]), 0;
        *iout[i] = x;
    }
    const char *bools[] = {"sgd", "no_decoder_ln"};
    int *bout[] = {&c->sgd, &c->no_decoder_ln};
    for (size_t i = 0; i < 2; i++) {
        if (!ttt_kv_get(s, bools[i], v, sizeof v) || (strcmp(v, "0") && strcmp(v, "1")))
            return snprintf(err, errn, "bad or missing %s", bools[i]), 0;
        *bout[i] = v[0] == '1';
    }
    const char *dbls[] = {"eta", "lr", "wd"};
    double *dout[] = {&c->eta, &c->lr, &c->wd};
    for (size_t i = 0; i < 3; i++) {
        double x = ttt_kv_get(s, dbls[i], v, sizeof v) ? strtod(v, &end) : NAN;
        if (!isfinite(x) || *end) return snprintf(err, errn, "bad or missing %s", dbls[i]), 0;
        *dout[i] = x;
    }
    if (!ttt_kv_get(s, "layer", v, sizeof v) || (c->layer = layer_index(v)) < 0)
        return snprintf(err, errn, "bad or missing layer"), 0;
    if (!ttt_kv_get(s, "tokens", v, sizeof v) || (c->tokens = tokens_index(v)) < 0)
        return snprintf(err, errn, "bad or missing tokens"), 0;
    if (!ttt_kv_get(s, "pos", v, sizeof v) || (c->pos = lookup(v, 2, POS)) < 0)
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
                       double lv, ttt_tensor *logits, const double *il, tally *t) {
    const int T = (int)c->inner_steps;
    if (!logits) return TTT_ERR;
    float lg[64 * CLASSES];
    const int64_t K = CLASSES;
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
    const double lv = loss ? ttt_item(ctx, loss) : NAN;
    if (!isfinite(lv)) {
        if (!ttt_error(ctx)[0])
            fprintf(stderr, "ttt vision: the loss is not finite (%g); try a smaller --lr or --eta\n", lv);
        return TTT_ERR;
    }
    return tally_batch(ctx, c, s, idx, bs, lv, logits, o.inner_loss, t);
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

/* ---- progress ---------------------------------------------------------------------------------- */

typedef struct {
    int tty, shown;
} progress;

static void progress_end(progress *p) {
    if (p->tty && p->shown) fputs("\r\033[K", stderr);
    p->shown = 0;
}

/* ---- training ------------------------------------------------------------------------------------ */

static ttt_ctx *make_ctx(const vision_cfg *c) {
    ttt_ctx_config cc = {.device = (ttt_device)c->device, .seed = (uint64_t)c->seed, .threads = (int)c->threads,
                         .tf32 = c->tf32};
    ttt_ctx *ctx = ttt_ctx_new(&cc);
    if (!ctx)
        fprintf(stderr, "ttt vision: could not create a %s context: %s\n", c->device == TTT_CUDA ? "cuda" : "cpu",
                ttt_runtime_error());
    return ctx;
}

/* The ViT as the training runner sees it (include/ttt/train.h): one step is
 * one batch of the epoch's order; an epoch ends with an evaluation, a metrics
 * line and a checkpoint. Full batches go through persistent inputs, so the
 * runner can record the step as a CUDA graph and replay it; the last, smaller
 * batch of an epoch runs without. */
typedef struct {
    vision_cfg *c;
    char cfgstr[1024];
    split tr, te;
    ttt_ctx *ctx;
    ttt_vit m;
    int64_t *order, order_epoch; /* the training order of epoch order_epoch */
    int64_t steps_per_epoch, total_steps, warmup;
    /* the current batch */
    const int64_t *idx;
    int64_t bs;
    ttt_tensor *in_x, *in_y;       /* what the loss reads: the persistent inputs or this batch's temporaries */
    ttt_tensor *x_keep, *y_keep;   /* persistent inputs of full batches */
    ttt_tensor *logits_keep;       /* persistent copy of a recorded step's logits (read after replays) */
    ttt_tensor *logits_now;        /* an eager step's logits */
    double il[MAX_DEPTH * (TTT_MTTT_MAX_STEPS + 1)]; /* inner losses: written by ttt_item_into, also after replays */
    tally t;                       /* this epoch's training figures (stored in checkpoints) */
    progress pr;
    double epoch_t0;
    int64_t epoch_images; /* trained on by this process in this epoch (a resumed epoch is partly done) */
    int timing;
} vis_run;

static void run_free(vis_run *r) {
    if (r->ctx) {
        ttt_persistent_free(r->ctx, r->x_keep), ttt_persistent_free(r->ctx, r->y_keep);
        ttt_persistent_free(r->ctx, r->logits_keep);
        ttt_vit_free(r->ctx, &r->m);
    }
    ttt_ctx_free(r->ctx);
    free(r->order);
    split_free(&r->tr);
    split_free(&r->te);
}

static int vis_batch(ttt_ctx *ctx, void *user, const ttt_train_info *info, int64_t *items, int *graphable, char *err,
                     size_t err_len) {
    vis_run *r = user;
    const vision_cfg *c = r->c;
    const int64_t epoch = info->step / r->steps_per_epoch + 1, s = info->step % r->steps_per_epoch;
    if (r->order_epoch != epoch) {
        epoch_order((uint64_t)c->seed, epoch, r->tr.n, r->order);
        r->order_epoch = epoch;
    }
    if (s == 0) r->epoch_t0 = now_s(), r->epoch_images = 0;
    const int64_t b0 = s * c->batch;
    r->bs = r->tr.n - b0 < c->batch ? r->tr.n - b0 : c->batch;
    r->idx = r->order + b0;
    ttt_tensor *x = ttt_vision_tokens(ctx, &r->tr.images, r->idx, r->bs, TOKENS[c->tokens].patch, (int)c->upsample, TTT_F32);
    ttt_tensor *y = ttt_vision_labels(ctx, &r->tr.labels, r->idx, r->bs);
    if (!x || !y) return snprintf(err, err_len, "%s", ttt_error(ctx)), TTT_ERR;
    *items = r->bs;
    *graphable = r->bs == c->batch;
    r->in_x = x, r->in_y = y;
    if (*graphable) {
        if (!r->x_keep && (!(r->x_keep = ttt_persistent(ctx, TTT_F32, x->ndim, x->shape, "graph.tokens")) ||
                           !(r->y_keep = ttt_persistent(ctx, TTT_I32, y->ndim, y->shape, "graph.labels")) ||
                           !(r->logits_keep = ttt_persistent(ctx, TTT_F32, TTT_DIMS(c->batch, CLASSES), "graph.logits"))))
            return snprintf(err, err_len, "%s", ttt_error(ctx)), TTT_ERR;
        if (ttt_assign(ctx, r->x_keep, x) != TTT_OK || ttt_assign(ctx, r->y_keep, y) != TTT_OK)
            return snprintf(err, err_len, "%s", ttt_error(ctx)), TTT_ERR;
        r->in_x = r->x_keep, r->in_y = r->y_keep;
    }
    return TTT_OK;
}

static ttt_tensor *vis_loss(ttt_ctx *ctx, void *user, const ttt_train_info *info, ttt_tensor **aux) {
    (void)aux;
    vis_run *r = user;
    const vision_cfg *c = r->c;
    /* the seed steers only the --sgd split, which never runs as a graph */
    ttt_vit_run_opts o = {.seed = step_seed((uint64_t)c->seed, info->step), .checkpoint = c->checkpoint,
                          .inner_loss = layer_has_inner_loop(c->layer) ? r->il : NULL};
    ttt_tensor *logits = ttt_vit_forward(ctx, &r->m, r->in_x, &o);
    ttt_tensor *loss = ttt_cross_entropy(ctx, logits, r->in_y, -100);
    if (info->recording && loss && ttt_assign(ctx, r->logits_keep, logits) != TTT_OK) return NULL;
    r->logits_now = logits;
    return loss;
}

static int vis_after_micro(ttt_ctx *ctx, void *user, const ttt_train_info *info, double loss, const double *aux) {
    (void)aux;
    vis_run *r = user;
    r->epoch_images += r->bs;
    return tally_batch(ctx, r->c, &r->tr, r->idx, r->bs, loss, info->replayed ? r->logits_keep : r->logits_now,
                       layer_has_inner_loop(r->c->layer) ? r->il : NULL, &r->t);
}

/* The epoch's tallies, so a run stopped inside an epoch reports it whole. */
static int vis_state_save(void *user, int64_t step, char *buf, size_t n) {
    (void)step;
    const vis_run *r = user;
    char v[40];
    ttt_format_double(v, sizeof v, r->t.loss_sum);
    int u = snprintf(buf, n, "correct=%lld seen=%lld loss_sum=%s inner=", (long long)r->t.correct, (long long)r->t.seen, v);
    for (int j = 0; j <= TTT_MTTT_MAX_STEPS && u < (int)n; j++) {
        ttt_format_double(v, sizeof v, r->t.inner_sum[j]);
        u += snprintf(buf + u, n - (size_t)u, "%s%s", j ? "," : "", v);
    }
    return u < (int)n ? TTT_OK : TTT_ERR;
}

static int vis_state_load(void *user, int64_t step, const char *state, char *err, size_t err_len) {
    (void)step;
    vis_run *r = user;
    r->t = (tally){0};
    if (!state) return TTT_OK; /* a checkpoint at an epoch's end: nothing pending */
    char v[1024], *end;
    int ok = ttt_kv_get(state, "correct", v, sizeof v) && (r->t.correct = atoll(v)) >= 0 &&
             ttt_kv_get(state, "seen", v, sizeof v) && (r->t.seen = atoll(v)) >= 0 &&
             ttt_kv_get(state, "loss_sum", v, sizeof v) && (r->t.loss_sum = strtod(v, &end), !*end) &&
             ttt_kv_get(state, "inner", v, sizeof v);
    const char *p = v;
    for (int j = 0; ok && j <= TTT_MTTT_MAX_STEPS; j++) {
        r->t.inner_sum[j] = strtod(p, &end);
        ok = end != p && (*end == ',' || (!*end && j == TTT_MTTT_MAX_STEPS));
        p = end + 1;
    }
    if (!ok) snprintf(err, err_len, "bad model_state metadata '%s'", state);
    return ok ? TTT_OK : TTT_ERR;
}

static int vis_want_log(void *user, int64_t step) {
    const vis_run *r = user;
    return step % r->steps_per_epoch == 0 || step == r->total_steps;
}

static void json_num(char *buf, size_t n, size_t *u, const char *key, double v) {
    char s[40];
    ttt_json_number(s, sizeof s, v);
    *u += (size_t)snprintf(buf + *u, *u < n ? n - *u : 0, ", \"%s\": %s", key, s);
}

static void json_array(char *buf, size_t n, size_t *u, const char *key, const double *v, int k) {
    *u += (size_t)snprintf(buf + *u, *u < n ? n - *u : 0, ", \"%s\": %s", key, k > 0 ? "[" : "null");
    for (int i = 0; i < k; i++) {
        char s[40];
        ttt_json_number(s, sizeof s, v[i]);
        *u += (size_t)snprintf(buf + *u, *u < n ? n - *u : 0, "%s%s", i ? ", " : "", s);
    }
    if (k > 0) *u += (size_t)snprintf(buf + *u, *u < n ? n - *u : 0, "]");
}

/* An epoch's end: evaluate, print the epoch line, and make its metrics line. */
static int vis_log_line(ttt_ctx *ctx, void *user, const ttt_train_stats *st, char *buf, size_t n, char *err,
                        size_t err_len) {
    vis_run *r = user;
    const vision_cfg *c = r->c;
    const int64_t epoch = (st->step + r->steps_per_epoch - 1) / r->steps_per_epoch;
    eval_result trr, ter;
    tally_result(c, &r->t, &trr);
    trr.seconds = now_s() - r->epoch_t0;
    progress_end(&r->pr);
    if (evaluate(ctx, &r->m, c, &r->te, &ter) != TTT_OK) {
        snprintf(err, err_len, "epoch %lld: evaluation: %s", (long long)epoch, ttt_error(ctx)[0] ? ttt_error(ctx) : "failed");
        return TTT_ERR;
    }
    const double ips = (double)r->epoch_images / trr.seconds;
    printf("epoch %lld/%lld  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.0f img/s  %.1f s", (long long)epoch,
           (long long)c->epochs, trr.loss, 100 * trr.acc, ter.loss, 100 * ter.acc, ips, trr.seconds);
    if (ter.n_inner) printf("  inner %.4f -> %.4f", ter.inner[0], ter.inner[ter.n_inner - 1]);
    printf("\n");
    if (r->timing && st->phase_steps) {
        printf("  ms per training step (%lld steps, %lld graph replays):", (long long)st->phase_steps, (long long)st->replays);
        for (int ph = 0; ph < 5; ph++) printf("  %s %.2f", ttt_train_phase_names[ph], 1e3 * st->phase_s[ph] / (double)st->phase_steps);
        printf("\n");
    }
    fflush(stdout);
    size_t u = (size_t)snprintf(buf, n, "{\"epoch\": %lld, \"step\": %lld", (long long)epoch, (long long)st->step);
    json_num(buf, n, &u, "train_loss", trr.loss);
    json_num(buf, n, &u, "train_acc", trr.acc);
    json_num(buf, n, &u, "test_loss", ter.loss);
    json_num(buf, n, &u, "test_acc", ter.acc);
    json_num(buf, n, &u, "lr", st->lr);
    json_array(buf, n, &u, "inner_loss", ter.inner, ter.n_inner);
    json_array(buf, n, &u, "train_inner_loss", trr.inner, trr.n_inner);
    json_num(buf, n, &u, "images_per_s", ips);
    json_num(buf, n, &u, "seconds", trr.seconds);
    json_num(buf, n, &u, "eval_seconds", ter.seconds);
    u += (size_t)snprintf(buf + u, u < n ? n - u : 0, "}");
    r->t = (tally){0}; /* the next epoch */
    r->epoch_images = 0;
    return u < n ? TTT_OK : TTT_ERR;
}

/* Every 2 s inside an epoch: \r-overwritten on a terminal, one per line otherwise. */
static void vis_progress(void *user, const ttt_train_stats *st, FILE *f) {
    vis_run *r = user;
    if (st->logged || !r->t.seen) return; /* the epoch line says it */
    const int64_t epoch = st->step / r->steps_per_epoch + 1, s = st->step % r->steps_per_epoch;
    fprintf(f, "%sepoch %lld/%lld  step %lld/%lld  %.0f img/s  loss %.4f  acc %.2f%%  ETA %dm%02ds%s",
            r->pr.tty ? "\r" : "", (long long)epoch, (long long)r->c->epochs, (long long)s, (long long)r->steps_per_epoch,
            st->items_per_s, r->t.loss_sum / (double)r->t.seen, 100.0 * (double)r->t.correct / (double)r->t.seen,
            (int)(st->eta_s / 60), (int)fmod(st->eta_s, 60), r->pr.tty ? "\033[K" : "\n");
    fflush(f);
    r->pr.shown = 1;
}

/* Data, context and model: everything is checked before the runner creates --out. -1 to go on, or an exit code. */
static int run_open(vision_cfg *c, vis_run *r) {
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
    if (ttt_vit_init(r->ctx, &r->m, &mc, TTT_F32) != TTT_OK) {
        fprintf(stderr, "ttt vision: %s\n", ttt_error(r->ctx));
        return EXIT_RUNTIME;
    }
    /* warmup: 1 epoch or 5% of the steps, whichever is shorter; then cosine to 0 */
    r->steps_per_epoch = (r->tr.n + c->batch - 1) / c->batch;
    r->total_steps = r->steps_per_epoch * c->epochs;
    const int64_t five = (r->total_steps + 19) / 20;
    r->warmup = five < r->steps_per_epoch ? five : r->steps_per_epoch;
    r->pr = (progress){.tty = isatty(STDERR_FILENO)};
    r->order_epoch = -1;
    r->timing = c->timing;
    r->epoch_t0 = now_s();
    return -1;
}

static void print_header(const vision_cfg *c, const vis_run *r, int64_t step) {
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
    if (c->device == TTT_CUDA)
        printf("  f32 products: %s\n", c->tf32 ? "tensor cores (--tf32: TF32 matmuls, split-bf16 MTTT-MLP kernels)"
                                                 : "f32 FMA (add --tf32 for the tensor cores)");
    if (c->resume)
        printf("  resuming after epoch %lld (step %lld)\n", (long long)(step / r->steps_per_epoch), (long long)step);
    fflush(stdout);
}

static int train(vision_cfg *c) {
    vis_run r = {.c = c};
    int code = run_open(c, &r);
    if (code >= 0) {
        run_free(&r);
        return code;
    }
    const ttt_train_model model = {
        .name = "vit", .n_params = r.m.n_params, .params = r.m.params, .param_names = (const char *const *)r.m.names,
        .decay = r.m.decay, .user = &r, .batch = vis_batch, .loss = vis_loss, .after_micro = vis_after_micro,
        .state_save = vis_state_save, .state_load = vis_state_load, .graph_ok = !c->sgd};
    char seed[32];
    snprintf(seed, sizeof seed, "%lld", (long long)c->seed);
    const char *meta[] = {"format", "ttt-vision/1", "config", r.cfgstr, "seed", seed, NULL};
    const char *match[] = {"format", "config", NULL};
    const ttt_train_config tc = {
        .dir = c->out, .checkpoint_name = "checkpoint.safetensors", .resume = c->resume,
        .optim = {.beta1 = 0.9, .beta2 = 0.999}, .lr = c->lr, .min_lr = 0, .warmup = r.warmup, .steps = r.total_steps,
        .accum = 1, .clip = 1.0, .seed = (uint64_t)c->seed, .cuda_graph = c->cuda_graph,
        .save_every = r.steps_per_epoch, .meta = meta, .match = match, .want_log = vis_want_log,
        .log_line = vis_log_line, .progress_line = vis_progress, .progress = stderr, .progress_every_s = 2,
        .item_unit = "img", .user = &r};
    char err[4096];
    ttt_trainer *t = NULL;
    int rc = ttt_train_open(r.ctx, &model, &tc, &t, err, sizeof err);
    if (rc != TTT_OK) {
        if (rc == TTT_TRAIN_EXISTS)
            fprintf(stderr, "ttt vision: %s already holds a run; pass --resume to continue it, or choose another --out "
                            "(or delete the directory)\n", c->out);
        else fprintf(stderr, "ttt vision: %s%s\n", rc == TTT_TRAIN_MISMATCH ? "--resume: " : "", err);
        run_free(&r);
        return rc == TTT_TRAIN_EXISTS || rc == TTT_TRAIN_MISMATCH ? EXIT_USAGE : EXIT_RUNTIME;
    }
    print_header(c, &r, ttt_train_step(t));
    if (ttt_train_step(t) >= r.total_steps) printf("  all %lld epochs are done\n", (long long)c->epochs);
    ttt_train_install_signal_handlers();
    rc = ttt_train_run(t, err, sizeof err);
    progress_end(&r.pr);
    const int64_t step = ttt_train_step(t);
    if (rc == TTT_TRAIN_STOPPED)
        fprintf(stderr, "stopped at step %lld (epoch %lld, %lld of its %lld steps done) with a checkpoint in %s; to "
                        "continue, run the same command with --resume\n", (long long)step,
                (long long)(step / r.steps_per_epoch + 1), (long long)(step % r.steps_per_epoch),
                (long long)r.steps_per_epoch, ttt_train_checkpoint_path(t));
    else if (rc != TTT_OK)
        fprintf(stderr, "ttt vision: %s%s\n", err, strstr(err, "not finite") ? " (try a smaller --lr or --eta)" : "");
    ttt_train_close(t);
    run_free(&r);
    return rc == TTT_OK ? 0 : rc == TTT_TRAIN_STOPPED ? 130 : EXIT_RUNTIME;
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
    char *json = ctx ? ttt_checkpoint_metadata(ctx, ckpt) : NULL;
    int64_t epoch = 0, step = 0, batch = c->batch;
    int exit_code = EXIT_RUNTIME;
    if (!json) {
        if (ctx) fprintf(stderr, "ttt vision eval: %s\n", ttt_error(ctx));
        goto out;
    }
    if (ttt_metadata_get(json, "config", cfgstr, sizeof cfgstr) != TTT_OK || ttt_metadata_int(json, "step", &step) ||
        !config_parse(cfgstr, c, err, sizeof err)) {
        fprintf(stderr, "ttt vision eval: %s: not a ttt vision checkpoint (config metadata: %s)\n", ckpt,
                ttt_metadata_get(json, "config", cfgstr, sizeof cfgstr) == TTT_OK ? err : "missing");
        goto out;
    }
    /* finished epochs: older checkpoints store them, newer ones the step (a stop can fall inside an epoch) */
    if (ttt_metadata_int(json, "epoch", &epoch) != TTT_OK) epoch = step / ((c->train_limit + c->batch - 1) / c->batch);
    if (batch > 0) c->batch = batch; /* --batch only changes the evaluation batch */
    ttt_vit_config mc = model_config(c);
    char lerr[512];
    if (ttt_vit_init(ctx, &m, &mc, TTT_F32) != TTT_OK) {
        fprintf(stderr, "ttt vision eval: %s\n", ttt_error(ctx));
        goto out;
    }
    if (ttt_checkpoint_load_params(ctx, ckpt, m.n_params, m.params, (const char *const *)m.names, NULL, lerr,
                                   sizeof lerr) != TTT_OK) {
        fprintf(stderr, "ttt vision eval: %s\n", lerr);
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
            "                    Ctrl-C or SIGTERM: the step finishes, a checkpoint is written, exit 130\n"
            "  --cuda-graph on|off   record forward + backward once as a CUDA graph and replay it (default on\n"
            "                    with --device cuda, except with --sgd; same results, fewer kernel launches)\n"
            "  --timing          print where a training step's time goes, per epoch\n"
            "both:\n"
            "  --data DIR        Fashion-MNIST IDX files (default %s)\n"
            "  --device D        auto (cuda if present) | cpu | cuda (default auto)\n"
            "  --threads N       CPU threads (default: OpenMP's)\n"
            "  --tf32            CUDA: f32 products on the tensor cores: cuBLAS's TF32 matmuls (10-bit mantissa\n"
            "                    inputs) and the MTTT-MLP kernels' split-bf16 products (~2^-16 relative); default\n"
            "                    off (f32 FMA throughout)\n"
            "eval: --out DIR, --data, --test-limit, --batch (evaluation batch), --device, --threads, --tf32.\n"
            "exit codes: 0 ok, 1 runtime failure, 2 bad usage, 130 train stopped by SIGINT / SIGTERM\n",
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
            (r = cli_flag_int(argc, argv, &i, "--threads", 0, 1024, &c->threads)) ||
            (r = cli_flag_bool(argv, i, "--tf32", &c->tf32))) {
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
