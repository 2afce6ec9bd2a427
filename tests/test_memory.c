/* Memory lifetimes: many training steps reuse the arenas (no new blocks after
 * the first steps), marks release scoped work, and persistent tensors survive
 * resets. Run under LeakSanitizer in the sanitizer build. */
#include "check.h"
#include "ttt/ttt.h"

static int train_step(ttt_ctx *ctx, ttt_recon_learner *l, ttt_optimizer *opt, ttt_tensor **params) {
    ttt_step_reset(ctx);
    ttt_tensor *x = ttt_randn(ctx, TTT_F32, TTT_DIMS(16, 8), 1.0);
    ttt_inner_opts o = {.steps = 2, .eta = 0.5, .checkpoint = 1};
    ttt_tensor *w1, *w2;
    if (ttt_recon_adapt(ctx, l, x, NULL, &o, &w1, &w2) != TTT_OK) return TTT_ERR;
    ttt_tensor *loss = ttt_recon_loss(ctx, l, w1, w2, x, NULL);
    if (ttt_zero_grad(ctx, 4, params) || ttt_backward(ctx, loss) || ttt_clip_grad_norm(ctx, 4, params, 1.0, NULL))
        return TTT_ERR;
    return ttt_optimizer_step(opt, 1e-3);
}

int main(void) {
    ttt_ctx_config cfg = {.arena_bytes = 4096, .seed = 3}; /* tiny first block: forces growth */
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    ttt_recon_learner l;
    CHECK(ttt_recon_learner_init(ctx, &l, TTT_F32, 8, 4, 16) == TTT_OK);
    ttt_tensor *params[4] = {l.enc, l.dec, l.w1, l.w2};
    ttt_optim_config oc = {.lr = 1e-3};
    ttt_optimizer *opt = ttt_adamw_new(ctx, 4, params, NULL, &oc);
    CHECK(opt != NULL);
    for (int i = 0; i < 3; i++) CHECK(train_step(ctx, &l, opt, params) == TTT_OK);
    uint64_t blocks = ttt_arena_block_allocs(ctx);
    size_t reserved = ttt_arena_bytes_reserved(ctx);
    for (int i = 0; i < 200; i++) CHECK(train_step(ctx, &l, opt, params) == TTT_OK);
    CHECK_MSG(ttt_arena_block_allocs(ctx) == blocks, "arena blocks grew from %llu to %llu in steady state",
              (unsigned long long)blocks, (unsigned long long)ttt_arena_block_allocs(ctx));
    CHECK(ttt_arena_bytes_reserved(ctx) == reserved);
    CHECK(ttt_optimizer_steps(opt) == 203);

    /* mark / release frees scoped work */
    ttt_step_reset(ctx);
    size_t before = ttt_arena_bytes_used(ctx);
    ttt_mark_t m = ttt_mark(ctx);
    for (int i = 0; i < 100; i++) CHECK(ttt_zeros(ctx, TTT_F32, TTT_DIMS(64, 64)) != NULL);
    CHECK(ttt_arena_bytes_used(ctx) > before);
    ttt_release(ctx, m);
    CHECK(ttt_arena_bytes_used(ctx) == before);

    /* persistent tensors survive resets */
    ttt_tensor *keep = ttt_persistent(ctx, TTT_F64, TTT_DIMS(3), "keep");
    ttt_fill(ctx, keep, 4.0);
    ttt_step_reset(ctx);
    CHECK_NEAR(ttt_item(ctx, ttt_sum(ctx, keep, 0, NULL, 0)), 12.0, 1e-12);
    ttt_persistent_free(ctx, keep);
    ttt_optimizer_free(opt);
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
