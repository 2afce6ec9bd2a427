/* ttt lm: the Transformer language model (include/ttt/lm.h) on token shards.
 *   train     AdamW + warmup/cosine + clipping + accumulation; atomic checkpoints; bit-exact --resume
 *   eval      loss by token position on long documents (the long-context curve), perplexity
 *   generate  sampling with a KV cache (a ring buffer under a sliding window)
 * docs/lm.md has examples and the checkpoint layout. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "ttt/backend.h"
#include "ttt/ttt.h"
#include "ttt/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ttt lm train --data SHARD --out DIR [flags]\n"
            "       ttt lm eval --ckpt DIR|FILE --data SHARD [flags]\n"
            "       ttt lm generate --ckpt DIR|FILE --tokenizer PATH --prompt TEXT [flags]\n"
            "\n"
            "train (model flags are stored in the checkpoint; --resume must repeat the same flags):\n"
            "  --data SHARD        training tokens (ttt data prepare); the vocabulary size comes from it\n"
            "  --val SHARD         held-out tokens: validation loss every --eval-every steps\n"
            "  --preset P          tiny | small | 125m (default tiny); then, optionally:\n"
            "  --dim D --depth N --heads H --mlp-hidden F --prime-blocks N --rope-theta X\n"
            "  --window K          0: full causal attention (default); K > 0: sliding window of K tokens\n"
            "  --seq-len T         tokens per sequence (default 256)\n"
            "  --batch B           sequences per micro-batch (default 8)\n"
            "  --grad-accum N      micro-batches per optimizer step (default 1)\n"
            "  --steps S           optimizer steps (default 200)\n"
            "  --lr LR             AdamW peak lr (default 3e-4), betas 0.9 / --beta2 (0.95)\n"
            "  --min-lr LR         cosine floor (default lr / 10)\n"
            "  --warmup N          linear warmup steps (default 5%% of steps)\n"
            "  --weight-decay W    on 2-d weights (default 0.1)     --clip C   global norm (default 1.0)\n"
            "  --seed S            init and batches (default 1)\n"
            "  --out DIR           DIR/model.safetensors (atomic, every --save-every steps and at the end),\n"
            "                      DIR/metrics.jsonl (every --log-every steps)\n"
            "  --resume            continue DIR's run; the result is bit-identical to an uninterrupted run\n"
            "  --peak-tflops X     for the MFU column (default 989: H100 dense bf16)\n"
            "eval:\n"
            "  --ckpt DIR|FILE     a checkpoint of train\n"
            "  --data SHARD        documents; each is read from its start\n"
            "  --context C         tokens per document (default 2048); documents shorter than C + 1 are\n"
            "                      skipped\n"
            "  --max-docs N        at most N documents (default all)\n"
            "  --out FILE          JSONL: one row per position bucket (powers of two), then a summary row\n"
            "generate:\n"
            "  --ckpt, --tokenizer PATH (folder with vocab.json + merges.txt, or tokenizer.json), --prompt TEXT\n"
            "  --tokens N (default 100), --temperature T (default 0.8; 0 = greedy), --top-k K (default 0 = off),\n"
            "  --top-p P (default 1 = off), --seed S\n"
            "all: --device auto|cpu|cuda (default auto), --dtype f32|f64 (default f32), --threads N\n"
            "exit codes: 0 ok, 1 runtime failure, 2 bad usage\n");
}

/* ---- options --------------------------------------------------------------------------------- */

typedef struct {
    const char *data, *val, *out, *preset, *ckpt, *tokenizer, *prompt, *eval_out, *device, *dtype;
    int64_t dim, depth, heads, mlp_hidden, prime_blocks, window, seq, batch, accum, steps, warmup, seed, save_every,
        log_every, eval_every, eval_batches, context, max_docs, tokens, top_k, threads;
    double rope_theta, lr, min_lr, wd, beta2, clip, peak, temperature, top_p;
    int resume;
} opts;

