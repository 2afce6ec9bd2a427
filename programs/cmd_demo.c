/* ttt demo: learning to learn at test time, on synthetic tasks.
 *
 * Each task is a random rank-r subspace of R^d. A learner sees n context
 * tokens of the task with half of their coordinates hidden and trains at test
 * time (T inner gradient steps) to complete them; it is then scored on fresh
 * query tokens of the same task. No fixed function can complete tokens of a
 * subspace it has not seen, so the query error falls only through test-time
 * training. The outer loop meta-learns the encoder, decoder and the inner
 * weights' initialisation W_0 by differentiating through every inner step.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "ttt/runtime.h"
#include "ttt/ttt.h"

typedef struct {
    int64_t d, rank, n_ctx, n_query, hidden, inner_steps, iters, tasks, eval_tasks, seed, threads;
    double eta, lr;
    int checkpoint;
    int device; /* -1 auto, else ttt_device */
    int sized;  /* 1 if the user gave any size flag: auto mode then keeps sizes */
} demo_cfg;

typedef struct {
    uint64_t s;
} demo_rng;

static double demo_normal(demo_rng *r) {
    uint64_t z1 = (r->s += 0x9E3779B97F4A7C15ull), z2 = (r->s += 0x9E3779B97F4A7C15ull);
    z1 = (z1 ^ (z1 >> 30)) * 0xBF58476D1CE4E5B9ull;
    z1 = (z1 ^ (z1 >> 27)) * 0x94D049BB133111EBull;
    z2 = (z2 ^ (z2 >> 30)) * 0xBF58476D1CE4E5B9ull;
    z2 = (z2 ^ (z2 >> 27)) * 0x94D049BB133111EBull;
    double u1 = ((double)((z1 ^ (z1 >> 31)) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)((z2 ^ (z2 >> 31)) >> 11) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

/* One task: inputs with hidden coordinates zeroed, and the full targets. */
typedef struct {
    ttt_tensor *ctx_in, *ctx_target, *q_in, *q_target;
} task;

static int make_task(ttt_ctx *ctx, const demo_cfg *c, demo_rng *r, task *t) {
    int64_t d = c->d, n = c->n_ctx + c->n_query;
    float *basis = malloc(sizeof(float) * (size_t)(d * c->rank));
    float *full = malloc(sizeof(float) * (size_t)(n * d)), *in = malloc(sizeof(float) * (size_t)(n * d));
    int rc = basis && full && in ? TTT_OK : TTT_ERR;
    if (rc == TTT_OK) {
        for (int64_t i = 0; i < d * c->rank; i++) basis[i] = (float)(demo_normal(r) / sqrt((double)c->rank));
        for (int64_t i = 0; i < n; i++) {
            double coef[16];
            for (int64_t j = 0; j < c->rank; j++) coef[j] = demo_normal(r);
            for (int64_t k = 0; k < d; k++) {
                double v = 0;
                for (int64_t j = 0; j < c->rank; j++) v += basis[k * c->rank + j] * coef[j];
                full[i * d + k] = (float)v;
                in[i * d + k] = k < d / 2 ? (float)v : 0.0f; /* the second half is hidden */
            }
        }
        t->ctx_in = ttt_from_host(ctx, TTT_F32, TTT_DIMS(c->n_ctx, d), in);
        t->ctx_target = ttt_from_host(ctx, TTT_F32, TTT_DIMS(c->n_ctx, d), full);
        t->q_in = ttt_from_host(ctx, TTT_F32, TTT_DIMS(c->n_query, d), in + c->n_ctx * d);
        t->q_target = ttt_from_host(ctx, TTT_F32, TTT_DIMS(c->n_query, d), full + c->n_ctx * d);
        if (!t->ctx_in || !t->ctx_target || !t->q_in || !t->q_target) rc = TTT_ERR;
    }
    free(basis);
    free(full);
    free(in);
    return rc;
}

/* Query loss after `steps` inner steps on the task's context. */
static ttt_tensor *task_loss(ttt_ctx *ctx, const ttt_recon_learner *l, const task *t, int64_t steps, double eta,
                             int checkpoint, double *inner_loss) {
    ttt_inner_opts o = {.steps = (int)steps, .eta = eta, .checkpoint = checkpoint, .inner_loss = inner_loss};
    ttt_tensor *w1, *w2;
    if (ttt_recon_adapt(ctx, l, t->ctx_in, t->ctx_target, &o, &w1, &w2) != TTT_OK) return NULL;
    return ttt_recon_loss(ctx, l, w1, w2, t->q_in, t->q_target);
}

typedef struct {
    double q0, qT, inner_first, inner_last;
} eval_result;

/* Mean query loss over held-out tasks with no adaptation and with T steps. */
static int evaluate(ttt_ctx *ctx, const ttt_recon_learner *l, const demo_cfg *c, eval_result *e) {
    demo_rng r = {(uint64_t)c->seed * 7919u + 12345u}; /* the same held-out tasks every time */
    memset(e, 0, sizeof *e);
    double *inner = calloc((size_t)c->inner_steps + 1, sizeof *inner);
    if (!inner) return TTT_ERR;
    ttt_no_grad_begin(ctx);
    int rc = TTT_OK;
    for (int64_t i = 0; i < c->eval_tasks && rc == TTT_OK; i++) {
        ttt_mark_t m = ttt_mark(ctx);
        task t;
        rc = make_task(ctx, c, &r, &t);
        double q0 = rc == TTT_OK ? ttt_item(ctx, task_loss(ctx, l, &t, 0, c->eta, 0, NULL)) : NAN;
        double qT = rc == TTT_OK ? ttt_item(ctx, task_loss(ctx, l, &t, c->inner_steps, c->eta, 0, inner)) : NAN;
        if (rc == TTT_OK && (!isfinite(q0) || !isfinite(qT))) {
            if (!ttt_error(ctx)[0])
                fprintf(stderr, "ttt demo: the query loss is not finite (%g, %g): the inner loop diverged; try a "
                                "smaller --eta\n", q0, qT);
            rc = TTT_ERR;
        }
        e->q0 += q0 / (double)c->eval_tasks;
        e->qT += qT / (double)c->eval_tasks;
        e->inner_first += inner[0] / (double)c->eval_tasks;
        e->inner_last += inner[c->inner_steps] / (double)c->eval_tasks;
        ttt_release(ctx, m);
    }
    ttt_no_grad_end(ctx);
    free(inner);
    return rc;
}

static int run(const demo_cfg *c) {
    ttt_ctx_config cc = {.device = (ttt_device)c->device, .seed = (uint64_t)c->seed, .threads = (int)c->threads};
    ttt_ctx *ctx = ttt_ctx_new(&cc);
    if (!ctx) {
        fprintf(stderr, "ttt demo: could not create a %s context: %s\n", c->device == TTT_CUDA ? "cuda" : "cpu",
                ttt_runtime_error());
        return 1;
    }
    printf("device: %s\n", c->device == TTT_CUDA ? "cuda" : "cpu");
    ttt_recon_learner l;
    int rc = ttt_recon_learner_init(ctx, &l, TTT_F32, c->d, c->d, c->hidden);
    ttt_tensor *params[4] = {l.enc, l.dec, l.w1, l.w2};
    ttt_optim_config oc = {.lr = c->lr, .beta1 = 0.9, .beta2 = 0.999, .weight_decay = 1e-4};
    ttt_optimizer *opt = rc == TTT_OK ? ttt_adamw_new(ctx, 4, params, NULL, &oc) : NULL;
    if (!opt) rc = TTT_ERR;

    printf("ttt demo: tasks are random rank-%lld subspaces of R^%lld; half of each token is hidden.\n"
           "A learner trains for T=%lld inner steps (eta %.2f) on %lld context tokens of a task, then completes %lld "
           "query tokens.\nThe outer loop meta-learns its encoder, decoder and W_0 through the inner steps%s.\n\n",
           (long long)c->rank, (long long)c->d, (long long)c->inner_steps, c->eta, (long long)c->n_ctx,
           (long long)c->n_query, c->checkpoint ? " (each step rematerialized)" : "");
    eval_result first = {0}, e = {0};
    if (rc == TTT_OK) rc = evaluate(ctx, &l, c, &first);
    if (rc == TTT_OK)
        printf("%8s %12s %12s %14s %14s %8s\n", "iter", "query(T=0)", "query(T)", "inner before", "inner after",
               "sec");
    if (rc == TTT_OK)
        printf("%8d %12.4f %12.4f %14.4f %14.4f %8.1f\n", 0, first.q0, first.qT, first.inner_first, first.inner_last,
               0.0);
    demo_rng r = {(uint64_t)c->seed};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int64_t it = 1; it <= c->iters && rc == TTT_OK; it++) {
        ttt_step_reset(ctx);
        ttt_tensor *loss = NULL;
        for (int64_t b = 0; b < c->tasks && rc == TTT_OK; b++) {
            task t;
            rc = make_task(ctx, c, &r, &t);
            ttt_tensor *lt = rc == TTT_OK ? task_loss(ctx, &l, &t, c->inner_steps, c->eta, c->checkpoint, NULL) : NULL;
            loss = loss ? ttt_add(ctx, loss, lt) : lt;
            if (!loss) rc = TTT_ERR;
        }
        loss = ttt_scale(ctx, loss, 1.0 / (double)c->tasks);
        if (rc == TTT_OK) rc = ttt_zero_grad(ctx, 4, params);
        if (rc == TTT_OK) rc = ttt_backward(ctx, loss);
        if (rc == TTT_OK) rc = ttt_clip_grad_norm(ctx, 4, params, 1.0, NULL);
        double lr = ttt_lr_warmup_cosine(it - 1, c->iters / 20, c->iters, c->lr, c->lr * 0.1);
        if (rc == TTT_OK) rc = ttt_optimizer_step(opt, lr);
        if (rc == TTT_OK && (it % (c->iters / 8 > 0 ? c->iters / 8 : 1) == 0 || it == c->iters)) {
            ttt_step_reset(ctx);
            rc = evaluate(ctx, &l, c, &e);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
            if (rc == TTT_OK)
                printf("%8lld %12.4f %12.4f %14.4f %14.4f %8.1f\n", (long long)it, e.q0, e.qT, e.inner_first,
                       e.inner_last, sec);
            fflush(stdout);
        }
    }
    if (rc != TTT_OK) {
        if (ttt_error(ctx)[0]) fprintf(stderr, "ttt demo: %s\n", ttt_error(ctx));
    } else {
        printf("\nOn %lld held-out tasks, after meta-training: query loss %.4f without test-time training, %.4f after "
               "%lld inner steps (%.0f%% lower).\nBefore meta-training the same learner scored %.4f -> %.4f.\n",
               (long long)c->eval_tasks, e.q0, e.qT, (long long)c->inner_steps, 100.0 * (1.0 - e.qT / e.q0), first.q0,
               first.qT);
    }
    ttt_optimizer_free(opt);
    ttt_ctx_free(ctx);
    return rc == TTT_OK ? 0 : 1;
}

int cmd_demo(int argc, char **argv) {
    demo_cfg c = {.d = 16, .rank = 3, .n_ctx = 32, .n_query = 16, .hidden = 32, .inner_steps = 4, .iters = 2000,
                  .tasks = 16, .eval_tasks = 64, .seed = 1, .threads = 0, .eta = 0.05, .lr = 3e-3, .device = -1};
    for (int i = 1; i < argc; i++)
        for (const char *const *f = (const char *const[]){"--dim", "--rank", "--context", "--query", NULL}; *f; f++)
            if (!strcmp(argv[i], *f)) c.sized = 1;
    for (int i = 1; i < argc; i++) {
        int r = 0;
        if (!strcmp(argv[i], "--help")) {
            printf("usage: ttt demo [flags]\n"
                   "  --iters N        outer (meta-training) iterations (default %lld)\n"
                   "  --tasks N        tasks per outer iteration (default %lld)\n"
                   "  --inner-steps T  inner gradient steps at test time (default %lld)\n"
                   "  --eta E          inner learning rate (default %g)\n"
                   "  --lr LR          outer AdamW learning rate, warmup + cosine (default %g)\n"
                   "  --dim D          token size (default %lld); --rank R subspace rank (default %lld)\n"
                   "  --context N      context tokens per task (default %lld); --query N query tokens (default %lld)\n"
                   "  --checkpoint     rematerialize each inner step in the backward pass\n"
                   "  --device D       auto (default: cuda when a GPU is present, else cpu), cpu or cuda;\n"
                   "                   auto on a GPU also scales the task up (dim 64, rank 8, context 256, hidden 128)\n"
                   "                   unless a size flag is given\n"
                   "  --seed S, --threads N\n",
                   (long long)c.iters, (long long)c.tasks, (long long)c.inner_steps, c.eta, c.lr, (long long)c.d,
                   (long long)c.rank, (long long)c.n_ctx, (long long)c.n_query);
            return 0;
        }
        if ((r = cli_flag_int(argc, argv, &i, "--iters", 1, 1000000, &c.iters)) ||
            (r = cli_flag_int(argc, argv, &i, "--tasks", 1, 4096, &c.tasks)) ||
            (r = cli_flag_int(argc, argv, &i, "--inner-steps", 0, 64, &c.inner_steps)) ||
            (r = cli_flag_double(argc, argv, &i, "--eta", 0.0, 100.0, &c.eta)) ||
            (r = cli_flag_double(argc, argv, &i, "--lr", 0.0, 1.0, &c.lr)) ||
            (r = cli_flag_int(argc, argv, &i, "--dim", 2, 4096, &c.d)) ||
            (r = cli_flag_int(argc, argv, &i, "--rank", 1, 16, &c.rank)) ||
            (r = cli_flag_int(argc, argv, &i, "--context", 1, 100000, &c.n_ctx)) ||
            (r = cli_flag_int(argc, argv, &i, "--query", 1, 100000, &c.n_query)) ||
            (r = cli_flag_int(argc, argv, &i, "--seed", 0, INT64_MAX, &c.seed)) ||
            (r = cli_flag_int(argc, argv, &i, "--threads", 0, 1024, &c.threads)) ||
            (r = cli_flag_bool(argv, i, "--checkpoint", &c.checkpoint))) {
            if (r < 0) return 2;
            continue;
        }
        const char *dev = NULL;
        if ((r = cli_flag_str(argc, argv, &i, "--device", &dev))) {
            if (r < 0) return 2;
            if (!strcmp(dev, "auto")) c.device = -1;
            else if (!strcmp(dev, "cpu")) c.device = TTT_CPU;
            else if (!strcmp(dev, "cuda")) c.device = TTT_CUDA;
            else {
                fprintf(stderr, "ttt demo: --device %s: expected auto, cpu or cuda\n", dev);
                return 2;
            }
            continue;
        }
        return cli_unknown("demo", argv[i]);
    }
    if (c.device < 0) { /* auto: the GPU if this build and machine have one, with a larger task */
        c.device = ttt_device_count(TTT_CUDA) > 0 ? TTT_CUDA : TTT_CPU;
        if (c.device == TTT_CUDA && !c.sized) {
            c.d = 64;
            c.rank = 8;
            c.n_ctx = 256;
            c.n_query = 64;
            c.hidden = 128;
        }
    }
    if (c.rank > c.d / 2) {
        fprintf(stderr, "ttt demo: --rank %lld must be at most half of --dim %lld\n", (long long)c.rank,
                (long long)c.d);
        return 2;
    }
    return run(&c);
}
