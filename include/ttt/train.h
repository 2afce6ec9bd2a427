/* ttt/train.h: the training runner. One loop for every model.
 *
 * A model supplies its parameters, a batch source and a loss function; the
 * runner owns everything else about a training run:
 *   - the step: micro-batches with gradient accumulation (each loss scaled by
 *     1/accum, gradients summed), global-norm clipping, AdamW or SGD under a
 *     linear-warmup + cosine schedule, on the parameters themselves (f32
 *     masters when the model computes in bf16: that casting is the model's);
 *   - CUDA graphs: the forward + backward of a micro-batch recorded once and
 *     replayed, where the model allows it (ttt_train_model.graph_ok);
 *   - checkpoints (docs/checkpoint.md): parameters, optimizer moments, step,
 *     RNG scheme, the run's settings and the model's own running state, written
 *     atomically; a resumed run is bit-identical to an uninterrupted one;
 *   - OUT/metrics.jsonl (one JSON line per log step, truncated to the
 *     checkpoint's step on resume) and the progress line;
 *   - stopping: ttt_train_request_stop() (from a signal handler) finishes the
 *     step, writes a checkpoint and returns TTT_TRAIN_STOPPED;
 *   - a non-finite loss or gradient stops the run at once with a message naming
 *     the step and the first parameter whose gradient is not finite; nothing is
 *     written, so the last checkpoint stays as it was.
 *
 * Data path of one step (docs in ARCHITECTURE.md, "One training step"):
 *   zero grads -> for each micro-batch: step_reset, batch(), then either
 *   loss() + backward (eager) or a graph replay -> read loss and aux ->
 *   after_micro() -> clip -> optimizer step -> log / progress / checkpoint.
 *
 * Bit-exact resume needs the batch source to be a pure function of (step,
 * micro): the runner stores no data position. The context's RNG is re-seeded
 * from (seed, step) before every step, so ttt_randn inside a loss resumes too.
 *
 * Nothing here prints unless ttt_train_config.progress is set, installs a
 * signal handler unless asked (ttt_train_install_signal_handlers), or exits. */
#ifndef TTT_TRAIN_H
#define TTT_TRAIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ttt/checkpoint.h"
#include "ttt/dist.h"
#include "ttt/optim.h"
#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { TTT_TRAIN_MAX_AUX = 8 };
enum { TTT_TRAIN_ADAMW = 0, TTT_TRAIN_SGD = 1 }; /* ttt_train_config.optimizer */

/* ttt_train_open / ttt_train_run results besides TTT_OK and TTT_ERR. */
enum {
    TTT_TRAIN_STOPPED = 2,  /* run: a stop was requested; a checkpoint of the finished step was written */
    TTT_TRAIN_MISMATCH = 3, /* open: --resume with settings that differ from the checkpoint's (err lists them) */
    TTT_TRAIN_EXISTS = 4,   /* open: a fresh run, but the directory already holds a checkpoint */
};

/* What a callback is being asked about. */
typedef struct {
    int64_t step;        /* the optimizer step being computed, 0-based */
    int64_t total_steps; /* the schedule's length (ttt_train_config.steps) */
    int micro, n_micro;  /* this micro-batch and the micro-batches per step, over all ranks: data-parallel
                            rank r of R computes micro = r * n_micro / R .. (r + 1) * n_micro / R - 1 */
    double lr;           /* this step's learning rate */
    int recording;       /* loss(): 1 while being recorded as a CUDA graph (nothing runs; values
                            computed on the host now are frozen into every replay) */
    int replayed;        /* after_micro(): 1 if this micro-batch ran as a graph replay */
} ttt_train_info;

