/* ttt lm: the Transformer language model (include/ttt/lm.h) on token shards
 * (include/ttt/shards.h); docs/lm.md has examples and the checkpoint layout.
 *
 *   ttt lm train      AdamW + warmup/cosine + clipping + accumulation; DIR/model.safetensors
 *                     (atomic) and DIR/metrics.jsonl
 *   ttt lm eval       loss by token position on long documents, perplexity
 *   ttt lm generate   sampling over a KV cache (a ring buffer under a sliding window)
 *
 * Resuming is bit-exact: micro-batch i of a run is ttt_shard_batch(seed, i), a pure
 * function, and the checkpoint holds everything else a step depends on: the
 * parameters, the AdamW moments, the step count, and the loss summed since the
 * last metrics line (so the resumed run writes the same lines too). */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "sample.h"
#include "ttt/runtime.h"
#include "ttt/tokenizer.h"
#include "ttt/ttt.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
enum { SUB_TRAIN = 1, SUB_EVAL = 2, SUB_GENERATE = 4, SUB_ALL = 7 };
enum { MAX_EDGES = 64 };      /* eval: bucket edges from --buckets */
enum { PREFILL_PIECE = 512 }; /* generate: prompt tokens per prefill call, so one piece's logits exist at a time */
/* Dense peaks of an H100 SXM (the H200 has the same compute), from NVIDIA's
 * datasheet: bf16 on tensor cores without sparsity, and fp32 without tensor
 * cores (our f32 matmuls are plain SGEMM: 51.6 TFLOP/s measured, docs/benchmarks.md). */
static const double PEAK_BF16_TFLOPS = 989.0, PEAK_F32_TFLOPS = 67.0;
/* Validation batches come from this seed whatever --seed is, so runs with
 * different seeds are scored on the same tokens. */
static const uint64_t VAL_SEED = 0x76616c6964ull;
#define BIG ((int64_t)1 << 40)

/* ---- flags ----------------------------------------------------------------------------------- */

typedef struct {
    const char *data, *val, *out, *preset, *ckpt, *tokenizer, *prompt, *device, *dtype, *compute, *buckets;
    int64_t dim, depth, heads, mlp_hidden, prime_blocks, prime_hidden, window, seq, batch, accum, steps, warmup, seed,
        save_every, log_every, eval_every, eval_batches, stop_at, context, max_docs, tokens, top_k, threads,
        logit_chunk;
    double rope_theta, lr, min_lr, wd, beta2, clip, peak_bf16, peak_f32, temperature, top_p;
    int resume, tf32;
    ttt_lm_config model;          /* train: the preset with the model flags applied (vocab from the shard) */
    int64_t edges[MAX_EDGES];     /* eval --buckets: 0 < e_1 < ... < e_n */
    int n_edges;
} opts;

typedef enum { FLAG_STR, FLAG_INT, FLAG_DBL, FLAG_BOOL } flag_kind;

typedef struct {
    const char *name;
    int subs; /* the subcommands that take it */
    flag_kind kind;
    size_t off; /* of its field in opts */
    int64_t ilo, ihi;
    double dlo, dhi;
} flag_spec;

#define F_STR(n, s, f) {n, s, FLAG_STR, offsetof(opts, f), 0, 0, 0, 0}
#define F_INT(n, s, f, lo, hi) {n, s, FLAG_INT, offsetof(opts, f), lo, hi, 0, 0}
#define F_DBL(n, s, f, lo, hi) {n, s, FLAG_DBL, offsetof(opts, f), 0, 0, lo, hi}
#define F_BOOL(n, s, f) {n, s, FLAG_BOOL, offsetof(opts, f), 0, 0, 0, 0}

static const flag_spec FLAGS[] = {
    F_STR("--data", SUB_TRAIN | SUB_EVAL, data),
    F_STR("--val", SUB_TRAIN, val),
    F_STR("--out", SUB_TRAIN | SUB_EVAL, out),
    F_STR("--preset", SUB_TRAIN, preset),
    F_INT("--dim", SUB_TRAIN, dim, 2, 65536),
    F_INT("--depth", SUB_TRAIN, depth, 1, 1024),
    F_INT("--heads", SUB_TRAIN, heads, 1, 65536),
    F_INT("--mlp-hidden", SUB_TRAIN, mlp_hidden, 1, 1 << 20),
    F_INT("--window", SUB_TRAIN, window, 0, BIG),
    F_INT("--prime-blocks", SUB_TRAIN, prime_blocks, 0, 1024),
    F_INT("--prime-hidden", SUB_TRAIN, prime_hidden, 0, 1 << 20),
    F_DBL("--rope-theta", SUB_TRAIN, rope_theta, 2, 1e12),
    F_INT("--seq-len", SUB_TRAIN, seq, 1, 1 << 24),
    F_INT("--batch", SUB_TRAIN, batch, 1, 1 << 20),
    F_INT("--grad-accum", SUB_TRAIN, accum, 1, 1 << 20),
    F_INT("--logit-chunk", SUB_TRAIN, logit_chunk, 0, 1 << 24),
    F_INT("--steps", SUB_TRAIN, steps, 1, BIG),
    F_DBL("--lr", SUB_TRAIN, lr, 0, 10),
    F_DBL("--min-lr", SUB_TRAIN, min_lr, 0, 10),
    F_INT("--warmup", SUB_TRAIN, warmup, 0, BIG),
    F_DBL("--weight-decay", SUB_TRAIN, wd, 0, 10),
    F_DBL("--beta2", SUB_TRAIN, beta2, 0, 0.999999),
    F_DBL("--clip", SUB_TRAIN, clip, 0, 1e9),
    F_INT("--seed", SUB_TRAIN | SUB_GENERATE, seed, 0, INT64_MAX),
    F_INT("--save-every", SUB_TRAIN, save_every, 1, BIG),
    F_INT("--log-every", SUB_TRAIN, log_every, 1, BIG),
    F_INT("--eval-every", SUB_TRAIN, eval_every, 1, BIG),
    F_INT("--eval-batches", SUB_TRAIN, eval_batches, 1, 1 << 20),
    F_INT("--stop-at", SUB_TRAIN, stop_at, 1, BIG),
    F_BOOL("--resume", SUB_TRAIN, resume),
    F_DBL("--peak-tflops", SUB_TRAIN, peak_bf16, 1e-3, 1e6),
    F_DBL("--peak-tflops-f32", SUB_TRAIN, peak_f32, 1e-3, 1e6),
    F_STR("--ckpt", SUB_EVAL | SUB_GENERATE, ckpt),
    F_INT("--context", SUB_EVAL, context, 1, 1 << 30),
    F_STR("--buckets", SUB_EVAL, buckets),
    F_INT("--max-docs", SUB_EVAL, max_docs, 1, BIG),
    F_STR("--tokenizer", SUB_GENERATE, tokenizer),
    F_STR("--prompt", SUB_GENERATE, prompt),
    F_INT("--tokens", SUB_GENERATE, tokens, 0, 1 << 24),
    F_DBL("--temperature", SUB_GENERATE, temperature, 0, 100),
    F_INT("--top-k", SUB_GENERATE, top_k, 0, 1 << 30),
    F_DBL("--top-p", SUB_GENERATE, top_p, 1e-9, 1),
    F_STR("--device", SUB_ALL, device),
    F_STR("--dtype", SUB_ALL, dtype),
    F_STR("--compute", SUB_ALL, compute),
    F_BOOL("--tf32", SUB_ALL, tf32),
    F_INT("--threads", SUB_ALL, threads, 0, 4096),
};
enum { N_FLAGS = sizeof FLAGS / sizeof FLAGS[0] };

static const char USAGE_ALL[] =
    "  --device D          auto (cuda when built with it) | cpu | cuda (default auto)\n"
    "  --compute C         the parameters' dtype (default) | bf16: mixed precision on CUDA (bf16\n"
    "                      activations and matmuls, f32 master weights, AdamW and loss)\n"
    "  --tf32              CUDA: f32 matmuls on the TF32 tensor cores (10-bit mantissa inputs)\n"
    "  --threads N         CPU threads (default 0: OpenMP's choice)\n"
    "exit codes: 0 ok, 1 runtime failure (a file, the data, the device), 2 bad usage\n";

