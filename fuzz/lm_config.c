/* Fuzz target: the "key=value ..." strings checkpoints store (ttt_kv_get in
 * src/train/train.c, ttt_lm_config_parse and ttt_lm_param_count in
 * src/models/lm.c) and metadata JSON lookups (ttt_metadata_get,
 * ttt_metadata_int). The input is one string; a config that parses is counted
 * and, when small, built (ttt_lm_init validates it) and its format parsed back
 * to the same config. */
#include <math.h>

#include "fuzz.h"
#include "ttt/ttt.h"

static ttt_ctx *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ctx) {
        ttt_ctx_config cc = {.device = TTT_CPU, .threads = 1, .seed = 1};
        if (!(ctx = ttt_ctx_new(&cc))) abort();
    }
    char *s = fuzz_cstr(data, size), buf[64], err[256];
    static const char *const keys[] = {"vocab", "dim", "rope_theta", "x", "", "steps", "loss_sum", "aux.mse"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (ttt_kv_get(s, keys[i], buf, sizeof buf) && strlen(buf) >= sizeof buf) abort();
        (void)ttt_kv_get(s, keys[i], buf, 3); /* a value longer than the buffer is cut, not overrun */
    }
    int64_t v;
    if (ttt_metadata_int(s, "step", &v) == TTT_OK && v < 0) abort();
    (void)ttt_metadata_get(s, "model", buf, sizeof buf);

    ttt_lm_config c;
    err[0] = 0;
    const int rc = ttt_lm_config_parse(s, &c, err, sizeof err);
    fuzz_note("parse", rc == TTT_OK ? "ok" : err);
    if (rc == TTT_OK) {
        const int64_t n = ttt_lm_param_count(&c);
        if (n > 0 && n <= 20000) {
            ttt_lm m;
            if (ttt_lm_init(ctx, &m, &c, TTT_F32) == TTT_OK) {
                char fmt[1024];
                ttt_lm_config back;
                if (ttt_lm_config_format(&m.cfg, fmt, sizeof fmt) != TTT_OK ||
                    ttt_lm_config_parse(fmt, &back, err, sizeof err) != TTT_OK || back.dim != c.dim ||
                    back.vocab != c.vocab || back.rope_theta != c.rope_theta || back.inner_clip != c.inner_clip)
                    abort(); /* a valid config survives format + parse */
                ttt_lm_free(ctx, &m);
            }
            ttt_step_reset(ctx);
        }
    } else if (!err[0]) {
        abort();
    }
    free(s);
    return 0;
}