/* A model as the runner sees it. Only params, batch and loss are required. */
typedef struct {
    const char *name; /* in messages ("lm", "vit") */
    int n_params;
    ttt_tensor *const *params;        /* persistent, requires_grad */
    const char *const *param_names;   /* unique; the checkpoint's tensor names */
    const int *decay;                 /* per parameter: 1 weight decay, 0 none; NULL: all */
    void *user;                       /* passed to every callback */

    /* Put micro-batch (info->step, info->micro) where loss() will read it (for
     * graphs: into persistent tensors, e.g. with ttt_assign). It must be a pure
     * function of those indices so a resumed run sees the same data. *items:
     * the examples (tokens, images) it holds, for rates. *graphable: 1 if it
     * has the shape of the recorded graph (e.g. a full batch). TTT_OK, or
     * TTT_ERR with a message in err. */
    int (*batch)(ttt_ctx *ctx, void *user, const ttt_train_info *info, int64_t *items, int *graphable, char *err,
                 size_t err_len);
    /* The micro-batch's mean loss, a one-element tensor with a graph to the
     * parameters (NULL on failure, with the context's error set). It may take
     * gradients itself (ttt_grad, create_graph = 1: an inner loop); the runner
     * calls ttt_backward on what it returns. aux[0..n_aux): one-element tensors
     * to log alongside (e.g. per-chunk losses); the runner reads them after
     * every run or replay. With graph_ok, everything that changes between
     * steps must come from tensors that batch() refills, since a replay
     * repeats the recorded host-side values (info->step included). */
    ttt_tensor *(*loss)(ttt_ctx *ctx, void *user, const ttt_train_info *info, ttt_tensor **aux);
    int n_aux;
    const char *aux_names[TTT_TRAIN_MAX_AUX];
    /* Optional: after a micro-batch ran and its loss and aux values were read
     * (e.g. accuracy from the logits the model kept). TTT_OK or TTT_ERR. */
    int (*after_micro)(ttt_ctx *ctx, void *user, const ttt_train_info *info, double loss, const double *aux);
    /* Optional: the model's own running state (e.g. an epoch's tallies) as a
     * string stored in checkpoints, and read back on resume. */
    int (*state_save)(void *user, int64_t step, char *buf, size_t len);
    int (*state_load)(void *user, int64_t step, const char *state, char *err, size_t err_len);
    int graph_ok; /* 1: loss() may be recorded as a CUDA graph and replayed */
    int dist_ok;  /* 1: batch() gives each (step, micro) its own data, so data-parallel ranks
                     (ttt_train_config.dist) split a step's batch between them */
} ttt_train_model;

/* Figures of a log or progress point. */
typedef struct {
    int64_t step, total_steps, end_step; /* steps done; the schedule; where this process stops */
    int64_t first_step;                  /* where this process started */
    double loss;                         /* mean step loss since the last log line */
    double aux[TTT_TRAIN_MAX_AUX];       /* their means since the last log line */
    int64_t window_steps;                /* steps in that window */
    double lr, grad_norm;                /* of the last step (norm before clipping) */
    double items_per_s;                  /* since the last log line (device synchronized at log points) */
    int64_t items_seen;                  /* by this process */
    double elapsed_s, eta_s;             /* this process's time; to total_steps at its rate */
    int logged;                          /* progress: 1 if this step also wrote a metrics line */
    /* where a step's time went since the last log line (host seconds), and how many steps/replays */
    double phase_s[5]; /* batch, forward+backward, readback, clip, optimizer */
    int64_t phase_steps, replays;
} ttt_train_stats;
extern const char *const ttt_train_phase_names[5];

typedef struct {
    /* where: DIR/CHECKPOINT and DIR/METRICS. The directory is created by
     * ttt_train_open for a fresh run, after every other check passed. */
    const char *dir;
    const char *checkpoint_name; /* default "checkpoint.safetensors" */
    const char *metrics_name;    /* default "metrics.jsonl" */
    int resume;                  /* 1: continue DIR's run; 0: start one (refused if DIR holds a checkpoint) */

    /* the step */
    int optimizer;          /* TTT_TRAIN_ADAMW (0) or TTT_TRAIN_SGD */
    ttt_optim_config optim; /* lr here is unused: the schedule gives each step's */
    double lr, min_lr;      /* peak and floor of warmup + cosine */
    int64_t warmup, steps;  /* schedule length = the run's steps */
    int64_t stop_at;        /* 0: run to steps; else end this process there with a checkpoint */
    int accum;              /* micro-batches per step (>= 1), over all ranks: a multiple of the ranks */
    double clip;            /* max global gradient norm; 0: no clipping */
    uint64_t seed;          /* the context RNG is re-seeded from (seed, step) each step */
    int cuda_graph;         /* -1 auto (where the model and backend allow), 0 off, 1 on (failure is an error) */

    /* checkpoints and metrics */
    int64_t save_every, log_every; /* 0: only at the end */
    /* metadata stored in every checkpoint: NULL-terminated key, value, ... */
    const char *const *meta;
    /* keys of meta that must be equal in the checkpoint to resume (NULL-terminated) */
    const char *const *match;
    /* Optional: 1 if a metrics line is due after `step` (default: every log_every and at the end). */
    int (*want_log)(void *user, int64_t step);
    /* Optional: the metrics line's JSON object (without newline) for st into
     * buf. Default: {"step", "loss", aux names..., "lr", "grad_norm",
     * "items_per_s", "elapsed_s"}. TTT_OK or TTT_ERR (message in err). */
    int (*log_line)(ttt_ctx *ctx, void *user, const ttt_train_stats *st, char *buf, size_t len, char *err,
                    size_t err_len);
    /* Optional: print progress yourself (default: one line to `progress`). */
    void (*progress_line)(void *user, const ttt_train_stats *st, FILE *out);
    FILE *progress;          /* NULL: no progress lines */
    double progress_every_s; /* a line at most this often between log steps; 0: 10 s */
    const char *item_unit;   /* in the default progress line ("tok", "img"); NULL "items" */
    void *user;              /* for want_log, log_line, progress_line */
    /* data-parallel (include/ttt/dist.h): NULL or one rank: this process alone. With R ranks
     * every rank calls open, run, save and close (they are collective); rank 0 alone writes
     * files and calls log_line and progress_line */
    ttt_dist *dist;
} ttt_train_config;

