/* ttt lm: the Transformer language model (include/ttt/lm.h) on token shards
 * (include/ttt/shards.h); docs/lm.md has examples and the checkpoint layout.
 *
 *   ttt lm train      the library's training runner (include/ttt/train.h) on the LM's loss:
 *                     DIR/model.safetensors (atomic) and DIR/metrics.jsonl
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
#include "ttt/fileio.h"
#include "llama_generate.h"
#include "sample.h"
#include "ttt/runtime.h"
#include "ttt/tokenizer.h"
#include "ttt/ttt.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
enum { SUB_TRAIN = 1, SUB_EVAL = 2, SUB_GENERATE = 4, SUB_ALL = 7 };
enum { MAX_EDGES = 64 };      /* eval: bucket edges from --buckets */
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
    const char *data, *val, *out, *preset, *ckpt, *tokenizer, *prompt, *device, *dtype, *compute, *buckets, *graph_s;
    const char *init_from, *state_in, *state_out, *dp_transport, *model_path, *chat, *system, *mixer, *ttt_backbone;
    int64_t dim, depth, heads, mlp_hidden, prime_blocks, prime_hidden, window, seq, batch, accum, steps, warmup, seed,
        save_every, log_every, eval_every, eval_batches, stop_at, context, max_docs, tokens, top_k, threads,
        logit_chunk, inner_chunk, eta_warmup, global_batch, ttt_mini_batch;
    double dp_timeout, dp_bucket_mb, ttt_base_lr;
    int device_index; /* the GPU of this data-parallel rank (not a flag) */
    double rope_theta, lr, min_lr, wd, beta2, clip, peak_bf16, peak_f32, temperature, top_p, inner_clip, eta, eta0;
    int resume, tf32, first_order, keep_graphs, timing, ignore_eos, show_ids;
    int graph; /* --cuda-graph: -1 auto, 0 off, 1 on */
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
    F_STR("--mixer", SUB_TRAIN, mixer),
    F_STR("--ttt-backbone", SUB_TRAIN, ttt_backbone),
    F_INT("--ttt-mini-batch", SUB_TRAIN, ttt_mini_batch, 1, 4096),
    F_DBL("--ttt-base-lr", SUB_TRAIN, ttt_base_lr, 0, 1e6),
    F_INT("--inner-chunk", SUB_TRAIN, inner_chunk, 0, BIG),
    F_DBL("--inner-clip", SUB_TRAIN, inner_clip, 0, 1e9),
    F_DBL("--eta", SUB_TRAIN | SUB_EVAL | SUB_GENERATE, eta, 0, 1e3),
    F_DBL("--eta0", SUB_TRAIN, eta0, 0, 1e3),
    F_INT("--eta-warmup", SUB_TRAIN, eta_warmup, 0, BIG),
    F_BOOL("--first-order", SUB_TRAIN, first_order),
    F_BOOL("--keep-graphs", SUB_TRAIN, keep_graphs),
    F_STR("--init-from", SUB_TRAIN, init_from),
    F_INT("--seq-len", SUB_TRAIN, seq, 1, 1 << 24),
    F_INT("--batch", SUB_TRAIN, batch, 1, 1 << 20),
    F_INT("--grad-accum", SUB_TRAIN, accum, 1, 1 << 20),
    F_INT("--global-batch", SUB_TRAIN, global_batch, 1, BIG),
    F_DBL("--dp-timeout", SUB_TRAIN, dp_timeout, 0.1, 1e6),
    F_DBL("--dp-bucket-mb", SUB_TRAIN, dp_bucket_mb, 0.001, 1e5),
    F_STR("--dp-transport", SUB_TRAIN, dp_transport),
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
    F_STR("--cuda-graph", SUB_TRAIN, graph_s),
    F_BOOL("--timing", SUB_TRAIN, timing),
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
    F_STR("--model", SUB_GENERATE, model_path),
    F_STR("--chat", SUB_GENERATE, chat),
    F_STR("--system", SUB_GENERATE, system),
    F_BOOL("--ignore-eos", SUB_GENERATE, ignore_eos),
    F_BOOL("--show-ids", SUB_GENERATE, show_ids),
    F_STR("--state", SUB_GENERATE, state_in),
    F_STR("--save-state", SUB_GENERATE, state_out),
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
    "  --threads N         CPU threads (default 0: the cores other processes leave free)\n"
    "exit codes: 0 ok, 1 runtime failure (a file, the data, the device), 2 bad usage,\n"
    "            130 train stopped by SIGINT / SIGTERM (a checkpoint was written)\n";

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
            "  --resume            continue DIR's run from its checkpoint (repeat the run's flags); the final\n"
            "                      parameters and metrics are bit-identical to an uninterrupted run's on the\n"
            "                      same device (the backends are deterministic)\n"
            "                      Ctrl-C or SIGTERM: the step finishes, a checkpoint is written, exit 130\n"
            "  --stop-at STEP      end this process at STEP (< --steps) with a checkpoint, as if killed\n"
            "                      there; the schedule still runs to --steps (time-limited jobs, tests)\n"
            "  --save-every N      (default 100)       --log-every N    (default 10)\n"            "  --cuda-graph on|off record each micro-batch's forward + backward once as a CUDA graph and\n"
            "                      replay it (default auto: on with --device cuda; same results, fewer launches)\n"
            "  --timing            add the milliseconds per step of each phase (data, forward+backward,\n"
            "                      readback, clip, optimizer) to the progress lines\n"
            "  --eval-every N      (default 100)       --eval-batches N (default 4)\n"
            "model (stored in the checkpoint; eval and generate rebuild the model from it):\n"
            "  --preset P          size tiny (D 64, 2 blocks, 4 heads, F 172) | small (256, 4, 4, 688) |\n"
            "                      125m (768, 12, 12, 2048) | 350m (1024, 24, 16) | 760m (1536, 24, 16), alone\n"
            "                      (full attention, RoPE theta 1e4) or with -fa | -swa | -e2e | -kvb (theta 5e5: the\n"
            "                      TTT-E2E comparison; docs/results-e2e.md) (default tiny); flags below override\n"
            "  --dim D             width            --depth N        blocks\n"
            "  --heads H           heads (D / H must be even: RoPE rotates pairs)\n"
            "  --mlp-hidden F      SwiGLU width\n"
            "  --window K          0: full causal attention; K > 0: sliding window of K tokens (default: the preset's)\n"
            "                      (each query sees itself and the K - 1 before it)\n"
            "  --prime-blocks N    the last N blocks get a prime MLP (TTT-E2E's slot; default: the preset's)\n"
            "  --prime-hidden F    its width (default 0: --mlp-hidden)\n"
            "  --rope-theta X      RoPE base (default: the preset's)\n"
            "  --mixer M           each block's sequence mixer: attention (default; full or sliding window by\n"
            "                      --window) | ttt-linear | ttt-mlp (TTT layers replacing attention, Sun et al.\n"
            "                      2024) | ttt-kvb (TTT-MLP after sliding-window attention; needs --window; the\n"
            "                      -kvb presets) | linear-attention | gated-deltanet | mamba2 (linear-time\n"
            "                      recurrent mixers replacing attention, docs/mixers.md) (docs/lm.md,\n"
            "                      docs/results-mixers.md)\n"
            "  --ttt-backbone B    transformer (default) | mamba (causal-conv sublayer, conv q/k, output gate)\n"
            "  --ttt-mini-batch b  tokens per TTT inner step (default 16)\n"
            "  --ttt-base-lr X     TTT inner learning rate scale (default 0: 1.0 Linear, 0.1 MLP)\n"
            "TTT-E2E (the -e2e presets: SWA everywhere, prime MLPs in the last quarter of the blocks):\n"
            "  --inner-chunk b     tokens per inner step: the prime MLPs take an SGD step on each chunk's\n"
            "                      next-token loss while reading (0: off; --seq-len must be a multiple of b)\n"
            "  --inner-clip C      clip each sequence's inner gradient to global norm C (0: none; preset 1)\n"
            "  --eta X             the inner learning rate after the ramp (default 1, also at inference)\n"
            "  --eta0 X            where the ramp starts (default 0.1)\n"
            "  --eta-warmup N      outer steps of the ramp eta0 -> eta (default 10%% of --steps)\n"
            "  --first-order       do not differentiate through the inner gradients (the ablation;\n"
            "                      default: full second order through every inner step)\n"
            "  --keep-graphs       keep each chunk's graph for the backward pass instead of running the\n"
            "                      chunk again: faster, memory grows with the chunks per sequence\n"
            "  --init-from CKPT    warm start: the source checkpoint's architecture and weights, changed by\n"
            "                      the model flags given (e.g. --window, --prime-blocks, --inner-chunk); new\n"
            "                      prime MLPs start with a zero down projection (the source's function)\n"
            "optimization:\n"
            "  --seq-len T         tokens per sequence (default 256)\n"
            "  --batch B           sequences per micro-batch (default 8)\n"
            "  --grad-accum N      micro-batches per step and rank; gradients summed, each loss scaled by 1/N\n"
            "                      (default 1)\n"
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
            "data-parallel (mpirun -np N ttt lm train ..., srun --mpi=pmix ...; docs/data-parallel.md):\n"
            "  --global-batch G    sequences per optimizer step over all ranks; each rank then runs\n"
            "                      G / (--batch x ranks) micro-batches (default: --batch x --grad-accum x ranks).\n"
            "                      The run depends on G and --batch, not on the number of ranks: keep G to\n"
            "                      --resume on another number of ranks\n"
            "  --dp-timeout S      a rank waiting longer than S seconds for another ends the job, naming it\n"
            "                      (default 300)\n"
            "  --dp-bucket-mb M    gradient bucket size (default 25)\n"
            "  --dp-transport T    auto (NCCL for CUDA when built with it, else MPI) | mpi | nccl\n"
            "progress (stderr: after the first step, each log step and every 10 s): loss, lr, gradient norm,\n"
            "tokens/s, model FLOP/s, ETA; on the GPU also the MFU against:\n"
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
            "  --eta X             TTT-E2E: the inner learning rate while reading (default 1; 0: the same\n"
            "                      network without test-time training)\n"
            "%s",
            USAGE_ALL);
}

