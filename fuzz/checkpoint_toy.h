/* fuzz/checkpoint_toy.h: the toy run of the checkpoint fuzz target, shared with
 * fuzz/make_seeds.c (which saves its checkpoints as seeds): two parameters, an
 * aux value, a model state string, and settings that must match to resume. */
#ifndef TTT_FUZZ_CHECKPOINT_TOY_H
#define TTT_FUZZ_CHECKPOINT_TOY_H

#include <stdio.h>
#include <string.h>

#include "ttt/ttt.h"

typedef struct {
    ttt_tensor *p[2];
    ttt_tensor *x;
    long long seen; /* the model's running state */
} toy;

static const char *const toy_names[2] = {"w", "b"};

static inline int toy_batch(ttt_ctx *ctx, void *user, const ttt_train_info *info, int64_t *items, int *graphable, char *err,
                     size_t n) {
    toy *t = user;
    const double x[4] = {1.0, (double)info->step, 0.5, -1.0};
    t->x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(2, 2), x);
    *items = 2, *graphable = 0;
    return t->x ? TTT_OK : (snprintf(err, n, "%s", ttt_error(ctx)), TTT_ERR);
}

static inline ttt_tensor *toy_loss(ttt_ctx *ctx, void *user, const ttt_train_info *info, ttt_tensor **aux) {
    (void)info;
    toy *t = user;
    ttt_tensor *y = ttt_add(ctx, ttt_matmul(ctx, t->x, t->p[0], 0, 0), t->p[1]);
    ttt_tensor *l = ttt_mean(ctx, ttt_mul(ctx, y, y), 0, NULL, 0);
    aux[0] = l;
    return l;
}

static inline int toy_state_save(void *user, int64_t step, char *buf, size_t len) {
    (void)step;
    return snprintf(buf, len, "seen=%lld note=x", ((toy *)user)->seen) < (int)len ? 0 : -1;
}

static inline int toy_state_load(void *user, int64_t step, const char *state, char *err, size_t len) {
    (void)step;
    char v[32], *end;
    if (!state || !ttt_kv_get(state, "seen", v, sizeof v)) return snprintf(err, len, "no model state"), TTT_ERR;
    ((toy *)user)->seen = strtoll(v, &end, 10);
    return *end ? (snprintf(err, len, "bad seen '%s'", v), TTT_ERR) : TTT_OK;
}

/* Parameters of t made in ctx; model and config point at static data and t. */
static inline int toy_setup(ttt_ctx *ctx, toy *t, const char *dir, int resume, ttt_train_model *m, ttt_train_config *c) {
    static const char *const meta[] = {"format", "fuzz-toy", "model", "dim=2 depth=1 act=none",
                                       "train",  "lr=0.1 steps=10 seed=3", NULL};
    static const char *const match[] = {"format", "model", "train", NULL};
    if (!t->p[0]) {
        t->p[0] = ttt_param(ctx, TTT_F64, TTT_DIMS(2, 1), "w");
        t->p[1] = ttt_param(ctx, TTT_F64, TTT_DIMS(1), "b");
        if (!t->p[0] || !t->p[1]) return TTT_ERR;
    }
    *m = (ttt_train_model){.name = "toy", .n_params = 2, .params = t->p, .param_names = toy_names, .user = t,
                           .batch = toy_batch, .loss = toy_loss, .n_aux = 1, .aux_names = {"mse"},
                           .state_save = toy_state_save, .state_load = toy_state_load};
    *c = (ttt_train_config){.dir = dir, .resume = resume, .lr = 0.1, .min_lr = 0.01, .warmup = 1, .steps = 10,
                            .accum = 1, .clip = 1.0, .seed = 3, .cuda_graph = 0, .save_every = 2, .log_every = 1,
                            .meta = meta, .match = match};
    return TTT_OK;
}

#endif