static int parse(int argc, char **argv, const char *sub, opts *o) {
    *o = (opts){.preset = "tiny", .device = "auto", .dtype = "f32", .dim = -1, .depth = -1, .heads = -1,
                .mlp_hidden = -1, .seq = 256, .batch = 8, .accum = 1, .steps = 200, .warmup = -1, .seed = 1,
                .save_every = 100, .log_every = 10, .eval_every = 100, .eval_batches = 4, .context = 2048,
                .tokens = 100, .lr = 3e-4, .min_lr = -1, .wd = 0.1, .beta2 = 0.95, .clip = 1.0, .peak = 989,
                .temperature = 0.8, .top_p = 1.0};
    const int64_t BIG = (int64_t)1 << 40;
    for (int i = 2; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout), -1;
        if ((r = cli_flag_str(argc, argv, &i, "--data", &o->data)) || (r = cli_flag_str(argc, argv, &i, "--val", &o->val)) ||
            (r = cli_flag_str(argc, argv, &i, "--out", &o->out)) || (r = cli_flag_str(argc, argv, &i, "--preset", &o->preset)) ||
            (r = cli_flag_str(argc, argv, &i, "--ckpt", &o->ckpt)) ||
            (r = cli_flag_str(argc, argv, &i, "--tokenizer", &o->tokenizer)) ||
            (r = cli_flag_str(argc, argv, &i, "--prompt", &o->prompt)) ||
            (r = cli_flag_str(argc, argv, &i, "--device", &o->device)) || (r = cli_flag_str(argc, argv, &i, "--dtype", &o->dtype)) ||
            (r = cli_flag_int(argc, argv, &i, "--dim", 2, 65536, &o->dim)) ||
            (r = cli_flag_int(argc, argv, &i, "--depth", 1, 1024, &o->depth)) ||
            (r = cli_flag_int(argc, argv, &i, "--heads", 1, 65536, &o->heads)) ||
            (r = cli_flag_int(argc, argv, &i, "--mlp-hidden", 1, 1 << 20, &o->mlp_hidden)) ||
            (r = cli_flag_int(argc, argv, &i, "--prime-blocks", 0, 1024, &o->prime_blocks)) ||
            (r = cli_flag_int(argc, argv, &i, "--window", 0, BIG, &o->window)) ||
            (r = cli_flag_int(argc, argv, &i, "--seq-len", 1, 1 << 24, &o->seq)) ||
            (r = cli_flag_int(argc, argv, &i, "--batch", 1, 1 << 20, &o->batch)) ||
            (r = cli_flag_int(argc, argv, &i, "--grad-accum", 1, 1 << 20, &o->accum)) ||
            (r = cli_flag_int(argc, argv, &i, "--steps", 1, BIG, &o->steps)) ||
            (r = cli_flag_int(argc, argv, &i, "--warmup", 0, BIG, &o->warmup)) ||
            (r = cli_flag_int(argc, argv, &i, "--seed", 0, INT64_MAX, &o->seed)) ||
            (r = cli_flag_int(argc, argv, &i, "--save-every", 1, BIG, &o->save_every)) ||
            (r = cli_flag_int(argc, argv, &i, "--log-every", 1, BIG, &o->log_every)) ||
            (r = cli_flag_int(argc, argv, &i, "--eval-every", 1, BIG, &o->eval_every)) ||
            (r = cli_flag_int(argc, argv, &i, "--eval-batches", 1, 1 << 20, &o->eval_batches)) ||
            (r = cli_flag_int(argc, argv, &i, "--context", 1, 1 << 24, &o->context)) ||
            (r = cli_flag_int(argc, argv, &i, "--max-docs", 1, BIG, &o->max_docs)) ||
            (r = cli_flag_int(argc, argv, &i, "--tokens", 0, 1 << 24, &o->tokens)) ||
            (r = cli_flag_int(argc, argv, &i, "--top-k", 0, 1 << 30, &o->top_k)) ||
            (r = cli_flag_int(argc, argv, &i, "--threads", 0, 4096, &o->threads)) ||
            (r = cli_flag_double(argc, argv, &i, "--rope-theta", 1.0001, 1e12, &o->rope_theta)) ||
            (r = cli_flag_double(argc, argv, &i, "--lr", 0, 10, &o->lr)) ||
            (r = cli_flag_double(argc, argv, &i, "--min-lr", 0, 10, &o->min_lr)) ||
            (r = cli_flag_double(argc, argv, &i, "--weight-decay", 0, 10, &o->wd)) ||
            (r = cli_flag_double(argc, argv, &i, "--beta2", 0, 0.999999, &o->beta2)) ||
            (r = cli_flag_double(argc, argv, &i, "--clip", 0, 1e9, &o->clip)) ||
            (r = cli_flag_double(argc, argv, &i, "--peak-tflops", 1e-3, 1e6, &o->peak)) ||
            (r = cli_flag_double(argc, argv, &i, "--temperature", 0, 100, &o->temperature)) ||
            (r = cli_flag_double(argc, argv, &i, "--top-p", 1e-6, 1, &o->top_p)) ||
            (r = cli_flag_bool(argv, i, "--resume", &o->resume))) {
            if (r < 0) return 2;
            continue;
        }
        char cmd[32];
        snprintf(cmd, sizeof cmd, "lm %s", sub);
        return cli_unknown(cmd, argv[i]);
    }
    if (!strcmp(sub, "eval") && o->out) o->eval_out = o->out;
    if (strcmp(o->device, "auto") && strcmp(o->device, "cpu") && strcmp(o->device, "cuda")) {
        fprintf(stderr, "ttt lm: --device %s: expected auto, cpu or cuda\n", o->device);
        return 2;
    }
    if (strcmp(o->dtype, "f32") && strcmp(o->dtype, "f64")) {
        fprintf(stderr, "ttt lm: --dtype %s: expected f32 or f64\n", o->dtype);
        return 2;
    }
    return 0;
}

static ttt_ctx *make_ctx(const opts *o) {
    ttt_device dev = TTT_CPU;
    if (!strcmp(o->device, "cuda") || (!strcmp(o->device, "auto") && ttt_backend_for(TTT_CUDA))) dev = TTT_CUDA;
    ttt_ctx_config cc = {.device = dev, .seed = (uint64_t)o->seed, .threads = (int)o->threads};
    ttt_ctx *ctx = ttt_ctx_new(&cc);
    if (!ctx)
        fprintf(stderr, "ttt lm: could not create a %s context: %s\n", dev == TTT_CUDA ? "cuda" : "cpu",
                ttt_backend_last_error());
    return ctx;
}