static void usage_generate(FILE *f) {
    fprintf(f,
            "usage: ttt lm generate --ckpt DIR|FILE --tokenizer PATH --prompt TEXT [flags]\n"
            "       ttt lm generate --model FILE.gguf|HF_DIR (--prompt TEXT | --chat QUESTION) [flags]\n"
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
            "A pretrained Llama / Mistral / Qwen2 model (docs/llama.md) instead of --ckpt and --tokenizer:\n"
            "  --model PATH        a GGUF file or a Hugging Face folder (config.json, safetensors,\n"
            "                      tokenizer.json); its own tokenizer; stops at its end-of-turn token\n"
            "  --chat QUESTION     one user turn in the model's chat template (ChatML); prints the answer\n"
            "  --system TEXT       the system message of --chat (default: the template's own)\n"
            "  --ignore-eos        generate all --tokens (benchmarks); --show-ids: the prompt's ids on stderr\n"
            "TTT-E2E models keep learning while they read the prompt and write (one inner step per chunk):\n"
            "  --save-state FILE   after reading the prompt, save what the model learned and its attention\n"
            "                      window (a safetensors state file) before generating\n"
            "  --state FILE        start from such a file: the prompt continues the text read then (a\n"
            "                      document read once, asked many times); another model or tokenizer is refused\n"
            "  --eta X             the inner learning rate (default 1)\n"
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
    char err[1024];
    if (o->init_from) { /* a warm start keeps the source's architecture; the flags below change it */
        ttt_ctx *tmp = ttt_ctx_new(NULL);
        ttt_lm src = {0};
        const int ok = tmp && ttt_lm_load(tmp, o->init_from, -1, &src, NULL, err, sizeof err) == TTT_OK;
        if (ok) o->model = src.cfg;
        ttt_lm_free(tmp, &src);
        ttt_ctx_free(tmp);
        if (!ok) {
            fprintf(stderr, "ttt lm train: --init-from %s: %s\n", o->init_from, tmp ? err : "no context");
            return EXIT_RUNTIME;
        }
    } else if (ttt_lm_preset(o->preset, 0, &o->model, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt lm train: --preset %s: %s\n", o->preset, err);
        return EXIT_USAGE;
    }
    ttt_lm_config *c = &o->model;
    if (o->dim > 0) c->dim = o->dim;
    if (o->depth > 0) c->depth = o->depth;
    if (o->heads > 0) c->heads = o->heads;
    if (o->mlp_hidden > 0) c->mlp_hidden = o->mlp_hidden;
    if (o->rope_theta > 0) c->rope_theta = o->rope_theta;
    if (o->window >= 0) c->window = o->window;
    if (o->prime_blocks >= 0) c->prime_blocks = o->prime_blocks;
    if (o->prime_hidden >= 0) c->prime_hidden = o->prime_hidden;
    if (o->inner_chunk >= 0) c->inner_chunk = o->inner_chunk;
    if (o->inner_clip >= 0) c->inner_clip = o->inner_clip;
    if (o->mixer && (c->mixer = ttt_lm_mixer_parse(o->mixer)) < 0) {
        fprintf(stderr, "ttt lm train: --mixer %s: unknown (attention, ttt-linear, ttt-mlp, ttt-kvb, linear-attention, "
                "gated-deltanet or mamba2)\n", o->mixer);
        return EXIT_USAGE;
    }
    if (o->ttt_backbone) {
        if (strcmp(o->ttt_backbone, "transformer") && strcmp(o->ttt_backbone, "mamba")) {
            fprintf(stderr, "ttt lm train: --ttt-backbone %s: transformer or mamba\n", o->ttt_backbone);
            return EXIT_USAGE;
        }
        c->ttt_backbone = !strcmp(o->ttt_backbone, "mamba");
    }
    if (o->ttt_mini_batch > 0) c->ttt_mini_batch = o->ttt_mini_batch;
    if (o->ttt_base_lr >= 0) c->ttt_base_lr = o->ttt_base_lr;
    if (c->mixer == TTT_LM_MIXER_TTT_KVB && c->window < 1) {
        fprintf(stderr, "ttt lm train: --mixer ttt-kvb runs TTT-MLP alongside sliding-window attention: give --window K "
                        "(or a -kvb preset)\n");
        return EXIT_USAGE;
    }
    if (c->inner_chunk > 0 && c->mixer != TTT_LM_MIXER_ATTENTION) {
        fprintf(stderr, "ttt lm train: TTT-E2E (--inner-chunk) runs on the attention mixer, not --mixer %s\n",
                ttt_lm_mixer_name(c->mixer));
        return EXIT_USAGE;
    }
    if (c->inner_chunk > 0 && (c->prime_blocks < 1 || c->window < 2)) {
        fprintf(stderr, "ttt lm train: --inner-chunk %lld (TTT-E2E) needs --prime-blocks >= 1 and --window >= 2 "
                        "(have %lld and %lld; the -e2e presets set all three)\n", (long long)c->inner_chunk,
                (long long)c->prime_blocks, (long long)c->window);
        return EXIT_USAGE;
    }
    if (c->inner_chunk > 0 && o->seq % c->inner_chunk) {
        fprintf(stderr, "ttt lm train: --seq-len %lld must be a multiple of the inner chunk %lld (--inner-chunk)\n",
                (long long)o->seq, (long long)c->inner_chunk);
        return EXIT_USAGE;
    }
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
                .peak_f32 = PEAK_F32_TFLOPS, .temperature = 0.8, .top_p = 1.0, .window = -1, .prime_blocks = -1,
                .prime_hidden = -1, .inner_chunk = -1, .inner_clip = -1, .eta = -1, .eta0 = 0.1, .eta_warmup = -1,
                .ttt_base_lr = -1};
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
    else if (o->graph_s && strcmp(o->graph_s, "on") && strcmp(o->graph_s, "off") && strcmp(o->graph_s, "auto"))
        snprintf(buf, sizeof buf, "--cuda-graph %.100s: expected on, off or auto", o->graph_s), bad = buf;
    else if ((o->state_in || o->state_out) && sub == SUB_GENERATE && o->state_in && o->state_out &&
             !strcmp(o->state_in, o->state_out))
        bad = "--state and --save-state name one file: the saved state would replace the one being read";
    else if (o->graph_s && !strcmp(o->graph_s, "on") && !strcmp(o->device, "cpu"))
        bad = "--cuda-graph on needs --device cuda (graphs are a CUDA feature)";
    else if (o->dp_transport && strcmp(o->dp_transport, "auto") && strcmp(o->dp_transport, "mpi") &&
             strcmp(o->dp_transport, "nccl"))
        snprintf(buf, sizeof buf, "--dp-transport %.100s: expected auto, mpi or nccl", o->dp_transport), bad = buf;
    else if (o->out && strlen(o->out) > 4000)
        bad = "--out: the path is too long";
    else if (sub == SUB_TRAIN) {
        if (!o->data || !o->out) bad = "needs --data SHARD and --out DIR (see --help)";
        else if (o->warmup > o->steps) bad = "--warmup is longer than --steps";
        else if (o->min_lr > o->lr) bad = "--min-lr is above --lr";
        else if (o->stop_at >= o->steps) bad = "--stop-at must be below --steps (it stops a run early)";
    } else if (sub == SUB_EVAL) {
        if (!o->ckpt || !o->data) bad = "needs --ckpt and --data (see --help)";
    } else if (o->model_path) {
        if (o->ckpt || o->tokenizer || o->state_in || o->state_out)
            bad = "--model brings its own tokenizer: --ckpt, --tokenizer, --state and --save-state do not apply";
        else if (o->dtype || o->compute)
            bad = "--dtype and --compute do not apply to --model (its weights are dequantized to f32)";
        else if (!o->prompt == !o->chat) bad = "--model needs one of --prompt TEXT or --chat QUESTION";
        else if (o->system && !o->chat) bad = "--system goes with --chat";
    } else if (o->chat || o->system || o->ignore_eos)
        bad = "--chat, --system and --ignore-eos go with --model";
    else if (!o->ckpt || !o->tokenizer || !o->prompt)
        bad = "needs --ckpt, --tokenizer and --prompt, or --model (see --help)";
    if (bad) {
        fprintf(stderr, "ttt %s: %s\n", cmd, bad);
        return EXIT_USAGE;
    }
    if (sub == SUB_EVAL && o->buckets && parse_buckets(o)) return EXIT_USAGE;
    if (o->eta < 0) o->eta = 1.0; /* TTT-E2E's inner learning rate: 1 at inference, the end of training's ramp */
    if (sub == SUB_TRAIN) {
        if (o->min_lr < 0) o->min_lr = o->lr / 10;
        if (o->warmup < 0) o->warmup = o->steps / 20;
        if (o->eta_warmup < 0) o->eta_warmup = o->steps / 10; /* the official schedule: 10% of the steps */
        if (!o->dtype) o->dtype = "f32";
        o->graph = !o->graph_s || !strcmp(o->graph_s, "auto") ? -1 : !strcmp(o->graph_s, "on");
        int rc = train_model_flags(o);
        if (rc) return rc;
    }
    return -1;
}

/* ---- shared -------------------------------------------------------------------------------------- */

static ttt_ctx *make_ctx(const opts *o, const char *cmd) {
    ttt_device dev = TTT_CPU;
    if (!strcmp(o->device, "cuda") || (!strcmp(o->device, "auto") && ttt_device_count(TTT_CUDA) > 0)) dev = TTT_CUDA;
    ttt_ctx_config cc = {.device = dev, .seed = (uint64_t)o->seed, .threads = (int)o->threads, .tf32 = o->tf32,
                         .device_index = dev == TTT_CUDA ? o->device_index : 0};
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

/* Loads --ckpt's model (ttt_lm_load: config from its metadata, parameters checked
 * finite) for eval and generate, in --dtype or else the dtype it was trained
 * in, with --compute applied. 0 or an exit code. */
static int load_model(ttt_ctx *ctx, const opts *o, const char *cmd, ttt_lm *m, int64_t *step) {
    char err[1024];
    if (ttt_lm_load(ctx, o->ckpt, o->dtype ? (int)dtype_of(o->dtype) : -1, m, step, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt %s: --ckpt %s: %s\n", cmd, o->ckpt, err);
        return EXIT_RUNTIME;
    }
    if (apply_compute(ctx, o, m) != TTT_OK) {
        fprintf(stderr, "ttt %s: %s\n", cmd, ttt_error(ctx));
        return EXIT_RUNTIME;
    }
    return 0;
}

/* ---- train ---------------------------------------------------------------------------------------- */

/* The LM as the training runner sees it (include/ttt/train.h). */
typedef struct {
    const opts *o;
    ttt_shard *data, *val;
    ttt_ctx *ctx;
    ttt_lm m;
    int32_t *ids, *tg;          /* one micro-batch on the host */
    ttt_tensor *in_ids, *in_tg; /* and on the device, persistent: what a recorded graph reads */
    char model_s[1024], train_s[1024];
    int64_t tok_step;
    double flops_tok;
    int on_gpu, f32;
    double vloss; /* the validation loss of the line being logged (NaN: none) */
} lm_run;

static void run_free(lm_run *r) {
    if (r->ctx) {
        ttt_persistent_free(r->ctx, r->in_ids), ttt_persistent_free(r->ctx, r->in_tg);
        ttt_lm_free(r->ctx, &r->m);
    }
    ttt_ctx_free(r->ctx);
    free(r->ids), free(r->tg);
    ttt_shard_close(r->data), ttt_shard_close(r->val);
}

/* The settings a run's trajectory depends on besides the model: --resume must repeat them. */
static void train_string(const opts *o, const ttt_shard *data, char *buf, size_t n) {
    char lr[32], min_lr[32], wd[32], beta2[32], clip[32];
    ttt_format_double(lr, sizeof lr, o->lr);
    ttt_format_double(min_lr, sizeof min_lr, o->min_lr);
    ttt_format_double(wd, sizeof wd, o->wd);
    ttt_format_double(beta2, sizeof beta2, o->beta2);
    ttt_format_double(clip, sizeof clip, o->clip);
    snprintf(buf, n,
             "seq=%lld batch=%lld accum=%lld steps=%lld warmup=%lld lr=%s min_lr=%s wd=%s beta2=%s clip=%s seed=%lld "
             "dtype=%s data_tokens=%lld data_docs=%lld",
             (long long)o->seq, (long long)o->batch, (long long)o->accum, (long long)o->steps, (long long)o->warmup, lr,
             min_lr, wd, beta2, clip, (long long)o->seed, o->dtype, (long long)ttt_shard_n_tokens(data),
             (long long)ttt_shard_n_docs(data));
    if (o->model.inner_chunk > 0) { /* TTT-E2E: the inner loop's schedule and order */
        char eta[32], eta0[32];
        ttt_format_double(eta, sizeof eta, o->eta);
        ttt_format_double(eta0, sizeof eta0, o->eta0);
        const size_t u = strlen(buf);
        snprintf(buf + u, n - u, " eta=%s eta0=%s eta_warmup=%lld first_order=%d", eta, eta0, (long long)o->eta_warmup,
                 o->first_order);
    }
    if (o->init_from) {
        const size_t u = strlen(buf);
        snprintf(buf + u, n - u, " init_from=%s", o->init_from);
    }
}

/* Micro-batch (step, micro) of the training shard: a pure function of (--seed, its index). */
static int lm_batch(ttt_ctx *ctx, void *user, const ttt_train_info *info, int64_t *items, int *graphable, char *err,
                    size_t err_len) {
    lm_run *r = user;
    const int64_t B = r->o->batch, T = r->o->seq;
    if (ttt_shard_batch(r->data, (uint64_t)r->o->seed, info->step * info->n_micro + info->micro, B, T, r->ids, r->tg,
                        err, err_len) != TTT_OK)
        return TTT_ERR;
    if (ttt_assign(ctx, r->in_ids, ttt_from_host(ctx, TTT_I32, TTT_DIMS(B, T), r->ids)) != TTT_OK ||
        ttt_assign(ctx, r->in_tg, ttt_from_host(ctx, TTT_I32, TTT_DIMS(B, T), r->tg)) != TTT_OK) {
        snprintf(err, err_len, "%s", ttt_error(ctx));
        return TTT_ERR;
    }
    *items = B * T, *graphable = 1;
    return TTT_OK;
}

/* The inner learning rate of TTT-E2E at outer step `step`: --eta0 -> --eta over --eta-warmup steps. */
static double run_eta(const lm_run *r, int64_t step) {
    return ttt_lm_e2e_eta(step, r->o->eta_warmup, r->o->eta0, r->o->eta);
}

/* The loss of ids against targets at outer step `step`; a TTT-E2E model learns
 * while it reads them (its chunk losses into aux[0], aux[1]: the first and last). */
static ttt_tensor *run_loss(lm_run *r, ttt_ctx *ctx, ttt_tensor *ids, ttt_tensor *tg, int64_t step, ttt_tensor **aux) {
    if (!ttt_lm_is_e2e(&r->m)) return ttt_lm_loss_chunked(ctx, &r->m, ids, tg, NULL, r->o->logit_chunk);
    ttt_tensor *chunks = NULL;
    const int flags = (r->o->first_order ? TTT_E2E_FIRST_ORDER : 0) | (r->o->keep_graphs ? TTT_E2E_KEEP_GRAPHS : 0);
    ttt_tensor *loss = ttt_lm_e2e_loss(ctx, &r->m, ids, tg, run_eta(r, step), flags, NULL, &chunks);
    if (loss && aux) {
        const int64_t n = chunks->shape[0];
        aux[0] = ttt_slice(ctx, chunks, 0, 0, 1, 1);
        aux[1] = ttt_slice(ctx, chunks, 0, n - 1, n, 1);
        if (!aux[0] || !aux[1]) return NULL;
    }
    return loss;
}

static ttt_tensor *lm_loss(ttt_ctx *ctx, void *user, const ttt_train_info *info, ttt_tensor **aux) {
    lm_run *r = user;
    return run_loss(r, ctx, r->in_ids, r->in_tg, info->step, aux);
}

/* The mean loss of --eval-batches fixed batches of --val (a TTT-E2E model with
 * the inner learning rate of `step`); NaN after a message on failure. */
static double val_loss(lm_run *r, int64_t step) {
    char err[512];
    const int64_t B = r->o->batch, T = r->o->seq;
    double sum = 0;
    ttt_no_grad_begin(r->ctx);
    for (int64_t b = 0; b < r->o->eval_batches && isfinite(sum); b++) {
        ttt_step_reset(r->ctx);
        if (ttt_shard_batch(r->val, VAL_SEED, b, B, T, r->ids, r->tg, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "ttt lm train: %s\n", err);
            sum = NAN;
            break;
        }
        ttt_tensor *loss = run_loss(r, r->ctx, ttt_from_host(r->ctx, TTT_I32, TTT_DIMS(B, T), r->ids),
                                    ttt_from_host(r->ctx, TTT_I32, TTT_DIMS(B, T), r->tg), step, NULL);
        const double l = loss ? ttt_item(r->ctx, loss) : NAN;
        if (!isfinite(l)) fprintf(stderr, "ttt lm train: validation: %s\n", loss ? "the loss is not finite" : ttt_error(r->ctx));
        sum += l;
    }
    ttt_no_grad_end(r->ctx);
    ttt_step_reset(r->ctx);
    return sum / (double)r->o->eval_batches;
}

static int eval_due(const lm_run *r, int64_t step) {
    return r->val && (step % r->o->eval_every == 0 || step == r->o->steps);
}

static int lm_want_log(void *user, int64_t step) {
    const lm_run *r = user;
    return step % r->o->log_every == 0 || step == r->o->steps || eval_due(r, step);
}

/* The metrics line: the settled values first, the timings last (tests compare lines up to "tokens_per_s"). */
static int lm_log_line(ttt_ctx *ctx, void *user, const ttt_train_stats *st, char *buf, size_t n, char *err,
                       size_t err_len) {
    (void)ctx;
    lm_run *r = user;
    const opts *o = r->o;
    r->vloss = eval_due(r, st->step) ? val_loss(r, st->step) : NAN; /* after the runner's clock: not in tokens/s */
    if (eval_due(r, st->step) && !isfinite(r->vloss)) {
        snprintf(err, err_len, "step %lld: the validation loss is not finite", (long long)st->step);
        return TTT_ERR;
    }
    const double tflops = r->flops_tok * st->items_per_s * 1e-12;
    char v[7][40];
    ttt_json_number(v[0], sizeof v[0], st->loss);
    ttt_json_number(v[1], sizeof v[1], st->lr);
    ttt_json_number(v[2], sizeof v[2], st->grad_norm);
    ttt_json_number(v[3], sizeof v[3], st->items_per_s);
    ttt_json_number(v[4], sizeof v[4], tflops);
    ttt_json_number(v[5], sizeof v[5], st->elapsed_s);
    int u = snprintf(buf, n, "{\"step\": %lld, \"loss\": %s, \"lr\": %s, \"grad_norm\": %s, \"tokens_seen\": %lld",
                     (long long)st->step, v[0], v[1], v[2], (long long)(st->step * r->tok_step));
    if (!isnan(r->vloss)) ttt_json_number(v[6], sizeof v[6], r->vloss), u += snprintf(buf + u, n - (size_t)u, ", \"val_loss\": %s", v[6]);
    if (ttt_lm_is_e2e(&r->m)) { /* the inner loop: its learning rate, and the first and last chunk's losses */
        char a[3][40];
        ttt_json_number(a[0], sizeof a[0], run_eta(r, st->step - 1));
        ttt_json_number(a[1], sizeof a[1], st->aux[0]);
        ttt_json_number(a[2], sizeof a[2], st->aux[1]);
        u += snprintf(buf + u, n - (size_t)u, ", \"eta\": %s, \"chunk_first\": %s, \"chunk_last\": %s", a[0], a[1], a[2]);
    }
    u += snprintf(buf + u, n - (size_t)u, ", \"tokens_per_s\": %s, \"model_tflops\": %s", v[3], v[4]);
    if (r->on_gpu) ttt_json_number(v[6], sizeof v[6], tflops / o->peak_bf16), u += snprintf(buf + u, n - (size_t)u, ", \"mfu_bf16\": %s", v[6]);
    if (r->on_gpu && r->f32) ttt_json_number(v[6], sizeof v[6], tflops / o->peak_f32), u += snprintf(buf + u, n - (size_t)u, ", \"mfu_f32\": %s", v[6]);
    u += snprintf(buf + u, n - (size_t)u, ", \"elapsed_s\": %s}", v[5]);
    return u < (int)n ? TTT_OK : TTT_ERR;
}

/* After the first step, every --log-every steps and every 10 s. */
static void lm_progress(void *user, const ttt_train_stats *st, FILE *f) {
    const lm_run *r = user;
    const opts *o = r->o;
    const double tflops = r->flops_tok * st->items_per_s * 1e-12;
    fprintf(f, "step %lld/%lld  loss %.4f", (long long)st->step, (long long)st->total_steps, st->loss);
    if (st->logged && !isnan(r->vloss)) fprintf(f, "  val %.4f", r->vloss);
    if (ttt_lm_is_e2e(&r->m))
        fprintf(f, "  chunks %.3f -> %.3f  eta %.3g", st->aux[0], st->aux[1], run_eta(r, st->step - 1));
    fprintf(f, "  lr %.3e  |g| %.3f  %.0f tok/s", st->lr, st->grad_norm, st->items_per_s);
    if (r->on_gpu) fprintf(f, "  %.2f TFLOP/s  MFU %.2f%% of %.0f bf16", tflops, 100 * tflops / o->peak_bf16, o->peak_bf16);
    else fprintf(f, "  %.3g GFLOP/s", tflops * 1e3);
    if (r->on_gpu && r->f32) fprintf(f, ", %.2f%% of %.0f f32", 100 * tflops / o->peak_f32, o->peak_f32);
    fprintf(f, "  ETA %dm%02ds\n", (int)(st->eta_s / 60), (int)fmod(st->eta_s, 60));
    if (o->timing && st->phase_steps) { /* host clock per phase: the readback waits for the device's queue */
        fprintf(f, "  ms per step (%lld steps, %lld graph replays):", (long long)st->phase_steps, (long long)st->replays);
        for (int ph = 0; ph < 5; ph++) fprintf(f, "  %s %.2f", ttt_train_phase_names[ph], 1e3 * st->phase_s[ph] / (double)st->phase_steps);
        fprintf(f, "\n");
    }
    fflush(f);
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

/* --init-from: every parameter of the source checkpoint goes to the tensor of
 * the same name (shapes must agree); the rest keeps its initialisation, except
 * that a new prime MLP's down projection starts at zero, so the warm-started
 * model computes the source's function until it learns otherwise. 0 or an exit code. */
static int warm_start(lm_run *r) {
    const opts *o = r->o;
    if (!o->init_from) return 0;
    char err[1024];
    ttt_lm src = {0};
    if (ttt_lm_load(r->ctx, o->init_from, -1, &src, NULL, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt lm train: --init-from %s: %s\n", o->init_from, err);
        return EXIT_RUNTIME;
    }
    int rc = 0, copied = 0, zeroed = 0;
    for (int i = 0; i < r->m.n_params && !rc; i++) {
        ttt_tensor *from = ttt_lm_param(&src, r->m.names[i]), *to = r->m.params[i];
        if (from) {
            int same = from->ndim == to->ndim;
            for (int d = 0; same && d < to->ndim; d++) same = from->shape[d] == to->shape[d];
            if (!same) {
                fprintf(stderr, "ttt lm train: --init-from %s: %s has another shape there\n", o->init_from, r->m.names[i]);
                rc = EXIT_RUNTIME;
            } else if (ttt_assign(r->ctx, to, from) != TTT_OK) rc = EXIT_RUNTIME;
            copied++;
        } else if (strstr(r->m.names[i], "prime_mlp.down_proj")) {
            if (ttt_fill(r->ctx, to, 0.0) != TTT_OK) rc = EXIT_RUNTIME;
            zeroed++;
        }
    }
    if (!rc)
        fprintf(stderr, "warm start from %s: %d of %d tensors copied, %d new prime down projections zeroed, %d others "
                        "initialised\n", o->init_from, copied, r->m.n_params, zeroed, r->m.n_params - copied - zeroed);
    else if (ttt_error(r->ctx)[0]) fprintf(stderr, "ttt lm train: --init-from: %s\n", ttt_error(r->ctx));
    ttt_lm_free(r->ctx, &src);
    ttt_step_reset(r->ctx);
    return rc;
}

/* Shards, model and inputs; everything is checked before the runner creates --out. 0 or an exit code. */
static int run_open(lm_run *r, ttt_lm_config *c) {
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
    *c = o->model;
    c->vocab = ttt_shard_vocab(r->data);
    if (r->val && ttt_shard_vocab(r->val) != c->vocab) {
        fprintf(stderr, "ttt lm train: --val %s has vocabulary %lld but --data %lld: not the same tokenizer\n", o->val,
                (long long)ttt_shard_vocab(r->val), (long long)c->vocab);
        return EXIT_RUNTIME;
    }
    if (ttt_lm_config_format(c, r->model_s, sizeof r->model_s) != TTT_OK) {
        fprintf(stderr, "ttt lm train: the model config does not fit its metadata string\n");
        return EXIT_RUNTIME;
    }
    train_string(o, r->data, r->train_s, sizeof r->train_s);
    r->ids = malloc(sizeof(int32_t) * (size_t)(o->batch * o->seq));
    r->tg = malloc(sizeof(int32_t) * (size_t)(o->batch * o->seq));
    if (!r->ids || !r->tg) {
        fprintf(stderr, "ttt lm train: out of host memory for a batch of %lld x %lld\n", (long long)o->batch, (long long)o->seq);
        return EXIT_RUNTIME;
    }
    if (!(r->ctx = make_ctx(o, "lm train"))) return EXIT_RUNTIME;
    if (ttt_ctx_device(r->ctx) == TTT_CPU) { /* say so before allocating (and filling) what cannot fit */
        const double need = 4.0 * (double)ttt_lm_param_count(c) * (!strcmp(o->dtype, "f64") ? 8.0 : 4.0);
        const double have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
        if (have > 0 && need > have) {
            fprintf(stderr, "ttt lm train: %lld parameters with their gradients and AdamW's moments need %.1f GB, "
                    "more than this machine's %.1f GB of memory\n", (long long)ttt_lm_param_count(c), need / 1e9,
                    have / 1e9);
            return EXIT_RUNTIME;
        }
    }
    if (ttt_lm_init(r->ctx, &r->m, c, dtype_of(o->dtype)) != TTT_OK || warm_start(r) != 0 ||
        apply_compute(r->ctx, o, &r->m) != TTT_OK ||
        !(r->in_ids = ttt_persistent(r->ctx, TTT_I32, TTT_DIMS(o->batch, o->seq), "lm.batch.ids")) ||
        !(r->in_tg = ttt_persistent(r->ctx, TTT_I32, TTT_DIMS(o->batch, o->seq), "lm.batch.targets"))) {
        fprintf(stderr, "ttt lm train: %s\n", ttt_error(r->ctx));
        return EXIT_RUNTIME;
    }
    return 0;
}

/* Data-parallel ranks (include/ttt/dist.h): their GPUs and the micro-batches
 * per step over all of them (--global-batch). 0 or an exit code. */
static int dist_open(opts *o, ttt_dist **d) {
    char err[512];
    const ttt_dist_config dc = {.timeout_s = o->dp_timeout, .bucket_mb = o->dp_bucket_mb,
                                .transport = !o->dp_transport || !strcmp(o->dp_transport, "auto") ? TTT_DIST_AUTO
                                             : !strcmp(o->dp_transport, "mpi")                    ? TTT_DIST_MPI
                                                                                                  : TTT_DIST_NCCL};
    if (ttt_dist_init(&dc, d, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt lm train: %s\n", err);
        return EXIT_RUNTIME;
    }
    const int R = ttt_dist_size(*d), gpus = ttt_device_count(TTT_CUDA);
    o->device_index = gpus > 0 ? ttt_dist_local_rank(*d) % gpus : 0;
    if (o->global_batch) {
        if (o->global_batch % (o->batch * R)) {
            fprintf(stderr, "ttt lm train: --global-batch %lld is not a multiple of --batch %lld x %d ranks\n",
                    (long long)o->global_batch, (long long)o->batch, R);
            return EXIT_USAGE;
        }
        o->accum = o->global_batch / o->batch; /* micro-batches per step, over all ranks */
    } else {
        o->accum *= R;
    }
    return 0;
}

static int train_cmd(const opts *o_flags) {
    opts oo = *o_flags;
    const opts *o = &oo;
    ttt_dist *d = NULL;
    int rc = dist_open(&oo, &d);
    if (rc) return ttt_dist_abort(d, rc), ttt_dist_finalize(d), rc;
    const int R = ttt_dist_size(d), rank = ttt_dist_rank(d);
    lm_run r = {.o = o, .vloss = NAN};
    ttt_lm_config c;
    rc = run_open(&r, &c);
    if (rc) return run_free(&r), ttt_dist_abort(d, rc), ttt_dist_finalize(d), rc;
    r.tok_step = o->batch * o->seq * o->accum;
    r.on_gpu = ttt_ctx_device(r.ctx) == TTT_CUDA;
    r.f32 = !strcmp(o->dtype, "f32") && r.m.compute != TTT_BF16 && !o->tf32; /* an f32 MFU means something */
    r.flops_tok = flops_per_token(&r.m.cfg, o->seq);
    const ttt_train_model model = {.name = "lm", .n_params = r.m.n_params, .params = r.m.params,
                                   .param_names = (const char *const *)r.m.names, .decay = r.m.decay, .user = &r,
                                   .batch = lm_batch, .loss = lm_loss,
                                   /* TTT-E2E's inner learning rate changes with the step on the host */
                                   .graph_ok = !ttt_lm_is_e2e(&r.m), .dist_ok = 1, .n_aux = ttt_lm_is_e2e(&r.m) ? 2 : 0,
                                   .aux_names = {"chunk_first", "chunk_last"}};
    const char *meta[] = {"format", "ttt-lm", "model", r.model_s, "train", r.train_s, NULL};
    const char *match[] = {"format", "model", "train", NULL};
    const ttt_train_config tc = {
        .dir = o->out, .checkpoint_name = "model.safetensors", .resume = o->resume,
        .optim = {.beta1 = 0.9, .beta2 = o->beta2, .eps = 1e-8, .weight_decay = o->wd},
        .lr = o->lr, .min_lr = o->min_lr, .warmup = o->warmup, .steps = o->steps, .stop_at = o->stop_at,
        .accum = (int)o->accum, .clip = o->clip, .seed = (uint64_t)o->seed, .cuda_graph = o->graph,
        .save_every = o->save_every, .meta = meta, .match = match, .want_log = lm_want_log, .log_line = lm_log_line,
        .progress_line = lm_progress, .progress = rank == 0 ? stderr : NULL, .progress_every_s = 10, .item_unit = "tok",
        .user = &r, .dist = d};
    char err[4096];
    ttt_trainer *t = NULL;
    rc = ttt_train_open(r.ctx, &model, &tc, &t, err, sizeof err);
    if (rc != TTT_OK) {
        if (rc == TTT_TRAIN_EXISTS) fprintf(stderr, "ttt lm train: %s (pass --resume to continue it, or another --out)\n", err);
        else if (rc == TTT_TRAIN_MISMATCH) fprintf(stderr, "ttt lm train: --resume: %s\n", err);
        else fprintf(stderr, "ttt lm train: %s\n", err);
        run_free(&r);
        rc = rc == TTT_TRAIN_EXISTS || rc == TTT_TRAIN_MISMATCH ? EXIT_USAGE : EXIT_RUNTIME;
        return ttt_dist_abort(d, rc), ttt_dist_finalize(d), rc;
    }
    FILE *info = rank == 0 ? stderr : fopen("/dev/null", "w"); /* one rank tells the story */
    if (!info) info = stderr;
    if (R > 1)
        fprintf(info, "data-parallel: %d ranks (%d on this host), %s transport, %lld micro-batches of %lld sequences "
                      "per step, ZeRO-1 optimizer state\n", R, ttt_dist_local_size(d),
                ttt_dist_transport_name(d, ttt_ctx_device(r.ctx)), (long long)o->accum, (long long)o->batch);
    const int64_t first = ttt_train_step(t), end = o->stop_at ? o->stop_at : o->steps;
    if (o->resume)
        fprintf(info, "resumed %s at step %lld of %lld\n", ttt_train_checkpoint_path(t), (long long)first, (long long)o->steps);
    fprintf(info, "lm train: %lld parameters; %s; %s; %lld tokens per step; %.3g FLOPs per token; device %s; "
            "compute %s%s; CUDA graphs %s\n", (long long)ttt_lm_param_count(&r.m.cfg), r.model_s, r.train_s,
            (long long)r.tok_step, r.flops_tok, r.on_gpu ? "cuda" : "cpu", ttt_dtype_name(r.m.compute),
            o->tf32 ? " (tf32 matmuls)" : "", o->graph && r.on_gpu ? "on" : "off");
    if (first >= end) fprintf(info, "nothing to do: the checkpoint is at step %lld\n", (long long)first);
    ttt_train_install_signal_handlers();
    const double t0 = cli_now();
    rc = ttt_train_run(t, err, sizeof err);
    const int64_t step = ttt_train_step(t);
    if (rc == TTT_TRAIN_STOPPED)
        fprintf(info, "stopped at step %lld with a checkpoint in %s; to continue, run the same command with --resume\n",
                (long long)step, ttt_train_checkpoint_path(t));
    else if (rc != TTT_OK)
    {
        if (R > 1 && strncmp(err, "rank ", 5)) fprintf(stderr, "ttt lm train: rank %d: %s\n", rank, err);
        else fprintf(stderr, "ttt lm train: %s\n", err);
    }
    else
        fprintf(info, "done: %lld steps in %.1f s; checkpoint %s (step %lld)\n", (long long)(step - first),
                cli_now() - t0, ttt_train_checkpoint_path(t), (long long)step);
    ttt_memory_stats ms;
    if (rc == TTT_OK && step > first && r.on_gpu && ttt_ctx_memory_stats(r.ctx, &ms) == TTT_OK)
        fprintf(info, "device memory: %.2f GiB reserved in %llu driver allocations (%llu after the first step)\n",
                ms.reserved / 1073741824.0, (unsigned long long)ms.driver_allocs,
                (unsigned long long)ttt_train_allocs_after_first(t));
    ttt_train_close(t);
    run_free(&r);
    if (info != stderr) fclose(info);
    rc = rc == TTT_OK ? 0 : rc == TTT_TRAIN_STOPPED ? 130 : EXIT_RUNTIME;
    if (rc == EXIT_RUNTIME) ttt_dist_abort(d, rc); /* the other ranks may wait for this one */
    ttt_dist_finalize(d);
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
    ttt_atomic_file out = {0}; /* --out, opened first so a bad path fails before the work */
    FILE *f = NULL;
    if (!ctx) goto done;
    if (o->out) {
        if (ttt_atomic_open(&out, o->out, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "ttt lm eval: %s\n", err);
            goto done;
        }
        f = out.f;
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
    const int64_t n_docs = o->max_docs && o->max_docs < ttt_shard_n_docs(sh) ? o->max_docs : ttt_shard_n_docs(sh);
    /* a long document is one forward pass that can take minutes: say what is coming before it starts */
    fprintf(stderr, "eval: up to %lld documents of %s, each read to at most %lld tokens (a line after the first and "
            "every 2 s)\n", (long long)n_docs, o->data, (long long)max_ctx);
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
        if (ttt_lm_is_e2e(&m)) C -= C % m.cfg.inner_chunk; /* TTT-E2E reads whole chunks */
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
        ttt_tensor *in = ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, C), ids), *tg = ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, C), ids + 1);
        ttt_tensor *loss = ttt_lm_is_e2e(&m) ? ttt_lm_e2e_loss(ctx, &m, in, tg, o->eta, 0, &per, NULL)
                                             : ttt_lm_loss(ctx, &m, in, tg, &per);
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
        if (used == 1 || cli_now() - t_shown > 2.0) {
            const double el = cli_now() - t0, eta = el / (double)(d + 1) * (double)(ttt_shard_n_docs(sh) - d - 1);
            fprintf(stderr, "eval: %lld documents, %lld tokens, %.1f s (%.0f tokens/s), at most %dm%02ds left\n",
                    (long long)used, (long long)tokens, el, (double)tokens / (el > 0 ? el : 1e-9),
                    (int)(eta / 60), (int)fmod(eta, 60));
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
    printf("checkpoint %s: step %lld, mixer %s, window %lld", o->ckpt, (long long)step, ttt_lm_mixer_name(m.cfg.mixer),
           (long long)m.cfg.window);
    if (ttt_lm_is_e2e(&m))
        printf(", TTT-E2E (%lld prime blocks, inner chunk %lld, eta %g)", (long long)m.cfg.prime_blocks,
               (long long)m.cfg.inner_chunk, o->eta);
    printf("; %lld documents of %s", (long long)used, o->data);
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
                   "\"window\": %lld, \"e2e\": %d, \"eta\": %g, \"seconds\": %.3f, \"seconds_per_doc\": %.4f, "
                   "\"seconds_per_1k_tokens\": %.5f}\n",
                (long long)max_ctx, (long long)tokens, mean, exp(mean), (long long)step, (long long)m.cfg.window,
                ttt_lm_is_e2e(&m), ttt_lm_is_e2e(&m) ? o->eta : 0.0, secs, secs / (double)used, secs / (double)tokens * 1024.0);
        f = NULL;
        if (ttt_atomic_commit(&out, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "ttt lm eval: %s\n", err);
            goto done;
        }
    }
    rc = 0;
done:
    ttt_atomic_abort(&out);
    if (ctx) ttt_lm_free(ctx, &m);
    ttt_ctx_free(ctx);
    ttt_shard_close(sh);
    free(acc), free(rows), free(ids);
    return rc;
}

/* ---- generate ------------------------------------------------------------------------------------- */

static int generate_cmd(const opts *o) {
    if (o->model_path) {
        const int cuda = !strcmp(o->device, "cuda") || (!strcmp(o->device, "auto") && ttt_device_count(TTT_CUDA) > 0);
        const llama_generate_args a = {o->model_path, o->prompt, o->chat, o->system, o->tokens, o->top_k, o->seed,
                                       o->temperature, o->top_p, cuda ? TTT_CUDA : TTT_CPU, (int)o->threads,
                                       o->ignore_eos, o->show_ids, 0, o->tf32};
        return llama_generate(&a);
    }
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
    ttt_lm_reader reader = {0};
    double *row = NULL;
    sample_cand *cands = NULL;
    char model_id[17] = "", tok_id[17] = "";
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
    if ((o->state_in || o->state_out) && !ttt_lm_is_e2e(&m)) {
        fprintf(stderr, "ttt lm generate: --state / --save-state hold what a TTT-E2E model learned while reading; %s "
                        "is a %s model\n", o->ckpt, m.cfg.window ? "sliding-window" : "full-attention");
        rc = EXIT_USAGE;
        goto done;
    }
    if ((o->state_in || o->state_out) &&
        (ttt_lm_fingerprint(ctx, &m, model_id, sizeof model_id) != TTT_OK ||
         ttt_tokenizer_files_id(o->tokenizer, tok_id, sizeof tok_id, err, sizeof err) != TTT_OK)) {
        fprintf(stderr, "ttt lm generate: cannot identify the model or tokenizer for a state file: %s\n", ttt_error(ctx)[0] ? ttt_error(ctx) : err);
        goto done;
    }
    if (ttt_lm_reader_init(ctx, &m, &reader, 1, n_prompt + o->tokens) != TTT_OK) {
        fprintf(stderr, "ttt lm generate: %s\n", ttt_error(ctx));
        goto done;
    }
    if (reader.e2e) reader.state.eta = o->eta;
    if (o->state_in) {
        if (ttt_lm_reader_load(ctx, &m, &reader, o->state_in, model_id, tok_id) != TTT_OK) {
            fprintf(stderr, "ttt lm generate: --state %s: %s\n", o->state_in, ttt_error(ctx));
            goto done;
        }
        fprintf(stderr, "state %s: %lld positions read, %lld inner steps taken\n", o->state_in,
                (long long)ttt_lm_reader_pos(&reader), (long long)reader.state.steps);
    }
    fwrite(o->prompt, 1, strlen(o->prompt), stdout);
    fflush(stdout);
    const double t0 = cli_now();
    ttt_step_reset(ctx);
    ttt_tensor *logits = ttt_lm_reader_read(ctx, &m, &reader, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, n_prompt), prompt.ids), 0);
    if (!logits || ttt_copy_to_host(ctx, logits, row, TTT_F64) != TTT_OK) {
        fprintf(stderr, "\nttt lm generate: prefill: %s\n", ttt_error(ctx));
        goto done;
    }
    const double t_prefill = cli_now() - t0;
    if (o->state_out) { /* what the model learned from the prompt, asked again later with --state */
        if (ttt_lm_reader_save(ctx, &m, &reader, o->state_out, model_id, tok_id) != TTT_OK) {
            fprintf(stderr, "\nttt lm generate: --save-state %s: %s\n", o->state_out, ttt_error(ctx));
            goto done;
        }
    }
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
        logits = ttt_lm_reader_read(ctx, &m, &reader, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, 1), &next), 0);
        if (!logits || ttt_copy_to_host(ctx, logits, row, TTT_F64) != TTT_OK) {
            fprintf(stderr, "\nttt lm generate: token %lld: %s\n", (long long)made, ttt_error(ctx));
            goto done;
        }
    }
    printf("\n");
    const double dt = cli_now() - t0 - t_prefill;
    fprintf(stderr, "prompt: %lld tokens in %.3f s; generated %lld tokens in %.3f s (%.1f tokens/s)", (long long)n_prompt,
            t_prefill, (long long)made, dt, (double)made / (dt > 0 ? dt : 1e-9));
    if (reader.e2e)
        fprintf(stderr, "; TTT-E2E: %lld inner steps while reading and writing, ring of %lld positions\n",
                (long long)reader.state.steps, (long long)reader.state.cache.capacity);
    else
        fprintf(stderr, "; cache of %lld positions%s\n", (long long)reader.cache.capacity, m.cfg.window ? " (ring buffer)" : "");
    if (o->state_out) fprintf(stderr, "state after the prompt saved to %s (continue with --state)\n", o->state_out);
    rc = 0;
done:
    free(row), free(cands);
    if (ctx) ttt_lm_reader_free(ctx, &reader), ttt_lm_free(ctx, &m);
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
