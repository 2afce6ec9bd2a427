/* The loops behind `ttt adapt` (cmd_adapt.c parses the flags): batched
 * generation over a KV cache, rewards from the task families' checkers,
 * REINFORCE, evaluation, and two-pass dispatch (docs/transformer2.md). */
#ifndef TTT_PROGRAMS_ADAPT_LOOP_H
#define TTT_PROGRAMS_ADAPT_LOOP_H

#include <stdint.h>

#include "ttt/tensor.h"

typedef struct {
    const char *model, *matrices, *svd_cache;
    ttt_device device;
    int threads;
    int64_t seed, max_new, gen_batch;
    /* train */
    const char *task, *out, *method, *metrics;
    int64_t rank, steps, batch, micro_batch, val_n, eval_every;
    double alpha, lr, kl, clip, temperature, time_limit;
    /* eval */
    const char *expert, *split;
    int64_t n, start, show;
    /* dispatch */
    const char *strategy, *classifier;
    const char **tasks, **experts;
    int n_tasks, n_experts, per_matrix, cem_logprob, baseline;
    int64_t cem_pop, cem_iters, cem_shots;
    double cem_elite;
} adapt_args;

int adapt_svd(const adapt_args *a);
int adapt_train(const adapt_args *a);
int adapt_eval(const adapt_args *a);
int adapt_dispatch(const adapt_args *a);

#endif