static ttt_dtype dtype_of(const opts *o) { return strcmp(o->dtype, "f64") ? TTT_F32 : TTT_F64; }

/* ---- checkpoint metadata --------------------------------------------------------------------- */

static const char *const MODEL_KEYS[] = {"vocab", "dim", "depth", "heads", "mlp_hidden", "window", "prime_blocks",
                                         "prime_hidden", "qk_norm"};

static int64_t *model_field(ttt_lm_config *c, int i) {
    int64_t *f[] = {&c->vocab, &c->dim, &c->depth, &c->heads, &c->mlp_hidden, &c->window, &c->prime_blocks, &c->prime_hidden};
    return i < 8 ? f[i] : NULL;
}

/* "key=value ..." of the model, then of the training settings that --resume must repeat. */
static void describe(const ttt_lm_config *c, const opts *o, char *model, size_t mn, char *train, size_t tn) {
    snprintf(model, mn, "vocab=%lld dim=%lld depth=%lld heads=%lld mlp_hidden=%lld window=%lld prime_blocks=%lld "
                        "prime_hidden=%lld qk_norm=%d rope_theta=%.10g norm_eps=%.10g",
             (long long)c->vocab, (long long)c->dim, (long long)c->depth, (long long)c->heads, (long long)c->mlp_hidden,
             (long long)c->window, (long long)c->prime_blocks, (long long)c->prime_hidden, c->qk_norm, c->rope_theta,
             c->norm_eps);
    if (train)
        snprintf(train, tn, "seq=%lld batch=%lld accum=%lld steps=%lld warmup=%lld lr=%.10g min_lr=%.10g wd=%.10g "
                            "beta2=%.10g clip=%.10g seed=%lld dtype=%s",
                 (long long)o->seq, (long long)o->batch, (long long)o->accum, (long long)o->steps, (long long)o->warmup,
                 o->lr, o->min_lr, o->wd, o->beta2, o->clip, (long long)o->seed, o->dtype);
}

/* Rebuild a model config from the "model" metadata string. */
static int parse_model(const char *s, ttt_lm_config *c) {
    ttt_lm_preset("tiny", 2, c, NULL, 0);
    for (int i = 0; i < 9; i++) {
        char key[32];
        snprintf(key, sizeof key, "%s=", MODEL_KEYS[i]);
        const char *p = strstr(s, key);
        if (!p) return -1;
        long long v = atoll(p + strlen(key));
        if (i < 8) *model_field(c, i) = v;
        else c->qk_norm = (int)v;
    }
    const char *p = strstr(s, "rope_theta="), *q = strstr(s, "norm_eps=");
    if (!p || !q) return -1;
    c->rope_theta = atof(p + 11);
    c->norm_eps = atof(q + 9);
    return 0;
}

static void ckpt_path(const char *arg, char *buf, size_t n) {
    struct stat st;
    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(buf, n, "%s/model.safetensors", arg);
    else snprintf(buf, n, "%s", arg);
}

/* Loads the model of a checkpoint (config from its metadata). */
static int load_model(ttt_ctx *ctx, const opts *o, ttt_lm *m, int64_t *step) {
    char path[4200], model[1024], buf[64];
    ckpt_path(o->ckpt, path, sizeof path);
    char *json = NULL;
    ttt_named_tensor none = {0};
    if (ttt_load_safetensors(ctx, path, 0, &none, &json) != TTT_OK) {
        fprintf(stderr, "ttt lm: %s\n", ttt_error(ctx));
        return 1;
    }
    ttt_lm_config c;
    if (!json || ttt_metadata_get(json, "model", model, sizeof model) != TTT_OK || parse_model(model, &c)) {
        fprintf(stderr, "ttt lm: %s: no model metadata: not a ttt lm checkpoint\n", path);
        free(json);
        return 1;
    }
    if (step) *step = ttt_metadata_get(json, "step", buf, sizeof buf) == TTT_OK ? atoll(buf) : 0;
    free(json);
    if (ttt_lm_init(ctx, m, &c, dtype_of(o)) != TTT_OK) {
        fprintf(stderr, "ttt lm: %s: %s\n", path, ttt_error(ctx));
        return 1;
    }
    ttt_named_tensor *nt = calloc((size_t)m->n_params, sizeof *nt);
    for (int i = 0; nt && i < m->n_params; i++) nt[i] = (ttt_named_tensor){m->names[i], m->params[i]};
    int rc = nt && ttt_load_safetensors(ctx, path, m->n_params, nt, NULL) == TTT_OK ? 0 : 1;
    if (rc) fprintf(stderr, "ttt lm: %s\n", nt ? ttt_error(ctx) : "out of memory");
    free(nt);
    return rc;
}

/* ---- train ------------------------------------------------------------------------------------- */

typedef struct {
    ttt_named_tensor *t;
    char **owned;
    int n, n_owned;
} named_list;

