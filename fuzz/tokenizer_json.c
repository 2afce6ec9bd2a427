/* Fuzz target: Hugging Face tokenizer.json (src/data/bpe.c,
 * ttt_tokenizer_load_json). The input is the whole file (seeds: the repository's
 * test fixtures, see fuzz/make_seeds.c). A tokenizer that loads encodes a fixed
 * text and the input itself, and decodes what it encoded. */
#include "fuzz.h"
#include "ttt/tokenizer.h"

static const char SAMPLE[] = "Hello world, it's 2026!  \xc3\xbcn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9 \n\t x<|endoftext|>'ll";

static void exercise(ttt_tokenizer *tok, const char *text, size_t len) {
    char err[512];
    ttt_token_ids ids = {0};
    if (ttt_tokenizer_encode(tok, text, len, &ids, err, sizeof err) == 0) {
        char *back = NULL;
        size_t blen = 0;
        if (ttt_tokenizer_decode(tok, ids.ids, ids.n, 0, &back, &blen, err, sizeof err) != 0) abort(); /* its own ids */
        free(back);
        if (ids.n && ttt_tokenizer_decode(tok, ids.ids, ids.n, 1, &back, &blen, err, sizeof err) != 0) abort();
        if (ids.n) free(back);
    }
    ttt_token_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[300], err[512];
    fuzz_path(path, sizeof path, "tokenizer.json");
    fuzz_write(path, data, size);
    ttt_tokenizer *tok = NULL;
    err[0] = 0;
    if (ttt_tokenizer_load_json(path, &tok, err, sizeof err) != 0) {
        fuzz_note("load", err);
        if (tok || !err[0]) abort();
        return 0;
    }
    exercise(tok, SAMPLE, sizeof SAMPLE - 1);
    exercise(tok, (const char *)data, size < 4096 ? size : 4096);
    const int32_t n = ttt_tokenizer_vocab_size(tok);
    for (int32_t id = 0; id < n && id < 512; id++) {
        size_t len;
        const char *p = ttt_tokenizer_piece(tok, id, &len);
        if (p && ttt_tokenizer_piece_id(tok, p, len) < 0) abort();
    }
    ttt_tokenizer_free(tok);
    return 0;
}