static void usage_train(FILE *f) {
    fprintf(f,
            "usage: ttt lm train --data SHARD --out DIR [flags]\n"
            "Trains the language model on a token shard (ttt data prepare). Batches are random windows of\n"
            "--seq-len + 1 tokens, a pure function of (--seed, step), so --resume needs only the checkpoint.\n"
            "data and output:\n"
            "  --data SHARD        training tokens; the vocabulary size comes from the shard\n"
            "  --val SHARD         held-out tokens: the mean loss of --eval-batches fixed batches (the same\n"
            "                      for every seed) every --eval-every steps and at the end\n"
            "  --out DIR           DIR/model.safetensors: parameters, AdamW moments and metadata, written\n"
            "                      atomically every --save-every steps and at the end; DIR/metrics.jsonl:\n"
            "                      one line every --log-every steps\n"
            "  --resume            continue DIR's run from its checkpoint (repeat the run's flags); on the\n"
            "                      CPU the final parameters are bit-identical to an uninterrupted run's (the\n"
            "                      GPU's embedding gradient adds atomically, so GPU runs differ in low bits)\n"
            "  --stop-at STEP      end this process at STEP (< --steps) with a checkpoint, as if killed\n"
            "                      there; the schedule still runs to --steps (time-limited jobs, tests)\n"
            "  --save-every N      (default 100)       --log-every N    (default 10)\n"
            "  --eval-every N      (default 100)       --eval-batches N (default 4)\n"
            "model (stored in the checkpoint; eval and generate rebuild the model from it):\n"
            "  --preset P          tiny (D 64, 2 blocks, 4 heads, F 172) | small (256, 4, 4, 688) |\n"
            "                      125m (768, 12, 12, 2048) (default tiny); the flags below override it\n"
            "  --dim D             width            --depth N        blocks\n"
            "  --heads H           heads (D / H must be even: RoPE rotates pairs)\n"
            "  --mlp-hidden F      SwiGLU width\n"
            "  --window K          0: full causal attention (default); K > 0: sliding window of K tokens\n"
            "                      (each query sees itself and the K - 1 before it)\n"
            "  --prime-blocks N    the last N blocks get a prime MLP (TTT-E2E's slot; default 0)\n"
            "  --prime-hidden F    its width (default 0: --mlp-hidden)\n"
            "  --rope-theta X      RoPE base (default 10000)\n"
            "optimization:\n"
            "  --seq-len T         tokens per sequence (default 256)\n"
            "  --batch B           sequences per micro-batch (default 8)\n"
            "  --grad-accum N      micro-batches per step; gradients summed, each loss scaled by 1/N (default 1)\n"
            "  --logit-chunk N     positions whose logits are formed at once in the loss (0: about 2^26 logits\n"
            "                      per chunk); larger chunks: fewer, larger head matmuls, more memory\n"
            "  --steps S           optimizer steps (default 200)\n"
            "  --lr LR             AdamW peak learning rate (default 3e-4); betas 0.9 and --beta2, eps 1e-8\n"
            "  --min-lr LR         the cosine's floor (default --lr / 10)\n"
            "  --warmup N          linear warmup steps, then cosine decay until --steps (default 5%% of --steps)\n"
            "  --weight-decay W    decoupled, on 2-d weights only (default 0.1)\n"
            "  --beta2 B           AdamW's second-moment decay (default 0.95)\n"
            "  --clip C            clip the global gradient norm to C; 0: no clipping (default 1.0)\n"
            "  --seed S            initialization and batches (default 1)\n"
            "  --dtype T           f32 | f64 parameters and compute (default f32)\n"
            "progress (stderr, each log step): loss, lr, gradient norm, tokens/s, model FLOP/s, ETA; on the\n"
            "GPU also the MFU against:\n"
            "  --peak-tflops X     dense bf16 peak (default 989: H100 / H200 SXM)\n"
            "  --peak-tflops-f32 X fp32 peak without tensor cores, shown with --dtype f32 (default 67)\n"
            "%s",
            USAGE_ALL);
}

static void usage_eval(FILE *f) {
    fprintf(f,
            "usage: ttt lm eval --ckpt DIR|FILE --data SHARD [flags]\n"
            "Loss by token position: each document is read from its start, the model runs over its first C\n"
            "tokens (no gradients), and each position's next-token loss goes into a position bucket. Prints a\n"
            "table (stdout) and the perplexity over all positions.\n"
            "  --ckpt DIR|FILE     a checkpoint of ttt lm train (DIR means DIR/model.safetensors)\n"
            "  --data SHARD        the documents (e.g. held-out long documents: ttt data prepare\n"
            "                      --min-doc-tokens)\n"
            "  --buckets E1,E2,..  bucket edges: [0, E1), [E1, E2), ... (default powers of two:\n"
            "                      [0, 1), [1, 2), [2, 4), [4, 8), ...)\n"
            "  --context C         read every document to C tokens (C + 1 with the last target); shorter\n"
            "                      documents are skipped, so every bucket averages the same documents; the\n"
            "                      last bucket ends at C. Default: each document is read to the largest edge\n"
            "                      it covers (edge <= length - 1), so its buckets are whole, but buckets at\n"
            "                      long positions average fewer documents (the table says how many)\n"
            "  --max-docs N        at most N documents (default all)\n"
            "  --out FILE          JSONL, written atomically: one row per bucket {bucket_start, bucket_end,\n"
            "                      mean_loss, count, documents}, then a row {\"summary\": true, ...}\n"
            "  --dtype T           f32 | f64 (default: the checkpoint's training dtype)\n"
            "%s",
            USAGE_ALL);
}

static void usage_generate(FILE *f) {
    fprintf(f,
            "usage: ttt lm generate --ckpt DIR|FILE --tokenizer PATH --prompt TEXT [flags]\n"
            "Prefills the prompt into a KV cache, then samples one token at a time and prints the text as it\n"
            "goes (stdout), then the speed (stderr). Under a sliding window the cache is a ring buffer of\n"
            "window - 1 positions, so memory stays constant however long it runs.\n"
            "  --ckpt DIR|FILE     a checkpoint of ttt lm train (DIR means DIR/model.safetensors)\n"
            "  --tokenizer PATH    a folder with vocab.json + merges.txt (ttt tokenizer train) or a Hugging\n"
            "                      Face tokenizer.json: the one the training shard was prepared with\n"
            "  --prompt TEXT       the start of the text (at least one token)\n"
            "  --tokens N          tokens to generate (default 100)\n"
            "  --temperature T     divide the logits by T before sampling; 0: greedy (default 0.8)\n"
            "  --top-k K           sample among the K most likely tokens (default 0: all)\n"
            "  --top-p P           nucleus: among the most likely tokens whose probabilities add up to P\n"
            "                      (default 1: all)\n"
            "  --seed S            the sampler's seed: the same seed gives the same text (default 1)\n"
            "  --dtype T           f32 | f64 (default: the checkpoint's training dtype)\n"
            "%s",
            USAGE_ALL);
}

static void usage(FILE *f) {
    fprintf(f, "usage: ttt lm train --data SHARD --out DIR [flags]                    train (checkpoints, --resume)\n"
               "       ttt lm eval --ckpt DIR|FILE --data SHARD [flags]                loss by token position\n"
               "       ttt lm generate --ckpt DIR|FILE --tokenizer PATH --prompt TEXT  sample text\n"
               "ttt lm SUBCOMMAND --help lists its flags; docs/lm.md has examples.\n");
}

static const char *sub_name(int sub) { return sub == SUB_TRAIN ? "train" : sub == SUB_EVAL ? "eval" : "generate"; }

static int parse_buckets(opts *o) {
    const char *p = o->buckets;
    o->n_edges = 0;
    for (;;) {
        char *end;
        errno = 0;
        long long e = strtoll(p, &end, 10);
        if (end == p || errno || e < 1 || e > (1 << 30) || (*end && *end != ',') || o->n_edges == MAX_EDGES ||
            (o->n_edges && e <= o->edges[o->n_edges - 1])) {
            fprintf(stderr, "ttt lm eval: --buckets %s: expected up to %d increasing positive integers, "
                            "comma-separated (e.g. 1024,2048,4096)\n", o->buckets, MAX_EDGES);
            return EXIT_USAGE;
        }
        o->edges[o->n_edges++] = e;
        if (!*end) return 0;
        p = end + 1;
    }
}

