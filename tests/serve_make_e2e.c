/* A tiny TTT-E2E checkpoint for tests/test_serve.sh, in the format `ttt lm
 * train` writes (format=ttt-lm, the model config as metadata): randomly
 * initialized, since the server test needs the model's kind, not its skill.
 * It exists while `ttt lm train` cannot yet make E2E checkpoints.
 *   usage: serve_make_e2e OUT.safetensors VOCAB [SEED] (another seed: another model) */
#include <stdio.h>
#include <stdlib.h>

#include "ttt/ttt.h"

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4 || atoll(argv[2]) < 2) {
        fprintf(stderr, "usage: serve_make_e2e OUT.safetensors VOCAB [SEED]\n");
        return 2;
    }
    ttt_lm_config c;
    char err[256], model[1024];
    if (ttt_lm_preset("tiny-e2e", atoll(argv[2]), &c, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "serve_make_e2e: %s\n", err);
        return 1;
    }
    /* small and quick: a document of a few dozen tokens takes several inner steps and wraps the ring */
    c.dim = 32, c.heads = 2, c.mlp_hidden = c.prime_hidden = 48, c.window = 16, c.inner_chunk = 8;
    ttt_ctx_config cc = {.device = TTT_CPU, .seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 7, .threads = 1};
    ttt_ctx *ctx = ttt_ctx_new(&cc);
    ttt_lm m = {0};
    int rc = 1;
    if (ctx && ttt_lm_init(ctx, &m, &c, TTT_F32) == TTT_OK && ttt_lm_config_format(&c, model, sizeof model) == TTT_OK) {
        ttt_named_tensor *nt = calloc((size_t)m.n_params, sizeof *nt);
        for (int i = 0; nt && i < m.n_params; i++) nt[i] = (ttt_named_tensor){m.names[i], m.params[i]};
        const char *meta[] = {"format", "ttt-lm", "model", model, "step", "0", NULL};
        if (nt && ttt_save_safetensors(ctx, argv[1], m.n_params, nt, meta) == TTT_OK) rc = 0;
        free(nt);
    }
    if (rc) fprintf(stderr, "serve_make_e2e: %s\n", ctx ? ttt_error(ctx) : "no context");
    if (ctx) ttt_lm_free(ctx, &m);
    ttt_ctx_free(ctx);
    return rc;
}
