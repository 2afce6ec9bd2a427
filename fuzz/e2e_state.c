/* Fuzz target: TTT-E2E test-time state files (src/models/lm_e2e.c,
 * ttt_lm_reader_load / ttt_lm_e2e_state_load), as `ttt lm generate --state`
 * and `ttt serve` read them. A small TTT-E2E model (fuzz/make_seeds.c saves
 * the seeds from the same model: fresh, mid-chunk and past a few inner steps)
 * loads the input; a state that loads must then read more tokens like any
 * other (the ring, the chunk's inputs and the inner step see what was loaded). */
#include "fuzz.h"
#include "ttt/ttt.h"
#include "e2e_state_model.h"

static ttt_ctx *ctx;
static ttt_lm m;
static ttt_lm_reader r;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ctx) {
        ttt_ctx_config cc = {.device = TTT_CPU, .threads = 1, .seed = 1};
        if (!(ctx = ttt_ctx_new(&cc)) || e2e_fuzz_model(ctx, &m, &r) != TTT_OK) abort();
    }
    int32_t ids[E2E_FUZZ_BATCH * 3];
    for (int i = 0; i < E2E_FUZZ_BATCH * 3; i++) ids[i] = (int32_t)((i * 5 + 1) % m.cfg.vocab);
    /* a state that has read something, so that a refusal must visibly reset it */
    if (ttt_lm_reader_pos(&r) == 0 &&
        !ttt_lm_reader_read(ctx, &m, &r, ttt_from_host(ctx, TTT_I32, TTT_DIMS(E2E_FUZZ_BATCH, 3), ids), 0))
        abort();
    char path[300];
    fuzz_path(path, sizeof path, "state.safetensors");
    fuzz_write(path, data, size);
    const int rc = ttt_lm_reader_load(ctx, &m, &r, path, E2E_FUZZ_MODEL_ID, E2E_FUZZ_TOKENIZER_ID);
    fuzz_note("load", rc == TTT_OK ? "ok" : ttt_error(ctx));
    if (rc == TTT_OK) {
        const int64_t pos = ttt_lm_reader_pos(&r);
        ttt_tensor *lg = ttt_lm_reader_read(ctx, &m, &r, ttt_from_host(ctx, TTT_I32, TTT_DIMS(E2E_FUZZ_BATCH, 3), ids), 0);
        if (lg && ttt_lm_reader_pos(&r) != pos + 3) abort();
        if (!lg && !ttt_error(ctx)[0]) abort();
    } else if (!ttt_error(ctx)[0] || ttt_lm_reader_pos(&r) != 0) {
        abort(); /* refused with a message, and the state left reset */
    }
    ttt_step_reset(ctx);
    return 0;
}