/* The model flags over the preset (vocab comes later, from the shard). */
static int train_model_flags(opts *o) {
    char err[256];
    if (ttt_lm_preset(o->preset, 0, &o->model, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt lm train: --preset %s: expected tiny, small or 125m\n", o->preset);
        return EXIT_USAGE;
    }
    ttt_lm_config *c = &o->model;
    if (o->dim > 0) c->dim = o->dim;
    if (o->depth > 0) c->depth = o->depth;
    if (o->heads > 0) c->heads = o->heads;
    if (o->mlp_hidden > 0) c->mlp_hidden = o->mlp_hidden;
    if (o->rope_theta > 0) c->rope_theta = o->rope_theta;
    c->window = o->window, c->prime_blocks = o->prime_blocks, c->prime_hidden = o->prime_hidden;
    if (c->dim % c->heads || (c->dim / c->heads) % 2) {
        fprintf(stderr, "ttt lm train: --dim %lld does not split into --heads %lld heads of even size (RoPE rotates pairs)\n",
                (long long)c->dim, (long long)c->heads);
        return EXIT_USAGE;
    }
    if (c->prime_blocks > c->depth) {
        fprintf(stderr, "ttt lm train: --prime-blocks %lld is more than --depth %lld\n", (long long)c->prime_blocks,
                (long long)c->depth);
        return EXIT_USAGE;
    }
    return 0;
}

/* Flags into o; -1 to go on, else the exit code (0 after --help). */
static int parse(int argc, char **argv, int sub, opts *o) {
    *o = (opts){.preset = "tiny", .device = "auto", .seq = 256, .batch = 8, .accum = 1, .steps = 200, .warmup = -1,
                .seed = 1, .save_every = 100, .log_every = 10, .eval_every = 100, .eval_batches = 4, .tokens = 100,
                .lr = 3e-4, .min_lr = -1, .wd = 0.1, .beta2 = 0.95, .clip = 1.0, .peak_bf16 = PEAK_BF16_TFLOPS,
                .peak_f32 = PEAK_F32_TFLOPS, .temperature = 0.8, .top_p = 1.0};
    char cmd[32];
    snprintf(cmd, sizeof cmd, "lm %s", sub_name(sub));
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            (sub == SUB_TRAIN ? usage_train : sub == SUB_EVAL ? usage_eval : usage_generate)(stdout);
            return 0;
        }
        const flag_spec *f = NULL;
        for (int k = 0; k < N_FLAGS && !f; k++)
            if (!strcmp(argv[i], FLAGS[k].name)) f = &FLAGS[k];
        if (!f) return cli_unknown(cmd, argv[i]);
        if (!(f->subs & sub)) {
            fprintf(stderr, "ttt %s: %s is a flag of ttt lm %s, not of %s (see ttt %s --help)\n", cmd, f->name,
                    f->subs & SUB_TRAIN ? "train" : f->subs & SUB_EVAL ? "eval" : "generate", sub_name(sub), cmd);
            return EXIT_USAGE;
        }
        void *dst = (char *)o + f->off;
        int r = f->kind == FLAG_STR    ? cli_flag_str(argc, argv, &i, f->name, (const char **)dst)
                : f->kind == FLAG_INT  ? cli_flag_int(argc, argv, &i, f->name, f->ilo, f->ihi, (int64_t *)dst)
                : f->kind == FLAG_DBL  ? cli_flag_double(argc, argv, &i, f->name, f->dlo, f->dhi, (double *)dst)
                                       : cli_flag_bool(argv, i, f->name, (int *)dst);
        if (r < 0) return EXIT_USAGE;
    }
    const char *bad = NULL;
    char buf[160];
    if (strcmp(o->device, "auto") && strcmp(o->device, "cpu") && strcmp(o->device, "cuda"))
        snprintf(buf, sizeof buf, "--device %.100s: expected auto, cpu or cuda", o->device), bad = buf;
    else if (o->dtype && strcmp(o->dtype, "f32") && strcmp(o->dtype, "f64"))
        snprintf(buf, sizeof buf, "--dtype %.100s: expected f32 or f64", o->dtype), bad = buf;
    else if (o->compute && strcmp(o->compute, "f32") && strcmp(o->compute, "f64") && strcmp(o->compute, "bf16"))
        snprintf(buf, sizeof buf, "--compute %.100s: expected bf16, f32 or f64", o->compute), bad = buf;
    else if (o->out && strlen(o->out) > 4000)
        bad = "--out: the path is too long";
    else if (sub == SUB_TRAIN) {
        if (!o->data || !o->out) bad = "needs --data SHARD and --out DIR (see --help)";
        else if (o->warmup > o->steps) bad = "--warmup is longer than --steps";
        else if (o->min_lr > o->lr) bad = "--min-lr is above --lr";
        else if (o->stop_at >= o->steps) bad = "--stop-at must be below --steps (it stops a run early)";
    } else if (sub == SUB_EVAL) {
        if (!o->ckpt || !o->data) bad = "needs --ckpt and --data (see --help)";
    } else if (!o->ckpt || !o->tokenizer || !o->prompt)
        bad = "needs --ckpt, --tokenizer and --prompt (see --help)";
    if (bad) {
        fprintf(stderr, "ttt %s: %s\n", cmd, bad);
        return EXIT_USAGE;
    }
    if (sub == SUB_EVAL && o->buckets && parse_buckets(o)) return EXIT_USAGE;
    if (sub == SUB_TRAIN) {
        if (o->min_lr < 0) o->min_lr = o->lr / 10;
        if (o->warmup < 0) o->warmup = o->steps / 20;
        if (!o->dtype) o->dtype = "f32";
        int rc = train_model_flags(o);
        if (rc) return rc;
    }
    return -1;
}

/* ---- shared -------------------------------------------------------------------------------------- */

static ttt_ctx *make_ctx(const opts *o, const char *cmd) {
    ttt_device dev = TTT_CPU;
    if (!strcmp(o->device, "cuda") || (!strcmp(o->device, "auto") && ttt_device_count(TTT_CUDA) > 0)) dev = TTT_CUDA;
    ttt_ctx_config cc = {.device = dev, .seed = (uint64_t)o->seed, .threads = (int)o->threads, .tf32 = o->tf32};
    ttt_ctx *ctx = ttt_ctx_new(&cc);
    if (!ctx)
        fprintf(stderr, "ttt %s: could not create a %s context: %s\n", cmd, dev == TTT_CUDA ? "cuda" : "cpu",
                ttt_runtime_error());
    return ctx;
}

static ttt_dtype dtype_of(const char *name) {
    return name && !strcmp(name, "f64") ? TTT_F64 : name && !strcmp(name, "bf16") ? TTT_BF16 : TTT_F32;
}

/* --compute: mixed precision when it differs from the parameters' dtype. */
static int apply_compute(ttt_ctx *ctx, const opts *o, ttt_lm *m) {
    return o->compute ? ttt_lm_set_compute(ctx, m, dtype_of(o->compute)) : TTT_OK;
}

/* The checkpoint's stored form of a model config: every field, so eval and
 * generate rebuild the model from the file alone. */
static void model_string(const ttt_lm_config *c, char *buf, size_t n) {
    char theta[32], eps[32], std[32];
    cli_fmt_double(theta, sizeof theta, c->rope_theta);
    cli_fmt_double(eps, sizeof eps, c->norm_eps);
    cli_fmt_double(std, sizeof std, c->init_std);
    snprintf(buf, n,
             "vocab=%lld dim=%lld depth=%lld heads=%lld mlp_hidden=%lld window=%lld prime_blocks=%lld "
             "prime_hidden=%lld qk_norm=%d rope_theta=%s norm_eps=%s init_std=%s",
             (long long)c->vocab, (long long)c->dim, (long long)c->depth, (long long)c->heads, (long long)c->mlp_hidden,
             (long long)c->window, (long long)c->prime_blocks, (long long)c->prime_hidden, c->qk_norm, theta, eps, std);
}