typedef struct ttt_trainer ttt_trainer;

/* The model and config are copied, but what their pointers point to (parameters,
 * names, meta strings, user data) must stay valid until ttt_train_close.
 * Creates the optimizer and either resumes DIR's run (settings checked,
 * parameters, optimizer state, step and running state loaded, metrics
 * truncated to the checkpoint's step) or starts one (the directory and an
 * empty metrics file). The context's parameters are the model's. Returns
 * TTT_OK with *out set, or TTT_ERR / TTT_TRAIN_MISMATCH / TTT_TRAIN_EXISTS
 * with a message in err (*out NULL). */
int ttt_train_open(ttt_ctx *ctx, const ttt_train_model *model, const ttt_train_config *cfg, ttt_trainer **out,
                   char *err, size_t err_len);
/* Trains to cfg.stop_at or cfg.steps. TTT_OK (done; a checkpoint at the end),
 * TTT_TRAIN_STOPPED (stop requested; a checkpoint of the last finished step),
 * or TTT_ERR with a message naming the step (the last checkpoint untouched). */
int ttt_train_run(ttt_trainer *t, char *err, size_t err_len);
/* Writes a checkpoint of the current state now (data-parallel: collective; rank 0 writes). */
int ttt_train_save(ttt_trainer *t, char *err, size_t err_len);
int64_t ttt_train_step(const ttt_trainer *t);       /* steps done */
int64_t ttt_train_first_step(const ttt_trainer *t); /* where this process started (resume point) */
ttt_optimizer *ttt_train_optimizer(const ttt_trainer *t); /* NULL when data-parallel (ZeRO holds the slices) */
const char *ttt_train_checkpoint_path(const ttt_trainer *t);
const char *ttt_train_metrics_path(const ttt_trainer *t);
int ttt_train_graph_active(const ttt_trainer *t); /* 1 once a graph was recorded */
/* Device driver allocations after the first step of this process (0 before, or on the CPU). */
uint64_t ttt_train_allocs_after_first(const ttt_trainer *t);
void ttt_train_close(ttt_trainer *t); /* NULL is a no-op; frees the optimizer and any graph */

/* Stop requests: async-signal-safe, process-wide (a signal cannot know the run). */
void ttt_train_request_stop(void);
int ttt_train_stop_requested(void);
void ttt_train_clear_stop(void);
/* Opt-in: SIGINT and SIGTERM call ttt_train_request_stop (a second signal
 * kills as usual). TTT_OK or TTT_ERR. */
int ttt_train_install_signal_handlers(void);

/* The checkpoint layout (docs/checkpoint.md): the names under which a model's
 * parameters and an optimizer's state are stored. Fills tensors[0..*n) and
 * names it owns; free with ttt_checkpoint_names_free. opt may be NULL
 * (parameters only, e.g. for evaluation). */
typedef struct {
    ttt_named_tensor *t; /* [n] */
    int n;
    char **owned; /* the optimizer names made here */
    int n_owned;
} ttt_checkpoint_names;
int ttt_checkpoint_names_build(int n_params, ttt_tensor *const *params, const char *const *names,
                               const ttt_optimizer *opt, ttt_checkpoint_names *out, char *err, size_t err_len);
void ttt_checkpoint_names_free(ttt_checkpoint_names *l);
/* Load a model's parameters from a checkpoint (optimizer state ignored; a
 * non-finite value fails naming the tensor); *metadata_json as
 * ttt_load_safetensors. TTT_OK or TTT_ERR with a message in err. */
int ttt_checkpoint_load_params(ttt_ctx *ctx, const char *path, int n_params, ttt_tensor *const *params,
                               const char *const *names, char **metadata_json, char *err, size_t err_len);
/* The metadata JSON of a checkpoint without loading tensors (malloc'd; NULL on failure, ttt_error(ctx)). */
char *ttt_checkpoint_metadata(ttt_ctx *ctx, const char *path);
/* An integer >= 0 stored under key in metadata: TTT_OK or TTT_ERR. */
int ttt_metadata_int(const char *metadata_json, const char *key, int64_t *out);

/* Helpers for log lines and stored configs. */
void ttt_json_number(char *buf, size_t len, double v);       /* %.9g, or null for NaN / inf */
void ttt_format_double(char *buf, size_t len, double v);     /* reads back (strtod) to the same bits */
/* The value of key in a "key=value key=value" string into buf: 1 if present. */
int ttt_kv_get(const char *s, const char *key, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