static void named_free(named_list *l) {
    for (int i = 0; i < l->n_owned; i++) free(l->owned[i]);
    free(l->owned);
    free(l->t);
}

/* parameters, then AdamW moments as optim.m.<name> / optim.v.<name> */
static int named_build(const ttt_lm *m, ttt_optimizer *opt, named_list *l) {
    int ns = 0;
    ttt_tensor *const *state = ttt_optimizer_state(opt, &ns);
    *l = (named_list){0};
    if (ns != 2 * m->n_params) return -1;
    l->t = calloc((size_t)(m->n_params + ns), sizeof *l->t);
    l->owned = calloc((size_t)ns, sizeof *l->owned);
    if (!l->t || !l->owned) return -1;
    for (int i = 0; i < m->n_params; i++) l->t[l->n++] = (ttt_named_tensor){m->names[i], m->params[i]};
    for (int i = 0; i < ns; i++) {
        const char *p = m->names[i % m->n_params];
        size_t len = strlen(p) + 16;
        if (!(l->owned[l->n_owned] = malloc(len))) return -1;
        snprintf(l->owned[l->n_owned], len, "optim.%s.%s", i < m->n_params ? "m" : "v", p);
        l->t[l->n++] = (ttt_named_tensor){l->owned[l->n_owned++], state[i]};
    }
    return 0;
}

/* Keep the metrics lines of steps <= step (a run killed after logging past its last checkpoint). */
static int metrics_truncate(const char *path, int64_t step) {
    FILE *in = fopen(path, "r");
    if (!in) return errno == ENOENT ? 0 : -1;
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out) return fclose(in), -1;
    char line[4096];
    long long s;
    while (fgets(line, sizeof line, in))
        if (sscanf(line, "{\"step\": %lld", &s) == 1 && s <= step) fputs(line, out);
    fclose(in);
    int ok = fflush(out) == 0 && fsync(fileno(out)) == 0;
    ok = fclose(out) == 0 && ok;
    return ok && rename(tmp, path) == 0 ? 0 : -1;
}

static double batch_loss(ttt_ctx *ctx, const ttt_lm *m, const ttt_shard *sh, uint64_t seed, int64_t index,
                         const opts *o, int32_t *ids, int32_t *tg, ttt_tensor **loss_out) {
    char err[512];
    if (ttt_shard_batch(sh, seed, index, o->batch, o->seq, ids, tg, err, sizeof err)) {
        fprintf(stderr, "ttt lm: %s\n", err);
        return NAN;
    }
    ttt_tensor *ti = ttt_from_host(ctx, TTT_I32, TTT_DIMS(o->batch, o->seq), ids);
    ttt_tensor *tt = ttt_from_host(ctx, TTT_I32, TTT_DIMS(o->batch, o->seq), tg);
    ttt_tensor *loss = ttt_lm_loss(ctx, m, ti, tt, NULL);
    if (loss_out) *loss_out = loss;
    return loss ? ttt_item(ctx, loss) : NAN;
}

