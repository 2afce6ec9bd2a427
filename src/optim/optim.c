/* Outer-loop optimizers: AdamW and SGD with momentum, a warmup + cosine
 * schedule and global-norm gradient clipping. The per-parameter update is one
 * fused backend kernel; AdamW and clipping go over all parameters in a few
 * multi-tensor launches where the backend has them (the same bits as the
 * per-tensor path); nothing here records a graph. */
#include <math.h>
#include <stdlib.h>

#include "../core/engine_private.h"
#include "ttt/optim.h"

typedef enum { OPT_ADAMW, OPT_SGD } opt_kind;

struct ttt_optimizer {
    ttt_ctx *ctx;
    opt_kind kind;
    ttt_optim_config cfg;
    int n;
    ttt_tensor **params;
    int *decay;
    ttt_tensor **state; /* AdamW: m[0..n), v[n..2n); SGD: buf[0..n) */
    int n_state;
    int64_t steps;
    ttt_tensor **batch; /* AdamW: a step's p, g, m, v of the parameters with gradients, 4 x n */
    double *batch_wd;   /* and their weight decays */
};

static ttt_optimizer *opt_new(ttt_ctx *ctx, opt_kind kind, int n, ttt_tensor *const *params, const int *decay,
                              const ttt_optim_config *cfg) {
    const char *name = kind == OPT_ADAMW ? "adamw" : "sgd";
    if (!ctx) return NULL;
    if (n <= 0 || !params || !cfg) return ttt__set_error(ctx, "%s: need parameters and a config", name), NULL;
    if (!(cfg->lr >= 0) || !(cfg->weight_decay >= 0) || !(cfg->momentum >= 0 && cfg->momentum < 1) ||
        !(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1) || !(cfg->eps >= 0))
        return ttt__set_error(ctx, "%s: config out of range (lr %g, wd %g, momentum %g, betas %g %g, eps %g)", name,
                              cfg->lr, cfg->weight_decay, cfg->momentum, cfg->beta1, cfg->beta2, cfg->eps),
               NULL;
    for (int i = 0; i < n; i++) {
        if (!params[i] || !params[i]->persistent || !params[i]->requires_grad || !ttt__is_float(params[i]->dtype))
            return ttt__set_error(ctx, "%s: params[%d] is not a persistent float parameter with requires_grad", name, i),
                   NULL;
    }
    ttt_optimizer *o = calloc(1, sizeof *o);
    int n_state = kind == OPT_ADAMW ? 2 * n : n;
    if (o) {
        o->params = calloc((size_t)n, sizeof *o->params);
        o->decay = calloc((size_t)n, sizeof *o->decay);
        o->state = calloc((size_t)n_state, sizeof *o->state);
        o->batch = calloc(4 * (size_t)n, sizeof *o->batch);
        o->batch_wd = calloc((size_t)n, sizeof *o->batch_wd);
    }
    if (!o || !o->params || !o->decay || !o->state || !o->batch || !o->batch_wd) {
        ttt_optimizer_free(o);
        return ttt__set_error(ctx, "%s: out of host memory", name), NULL;
    }
    o->ctx = ctx;
    o->kind = kind;
    o->cfg = *cfg;
    if (kind == OPT_ADAMW) {
        if (o->cfg.beta1 == 0 && o->cfg.beta2 == 0) {
            o->cfg.beta1 = 0.9;
            o->cfg.beta2 = 0.999;
        }
        if (o->cfg.eps == 0) o->cfg.eps = 1e-8;
    }
    o->n = n;
    o->n_state = n_state;
    for (int i = 0; i < n; i++) {
        o->params[i] = params[i];
        o->decay[i] = decay ? decay[i] != 0 : 1;
    }
    for (int s = 0; s < n_state; s++) {
        ttt_tensor *p = params[s % n];
        o->state[s] = ttt_persistent(ctx, p->dtype, p->ndim, p->shape, p->name);
        if (!o->state[s]) {
            ttt_optimizer_free(o);
            return NULL;
        }
    }
    return o;
}

ttt_optimizer *ttt_adamw_new(ttt_ctx *ctx, int n, ttt_tensor *const *params, const int *decay,
                             const ttt_optim_config *cfg) {
    return opt_new(ctx, OPT_ADAMW, n, params, decay, cfg);
}

ttt_optimizer *ttt_sgd_new(ttt_ctx *ctx, int n, ttt_tensor *const *params, const int *decay,
                           const ttt_optim_config *cfg) {
    return opt_new(ctx, OPT_SGD, n, params, decay, cfg);
}

void ttt_optimizer_free(ttt_optimizer *o) {
    if (!o) return;
    if (o->state)
        for (int s = 0; s < o->n_state; s++) ttt_persistent_free(o->ctx, o->state[s]);
    free(o->state);
    free(o->batch);
    free(o->batch_wd);
    free(o->params);
    free(o->decay);
    free(o);
}

int64_t ttt_optimizer_steps(const ttt_optimizer *o) { return o ? o->steps : 0; }

