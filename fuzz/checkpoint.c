/* Fuzz target: checkpoints at resume (src/train/train.c: the metadata a resume
 * reads -- settings compared key by key, step, log_window, model_state -- then
 * the parameters and optimizer moments, and the metrics file truncated to the
 * checkpoint's step), and the same file as a language-model checkpoint
 * (ttt_lm_load in src/models/lm.c: format, model config, train dtype, step).
 * Input: two bytes (little-endian) giving the length of the metrics file's
 * text, that text, then the checkpoint file. Seeds: checkpoints of the toy run
 * in fuzz/checkpoint_toy.h and of a tiny language model (fuzz/make_seeds.c).
 * A resume that succeeds must be at a step in [0, steps]. */
#include "fuzz.h"
#include "checkpoint_toy.h"

static ttt_ctx *ctx;
static toy t;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ctx) {
        ttt_ctx_config cc = {.device = TTT_CPU, .threads = 1, .seed = 1};
        if (!(ctx = ttt_ctx_new(&cc))) abort();
    }
    if (size < 2) return 0;
    size_t mlen = (size_t)data[0] | (size_t)data[1] << 8;
    if (mlen > size - 2) mlen = size - 2;
    char ckpt[300], metrics[300], err[4096];
    fuzz_path(ckpt, sizeof ckpt, "checkpoint.safetensors");
    fuzz_path(metrics, sizeof metrics, "metrics.jsonl");
    fuzz_write(metrics, data + 2, mlen);
    fuzz_write(ckpt, data + 2 + mlen, size - 2 - mlen);

    ttt_train_model m;
    ttt_train_config c;
    if (toy_setup(ctx, &t, fuzz_dir(), 1, &m, &c) != TTT_OK) abort();
    ttt_trainer *tr = NULL;
    err[0] = 0;
    int rc = ttt_train_open(ctx, &m, &c, &tr, err, sizeof err);
    fuzz_note("resume", rc == TTT_OK ? "ok" : err);
    if (rc == TTT_OK) {
        const int64_t step = ttt_train_step(tr);
        if (step < 0 || step > c.steps) abort();
        ttt_train_close(tr);
    } else if (tr || !err[0]) {
        abort(); /* a refusal says why */
    }
    ttt_step_reset(ctx);

    /* the same bytes as `ttt lm train`'s model file */
    ttt_lm lm;
    int64_t step;
    err[0] = 0;
    const int lrc = ttt_lm_load(ctx, ckpt, -1, &lm, &step, err, sizeof err);
    fuzz_note("lm_load", lrc == TTT_OK ? "ok" : err);
    if (lrc == TTT_OK) ttt_lm_free(ctx, &lm);
    else if (!err[0]) abort();
    ttt_step_reset(ctx);
    return 0;
}