static int train(opts *o) {
    if (!o->data || !o->out) {
        fprintf(stderr, "ttt lm train: needs --data and --out (see --help)\n");
        return 2;
    }
    if (o->min_lr < 0) o->min_lr = o->lr / 10;
    if (o->warmup < 0) o->warmup = o->steps / 20;
    char err[512];
    ttt_shard *sh = NULL, *val = NULL;
    if (ttt_shard_open(o->data, &sh, err, sizeof err) || (o->val && ttt_shard_open(o->val, &val, err, sizeof err))) {
        fprintf(stderr, "ttt lm train: %s\n", err);
        ttt_shard_close(sh);
        return 1;
    }
    ttt_lm_config c;
    if (ttt_lm_preset(o->preset, ttt_shard_vocab(sh), &c, err, sizeof err)) {
        fprintf(stderr, "ttt lm train: %s\n", err);
        ttt_shard_close(sh), ttt_shard_close(val);
        return 2;
    }
    if (o->dim > 0) c.dim = o->dim;
    if (o->depth > 0) c.depth = o->depth;
    if (o->heads > 0) c.heads = o->heads;
    if (o->mlp_hidden > 0) c.mlp_hidden = o->mlp_hidden;
    if (o->rope_theta > 0) c.rope_theta = o->rope_theta;
    c.window = o->window, c.prime_blocks = o->prime_blocks;
    if (val && ttt_shard_vocab(val) != c.vocab) {
        fprintf(stderr, "ttt lm train: --val has vocabulary %lld, --data %lld\n", (long long)ttt_shard_vocab(val),
                (long long)c.vocab);
        ttt_shard_close(sh), ttt_shard_close(val);
        return 2;
    }
    char model_s[1024], train_s[1024], ckpt[4200], metrics[4200];
    describe(&c, o, model_s, sizeof model_s, train_s, sizeof train_s);
    snprintf(ckpt, sizeof ckpt, "%s/model.safetensors", o->out);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", o->out);
    if (cli_mkdir_p(o->out)) {
        fprintf(stderr, "ttt lm train: cannot create %s: %s\n", o->out, strerror(errno));
        ttt_shard_close(sh), ttt_shard_close(val);
        return 1;
    }
    int rc = 1;
    ttt_ctx *ctx = make_ctx(o);
    ttt_lm m = {0};
    ttt_optimizer *opt = NULL;
    named_list nl = {0};
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(o->batch * o->seq));
    int32_t *tg = malloc(sizeof(int32_t) * (size_t)(o->batch * o->seq));
    if (!ctx || !ids || !tg) goto done;
    if (ttt_lm_init(ctx, &m, &c, dtype_of(o)) != TTT_OK) {
        fprintf(stderr, "ttt lm train: %s\n", ttt_error(ctx));
        rc = 2;
        goto done;
    }
    ttt_optim_config oc = {.lr = o->lr, .beta1 = 0.9, .beta2 = o->beta2, .eps = 1e-8, .weight_decay = o->wd};
    if (!(opt = ttt_adamw_new(ctx, m.n_params, m.params, m.decay, &oc)) || named_build(&m, opt, &nl)) {
        fprintf(stderr, "ttt lm train: %s\n", ttt_error(ctx));
        goto done;
    }
    int64_t step = 0;
    if (o->resume) {
        char *json = NULL, stored_m[1024], stored_t[1024], buf[64];
        ttt_named_tensor none = {0};
        if (access(ckpt, F_OK) != 0) {
            fprintf(stderr, "ttt lm train: --resume: %s does not exist\n", ckpt);
            goto done;
        }
        if (ttt_load_safetensors(ctx, ckpt, 0, &none, &json) != TTT_OK || !json ||
            ttt_metadata_get(json, "model", stored_m, sizeof stored_m) || ttt_metadata_get(json, "train", stored_t, sizeof stored_t) ||
            ttt_metadata_get(json, "step", buf, sizeof buf)) {
            fprintf(stderr, "ttt lm train: %s: %s\n", ckpt, json ? "lacks model/train/step metadata" : ttt_error(ctx));
            free(json);
            goto done;
        }
        free(json);
        if (strcmp(stored_m, model_s) || strcmp(stored_t, train_s)) {
            fprintf(stderr, "ttt lm train: --resume with different flags than the checkpoint's run:\n  checkpoint: %s | %s\n  now:        %s | %s\n",
                    stored_m, stored_t, model_s, train_s);
            rc = 2;
            goto done;
        }
        step = atoll(buf);
        if (ttt_load_safetensors(ctx, ckpt, nl.n, nl.t, NULL) != TTT_OK || ttt_optimizer_set_steps(opt, step) != TTT_OK) {
            fprintf(stderr, "ttt lm train: %s\n", ttt_error(ctx));
            goto done;
        }
        if (metrics_truncate(metrics, step)) fprintf(stderr, "ttt lm train: warning: cannot trim %s\n", metrics);
        fprintf(stderr, "resumed %s at step %lld\n", ckpt, (long long)step);
    } else {
        if (access(ckpt, F_OK) == 0) {
            fprintf(stderr, "ttt lm train: %s exists; pass --resume to continue it or choose another --out\n", ckpt);
            rc = 2;
            goto done;
        }
        remove(metrics);
    }
    const int64_t n_params = ttt_lm_param_count(&c), tok_step = o->batch * o->seq * o->accum;
    /* 6 N per token for the weights, plus causal attention: 6 T D per token per block (half of full) */
    const int64_t attn_span = c.window > 0 && c.window < o->seq ? c.window : o->seq / 2;
    const double flops_tok = 6.0 * (double)n_params + 12.0 * (double)c.depth * (double)attn_span * (double)c.dim;
    fprintf(stderr, "lm train: %lld parameters (%s), %s, %lld tokens per step, %lld steps, device %s\n",
            (long long)n_params, model_s, train_s, (long long)tok_step, (long long)o->steps,
            ttt_ctx_device(ctx) == TTT_CUDA ? "cuda" : "cpu");
    const uint64_t seed = (uint64_t)o->seed;
    double t0 = cli_now(), t_last = t0, loss_acc = 0;
    int64_t steps_in_window = 0, first_step = step;
    while (step < o->steps) {
        const double lr = ttt_lr_warmup_cosine(step, o->warmup, o->steps, o->lr, o->min_lr);
        double loss_sum = 0, gnorm = 0;
        ttt_zero_grad(ctx, m.n_params, m.params);
        for (int64_t a = 0; a < o->accum; a++) {
            ttt_step_reset(ctx);
            ttt_tensor *loss = NULL;
            double l = batch_loss(ctx, &m, sh, seed, step * o->accum + a, o, ids, tg, &loss);
            if (!loss || !isfinite(l)) {
                fprintf(stderr, "ttt lm train: step %lld: %s\n", (long long)step, loss ? "the loss is not finite" : ttt_error(ctx));
                goto done;
            }
            if (ttt_backward(ctx, o->accum > 1 ? ttt_scale(ctx, loss, 1.0 / (double)o->accum) : loss) != TTT_OK) {
                fprintf(stderr, "ttt lm train: %s\n", ttt_error(ctx));
                goto done;
            }
            loss_sum += l;
        }
        ttt_step_reset(ctx);
        if ((o->clip > 0 && ttt_clip_grad_norm(ctx, m.n_params, m.params, o->clip, &gnorm) != TTT_OK) ||
            ttt_optimizer_step(opt, lr) != TTT_OK) {
            fprintf(stderr, "ttt lm train: %s\n", ttt_error(ctx));
            goto done;
        }
        step++;
        loss_acc += loss_sum / (double)o->accum;
        steps_in_window++;
        if (step % o->log_every == 0 || step == o->steps) {
            ttt_backend_for(ttt_ctx_device(ctx))->synchronize();
            const double now = cli_now(), tps = (double)(steps_in_window * tok_step) / (now - t_last);
            double vloss = NAN;
            if (val && (step % o->eval_every == 0 || step == o->steps)) {
                double s = 0;
                ttt_no_grad_begin(ctx);
                for (int64_t b = 0; b < o->eval_batches; b++) {
                    ttt_step_reset(ctx);
                    s += batch_loss(ctx, &m, val, seed ^ 0x5eedull, b, o, ids, tg, NULL);
                }
                ttt_no_grad_end(ctx);
                vloss = s / (double)o->eval_batches;
            }
            const double eta = (now - t0) / (double)(step - first_step) * (double)(o->steps - step);
            const double mfu = ttt_ctx_device(ctx) == TTT_CUDA ? 100.0 * flops_tok * tps / (o->peak * 1e12) : NAN;
            fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s", (long long)step,
                    (long long)o->steps, loss_acc / (double)steps_in_window, lr, gnorm, tps);
            if (isfinite(mfu)) fprintf(stderr, "  MFU %.2f%%", mfu);
            if (isfinite(vloss)) fprintf(stderr, "  val %.4f", vloss);
            fprintf(stderr, "  ETA %dm%02ds\n", (int)(eta / 60), (int)fmod(eta, 60));
            FILE *f = fopen(metrics, "a");
            if (f) {
                fprintf(f, "{\"step\": %lld, \"loss\": ", (long long)step);
                cli_json_num(f, loss_acc / (double)steps_in_window);
                fprintf(f, ", \"lr\": %.6g, \"grad_norm\": ", lr);
                cli_json_num(f, gnorm);
                fprintf(f, ", \"tokens\": %lld, \"tokens_per_s\": %.1f, \"flops_per_token\": %.6g, \"elapsed_s\": %.3f",
                        (long long)(step * tok_step), tps, flops_tok, now - t0);
                if (val) fputs(", \"val_loss\": ", f), cli_json_num(f, vloss);
                fputs("}\n", f);
                fclose(f);
            }
            t_last = cli_now(), loss_acc = 0, steps_in_window = 0;
        }
        if (step % o->save_every == 0 || step == o->steps) {
            char step_s[32];
            snprintf(step_s, sizeof step_s, "%lld", (long long)step);
            const char *meta[] = {"format", "ttt-lm", "model", model_s, "train", train_s, "step", step_s, NULL};
            if (ttt_save_safetensors(ctx, ckpt, nl.n, nl.t, meta) != TTT_OK) {
                fprintf(stderr, "ttt lm train: %s\n", ttt_error(ctx));
                goto done;
            }
        }
    }
    fprintf(stderr, "done: %lld steps in %.1f s; checkpoint %s\n", (long long)(step - first_step), cli_now() - t0, ckpt);
    rc = 0;
