/* fuzz/e2e_state_model.h: the TTT-E2E model of the e2e_state fuzz target,
 * shared with fuzz/make_seeds.c so the seeds fit it. */
#ifndef TTT_FUZZ_E2E_STATE_MODEL_H
#define TTT_FUZZ_E2E_STATE_MODEL_H

#include "ttt/ttt.h"

#define E2E_FUZZ_MODEL_ID "fuzz-model"
#define E2E_FUZZ_TOKENIZER_ID "fuzz-tokenizer"
enum { E2E_FUZZ_BATCH = 1 };

static inline int e2e_fuzz_model(ttt_ctx *ctx, ttt_lm *m, ttt_lm_reader *r) {
    ttt_lm_config c;
    if (ttt_lm_preset("tiny-e2e", 23, &c, NULL, 0) != TTT_OK) return TTT_ERR;
    c.dim = 8, c.depth = 2, c.heads = 2, c.mlp_hidden = 8, c.prime_hidden = 6, c.prime_blocks = 1;
    c.window = 5, c.inner_chunk = 4, c.inner_clip = 1.0, c.init_std = 0.3;
    if (ttt_lm_init(ctx, m, &c, TTT_F32) != TTT_OK) return TTT_ERR;
    return ttt_lm_reader_init(ctx, m, r, E2E_FUZZ_BATCH, 0);
}

#endif