/* Reads model_string's form back; ttt_lm_init checks the values. 0, or -1 naming the bad key in err. */
static int model_parse(const char *s, ttt_lm_config *c, char *err, size_t errn) {
    ttt_lm_preset("tiny", 0, c, NULL, 0); /* defaults of the optional keys */
    static const char *const ints[] = {"vocab", "dim", "depth", "heads", "mlp_hidden", "window", "prime_blocks",
                                       "prime_hidden", "qk_norm"};
    int64_t q = 0, *iout[] = {&c->vocab, &c->dim, &c->depth, &c->heads, &c->mlp_hidden, &c->window,
                              &c->prime_blocks, &c->prime_hidden, &q};
    char v[64], *end;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        errno = 0;
        long long x = cli_config_value(s, ints[i], v, sizeof v) ? strtoll(v, &end, 10) : -1;
        if (x < 0 || errno || *end) return snprintf(err, errn, "bad or missing %s", ints[i]), -1;
        *iout[i] = x;
    }
    c->qk_norm = q == 1;
    static const char *const dbls[] = {"rope_theta", "norm_eps", "init_std"};
    double *dout[] = {&c->rope_theta, &c->norm_eps, &c->init_std};
    for (size_t i = 0; i < 3; i++) {
        if (!cli_config_value(s, dbls[i], v, sizeof v)) {
            if (i == 2) break; /* init_std: only used to initialise */
            return snprintf(err, errn, "missing %s", dbls[i]), -1;
        }
        double x = strtod(v, &end);
        if (!isfinite(x) || *end) return snprintf(err, errn, "bad %s", dbls[i]), -1;
        *dout[i] = x;
    }
    return 0;
}

/* --ckpt: a file, or a run directory holding model.safetensors. */
static void ckpt_path(const char *arg, char *buf, size_t n) {
    struct stat st;
    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(buf, n, "%s/model.safetensors", arg);
    else snprintf(buf, n, "%s", arg);
}

/* The metadata JSON of a checkpoint (malloc'd), after checking it is a ttt lm one. */
static char *read_meta(ttt_ctx *ctx, const char *cmd, const char *path) {
    char *json = NULL, fmt[32];
    ttt_named_tensor none = {0};
    if (ttt_load_safetensors(ctx, path, 0, &none, &json) != TTT_OK) {
        fprintf(stderr, "ttt %s: %s\n", cmd, ttt_error(ctx));
        free(json);
        return NULL;
    }
    if (!json || ttt_metadata_get(json, "format", fmt, sizeof fmt) != TTT_OK || strcmp(fmt, "ttt-lm")) {
        fprintf(stderr, "ttt %s: %s is not a ttt lm checkpoint (no format=ttt-lm metadata)\n", cmd, path);
        free(json);
        return NULL;
    }
    return json;
}

static int meta_int(const char *json, const char *key, int64_t *out) {
    char buf[64], *end;
    if (ttt_metadata_get(json, key, buf, sizeof buf) != TTT_OK) return -1;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || end == buf || v < 0) return -1;
    *out = v;
    return 0;
}

/* Loads --ckpt's model (config from its metadata) for eval and generate, in
 * --dtype or else the dtype it was trained in. 0 or an exit code. */
static int load_model(ttt_ctx *ctx, const opts *o, const char *cmd, ttt_lm *m, int64_t *step) {
    char path[4200], model[1024], train[1024], dt[16] = "f32", err[128];
    ckpt_path(o->ckpt, path, sizeof path);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "ttt %s: --ckpt %s: %s\n", cmd, path, strerror(errno));
        return EXIT_RUNTIME;
    }
    char *json = read_meta(ctx, cmd, path);
    if (!json) return EXIT_RUNTIME;
    ttt_lm_config c;
    int bad = ttt_metadata_get(json, "model", model, sizeof model) != TTT_OK;
    if (bad || model_parse(model, &c, err, sizeof err)) {
        fprintf(stderr, "ttt %s: %s: model metadata: %s\n", cmd, path, bad ? "missing" : err);
        free(json);
        return EXIT_RUNTIME;
    }
    if (ttt_metadata_get(json, "train", train, sizeof train) == TTT_OK) cli_config_value(train, "dtype", dt, sizeof dt);
    if (step && meta_int(json, "step", step)) *step = -1;
    free(json);
    if (ttt_lm_init(ctx, m, &c, dtype_of(o->dtype ? o->dtype : dt)) != TTT_OK || apply_compute(ctx, o, m) != TTT_OK) {
        fprintf(stderr, "ttt %s: %s: %s\n", cmd, path, ttt_error(ctx));
        return EXIT_RUNTIME;
    }
    cli_named_list nl;
    const int built = cli_named_build(m->n_params, m->params, (const char *const *)m->names, NULL, &nl) == 0;
    int rc = built && ttt_load_safetensors(ctx, path, nl.n, nl.t, NULL) == TTT_OK ? 0 : EXIT_RUNTIME;
    if (rc) fprintf(stderr, "ttt %s: %s\n", cmd, built ? ttt_error(ctx) : "out of memory");
    cli_named_free(&nl);
    return rc;
}

/* ---- train ---------------------------------------------------------------------------------------- */

/* Everything a training run holds. */
typedef struct {
    const opts *o;
    ttt_shard *data, *val;
    ttt_ctx *ctx;
    ttt_lm m;
    ttt_optimizer *opt;
    cli_named_list nl;
    int32_t *ids, *tg; /* one micro-batch on the host */
    char ckpt[4200], metrics[4200], model_s[1024], train_s[1024];
    int64_t step;
    double win_loss; /* step losses summed since the last metrics line (saved, so a resumed run logs the same) */
    int64_t win_steps;
} lm_run;

static void run_free(lm_run *r) {
    cli_named_free(&r->nl);
    ttt_optimizer_free(r->opt);
    if (r->ctx) ttt_lm_free(r->ctx, &r->m);
    ttt_ctx_free(r->ctx);
    free(r->ids), free(r->tg);
    ttt_shard_close(r->data), ttt_shard_close(r->val);
}

/* The settings a run's trajectory depends on besides the model: --resume must repeat them. */
static void train_string(const opts *o, const ttt_shard *data, char *buf, size_t n) {
    char lr[32], min_lr[32], wd[32], beta2[32], clip[32];
    cli_fmt_double(lr, sizeof lr, o->lr);
    cli_fmt_double(min_lr, sizeof min_lr, o->min_lr);
    cli_fmt_double(wd, sizeof wd, o->wd);
    cli_fmt_double(beta2, sizeof beta2, o->beta2);
    cli_fmt_double(clip, sizeof clip, o->clip);
    snprintf(buf, n,
             "seq=%lld batch=%lld accum=%lld steps=%lld warmup=%lld lr=%s min_lr=%s wd=%s beta2=%s clip=%s seed=%lld "
             "dtype=%s data_tokens=%lld data_docs=%lld",
             (long long)o->seq, (long long)o->batch, (long long)o->accum, (long long)o->steps, (long long)o->warmup, lr,
             min_lr, wd, beta2, clip, (long long)o->seed, o->dtype, (long long)ttt_shard_n_tokens(data),
             (long long)ttt_shard_n_docs(data));
}