done:
    named_free(&nl);
    ttt_optimizer_free(opt);
    if (ctx) ttt_lm_free(ctx, &m);
    ttt_ctx_free(ctx);
    free(ids), free(tg);
    ttt_shard_close(sh), ttt_shard_close(val);
    return rc;
}

/* ---- eval -------------------------------------------------------------------------------------- */

static int eval(const opts *o) {
    if (!o->ckpt || !o->data) {
        fprintf(stderr, "ttt lm eval: needs --ckpt and --data (see --help)\n");
        return 2;
    }
    char err[512];
    ttt_shard *sh = NULL;
    if (ttt_shard_open(o->data, &sh, err, sizeof err)) {
        fprintf(stderr, "ttt lm eval: %s\n", err);
        return 1;
    }
    ttt_ctx *ctx = make_ctx(o);
    ttt_lm m = {0};
    int rc = 1;
    int64_t step = 0;
    const int64_t C = o->context;
    int n_b = 1;
    while (((int64_t)1 << n_b) < C) n_b++;
    n_b++; /* buckets [0,1), [1,2), [2,4), ..., [2^(n_b-2), C) */
    double *sum = calloc((size_t)n_b, sizeof *sum), *rows = malloc(sizeof(double) * (size_t)C);
    int64_t *cnt = calloc((size_t)n_b, sizeof *cnt);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(C + 1));
    if (!ctx || !sum || !rows || !cnt || !ids || (rc = load_model(ctx, o, &m, &step))) goto done;
    rc = 1;
    if (ttt_shard_vocab(sh) > m.cfg.vocab) {
        fprintf(stderr, "ttt lm eval: the shard's vocabulary (%lld) is larger than the model's (%lld)\n",
                (long long)ttt_shard_vocab(sh), (long long)m.cfg.vocab);
        goto done;
    }
    int64_t used = 0;
    const double t0 = cli_now();
    double t_shown = t0;
    for (int64_t d = 0; d < ttt_shard_n_docs(sh) && (!o->max_docs || used < o->max_docs); d++) {
        int64_t start, len;
        ttt_shard_doc(sh, d, &start, &len, err, sizeof err);
        if (len < C + 1) continue;
        ttt_shard_read(sh, start, C + 1, ids, err, sizeof err);
        ttt_step_reset(ctx);
        ttt_no_grad_begin(ctx);
        ttt_tensor *ti = ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, C), ids);
        ttt_tensor *tt = ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, C), ids + 1);
        ttt_tensor *per = NULL;
        ttt_tensor *loss = ttt_lm_loss(ctx, &m, ti, tt, &per);
        ttt_no_grad_end(ctx);
        if (!loss || ttt_copy_to_host(ctx, per, rows, TTT_F64) != TTT_OK) {
            fprintf(stderr, "ttt lm eval: document %lld: %s\n", (long long)d, ttt_error(ctx));
            goto done;
        }
        for (int64_t t = 0; t < C; t++) {
            int b = 0;
            while (b + 1 < n_b && ((int64_t)1 << b) <= t) b++;
            sum[b] += rows[t], cnt[b]++;
        }
        used++;
        if (cli_now() - t_shown > 2.0) fprintf(stderr, "eval: %lld documents, %.1f s\n", (long long)used, cli_now() - t0), t_shown = cli_now();
    }
    if (!used) {
        fprintf(stderr, "ttt lm eval: no document of %s has %lld + 1 tokens (lower --context)\n", o->data, (long long)C);
        goto done;
    }
    FILE *f = o->eval_out ? fopen(o->eval_out, "w") : NULL;
    if (o->eval_out && !f) {
        fprintf(stderr, "ttt lm eval: %s: %s\n", o->eval_out, strerror(errno));
        goto done;
    }
    double total = 0;
    int64_t total_n = 0;
    printf("%-18s %10s %10s %10s\n", "positions", "tokens", "loss", "ppl");
    for (int b = 0; b < n_b; b++) {
        if (!cnt[b]) continue;
        const int64_t lo = b ? (int64_t)1 << (b - 1) : 0, hi = b + 1 < n_b ? ((int64_t)1 << b) : C;
        char range[40];
        snprintf(range, sizeof range, "[%lld, %lld)", (long long)lo, (long long)hi);
        printf("%-18s %10lld %10.4f %10.2f\n", range, (long long)cnt[b], sum[b] / (double)cnt[b], exp(sum[b] / (double)cnt[b]));
        if (f) fprintf(f, "{\"bucket_start\": %lld, \"bucket_end\": %lld, \"mean_loss\": %.6f, \"count\": %lld}\n",
                       (long long)lo, (long long)hi, sum[b] / (double)cnt[b], (long long)cnt[b]);
        total += sum[b], total_n += cnt[b];
    }
    const double secs = cli_now() - t0;
    printf("all %lld positions of %lld documents: loss %.4f, perplexity %.2f (checkpoint step %lld, window %lld); "
           "%.3f s per document, %.4f s per 1K tokens\n",
           (long long)total_n, (long long)used, total / (double)total_n, exp(total / (double)total_n), (long long)step,
           (long long)m.cfg.window, secs / (double)used, secs / (double)used * 1024.0 / (double)C);
    if (f) {
        fprintf(f, "{\"summary\": true, \"documents\": %lld, \"context\": %lld, \"mean_loss\": %.6f, \"perplexity\": %.4f, "
                   "\"step\": %lld, \"window\": %lld, \"seconds_per_doc\": %.4f}\n",
                (long long)used, (long long)C, total / (double)total_n, exp(total / (double)total_n), (long long)step,
                (long long)m.cfg.window, secs / (double)used);
        fclose(f);
    }
    rc = 0;
