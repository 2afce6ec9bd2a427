/* Fuzz target: safetensors files (src/io/safetensors.c). The input is a whole
 * file: its header is validated (every entry), the metadata read and looked up
 * with ttt_metadata_get / ttt_metadata_int, and four tensors of fixed names,
 * dtypes and shapes loaded (the seeds hold them; fuzz/make_seeds.c), which
 * covers the dtype conversions, data offsets and the non-finite check.
 * A load that succeeds must give tensors of the asked shape. */
#include "fuzz.h"
#include "ttt/ttt.h"

static ttt_ctx *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ctx) {
        ttt_ctx_config cc = {.device = TTT_CPU, .threads = 1, .seed = 1};
        if (!(ctx = ttt_ctx_new(&cc))) abort();
    }
    char path[300];
    fuzz_path(path, sizeof path, "in.safetensors");
    fuzz_write(path, data, size);

    char *meta = NULL;
    if (ttt_load_safetensors(ctx, path, 0, NULL, &meta) == TTT_OK && meta) {
        char buf[256];
        int64_t v;
        (void)ttt_metadata_get(meta, "format", buf, sizeof buf);
        (void)ttt_metadata_int(meta, "step", &v);
        if (ttt_metadata_get(meta, "model", buf, sizeof buf) == TTT_OK) (void)ttt_kv_get(buf, "dim", buf, sizeof buf);
    }
    free(meta);

    static ttt_tensor *t[4];
    if (!t[0]) {
        t[0] = ttt_persistent(ctx, TTT_F32, TTT_DIMS(2, 3), "a");
        t[1] = ttt_persistent(ctx, TTT_F64, TTT_DIMS(4), "b");
        t[2] = ttt_persistent(ctx, TTT_BF16, TTT_DIMS(2, 2), "c");
        t[3] = ttt_persistent(ctx, TTT_I32, TTT_DIMS(3), "d");
        if (!t[0] || !t[1] || !t[2] || !t[3]) abort();
    }
    const ttt_named_tensor nt[4] = {{"a", t[0]}, {"b", t[1]}, {"c", t[2]}, {"d", t[3]}};
    meta = NULL;
    if (ttt_load_safetensors(ctx, path, 4, nt, &meta) == TTT_OK) {
        double host[6];
        if (ttt_copy_to_host(ctx, t[0], host, TTT_F64) != TTT_OK) abort();
        for (int i = 0; i < 6; i++)
            if (host[i] != host[i]) abort(); /* the loader refuses non-finite values */
        fuzz_note("load", "ok");
    } else if (fuzz_note("load", ttt_error(ctx)), !ttt_error(ctx)[0]) {
        abort(); /* a refusal must say why */
    }
    free(meta);
    ttt_step_reset(ctx);
    return 0;
}