/* The mean loss of micro-batch `index` of (shard, seed); NaN after a message on failure. */
static double batch_loss(lm_run *r, const ttt_shard *s, uint64_t seed, int64_t index, ttt_tensor **loss_out) {
    char err[512];
    const int64_t B = r->o->batch, T = r->o->seq;
    if (ttt_shard_batch(s, seed, index, B, T, r->ids, r->tg, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt lm train: %s\n", err);
        return NAN;
    }
    ttt_tensor *ids = ttt_from_host(r->ctx, TTT_I32, TTT_DIMS(B, T), r->ids);
    ttt_tensor *tg = ttt_from_host(r->ctx, TTT_I32, TTT_DIMS(B, T), r->tg);
    ttt_tensor *loss = ttt_lm_loss_chunked(r->ctx, &r->m, ids, tg, NULL, r->o->logit_chunk);
    if (loss_out) *loss_out = loss;
    const double l = loss ? ttt_item(r->ctx, loss) : NAN;
    if (!isfinite(l)) fprintf(stderr, "ttt lm train: %s\n", loss ? "the loss is not finite" : ttt_error(r->ctx));
    return l;
}

static double val_loss(lm_run *r) {
    double sum = 0;
    ttt_no_grad_begin(r->ctx);
    for (int64_t b = 0; b < r->o->eval_batches && isfinite(sum); b++) {
        ttt_step_reset(r->ctx);
        sum += batch_loss(r, r->val, VAL_SEED, b, NULL);
    }
    ttt_no_grad_end(r->ctx);
    return sum / (double)r->o->eval_batches;
}

/* One optimizer step: --grad-accum micro-batches, clipping, AdamW. 0 or an exit code. */
static int train_step(lm_run *r, double lr, double *loss, double *gnorm) {
    const opts *o = r->o;
    double sum = 0;
    ttt_zero_grad(r->ctx, r->m.n_params, r->m.params);
    for (int64_t a = 0; a < o->accum; a++) {
        ttt_step_reset(r->ctx);
        ttt_tensor *l = NULL;
        const double v = batch_loss(r, r->data, (uint64_t)o->seed, r->step * o->accum + a, &l);
        if (!isfinite(v)) return EXIT_RUNTIME;
        if (ttt_backward(r->ctx, o->accum > 1 ? ttt_scale(r->ctx, l, 1.0 / (double)o->accum) : l) != TTT_OK) {
            fprintf(stderr, "ttt lm train: step %lld: %s\n", (long long)r->step, ttt_error(r->ctx));
            return EXIT_RUNTIME;
        }
        sum += v;
    }
    ttt_step_reset(r->ctx);
    if (ttt_clip_grad_norm(r->ctx, r->m.n_params, r->m.params, o->clip > 0 ? o->clip : INFINITY, gnorm) != TTT_OK ||
        ttt_optimizer_step(r->opt, lr) != TTT_OK) {
        fprintf(stderr, "ttt lm train: step %lld: %s\n", (long long)r->step, ttt_error(r->ctx));
        return EXIT_RUNTIME;
    }
    *loss = sum / (double)o->accum;
    return 0;
}

static int save(lm_run *r) {
    char step[32], sum[40], win[96];
    snprintf(step, sizeof step, "%lld", (long long)r->step);
    cli_fmt_double(sum, sizeof sum, r->win_loss);
    snprintf(win, sizeof win, "loss_sum=%s steps=%lld", sum, (long long)r->win_steps);
    const char *meta[] = {"format", "ttt-lm", "model", r->model_s, "train", r->train_s, "step", step, "log_window", win, NULL};
    if (ttt_save_safetensors(r->ctx, r->ckpt, r->nl.n, r->nl.t, meta) != TTT_OK) {
        fprintf(stderr, "ttt lm train: %s\n", ttt_error(r->ctx));
        return EXIT_RUNTIME;
    }
    return 0;
}

/* Keeps the metrics lines of steps <= step (a run killed after logging past its last checkpoint). */
static int metrics_truncate(const char *path, int64_t step) {
    FILE *in = fopen(path, "r");
    if (!in) return errno == ENOENT ? 0 : -1;
    char tmp[4300], line[4096];
    FILE *out = cli_atomic_open(path, tmp, sizeof tmp);
    if (!out) return fclose(in), -1;
    long long s;
    while (fgets(line, sizeof line, in))
        if (sscanf(line, "{\"step\": %lld", &s) == 1 && s <= step) fputs(line, out);
    fclose(in);
    return cli_atomic_commit(out, tmp, path);
}

/* Prints which stored settings differ from the flags'. */
static void explain_mismatch(const char *ckpt, const char *stored, const char *now) {
    fprintf(stderr, "ttt lm train: --resume: the flags describe another run than %s:\n", ckpt);
    for (int pass = 0; pass < 2; pass++) {
        const char *s = pass ? stored : now;
        for (const char *p = s; *p;) {
            const char *eq = strchr(p, '='), *end = strchr(p, ' ');
            if (!end) end = p + strlen(p);
            char key[64], a[128], b[128];
            if (eq && eq < end && (size_t)(eq - p) < sizeof key) {
                snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
                const int ha = cli_config_value(stored, key, a, sizeof a), hb = cli_config_value(now, key, b, sizeof b);
                if ((!pass && (!ha || strcmp(a, b))) || (pass && !hb))
                    fprintf(stderr, "  %-13s checkpoint %s, now %s\n", key, ha ? a : "(none)", hb ? b : "(none)");
            }
            p = *end ? end + 1 : end;
        }
    }
    fprintf(stderr, "  repeat the run's flags to resume it\n");
}

/* --resume: the same settings, then parameters, AdamW state, step and log window. 0 or an exit code. */
static int resume(lm_run *r) {
    char stored_m[1024], stored_t[1024], win[128], v[48];
    if (access(r->ckpt, F_OK) != 0) {
        fprintf(stderr, "ttt lm train: --resume: %s: %s\n", r->ckpt, strerror(errno));
        return EXIT_RUNTIME;
    }
    char *json = read_meta(r->ctx, "lm train", r->ckpt);
    if (!json) return EXIT_RUNTIME;
    int bad = ttt_metadata_get(json, "model", stored_m, sizeof stored_m) || ttt_metadata_get(json, "train", stored_t, sizeof stored_t) ||
              meta_int(json, "step", &r->step) || ttt_metadata_get(json, "log_window", win, sizeof win);
    free(json);
    if (bad) {
        fprintf(stderr, "ttt lm train: %s lacks model/train/step/log_window metadata\n", r->ckpt);
        return EXIT_RUNTIME;
    }
    if (strcmp(stored_m, r->model_s) || strcmp(stored_t, r->train_s)) {
        char both_stored[2100], both_now[2100];
        snprintf(both_stored, sizeof both_stored, "%s %s", stored_m, stored_t);
        snprintf(both_now, sizeof both_now, "%s %s", r->model_s, r->train_s);
        explain_mismatch(r->ckpt, both_stored, both_now);
        return EXIT_USAGE;
    }
    char *end = NULL;
    if (cli_config_value(win, "loss_sum", v, sizeof v)) r->win_loss = strtod(v, &end);
    if (!end || *end || !cli_config_value(win, "steps", v, sizeof v) || (r->win_steps = atoll(v)) < 0) {
        fprintf(stderr, "ttt lm train: %s: bad log_window metadata '%s'\n", r->ckpt, win);
        return EXIT_RUNTIME;
    }
    if (ttt_load_safetensors(r->ctx, r->ckpt, r->nl.n, r->nl.t, NULL) != TTT_OK ||
        ttt_optimizer_set_steps(r->opt, r->step) != TTT_OK) {
        fprintf(stderr, "ttt lm train: %s\n", ttt_error(r->ctx));
        return EXIT_RUNTIME;
    }
    if (metrics_truncate(r->metrics, r->step)) {
        fprintf(stderr, "ttt lm train: cannot rewrite %s: %s\n", r->metrics, strerror(errno));
        return EXIT_RUNTIME;
    }
    fprintf(stderr, "resumed %s at step %lld of %lld\n", r->ckpt, (long long)r->step, (long long)r->o->steps);
    return 0;
}

/* A new run: refuses to overwrite one, then starts an empty metrics file. */
static int start_fresh(lm_run *r) {
    if (access(r->ckpt, F_OK) == 0) {
        fprintf(stderr, "ttt lm train: %s exists; pass --resume to continue that run, or choose another --out\n", r->ckpt);
        return EXIT_USAGE;
    }
    FILE *f = fopen(r->metrics, "w");
    if (!f) {
        fprintf(stderr, "ttt lm train: cannot write %s: %s\n", r->metrics, strerror(errno));
        return EXIT_RUNTIME;
    }
    fclose(f);
    return 0;
}

/* Shards, directory, model, optimizer, then the checkpoint's state or a fresh start. 0 or an exit code. */
static int run_open(lm_run *r) {
    const opts *o = r->o;
    char err[512];
    if (ttt_shard_open(o->data, &r->data, err, sizeof err) != TTT_OK ||
        (o->val && ttt_shard_open(o->val, &r->val, err, sizeof err) != TTT_OK)) {
        fprintf(stderr, "ttt lm train: %s\n", err);
        return EXIT_RUNTIME;
    }
    const ttt_shard *too_short = ttt_shard_n_tokens(r->data) < o->seq + 1 ? r->data
                                 : r->val && ttt_shard_n_tokens(r->val) < o->seq + 1 ? r->val
                                                                                       : NULL;
    if (too_short) {
        fprintf(stderr, "ttt lm train: %s has %lld tokens, fewer than --seq-len %lld + 1\n",
                too_short == r->data ? o->data : o->val, (long long)ttt_shard_n_tokens(too_short), (long long)o->seq);
        return EXIT_RUNTIME;
    }
    ttt_lm_config c = o->model;
    c.vocab = ttt_shard_vocab(r->data);
    if (r->val && ttt_shard_vocab(r->val) != c.vocab) {
        fprintf(stderr, "ttt lm train: --val %s has vocabulary %lld but --data %lld: not the same tokenizer\n", o->val,
                (long long)ttt_shard_vocab(r->val), (long long)c.vocab);
        return EXIT_RUNTIME;
    }
    model_string(&c, r->model_s, sizeof r->model_s);
    train_string(o, r->data, r->train_s, sizeof r->train_s);
    snprintf(r->ckpt, sizeof r->ckpt, "%s/model.safetensors", o->out);
    snprintf(r->metrics, sizeof r->metrics, "%s/metrics.jsonl", o->out);
    if (cli_mkdir_p(o->out) != 0) {
        fprintf(stderr, "ttt lm train: cannot create %s: %s\n", o->out, strerror(errno));
        return EXIT_RUNTIME;
    }
    r->ids = malloc(sizeof(int32_t) * (size_t)(o->batch * o->seq));
    r->tg = malloc(sizeof(int32_t) * (size_t)(o->batch * o->seq));
    if (!r->ids || !r->tg) {
        fprintf(stderr, "ttt lm train: out of host memory for a batch of %lld x %lld\n", (long long)o->batch, (long long)o->seq);
        return EXIT_RUNTIME;
    }
    if (!(r->ctx = make_ctx(o, "lm train"))) return EXIT_RUNTIME;
    const ttt_optim_config oc = {.lr = o->lr, .beta1 = 0.9, .beta2 = o->beta2, .eps = 1e-8, .weight_decay = o->wd};
    if (ttt_lm_init(r->ctx, &r->m, &c, dtype_of(o->dtype)) != TTT_OK || apply_compute(r->ctx, o, &r->m) != TTT_OK ||
        !(r->opt = ttt_adamw_new(r->ctx, r->m.n_params, r->m.params, r->m.decay, &oc))) {
        fprintf(stderr, "ttt lm train: %s\n", ttt_error(r->ctx));
        return EXIT_RUNTIME;
    }
    if (cli_named_build(r->m.n_params, r->m.params, (const char *const *)r->m.names, r->opt, &r->nl)) {
        fprintf(stderr, "ttt lm train: out of host memory\n");
        return EXIT_RUNTIME;
    }
    return o->resume ? resume(r) : start_fresh(r);
}

/* Training FLOPs per token: 6 per parameter (forward 2, backward 4; the tied
 * head's matmul is counted by the embedding's entry), plus attention's two
 * matmuls, q k^T and p v, 2 * 2 * dim FLOPs per key a query sees, times 3 with
 * the backward, per block. A causal query at position t sees min(t + 1, K)
 * keys (K = the window, or T), averaged over the sequence. */
static double flops_per_token(const ttt_lm_config *c, int64_t T) {
    const double k = (double)(c->window > 0 && c->window < T ? c->window : T);
    const double keys = (k * (k + 1) / 2 + ((double)T - k) * k) / (double)T;
    return 6.0 * (double)ttt_lm_param_count(c) + 12.0 * (double)c->depth * (double)c->dim * keys;
}

static int metrics_append(const char *path, int64_t step, double loss, double lr, double gnorm, int64_t tokens,
                          double vloss, double tps, double tflops, double mfu_bf16, double mfu_f32, double elapsed) {
    FILE *f = fopen(path, "a");
    if (!f) return -1;
    /* the settled values first, the timings last (tests compare lines up to "tokens_per_s") */
    fprintf(f, "{\"step\": %lld, \"loss\": ", (long long)step);
    cli_json_num(f, loss);
    fputs(", \"lr\": ", f);
    cli_json_num(f, lr);
    fputs(", \"grad_norm\": ", f);
    cli_json_num(f, gnorm);
    fprintf(f, ", \"tokens_seen\": %lld", (long long)tokens);
    if (!isnan(vloss)) fputs(", \"val_loss\": ", f), cli_json_num(f, vloss);
    fputs(", \"tokens_per_s\": ", f);
    cli_json_num(f, tps);
    fputs(", \"model_tflops\": ", f);
    cli_json_num(f, tflops);
    if (!isnan(mfu_bf16)) fputs(", \"mfu_bf16\": ", f), cli_json_num(f, mfu_bf16);
    if (!isnan(mfu_f32)) fputs(", \"mfu_f32\": ", f), cli_json_num(f, mfu_f32);
    fputs(", \"elapsed_s\": ", f);
    cli_json_num(f, elapsed);
    fputs("}\n", f);
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int train_cmd(const opts *o) {
    lm_run r = {.o = o};
    int rc = run_open(&r);
    if (rc) return run_free(&r), rc;
    const int64_t tok_step = o->batch * o->seq * o->accum, end = o->stop_at ? o->stop_at : o->steps;
    const int on_gpu = ttt_ctx_device(r.ctx) == TTT_CUDA, bf16 = r.m.compute == TTT_BF16;
    const int f32 = !strcmp(o->dtype, "f32") && !bf16 && !o->tf32; /* an f32 MFU means something */
    const double flops_tok = flops_per_token(&r.m.cfg, o->seq);
    fprintf(stderr, "lm train: %lld parameters; %s; %s; %lld tokens per step; %.3g FLOPs per token; device %s; "
            "compute %s%s\n", (long long)ttt_lm_param_count(&r.m.cfg), r.model_s, r.train_s, (long long)tok_step,
            flops_tok, on_gpu ? "cuda" : "cpu", ttt_dtype_name(r.m.compute), o->tf32 ? " (tf32 matmuls)" : "");
    if (r.step >= end) fprintf(stderr, "nothing to do: the checkpoint is at step %lld\n", (long long)r.step);
    const int64_t first = r.step;
    uint64_t allocs_after_first = 0; /* device allocations from the driver once the first step has run */
    double t0 = cli_now(), t_last = t0;
    int64_t timed_steps = 0; /* steps of this process since the last line */
    while (r.step < end) {
        const double lr = ttt_lr_warmup_cosine(r.step, o->warmup, o->steps, o->lr, o->min_lr);
        double loss = NAN, gnorm = NAN;
        if ((rc = train_step(&r, lr, &loss, &gnorm))) break;
        r.step++, timed_steps++;
        if (r.step == first + 1) {
            ttt_memory_stats ms;
            if (ttt_ctx_memory_stats(r.ctx, &ms) == TTT_OK) allocs_after_first = ms.driver_allocs;
        }
        r.win_loss += loss, r.win_steps++;
        const int eval_now = r.val && (r.step % o->eval_every == 0 || r.step == o->steps);
        if (r.step % o->log_every == 0 || r.step == o->steps || eval_now) {
            ttt_synchronize(r.ctx);
            const double now = cli_now(), tps = (double)(timed_steps * tok_step) / (now - t_last);
            const double vloss = eval_now ? val_loss(&r) : NAN; /* after the clock: not in tokens/s */
            if (eval_now && !isfinite(vloss)) {
                rc = EXIT_RUNTIME;
                break;
            }
            const double tflops = flops_tok * tps * 1e-12;
            const double mfu_bf16 = on_gpu ? tflops / o->peak_bf16 : NAN, mfu_f32 = on_gpu && f32 ? tflops / o->peak_f32 : NAN;
            const double eta = (now - t0) / (double)(r.step - first) * (double)(o->steps - r.step);
            const double mean = r.win_loss / (double)r.win_steps;
            fprintf(stderr, "step %lld/%lld  loss %.4f", (long long)r.step, (long long)o->steps, mean);
            if (eval_now) fprintf(stderr, "  val %.4f", vloss);
            fprintf(stderr, "  lr %.3e  |g| %.3f  %.0f tok/s", lr, gnorm, tps);
            if (on_gpu) fprintf(stderr, "  %.2f TFLOP/s  MFU %.2f%% of %.0f bf16", tflops, 100 * mfu_bf16, o->peak_bf16);
            else fprintf(stderr, "  %.3g GFLOP/s", tflops * 1e3);
            if (on_gpu && f32) fprintf(stderr, ", %.2f%% of %.0f f32", 100 * mfu_f32, o->peak_f32);
            fprintf(stderr, "  ETA %dm%02ds\n", (int)(eta / 60), (int)fmod(eta, 60));
            if (metrics_append(r.metrics, r.step, mean, lr, gnorm, r.step * tok_step, vloss, tps, tflops, mfu_bf16,
                               mfu_f32, now - t0)) {
                fprintf(stderr, "ttt lm train: cannot append to %s: %s\n", r.metrics, strerror(errno));
                rc = EXIT_RUNTIME;
                break;
            }
            r.win_loss = 0, r.win_steps = 0, timed_steps = 0;
            t_last = cli_now();
        }
        if ((r.step % o->save_every == 0 || r.step == end) && (rc = save(&r))) break;
    }
    if (!rc)
        fprintf(stderr, "done: %lld steps in %.1f s; checkpoint %s (step %lld)\n", (long long)(r.step - first),
                cli_now() - t0, r.ckpt, (long long)r.step);
    ttt_memory_stats ms;
    if (!rc && r.step > first && on_gpu && ttt_ctx_memory_stats(r.ctx, &ms) == TTT_OK) {
        const size_t reserved = ms.reserved;
        const uint64_t allocs = ms.driver_allocs;
        fprintf(stderr, "device memory: %.2f GiB reserved in %llu driver allocations (%llu after the first step)\n",
                reserved / 1073741824.0, (unsigned long long)allocs, (unsigned long long)allocs_after_first);
    }
    run_free(&r);
    return rc;
}

/* ---- eval ----------------------------------------------------------------------------------------- */

/* The bucket edges 0 = b[0] < b[1] < ... < b[n - 1]: --buckets, or powers of
 * two up to `limit`; with --context C, the edges below C and then C. Returns n. */
static int eval_edges(const opts *o, int64_t limit, int64_t *b) {
    int n = 0;
    b[n++] = 0;
    if (o->n_edges)
        for (int i = 0; i < o->n_edges; i++) b[n++] = o->edges[i];
    else
        for (int64_t e = 1; e <= limit; e *= 2) b[n++] = e;
    if (o->context) {
        while (n > 1 && b[n - 1] >= o->context) n--;
        b[n++] = o->context;
    }
    return n;
}

typedef struct {
    double sum;
    int64_t count, docs;
} bucket;

static int eval_cmd(const opts *o) {
    char err[512];
    ttt_shard *sh = NULL;
    if (ttt_shard_open(o->data, &sh, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt lm eval: %s\n", err);
        return EXIT_RUNTIME;
    }
    /* the longest usable prefix of any document: length - 1 positions have a target */
    int64_t longest = 0;
    for (int64_t d = 0; d < ttt_shard_n_docs(sh); d++) {
        int64_t start, len;
        if (ttt_shard_doc(sh, d, &start, &len, err, sizeof err) == TTT_OK && len - 1 > longest) longest = len - 1;
    }
    int64_t b[MAX_EDGES + 40];
    const int nb = eval_edges(o, o->context ? o->context : longest, b);
    const int64_t max_ctx = b[nb - 1];
    ttt_ctx *ctx = make_ctx(o, "lm eval");
    ttt_lm m = {0};
    int64_t step = 0;
    bucket *acc = calloc((size_t)nb, sizeof *acc);
    double *rows = malloc(sizeof(double) * (size_t)(max_ctx > 0 ? max_ctx : 1));
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(max_ctx + 1));
    int rc = EXIT_RUNTIME;
    char tmp[4300];
    FILE *f = NULL; /* --out, opened first so a bad path fails before the work */
    if (!ctx) goto done;
    if (o->out && !(f = cli_atomic_open(o->out, tmp, sizeof tmp))) {
        fprintf(stderr, "ttt lm eval: cannot write %s: %s\n", o->out, strerror(errno));
        goto done;
    }
    if (!acc || !rows || !ids) {
        fprintf(stderr, "ttt lm eval: out of host memory for a context of %lld\n", (long long)max_ctx);
        goto done;
    }
    if ((rc = load_model(ctx, o, "lm eval", &m, &step))) goto done;
    rc = EXIT_RUNTIME;
    if (ttt_shard_vocab(sh) > m.cfg.vocab) {
        fprintf(stderr, "ttt lm eval: %s has vocabulary %lld but the model %lld: not the model's tokenizer\n", o->data,
                (long long)ttt_shard_vocab(sh), (long long)m.cfg.vocab);
        goto done;
    }
    int64_t used = 0, skipped = 0, tokens = 0;
    const double t0 = cli_now();
    double t_shown = t0;
    for (int64_t d = 0; d < ttt_shard_n_docs(sh) && (!o->max_docs || used < o->max_docs); d++) {
        int64_t start, len, C = 0;
        if (ttt_shard_doc(sh, d, &start, &len, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "ttt lm eval: %s\n", err);
            goto done;
        }
        if (o->context) C = len - 1 >= o->context ? o->context : 0;
        else
            for (int j = 1; j < nb; j++)
                if (b[j] <= len - 1) C = b[j];
        if (!C) {
            skipped++;
            continue;
        }
        if (ttt_shard_read(sh, start, C + 1, ids, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "ttt lm eval: %s\n", err);
            goto done;
        }
        ttt_step_reset(ctx);
        ttt_no_grad_begin(ctx);
        ttt_tensor *per = NULL;
        ttt_tensor *loss = ttt_lm_loss(ctx, &m, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, C), ids),
                                       ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, C), ids + 1), &per);
        ttt_no_grad_end(ctx);
        if (!loss || ttt_copy_to_host(ctx, per, rows, TTT_F64) != TTT_OK) {
            fprintf(stderr, "ttt lm eval: document %lld (%lld tokens): %s\n", (long long)d, (long long)C, ttt_error(ctx));
            goto done;
        }
        for (int j = 0; j + 1 < nb && b[j] < C; j++) {
            const int64_t hi = b[j + 1] < C ? b[j + 1] : C;
            for (int64_t t = b[j]; t < hi; t++) acc[j].sum += rows[t];
            acc[j].count += hi - b[j];
            acc[j].docs++;
        }
        used++, tokens += C;
        if (cli_now() - t_shown > 2.0) {
            fprintf(stderr, "eval: %lld documents, %lld tokens, %.1f s\n", (long long)used, (long long)tokens, cli_now() - t0);
            t_shown = cli_now();
        }
    }
    const double secs = cli_now() - t0;
    if (!used) {
        if (o->context)
            fprintf(stderr, "ttt lm eval: no document of %s has the %lld + 1 tokens of --context (lower it)\n", o->data,
                    (long long)o->context);
        else
            fprintf(stderr, "ttt lm eval: no document of %s has %lld + 1 tokens (the first bucket edge)\n", o->data,
                    (long long)(nb > 1 ? b[1] : 1));
        goto done;
    }
    double total = 0;
    printf("checkpoint %s: step %lld, window %lld; %lld documents of %s", o->ckpt, (long long)step,
           (long long)m.cfg.window, (long long)used, o->data);
    if (o->context) printf(", each read to %lld tokens (%lld shorter skipped)\n", (long long)o->context, (long long)skipped);
    else printf(", each read to the largest bucket edge it covers (%lld too short)\n", (long long)skipped);
    printf("%-22s %10s %12s %10s %10s\n", "positions", "documents", "tokens", "loss", "perplexity");
    for (int j = 0; j + 1 < nb; j++) {
        if (!acc[j].count) continue;
        const double mean = acc[j].sum / (double)acc[j].count;
        char range[48];
        snprintf(range, sizeof range, "[%lld, %lld)", (long long)b[j], (long long)b[j + 1]);
        printf("%-22s %10lld %12lld %10.4f %10.2f\n", range, (long long)acc[j].docs, (long long)acc[j].count, mean, exp(mean));
        if (f)
            fprintf(f, "{\"bucket_start\": %lld, \"bucket_end\": %lld, \"mean_loss\": %.6f, \"count\": %lld, \"documents\": %lld}\n",
                    (long long)b[j], (long long)b[j + 1], mean, (long long)acc[j].count, (long long)acc[j].docs);
        total += acc[j].sum;
    }
    const double mean = total / (double)tokens;
    printf("all %lld positions: loss %.4f, perplexity %.2f; %.3f s per document, %.4f s per 1K tokens\n",
           (long long)tokens, mean, exp(mean), secs / (double)used, secs / (double)tokens * 1024.0);
    if (f) {
        fprintf(f, "{\"summary\": true, \"documents\": %lld, \"skipped\": %lld, \"context\": ", (long long)used, (long long)skipped);
        if (o->context) fprintf(f, "%lld", (long long)o->context);
        else fputs("null", f);
        fprintf(f, ", \"max_context\": %lld, \"tokens\": %lld, \"mean_loss\": %.6f, \"perplexity\": %.4f, \"step\": %lld, "
                   "\"window\": %lld, \"seconds\": %.3f, \"seconds_per_doc\": %.4f, \"seconds_per_1k_tokens\": %.5f}\n",
                (long long)max_ctx, (long long)tokens, mean, exp(mean), (long long)step, (long long)m.cfg.window, secs,
                secs / (double)used, secs / (double)tokens * 1024.0);
        const int bad = cli_atomic_commit(f, tmp, o->out);
        f = NULL;
        if (bad) {
            fprintf(stderr, "ttt lm eval: cannot write %s: %s\n", o->out, strerror(errno));
            goto done;
        }
    }
    rc = 0;