done:
    if (ctx) ttt_lm_free(ctx, &m);
    ttt_ctx_free(ctx);
    ttt_shard_close(sh);
    free(sum), free(rows), free(cnt), free(ids);
    return rc;
}

/* ---- generate ---------------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct {
    double p;
    int32_t id;
} cand;

static int cmp_cand(const void *a, const void *b) {
    double x = ((const cand *)a)->p, y = ((const cand *)b)->p;
    return (x < y) - (x > y);
}

/* Temperature, top-k and top-p (nucleus) sampling from one row of logits. */
static int32_t sample(const double *logits, int64_t V, const opts *o, uint64_t *rng, cand *c) {
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (o->temperature == 0) return (int32_t)best;
    double z = 0;
    for (int64_t i = 0; i < V; i++) z += (c[i].p = exp((logits[i] - logits[best]) / o->temperature)), c[i].id = (int32_t)i;
    for (int64_t i = 0; i < V; i++) c[i].p /= z;
    qsort(c, (size_t)V, sizeof *c, cmp_cand);
    int64_t keep = o->top_k > 0 && o->top_k < V ? o->top_k : V;
    double mass = 0;
    for (int64_t i = 0; i < keep; i++) {
        mass += c[i].p;
        if (mass >= o->top_p) {
            keep = i + 1;
            break;
        }
    }
    double total = 0;
    for (int64_t i = 0; i < keep; i++) total += c[i].p;
    double u = (double)(rng_next(rng) >> 11) * 0x1.0p-53 * total;
    for (int64_t i = 0; i < keep; i++)
        if ((u -= c[i].p) <= 0) return c[i].id;
    return c[keep - 1].id;
}

