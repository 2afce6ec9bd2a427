/* Fuzz target: GGUF files (src/io/gguf.c, include/ttt/gguf.h), through the
 * in-memory entry point ttt_gguf_open_memory. A file that opens has every
 * value read through the accessors (scalars, strings, the first and last
 * element of arrays) and every small tensor dequantized to f32, as the model
 * loader would. Seeds: GGUF test fixtures (fuzz/corpus/gguf/). Built only when
 * include/ttt/gguf.h exists (fuzz/CMakeLists.txt). */
#include "fuzz.h"
#include "ttt/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ttt_gguf *g = NULL;
    char err[512];
    err[0] = 0;
    if (ttt_gguf_open_memory(data, size, "fuzz.gguf", &g, err, sizeof err) != 0) {
        fuzz_note("open", err);
        if (g || !err[0]) abort();
        return 0;
    }
    fuzz_note("open", "ok");
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const ttt_gguf_kv *kv = &g->kv[i];
        if (ttt_gguf_find(g, kv->key) == NULL) abort(); /* every key is found */
        int64_t iv;
        double dv;
        const char *s;
        size_t len;
        (void)ttt_gguf_get_int(g, kv->key, &iv, err, sizeof err);
        (void)ttt_gguf_get_float(g, kv->key, &dv, err, sizeof err);
        (void)ttt_gguf_get_str(g, kv->key, &s, &len, err, sizeof err);
        (void)ttt_gguf_vtype_name(kv->type);
        if (kv->type == TTT_GGUF_ARRAY && kv->n > 0) {
            const uint64_t idx[2] = {0, kv->n - 1};
            for (int k = 0; k < 2; k++) {
                if (kv->elem_type == TTT_GGUF_STRING) {
                    const char *e = ttt_gguf_arr_str(kv, idx[k], &len);
                    volatile char c = e && len ? e[len - 1] : 0; /* the whole string is inside the file */
                    (void)c;
                } else {
                    (void)ttt_gguf_arr_int(kv, idx[k]);
                    (void)ttt_gguf_arr_float(kv, idx[k]);
                }
            }
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ttt_gguf_tensor *t = &g->tensors[i];
        if (ttt_gguf_tensor_find(g, t->name) == NULL) abort();
        const int64_t n = ttt_gguf_tensor_numel(t);
        if (n < 0) abort();
        if (n > (1 << 16)) continue;
        float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
        if (!f) abort();
        (void)ttt_gguf_tensor_f32(t, f, err, sizeof err);
        free(f);
    }
    ttt_gguf_close(g);
    return 0;
}