int ttt_optimizer_set_steps(ttt_optimizer *o, int64_t steps) {
    if (!o) return TTT_ERR;
    if (steps < 0) return ttt__set_error(o->ctx, "optimizer: step count %lld is negative", (long long)steps);
    o->steps = steps;
    return TTT_OK;
}

ttt_tensor *const *ttt_optimizer_state(const ttt_optimizer *o, int *n) {
    if (n) *n = o ? o->n_state : 0;
    return o ? o->state : NULL;
}

int ttt_optimizer_step(ttt_optimizer *o, double lr) {
    if (!o) return TTT_ERR;
    ttt_ctx *ctx = o->ctx;
    if (lr < 0) lr = o->cfg.lr;
    if (!isfinite(lr)) return ttt__set_error(ctx, "optimizer: learning rate %g is not finite", lr);
    o->steps++;
    if (o->kind == OPT_ADAMW) {
        /* every parameter with a gradient in one multi-tensor call (a few launches; per tensor where the
         * backend has no such entry) */
        const int n = o->n;
        ttt_tensor **P = o->batch, **G = P + n, **M = G + n, **V = M + n;
        int k = 0;
        for (int i = 0; i < n; i++) {
            ttt_tensor *p = o->params[i];
            if (!p->grad) continue;
            P[k] = p, G[k] = p->grad, M[k] = o->state[i], V[k] = o->state[n + i];
            o->batch_wd[k++] = o->decay[i] ? o->cfg.weight_decay : 0.0;
        }
        return ttt__adamw_multi(ctx, k, P, G, M, V, o->batch_wd, lr, o->cfg.beta1, o->cfg.beta2, o->cfg.eps, o->steps);
    }
    for (int i = 0; i < o->n; i++) {
        ttt_tensor *p = o->params[i];
        if (!p->grad) continue;
        double wd = o->decay[i] ? o->cfg.weight_decay : 0.0;
        if (ttt__sgd(ctx, p, p->grad, o->state[i], lr, o->cfg.momentum, wd, o->cfg.nesterov) != TTT_OK) return TTT_ERR;
    }
    return TTT_OK;
}

double ttt_lr_warmup_cosine(int64_t step, int64_t warmup, int64_t total, double max_lr, double min_lr) {
    if (warmup > 0 && step < warmup) return max_lr * (double)(step + 1) / (double)warmup;
    if (total <= warmup || step >= total) return min_lr;
    double progress = (double)(step - warmup) / (double)(total - warmup);
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + cos(3.141592653589793 * progress));
}

int ttt_clip_grad_norm(ttt_ctx *ctx, int n, ttt_tensor *const *params, double max_norm, double *norm_out) {
    if (!ctx) return TTT_ERR;
    if (n < 0 || (n && !params)) return ttt__set_error(ctx, "clip_grad_norm: bad parameter list");
    if (!(max_norm > 0)) return ttt__set_error(ctx, "clip_grad_norm: max_norm %g must be > 0", max_norm);
    for (int i = 0; i < n; i++)
        if (!params[i]) return ttt__set_error(ctx, "clip_grad_norm: params[%d] is NULL", i);
    ttt_mark_t m = ttt_mark(ctx);
    ttt_no_grad_begin(ctx);
    /* the gradients, in parameter order */
    ttt_tensor **grads = n ? ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)n) : NULL;
    int k = 0, rc = n && !grads ? TTT_ERR : TTT_OK, one_dtype = 1;
    for (int i = 0; i < n && rc == TTT_OK; i++)
        if (params[i]->grad) {
            grads[k] = params[i]->grad;
            one_dtype &= grads[k]->dtype == grads[0]->dtype && ttt_is_contiguous(grads[k]);
            k++;
        }
    /* Each parameter's sum of squares stays on the device and is added there in f64, in parameter order (the
     * same sum the host would form from the f32 partials): one readback per call instead of one per parameter,
     * each of which would drain the device's queue. With the backend's multi-tensor entries that is two
     * launches per 96 gradients (ttt__sumsq_multi, the same bits as these ops); else mul, sum, cast and add
     * per parameter. */
    ttt_tensor *acc = NULL;
    if (rc == TTT_OK && k > 0 && one_dtype && ttt__multi_tensor(ctx)) {
        rc = ttt__sumsq_multi(ctx, "clip_grad_norm", k, grads, &acc);
    } else {
        for (int i = 0; i < k && rc == TTT_OK; i++) {
            ttt_tensor *s = ttt_cast(ctx, ttt_sum(ctx, ttt_mul(ctx, grads[i], grads[i]), 0, NULL, 0), TTT_F64);
            acc = s && acc ? ttt_add(ctx, acc, s) : s;
            if (!acc) rc = TTT_ERR;
        }
    }
    double total = 0;
    if (rc == TTT_OK && acc) {
        total = ttt_item(ctx, acc);
        if (isnan(total) && ttt_error(ctx)[0]) rc = TTT_ERR;
    }
    double norm = sqrt(total);
    if (norm_out) *norm_out = norm;
    if (rc == TTT_OK && norm > max_norm) rc = ttt__scale_multi(ctx, "clip_grad_norm", k, grads, max_norm / (norm + 1e-6));
    ttt_no_grad_end(ctx);
    ttt_release(ctx, m);
    return rc;
}