static int generate(const opts *o) {
    if (!o->ckpt || !o->tokenizer || !o->prompt) {
        fprintf(stderr, "ttt lm generate: needs --ckpt, --tokenizer and --prompt (see --help)\n");
        return 2;
    }
    ttt_tokenizer *tok = NULL;
    int rc = cli_load_tokenizer("lm generate", o->tokenizer, &tok);
    if (rc) return rc;
    char err[512];
    ttt_token_ids prompt = {0};
    if (ttt_tokenizer_encode(tok, o->prompt, strlen(o->prompt), &prompt, err, sizeof err) || prompt.n == 0) {
        fprintf(stderr, "ttt lm generate: %s\n", prompt.n ? err : "the prompt encodes to no tokens");
        ttt_tokenizer_free(tok);
        ttt_token_ids_free(&prompt);
        return prompt.n ? 1 : 2;
    }
    ttt_ctx *ctx = make_ctx(o);
    ttt_lm m = {0};
    ttt_lm_cache cache = {0};
    double *row = NULL;
    cand *cands = NULL;
    rc = 1;
    if (!ctx || (rc = load_model(ctx, o, &m, NULL))) goto done;
    rc = 1;
    const int64_t V = m.cfg.vocab;
    if (ttt_tokenizer_vocab_size(tok) > V) {
        fprintf(stderr, "ttt lm generate: the tokenizer has %d tokens but the model only %lld\n",
                (int)ttt_tokenizer_vocab_size(tok), (long long)V);
        goto done;
    }
    row = malloc(sizeof(double) * (size_t)V);
    cands = malloc(sizeof(cand) * (size_t)V);
    if (!row || !cands || ttt_lm_cache_init(ctx, &m, &cache, 1, (int64_t)prompt.n + o->tokens) != TTT_OK) {
        fprintf(stderr, "ttt lm generate: %s\n", row && cands ? ttt_error(ctx) : "out of memory");
        goto done;
    }
    uint64_t rng = (uint64_t)o->seed;
    fwrite(o->prompt, 1, strlen(o->prompt), stdout);
    fflush(stdout);
    const double t0 = cli_now();
    ttt_tensor *logits = ttt_lm_decode(ctx, &m, &cache, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, (int64_t)prompt.n), prompt.ids));
    const double t_prefill = cli_now() - t0;
    int64_t made = 0;
    for (; logits && made < o->tokens; made++) {
        const int64_t T = logits->shape[1];
        ttt_tensor *last = ttt_slice(ctx, logits, 1, T - 1, T, 1);
        if (!last || ttt_copy_to_host(ctx, last, row, TTT_F64) != TTT_OK) break;
        int32_t next = sample(row, V, o, &rng, cands);
        char *text = NULL;
        size_t len = 0;
        if (ttt_tokenizer_decode(tok, &next, 1, 1, &text, &len, err, sizeof err) == 0) fwrite(text, 1, len, stdout);
        free(text);
        fflush(stdout);
        ttt_step_reset(ctx);
        logits = made + 1 < o->tokens ? ttt_lm_decode(ctx, &m, &cache, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, 1), &next)) : NULL;
        if (!logits && made + 1 < o->tokens) break;
    }
    printf("\n");
    if (made < o->tokens) {
        fprintf(stderr, "ttt lm generate: %s\n", ttt_error(ctx));
        goto done;
    }
    const double dt = cli_now() - t0 - t_prefill;
    fprintf(stderr, "prompt %zu tokens in %.3f s; %lld tokens in %.3f s (%.1f tokens/s); cache of %lld positions%s\n",
            prompt.n, t_prefill, (long long)made, dt, (double)made / (dt > 0 ? dt : 1e-9), (long long)cache.capacity,
            m.cfg.window ? " (ring buffer)" : "");
    rc = 0;
done:
    free(row), free(cands);
    if (ctx) ttt_lm_cache_free(ctx, &cache), ttt_lm_free(ctx, &m);
    ttt_ctx_free(ctx);
    ttt_tokenizer_free(tok);
    ttt_token_ids_free(&prompt);
    return rc;
}

int cmd_lm(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "train") && strcmp(sub, "eval") && strcmp(sub, "generate")) {
        fprintf(stderr, "ttt lm: unknown subcommand '%s' (train, eval, generate)\n", sub);
        return 2;
    }
    opts o;
    int rc = parse(argc, argv, sub, &o);
    if (rc) return rc < 0 ? 0 : rc;
    if (!strcmp(sub, "train")) return train(&o);
    if (!strcmp(sub, "eval")) return eval(&o);
    return generate(&o);
}