done:
    if (f) fclose(f), remove(tmp);
    if (ctx) ttt_lm_free(ctx, &m);
    ttt_ctx_free(ctx);
    ttt_shard_close(sh);
    free(acc), free(rows), free(ids);
    return rc;
}

/* ---- generate ------------------------------------------------------------------------------------- */

/* The last row of logits [1, T, V] to the host. */
static int last_row(ttt_ctx *ctx, ttt_tensor *logits, double *row) {
    if (!logits) return TTT_ERR;
    const int64_t T = logits->shape[1];
    return ttt_copy_to_host(ctx, ttt_slice(ctx, logits, 1, T - 1, T, 1), row, TTT_F64);
}

static int generate_cmd(const opts *o) {
    ttt_tokenizer *tok = NULL;
    int rc = cli_load_tokenizer("lm generate", o->tokenizer, &tok);
    if (rc) return rc;
    char err[512];
    ttt_token_ids prompt = {0};
    if (ttt_tokenizer_encode(tok, o->prompt, strlen(o->prompt), &prompt, err, sizeof err) != TTT_OK || prompt.n == 0) {
        fprintf(stderr, "ttt lm generate: %s\n", prompt.n ? err : "--prompt encodes to no tokens");
        ttt_tokenizer_free(tok);
        ttt_token_ids_free(&prompt);
        return prompt.n ? EXIT_RUNTIME : EXIT_USAGE;
    }
    ttt_ctx *ctx = make_ctx(o, "lm generate");
    ttt_lm m = {0};
    ttt_lm_cache cache = {0};
    double *row = NULL;
    sample_cand *cands = NULL;
    rc = EXIT_RUNTIME;
    if (!ctx || (rc = load_model(ctx, o, "lm generate", &m, NULL))) goto done;
    rc = EXIT_RUNTIME;
    const int64_t V = m.cfg.vocab, n_prompt = (int64_t)prompt.n;
    if (ttt_tokenizer_vocab_size(tok) > V) {
        fprintf(stderr, "ttt lm generate: the tokenizer has %d tokens but the model %lld: not the tokenizer of its data\n",
                (int)ttt_tokenizer_vocab_size(tok), (long long)V);
        goto done;
    }
    /* ids the tokenizer cannot decode (a shard vocabulary padded past it) are never sampled */
    const int64_t V_text = ttt_tokenizer_vocab_size(tok);
    row = malloc(sizeof(double) * (size_t)V);
    cands = malloc(sizeof(sample_cand) * (size_t)V);
    if (!row || !cands) {
        fprintf(stderr, "ttt lm generate: out of host memory\n");
        goto done;
    }
    if (ttt_lm_cache_init(ctx, &m, &cache, 1, n_prompt + o->tokens) != TTT_OK) {
        fprintf(stderr, "ttt lm generate: %s\n", ttt_error(ctx));
        goto done;
    }
    fwrite(o->prompt, 1, strlen(o->prompt), stdout);
    fflush(stdout);
    const double t0 = cli_now();
    for (int64_t p = 0; p < n_prompt; p += PREFILL_PIECE) {
        const int64_t n = n_prompt - p < PREFILL_PIECE ? n_prompt - p : PREFILL_PIECE;
        ttt_step_reset(ctx);
        ttt_tensor *logits = ttt_lm_decode(ctx, &m, &cache, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, n), prompt.ids + p));
        if ((p + n == n_prompt ? last_row(ctx, logits, row) : logits ? TTT_OK : TTT_ERR) != TTT_OK) {
            fprintf(stderr, "\nttt lm generate: prefill: %s\n", ttt_error(ctx));
            goto done;
        }
    }
    const double t_prefill = cli_now() - t0;
    uint64_t rng = (uint64_t)o->seed;
    int64_t made = 0;
    while (made < o->tokens) {
        int32_t next = sample_token(row, V_text, &(sample_params){o->temperature, o->top_k, o->top_p}, &rng, cands);
        char *text = NULL;
        size_t len = 0;
        if (ttt_tokenizer_decode(tok, &next, 1, 0, &text, &len, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "\nttt lm generate: %s\n", err);
            goto done;
        }
        fwrite(text, 1, len, stdout);
        fflush(stdout);
        free(text);
        if (++made == o->tokens) break; /* the last token needs no logits */
        ttt_step_reset(ctx);
        if (last_row(ctx, ttt_lm_decode(ctx, &m, &cache, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, 1), &next)), row) != TTT_OK) {
            fprintf(stderr, "\nttt lm generate: token %lld: %s\n", (long long)made, ttt_error(ctx));
            goto done;
        }
    }
    printf("\n");
    const double dt = cli_now() - t0 - t_prefill;
    fprintf(stderr, "prompt: %lld tokens in %.3f s; generated %lld tokens in %.3f s (%.1f tokens/s); cache of %lld positions%s\n",
            (long long)n_prompt, t_prefill, (long long)made, dt, (double)made / (dt > 0 ? dt : 1e-9),
            (long long)cache.capacity, m.cfg.window ? " (ring buffer)" : "");
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
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const int sub = !strcmp(argv[1], "train") ? SUB_TRAIN : !strcmp(argv[1], "eval") ? SUB_EVAL
                    : !strcmp(argv[1], "generate")                                     ? SUB_GENERATE
                                                                                       : 0;
    if (!sub) {
        fprintf(stderr, "ttt lm: unknown subcommand '%s' (train, eval or generate)\n", argv[1]);
        return EXIT_USAGE;
    }
    opts o;
    int rc = parse(argc, argv, sub, &o);
    if (rc >= 0) return rc;
    return sub == SUB_TRAIN ? train_cmd(&o) : sub == SUB_EVAL ? eval_cmd(&o) : generate_cmd(&o);
}
